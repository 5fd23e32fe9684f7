//! [`MemoryView`]: a [`ReadView`] with no data directory, no log and no
//! writer thread, for query and subscription tests (and tools that want
//! SQL over batches they hold). Writes are applied at once at the next
//! offset; `flush` turns the buffer into real chunk files in an in-memory
//! object store, so queries read chunks through the same reader and
//! pruning as the engine's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use object_store::memory::InMemory;
use tokio::sync::broadcast;

use super::admission::WriteReceipt;
use super::buffer::{BufferedBatch, Snapshot, WriteBuffer};
use super::error::EngineError;
use super::last_values::LastValues;
use super::normalize::normalize;
use super::read::ReadView;
use super::sort::partition_by_hour;
use crate::runtime::Clock;
use crate::storage::{encode_chunk, ChunkReader, Manifest, SeriesCatalog, Store, WriterEpoch};
use crate::stream::Offset;

pub struct MemoryView {
    buffer: WriteBuffer,
    store: Store,
    reader: Arc<ChunkReader>,
    next_chunk_id: AtomicU64,
    clock: Clock,
    /// Serialises writes so offsets are applied in order.
    writing: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for MemoryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryView")
    }
}

impl MemoryView {
    pub fn new() -> Arc<Self> {
        Self::with_clock(Clock::system())
    }

    pub fn with_clock(clock: Clock) -> Arc<Self> {
        let store = Store::new(Arc::new(InMemory::new()));
        Arc::new(Self {
            buffer: WriteBuffer::new(
                Arc::new(Manifest::default()),
                SeriesCatalog::default(),
                clock.clone(),
            ),
            reader: Arc::new(ChunkReader::new(store.clone(), 64 << 20)),
            store,
            next_chunk_id: AtomicU64::new(1),
            clock,
            writing: parking_lot::Mutex::new(()),
        })
    }

    /// Normalises and applies one batch, as the engine would once durable.
    pub async fn write(&self, batch: &RecordBatch) -> Result<WriteReceipt, EngineError> {
        let _in_order = self.writing.lock();
        let points = normalize(batch, self.buffer.catalog())?;
        let offset = self.buffer.snapshot().applied;
        let rows = points.rows();
        self.buffer
            .apply(offset, super::buffer::Logged::Points(points));
        Ok(WriteReceipt { rows, offset })
    }

    /// Moves every buffered point into chunks (one per hour) and commits
    /// them. Returns the rows flushed.
    pub async fn flush(&self) -> Result<u64, EngineError> {
        let snap = self.buffer.snapshot();
        if snap.buffered.is_empty() {
            return Ok(0);
        }
        let batches: Vec<RecordBatch> = snap.buffered.iter().map(|b| b.points.clone()).collect();
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let mut next = (*snap.manifest).clone();
        for part in partition_by_hour(&batches)? {
            let id = self.next_chunk_id.fetch_add(1, Ordering::Relaxed);
            let (bytes, mut meta) = encode_chunk(id, WriterEpoch::default(), &part)?;
            meta.last_offset = snap.buffered.last().map(|b| b.offset.0);
            self.store.put(&meta.path.as_str().into(), bytes).await?;
            next.chunks.push(meta);
        }
        next.version += 1;
        next.stream_offset = snap.applied.0;
        next.next_chunk_id = self.next_chunk_id.load(Ordering::Relaxed);
        next.committed_at = self.clock.now_micros();
        self.buffer.install(Arc::new(next));
        Ok(rows)
    }

    /// The offset the next write gets.
    pub fn next_offset(&self) -> Offset {
        self.buffer.snapshot().applied
    }

    /// Continuous queries following this view (receivers of its feed).
    pub fn subscribers(&self) -> usize {
        self.buffer.subscribers()
    }
}

impl ReadView for MemoryView {
    fn snapshot(&self) -> Snapshot {
        self.buffer.snapshot()
    }

    fn catalog(&self) -> &Arc<SeriesCatalog> {
        self.buffer.catalog()
    }

    fn chunk_reader(&self) -> &Arc<ChunkReader> {
        &self.reader
    }

    fn subscribe_batches(&self) -> broadcast::Receiver<Arc<BufferedBatch>> {
        self.buffer.subscribe()
    }

    fn last_values(&self) -> Option<&Arc<LastValues>> {
        Some(self.buffer.last_values())
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }
}
