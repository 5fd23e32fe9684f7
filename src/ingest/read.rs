//! [`ReadView`]: the narrow interface the query layer reads through (the
//! table provider, rollups, subscriptions), instead of the whole engine: a
//! consistent snapshot, the series catalog, the chunk reader and the feed
//! of newly applied batches. The [`Engine`](super::Engine) is one; tests
//! use [`MemoryView`], which needs no data directory and no writer thread.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::buffer::{BufferedBatch, Snapshot};
use super::last_values::LastValues;
use crate::runtime::Clock;
use crate::storage::{ChunkReader, SeriesCatalog};

pub trait ReadView: std::fmt::Debug + Send + Sync + 'static {
    /// Everything a query should see: committed chunks plus the buffer.
    fn snapshot(&self) -> Snapshot;

    fn catalog(&self) -> &Arc<SeriesCatalog>;

    /// Reads chunks for queries, through the decoded-chunk cache.
    fn chunk_reader(&self) -> &Arc<ChunkReader>;

    /// Batches applied from now on, in offset order (continuous queries).
    /// Subscribe before taking the [`Snapshot`] the results start from.
    fn subscribe_batches(&self) -> broadcast::Receiver<Arc<BufferedBatch>>;

    /// The time the data is read at (continuous queries' cadence).
    fn clock(&self) -> &Clock;

    /// The newest point of every series, if this view keeps them.
    fn last_values(&self) -> Option<&Arc<LastValues>> {
        None
    }
}
