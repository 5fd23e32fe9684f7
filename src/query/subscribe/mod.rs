//! Continuous queries: `SUBSCRIBE TO <select>`.
//!
//! A subscription subscribes to the engine's fan-out of applied batches,
//! *then* takes a snapshot (so no batch falls between the two; batches the
//! snapshot already holds are skipped by offset), answers the snapshot, and
//! from then on folds only new batches in (see `shape` for how). Every
//! `emit_interval` the changes gathered so far go out as one update; an idle
//! subscription sends a progress message at least every second. Each message
//! carries the watermark: the stream offset below which every record is
//! reflected, and the largest point time seen.
//!
//! One value per (series, time) holds for aggregates too: a new point no
//! newer than the newest point its series had (a rewrite, or a late
//! point that may be one) and any DELETE make an aggregate subscription
//! compute its groups again from a fresh snapshot, and the update carries
//! every group whose value changed (a group left with no points: count 0,
//! the rest NULL). Appends in time order, the usual case, are folded in
//! incrementally. A row subscription streams each new row as written, so
//! a rewrite arrives as a new value for its (series, time): apply updates
//! as upserts by key. Deletes are not streamed to row subscriptions.
//!
//! Limits: at most `max_subscriptions` at once; a subscription that falls
//! more than the fan-out's capacity behind ingest (1024 batches), or whose
//! client does not take a message within `send_timeout`, is ended with a
//! `Limit` error, RESOURCE_EXHAUSTED (delivered after the queued messages) rather
//! than buffering without bound. Ingest never waits for subscribers.
//! Between emits a subscription holds at most `max_pending_bytes` of new
//! batches, and an aggregate one at most `max_groups` groups; past either
//! it ends with a `Limit` error naming the flag (no update half-sent).
//! Groups are never evicted: a late point may still land in any bucket, and
//! a group restarted from nothing would send the client a wrong value.
//! Dropping the receiver ends the task.
//!
//! # Layout
//! - `request`: the `SUBSCRIBE TO` text and its `WITH (...)` options.
//! - `shape`: which SELECTs can be maintained, and the partial query.
//! - `state`: per-group partial aggregates.

mod request;
mod shape;
mod state;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use futures::TryStreamExt;
use tokio::sync::{broadcast, mpsc};

pub use request::{is_subscribe, parse, SubscribeRequest, DEFAULT_EMIT_INTERVAL};
use shape::Shape;
use state::AggState;

use super::{MetricsTable, QueryEngine, QueryError};
use crate::ingest::{BufferedBatch, Snapshot};
use crate::runtime::Tasks;
use crate::stream::Offset;

/// An idle subscription still reports progress this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Messages queued for one client before the subscription waits on it.
const OUTBOX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The result at the watermark (possibly in several batches).
    Snapshot,
    /// New values of changed groups, or new matching rows.
    Update,
    /// Nothing changed up to the watermark.
    Progress,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    pub batch: Option<RecordBatch>,
    /// Every stream record before this offset is reflected.
    pub offset: Offset,
    /// The largest point time (Unix micros) seen so far, if any.
    pub max_time: Option<i64>,
    /// A snapshot part with more parts to follow: the result at `offset`
    /// is complete only after the part without it.
    pub more: bool,
}

impl Message {
    /// The `app_metadata` sent with the message.
    pub fn metadata(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert(
            "kind".into(),
            serde_json::to_value(self.kind).expect("kind serializes"),
        );
        m.insert("offset".into(), self.offset.to_string().into());
        if let Some(t) = self.max_time {
            m.insert("max_time".into(), crate::model::format_micros(t).into());
        }
        if let Some(b) = &self.batch {
            m.insert("rows".into(), b.num_rows().into());
        }
        if self.more {
            m.insert("more".into(), true.into());
        }
        serde_json::Value::Object(m).to_string()
    }
}

#[derive(Debug, Clone)]
pub struct SubscribeConfig {
    pub max_subscriptions: usize,
    /// How long a message may wait for the client before it is dropped.
    pub send_timeout: Duration,
    /// Bytes of new batches one subscription may hold until its next emit
    /// (`--subscribe-max-pending-bytes`).
    pub max_pending_bytes: usize,
    /// Groups one aggregate subscription may keep (`--subscribe-max-groups`).
    pub max_groups: usize,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        Self {
            max_subscriptions: 256,
            send_timeout: Duration::from_secs(10),
            max_pending_bytes: 256 << 20,
            max_groups: 100_000,
        }
    }
}

/// Admission and accounting of live subscriptions.
#[derive(Debug)]
pub struct Subscriptions {
    active: AtomicUsize,
    config: SubscribeConfig,
    /// The shutdown tree's node for subscriptions: cancelled when the server
    /// stops, so every subscription ends its stream and a graceful shutdown
    /// is not held open by long-lived calls.
    tasks: Tasks,
}

/// Held by a running subscription; frees its slot when the task ends.
struct Slot(Arc<Subscriptions>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Subscriptions {
    pub fn new(config: SubscribeConfig, tasks: Tasks) -> Arc<Self> {
        Arc::new(Self {
            active: AtomicUsize::new(0),
            config,
            tasks,
        })
    }

    /// Ends every running subscription (server shutdown).
    pub fn close_all(&self) {
        self.tasks.token().cancel();
    }

    /// Subscriptions running now (tasks not yet ended).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    fn admit(self: &Arc<Self>) -> Result<Slot, QueryError> {
        let max = self.config.max_subscriptions;
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.clone());
        if prev >= max {
            drop(slot);
            crate::telemetry::metrics().limited("subscriptions");
            return Err(QueryError::Limit(format!(
                "too many subscriptions ({max} running; raise --max-subscriptions)"
            )));
        }
        Ok(slot)
    }
}

/// The messages of one subscription, ending with an error if the server
/// ended it (too slow a client, an evaluation error, shutdown is a plain end).
#[derive(Debug)]
pub struct Updates {
    rx: mpsc::Receiver<Result<Message, QueryError>>,
    fate: Fate,
}

/// Why a subscription ended, for when the outbox had no room left to say it
/// (the usual case for a client that stopped reading): delivered after the
/// queued messages.
type Fate = Arc<std::sync::Mutex<Option<QueryError>>>;

impl Updates {
    pub async fn recv(&mut self) -> Option<Result<Message, QueryError>> {
        match self.rx.recv().await {
            Some(m) => Some(m),
            None => self.fate.lock().ok()?.take().map(Err),
        }
    }

    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Message, QueryError>> {
        futures::stream::unfold(self, |mut u| async move { u.recv().await.map(|m| (m, u)) })
    }
}

/// Starts a subscription: returns the result schema and the messages
/// (snapshot first unless disabled). Errors in the SQL are returned here.
pub async fn subscribe(
    query: Arc<QueryEngine>,
    subs: &Arc<Subscriptions>,
    req: SubscribeRequest,
) -> Result<(SchemaRef, Updates), QueryError> {
    let shape = shape::analyze(&req.select)?;
    // The answer's schema is the SELECT's own (nullable: a group can have
    // no non-null values).
    let planned = query.sql(&req.select).await?;
    shape::check_plan(&shape, planned.logical_plan())?;
    let schema: SchemaRef = Arc::new(Schema::new(
        planned
            .schema()
            .as_arrow()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let slot = subs.admit()?;
    let engine = query.engine().clone();
    let fanout = engine.subscribe_batches();
    let closing = subs.tasks.clone();
    let snapshot = engine.snapshot();
    let mut sub = Subscription {
        query: query.clone(),
        schema: schema.clone(),
        shape,
        select_sql: req.select.clone(),
        limits: subs.config.clone(),
        state: None,
        offset: snapshot.applied,
        max_time: max_time_of(&snapshot),
        reported: (snapshot.applied, max_time_of(&snapshot)),
        newest: None,
        deletes_seen: snapshot.last_delete,
    };
    if matches!(sub.shape, Shape::Aggregate { .. }) {
        sub.newest = Some(sub.newest_per_series(&snapshot).await?);
    }
    let (tx, rx) = mpsc::channel(OUTBOX);
    let fate = Fate::default();
    let outbox = Outbox {
        tx,
        fate: fate.clone(),
        send_timeout: subs.config.send_timeout,
    };
    let first = sub
        .start(MetricsTable::at(engine.clone(), snapshot), req.snapshot)
        .await?;
    subs.tasks.spawn("subscription", async move {
        let _slot = slot;
        tokio::select! {
            _ = sub.run(first, fanout, req.emit_interval, outbox) => {}
            _ = closing.cancelled() => {}
        }
    });
    Ok((schema, Updates { rx, fate }))
}

fn max_time_of(s: &crate::ingest::Snapshot) -> Option<i64> {
    let chunks = s.manifest.chunks.iter().map(|c| c.max_time);
    let buffered = s.buffered.iter().map(|b| b.max_time);
    chunks.chain(buffered).max()
}

struct Subscription {
    query: Arc<QueryEngine>,
    schema: SchemaRef,
    shape: Shape,
    select_sql: String,
    /// The server's limits (`max_groups`, `max_pending_bytes` are used).
    limits: SubscribeConfig,
    state: Option<AggState>,
    /// Everything before `offset` has been received (some may be pending).
    offset: Offset,
    max_time: Option<i64>,
    /// The watermark of what the client has been sent: `offset` and
    /// `max_time` when the pending batches were last folded in.
    reported: (Offset, Option<i64>),
    /// Aggregates: the newest point time of every series received, to
    /// tell appends (folded in) from rewrites (recomputed).
    newest: Option<std::collections::HashMap<u64, i64>>,
    /// The newest delete the state reflects.
    deletes_seen: Option<u64>,
}

impl Subscription {
    /// Computes the initial state over the snapshot; returns the snapshot
    /// messages to send (if asked for).
    async fn start(
        &mut self,
        table: MetricsTable,
        want_snapshot: bool,
    ) -> Result<Vec<Message>, QueryError> {
        let batches = match &self.shape {
            Shape::Aggregate {
                partial_sql,
                groups,
                aggs,
                outputs,
            } => {
                let mut st = AggState::new(*groups, *aggs, self.limits.max_groups);
                for b in self.run_sql(Arc::new(table), partial_sql).await? {
                    st.fold(&b)?;
                }
                let all = st
                    .emit(outputs, &self.schema, true)
                    .map_err(QueryError::from_datafusion)?;
                self.state = Some(st);
                vec![all]
            }
            Shape::Rows if want_snapshot => {
                let select = self.query_select();
                let rows = self.run_sql(Arc::new(table), &select).await?;
                rows.into_iter()
                    .map(|b| self.conform(b))
                    .collect::<Result<_, _>>()?
            }
            Shape::Rows => Vec::new(),
        };
        if !want_snapshot {
            return Ok(vec![self.message(Kind::Progress, None)]);
        }
        let mut out: Vec<Message> = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| self.message(Kind::Snapshot, Some(b)))
            .collect();
        if out.is_empty() {
            out.push(self.message(
                Kind::Snapshot,
                Some(RecordBatch::new_empty(self.schema.clone())),
            ));
        }
        let parts = out.len();
        for m in &mut out[..parts - 1] {
            m.more = true;
        }
        Ok(out)
    }

    /// Relabels a result batch with the announced (all-nullable) schema.
    /// The newest point time of every series in `snap`.
    async fn newest_per_series(
        &self,
        snap: &Snapshot,
    ) -> Result<std::collections::HashMap<u64, i64>, QueryError> {
        let table = MetricsTable::at(self.query.engine().clone(), snap.clone());
        let sql = "SELECT series_id, max(time) FROM metrics GROUP BY series_id";
        let mut newest = std::collections::HashMap::new();
        for b in self.run_sql(Arc::new(table), sql).await? {
            let ids = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
            let times = b
                .column(1)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for (id, t) in ids.values().iter().zip(times.values()) {
                newest.insert(*id, *t);
            }
        }
        Ok(newest)
    }

    /// Records the batches' points as received; true if one is no newer
    /// than the newest point its series had (it may rewrite one).
    fn may_rewrite(&mut self, batches: &[Arc<BufferedBatch>]) -> bool {
        let Some(newest) = self.newest.as_mut() else {
            return false;
        };
        let mut rewrite = false;
        for b in batches {
            let (ids, times, _) = crate::model::point_columns(&b.points);
            for (id, t) in ids.iter().zip(times) {
                match newest.get_mut(id) {
                    Some(n) if *t <= *n => rewrite = true,
                    Some(n) => *n = *t,
                    None => {
                        newest.insert(*id, *t);
                    }
                }
            }
        }
        rewrite
    }

    /// Whether a delete newer than the state's has been applied.
    fn deleted_since(&self) -> Option<Snapshot> {
        if !matches!(self.shape, Shape::Aggregate { .. }) {
            return None;
        }
        let snap = self.query.engine().snapshot();
        (snap.last_delete > self.deletes_seen).then_some(snap)
    }

    /// Computes every group again over `snap` (all the data, rewrites
    /// and deletes applied), moves the watermark to it, and returns the
    /// groups whose values changed.
    async fn recompute(&mut self, snap: Snapshot) -> Result<Option<RecordBatch>, QueryError> {
        let Shape::Aggregate {
            partial_sql,
            groups,
            aggs,
            outputs,
        } = self.shape.clone()
        else {
            return Ok(None);
        };
        let mut fresh = AggState::new(groups, aggs, self.limits.max_groups);
        let table = MetricsTable::at(self.query.engine().clone(), snap.clone());
        for b in self.run_sql(Arc::new(table), &partial_sql).await? {
            fresh.fold(&b)?;
        }
        self.newest = Some(self.newest_per_series(&snap).await?);
        self.deletes_seen = snap.last_delete;
        self.offset = self.offset.max(snap.applied);
        self.max_time = self.max_time.max(max_time_of(&snap));
        self.reported = (self.offset, self.max_time);
        let st = self.state.as_mut().expect("aggregate state set at start");
        st.replace_with(fresh);
        if !st.has_changes() {
            return Ok(None);
        }
        st.emit(&outputs, &self.schema, false)
            .map(Some)
            .map_err(QueryError::from_datafusion)
    }

    fn conform(&self, b: RecordBatch) -> Result<RecordBatch, QueryError> {
        RecordBatch::try_new(self.schema.clone(), b.columns().to_vec())
            .map_err(|e| QueryError::Execution(e.to_string()))
    }

    fn query_select(&self) -> String {
        self.select_sql.clone()
    }

    fn message(&self, kind: Kind, batch: Option<RecordBatch>) -> Message {
        Message {
            kind,
            batch,
            offset: self.reported.0,
            max_time: self.reported.1,
            more: false,
        }
    }

    async fn run_sql(
        &self,
        table: Arc<dyn datafusion::datasource::TableProvider>,
        sql: &str,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let ctx = self.query.session_over(table)?;
        let plan = self.query.plan(&ctx, sql).await?;
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(QueryError::from_datafusion)?;
        let batches: Vec<RecordBatch> = df
            .execute_stream()
            .await
            .map_err(QueryError::from_datafusion)?
            .try_collect()
            .await
            .map_err(QueryError::from_datafusion)?;
        Ok(batches)
    }

    async fn run(
        mut self,
        first: Vec<Message>,
        mut fanout: broadcast::Receiver<Arc<BufferedBatch>>,
        emit_interval: Duration,
        out: Outbox,
    ) {
        for m in first {
            if !out.send(m).await {
                return;
            }
        }
        // Ticks come at least every PROGRESS_EVERY, so an idle subscription
        // reports progress on time even with a long emit interval; updates
        // go out when an emit interval has passed.
        let period = emit_interval.min(PROGRESS_EVERY);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let clock = self.query.engine().clock().clone();
        let mut last_sent = clock.instant();
        let mut next_emit = clock.instant() + emit_interval;
        let mut pending = Pending::default();
        loop {
            tokio::select! {
                got = fanout.recv() => match got {
                    Ok(b) => {
                        // Already in the snapshot.
                        if b.offset < self.offset { continue; }
                        self.offset = b.offset.next();
                        if b.points.num_rows() > 0 {
                            self.max_time = self.max_time.max(Some(b.max_time));
                            if let Err(e) = pending.push(b, self.limits.max_pending_bytes, emit_interval) {
                                out.fail(e);
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let why = format!(
                            "subscription fell behind ingest by more than {n} batches and was dropped; subscribe again to resume"
                        );
                        tracing::warn!("{why}");
                        crate::telemetry::metrics().limited("slow_subscriber");
                        out.fail(QueryError::Limit(why));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    // Half a tick of slack: ticks and deadlines drift apart
                    // by the time each update takes.
                    let due = clock.instant() + period / 2 >= next_emit;
                    let deleted = if due { self.deleted_since() } else { None };
                    let update = if let Some(snap) = deleted {
                        next_emit = clock.instant() + emit_interval;
                        pending.take();
                        match self.recompute(snap).await {
                            Ok(u) => u,
                            Err(e) => {
                                out.fail(e);
                                return;
                            }
                        }
                    } else if pending.is_empty() || !due {
                        if pending.is_empty() {
                            self.reported = (self.offset, self.max_time);
                        }
                        None
                    } else {
                        next_emit = clock.instant() + emit_interval;
                        self.reported = (self.offset, self.max_time);
                        match self.apply(pending.take()).await {
                            Ok(u) => u,
                            Err(e) => {
                                out.fail(e);
                                return;
                            }
                        }
                    };
                    let msg = match update {
                        Some(b) => self.message(Kind::Update, Some(b)),
                        None if clock.since(last_sent) + period / 2 >= PROGRESS_EVERY => self.message(Kind::Progress, None),
                        None => continue,
                    };
                    if !out.send(msg).await {
                        return;
                    }
                    crate::telemetry::metrics().subscription_updates.inc();
                    last_sent = clock.instant();
                }
                _ = out.tx.closed() => return,
            }
        }
    }

    /// Folds new batches in; the update to send, if anything changed.
    async fn apply(
        &mut self,
        pending: Vec<Arc<BufferedBatch>>,
    ) -> Result<Option<RecordBatch>, QueryError> {
        if self.may_rewrite(&pending) {
            let snap = self.query.engine().snapshot();
            return self.recompute(snap).await;
        }
        // The new batches as a table of their own: the same scan as any
        // query, so only the columns the SELECT uses are built, exact
        // filters skip non-matching series before any row is, and a
        // series rollup applies as it would to the whole table.
        let snapshot = crate::ingest::Snapshot {
            manifest: Arc::new(crate::storage::Manifest::default()),
            buffered: pending,
            applied: self.offset,
            deletes: Default::default(),
            last_delete: None,
        };
        let mem = MetricsTable::at(self.query.engine().clone(), snapshot);
        match &self.shape {
            Shape::Aggregate {
                partial_sql,
                outputs,
                ..
            } => {
                let partial = partial_sql.clone();
                let outputs = outputs.clone();
                let batches = self.run_sql(Arc::new(mem), &partial).await?;
                let st = self.state.as_mut().expect("aggregate state set at start");
                for b in &batches {
                    st.fold(b)?;
                }
                if !st.has_changes() {
                    return Ok(None);
                }
                st.emit(&outputs, &self.schema, false)
                    .map(Some)
                    .map_err(QueryError::from_datafusion)
            }
            Shape::Rows => {
                let select = self.query_select();
                let batches = self.run_sql(Arc::new(mem), &select).await?;
                let rows: Vec<RecordBatch> =
                    batches.into_iter().filter(|b| b.num_rows() > 0).collect();
                if rows.is_empty() {
                    return Ok(None);
                }
                let merged = arrow::compute::concat_batches(&rows[0].schema(), &rows)
                    .map_err(|e| QueryError::Execution(e.to_string()))?;
                self.conform(merged).map(Some)
            }
        }
    }
}

/// The batches received since the last emit, and their bytes (bounded by
/// `--subscribe-max-pending-bytes`).
#[derive(Default)]
struct Pending {
    batches: Vec<Arc<BufferedBatch>>,
    bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Keeps `b` until the next emit, or refuses it if that would hold more
    /// than `max` bytes. The first batch is always taken: alone it pins
    /// nothing the write buffer does not hold already, and it is folded in
    /// at the next emit.
    fn push(
        &mut self,
        b: Arc<BufferedBatch>,
        max: usize,
        emit_interval: Duration,
    ) -> Result<(), QueryError> {
        let bytes = self.bytes.saturating_add(b.bytes);
        if bytes > max && !self.batches.is_empty() {
            crate::telemetry::metrics().limited("subscribe_pending");
            return Err(QueryError::Limit(format!(
                "the subscription would hold {bytes} bytes of new data until its next \
                 emit (emit_interval {emit_interval:?}), over the limit of {max} bytes \
                 (--subscribe-max-pending-bytes); use a shorter emit_interval or raise \
                 --subscribe-max-pending-bytes"
            )));
        }
        self.bytes = bytes;
        self.batches.push(b);
        Ok(())
    }

    /// The batches, leaving it empty.
    fn take(&mut self) -> Vec<Arc<BufferedBatch>> {
        self.bytes = 0;
        std::mem::take(&mut self.batches)
    }
}

/// The sending side of a subscription.
struct Outbox {
    tx: mpsc::Sender<Result<Message, QueryError>>,
    fate: Fate,
    /// How long a message may wait for the client before the subscription
    /// is dropped.
    send_timeout: Duration,
}

impl Outbox {
    /// Sends within the timeout; `false` ends the subscription (the client
    /// left, or is not reading and has been told why).
    async fn send(&self, m: Message) -> bool {
        match tokio::time::timeout(self.send_timeout, self.tx.send(Ok(m))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(timeout = ?self.send_timeout, "subscriber is not reading; subscription dropped");
                crate::telemetry::metrics().limited("slow_subscriber");
                self.fail(QueryError::Limit(format!(
                    "the client did not take an update within {:?}, so the subscription was \
                     dropped rather than buffering without bound; read faster or subscribe again",
                    self.send_timeout
                )));
                false
            }
        }
    }

    /// Ends the subscription with `e`: queued if there is room, otherwise
    /// delivered after the queued messages.
    fn fail(&self, e: QueryError) {
        if let Err(mpsc::error::TrySendError::Full(Err(e))) = self.tx.try_send(Err(e)) {
            if let Ok(mut fate) = self.fate.lock() {
                *fate = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
