//! Sync replay: one worker per origin with `mode: sync` datasets brings the
//! outbox to the origin, oldest entry first, each entry (one local transaction)
//! as one origin transaction.
//!
//! Exactly once: the origin transaction first *claims* the entry in the origin's
//! own table of applied entries ([`switchyard_connectors::write::Claim`]), so the
//! claim commits exactly when the entry's changes do. A crash before the origin
//! commits leaves nothing there and the entry pending; a crash after it leaves the
//! claim, and the next attempt finds it and only finishes the entry locally.
//!
//! Each queued change is compared with the origin's row by the change's WHERE:
//! its key and its before-image (every column, or the `version_column`). A change
//! that finds no such row is a conflict, named as PostgreSQL 18's logical
//! replication names them, and resolved by the dataset's policy; every conflict
//! and every refusal of the origin is recorded in `switchyard.conflicts`. The local
//! copy's rows the entry touched are then settled to the origin's rows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{lit, BinaryExpr, Expr, Operator};
use switchyard_config::{ConflictPolicy, Dataset};
use switchyard_connectors::local::outbox::{
    key_text, row_json, ConflictRecord, Entry, Finished, OpKind, Outbox, Outcome, QueuedOp, Settle,
};
use switchyard_connectors::local::LocalStore;
use switchyard_connectors::write::{
    Claim, ConflictAction, ConflictTarget, OnConflict, SharedWrites, Write, WriteRequest,
    WriteTransaction,
};
use switchyard_connectors::ConnectorError;
use tracing::Instrument;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Short: the backoff is how late a returning origin sees the queue (half of it
/// on average), and two connection attempts a second are little for an origin
/// that is down.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How often an idle replayer looks at the queue without being woken.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Replayed entries finished together at most.
const FINISH_EVERY: usize = 500;
/// Entries read from the outbox at a time.
const READ_AHEAD: usize = 100;

/// One origin's replayer.
pub(crate) struct Replayer {
    pub origin: String,
    pub store: Arc<LocalStore>,
    pub writes: SharedWrites,
    /// The origin's sync datasets, by `schema.name`.
    pub datasets: BTreeMap<String, Dataset>,
    pub status: Arc<Mutex<ReplayStatus>>,
    /// The key columns of each dataset's copy, read once per run of entries.
    pub keys: Mutex<BTreeMap<String, Vec<String>>>,
}

/// What the replayer last did, for `switchyard.sync_queue`.
#[derive(Debug, Clone, Default)]
pub struct ReplayStatus {
    /// The last error of a replay that will be tried again.
    pub last_error: Option<String>,
    /// When the last entry was applied (RFC 3339).
    pub last_applied: Option<String>,
}

/// Why a replay stopped before its origin transaction could commit.
enum Stop {
    /// The `reject` policy set the entry aside at this conflict.
    Reject(Box<ConflictRecord>),
    /// The origin refused a change (not a passing failure).
    Refused(ConnectorError),
    /// The origin is unreachable or asked to try again: the entry waits.
    Retry(ConnectorError),
}

impl From<ConnectorError> for Stop {
    fn from(e: ConnectorError) -> Self {
        if passing(&e) {
            Stop::Retry(e)
        } else {
            Stop::Refused(e)
        }
    }
}

/// Failures that pass: the origin down, a lost connection, a serialization
/// failure or deadlock, an origin shutting down or out of resources.
fn passing(e: &ConnectorError) -> bool {
    match e {
        ConnectorError::Unreachable { .. } | ConnectorError::ConnectionLost { .. } => true,
        ConnectorError::Origin { code, .. } => {
            matches!(code.class(), "08" | "40" | "53" | "57") || code.code() == "55P03"
        }
        _ => false,
    }
}

/// Runs `f` on the outbox on a blocking thread (SQLite waits for its lock there,
/// not on the async threads the feed and the clients need).
async fn off<T: Send + 'static>(
    outbox: &Outbox,
    f: impl FnOnce(&Outbox) -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    let outbox = outbox.clone();
    tokio::task::spawn_blocking(move || f(&outbox))
        .await
        .map_err(|e| {
            ConnectorError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
        })?
}

pub(crate) async fn run(store: Arc<LocalStore>, replayer: Arc<Replayer>) {
    let span = tracing::info_span!("sync replay", origin = %replayer.origin);
    async move {
        let mut wake = store.queued();
        let mut backoff = FIRST_BACKOFF;
        let outbox = loop {
            let opened = {
                let store = Arc::clone(&store);
                tokio::task::spawn_blocking(move || store.outbox()).await
            };
            match opened.unwrap_or_else(|e| {
                Err(ConnectorError::DataFusion(
                    datafusion::error::DataFusionError::External(Box::new(e)),
                ))
            }) {
                Ok(o) => break o,
                Err(e) => {
                    tracing::error!(error = %e, "the outbox cannot be opened");
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            }
        };
        // Replayed entries wait here to be finished together (one local fsync
        // per run of entries); a crash before that only repeats their claims.
        let mut replayed: Vec<Finished> = Vec::new();
        let mut ahead: std::collections::VecDeque<Entry> = Default::default();
        // The next entry's transaction, opened and claimed as the last one committed.
        let mut opened: Option<Opened> = None;
        loop {
            // Refilled before the last entry is taken, so that it is claimed
            // with the commit before it.
            if ahead.len() < 2 && replayed.len() < FINISH_EVERY {
                let origin = replayer.origin.clone();
                let after = ahead
                    .back()
                    .map(|e| e.id)
                    .or(replayed.last().map(|f| f.entry))
                    .unwrap_or(0);
                match off(&outbox, move |o| o.pending(&origin, after, READ_AHEAD)).await {
                    Ok(entries) => ahead.extend(entries),
                    Err(e) => {
                        tracing::error!(error = %e, "reading the outbox");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
                // A copy taken again may have other key columns.
                replayer.keys.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
            let next = if replayed.len() >= FINISH_EVERY {
                None
            } else {
                ahead.pop_front()
            };
            let Some(entry) = next else {
                if let Some(o) = opened.take() {
                    let _ = o.t.rollback().await;
                }
                if !replayed.is_empty() {
                    flush(&replayer, &outbox, &mut replayed).await;
                    continue;
                }
                tokio::select! {
                    r = wake.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            };
            let claimed = match opened.take() {
                Some(o) if o.entry == entry.id => Some((o.t, o.claim)),
                Some(o) => {
                    let _ = o.t.rollback().await;
                    None
                }
                None => None,
            };
            let outcome = match replay(&replayer, &outbox, &entry, claimed).await {
                Ok(Replay::Ended(finished)) => Ok(finished),
                Ok(Replay::Ready(t, finished)) => {
                    // The next entry is claimed in the commit's round trip, unless
                    // the run of entries ends here.
                    let next = ahead
                        .front()
                        .filter(|_| replayed.len() + 1 < FINISH_EVERY)
                        .map(|n| (n.id, n.claim.clone()));
                    let committed = match &next {
                        Some((_, claim)) => t.commit_then_claim(claim).await,
                        None => t.commit().await.map(|()| None),
                    };
                    committed.map(|open| {
                        crate::crash::point("replay_after_origin_commit");
                        tracing::debug!(entry = entry.id, "entry applied");
                        if let (Some((id, _)), Some((t, claim))) = (next, open) {
                            opened = Some(Opened { entry: id, t, claim });
                        }
                        finished
                    })
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(finished) => {
                    backoff = FIRST_BACKOFF;
                    replayed.push(finished);
                }
                Err(e) => {
                    // Read again after the wait: the entry is still first.
                    ahead.clear();
                    flush(&replayer, &outbox, &mut replayed).await;
                    let message = e.to_string();
                    tracing::warn!(entry = entry.id, error = %message, retry_in = ?backoff, "sync replay waits");
                    let (id, m) = (entry.id, message.clone());
                    if let Err(e) = off(&outbox, move |o| o.failed(id, &m)).await {
                        tracing::error!(error = %e, "recording a replay failure");
                    }
                    replayer
                        .status
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last_error = Some(message);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Finishes the replayed entries in the outbox (they stay pending, to be claimed
/// again, if that fails).
async fn flush(r: &Replayer, outbox: &Outbox, replayed: &mut Vec<Finished>) {
    if replayed.is_empty() {
        return;
    }
    let done = std::mem::take(replayed);
    let n = done.len();
    let transactions: Vec<String> = done.iter().filter_map(|f| f.transaction.clone()).collect();
    match off(outbox, move |o| o.finish_all(&done)).await {
        Ok(()) => {
            // Recorded in the outbox now: the feed finds them there.
            for t in &transactions {
                r.store.replaying(t, true);
            }
            crate::crash::point("replay_after_finish");
            tracing::debug!(entries = n, "replayed entries finished");
            let mut s = r.status.lock().unwrap_or_else(|p| p.into_inner());
            s.last_error = None;
            s.last_applied = Some(chrono::Utc::now().to_rfc3339());
        }
        Err(e) => tracing::error!(error = %e, "finishing replayed entries; they are claimed again"),
    }
}

fn finished(
    entry: &Entry,
    outcome: Outcome,
    transaction: Option<String>,
    settle: Vec<Settle>,
    conflicts: Vec<ConflictRecord>,
) -> Finished {
    Finished {
        entry: entry.id,
        outcome,
        transaction,
        settle,
        conflicts,
    }
}

/// A transaction opened and claimed for the entry `entry`.
struct Opened {
    entry: i64,
    t: Box<dyn WriteTransaction>,
    claim: Claim,
}

/// How far [`replay`] took an entry.
enum Replay {
    /// Its origin transaction ended (or was never needed): to be finished.
    Ended(Finished),
    /// Its changes are made in the transaction, which is left to commit.
    Ready(Box<dyn WriteTransaction>, Finished),
}

/// Replays one entry, in `claimed` when its transaction is open already;
/// `Err` when it must be tried again.
async fn replay(
    r: &Replayer,
    outbox: &Outbox,
    entry: &Entry,
    claimed: Option<(Box<dyn WriteTransaction>, Claim)>,
) -> Result<Replay, ConnectorError> {
    crate::crash::point("replay_before_claim");
    let (mut t, claim) = match claimed {
        Some(c) => c,
        None => r.writes.begin_claimed(&entry.claim).await?,
    };
    let transaction = match claim {
        Claim::Done { transaction } => {
            // Committed before a crash: only the local side is left to do.
            t.rollback().await?;
            let settle = origin_rows(r, entry).await?;
            tracing::info!(
                entry = entry.id,
                "entry was applied before a restart; finishing it"
            );
            return Ok(Replay::Ended(finished(
                entry,
                Outcome::Applied,
                transaction,
                settle,
                vec![],
            )));
        }
        Claim::Fresh { transaction } => transaction,
    };
    let mut done = Replayed::default();
    let mut stopped = None;
    for op in &entry.ops {
        let Some(dataset) = r.datasets.get(&op.dataset) else {
            stopped = Some(Stop::Refused(ConnectorError::NotWritable {
                origin: r.origin.clone(),
                dataset: op.dataset.clone(),
                why: "the dataset is no longer a sync dataset of this origin".into(),
            }));
            break;
        };
        if let Err(stop) = replay_op(t.as_mut(), r, entry, dataset, op, &mut done).await {
            stopped = Some(stop);
            break;
        }
    }
    match stopped {
        None => {
            if let Some(t) = &transaction {
                r.store.replaying(t, false);
            }
            if !done.conflicts.is_empty() {
                // Kept if this process dies after the origin commits (the next
                // attempt then only finds the claim, not the conflicts).
                let (id, conflicts, t_id) = (entry.id, done.conflicts.clone(), transaction.clone());
                off(outbox, move |o| {
                    o.tentative(id, &conflicts, t_id.as_deref())
                })
                .await?;
            }
            crate::crash::point("replay_after_writes");
            Ok(Replay::Ready(
                t,
                finished(entry, Outcome::Applied, transaction, done.settle, vec![]),
            ))
        }
        Some(Stop::Retry(e)) => {
            let _ = t.rollback().await;
            Err(e)
        }
        Some(Stop::Reject(conflict)) => {
            t.rollback().await?;
            let settle = origin_rows(r, entry).await?;
            tracing::info!(entry = entry.id, kind = %conflict.kind, "entry set aside (conflict: reject)");
            Ok(Replay::Ended(finished(
                entry,
                Outcome::Rejected,
                None,
                settle,
                vec![*conflict],
            )))
        }
        Some(Stop::Refused(e)) => {
            let _ = t.rollback().await;
            let settle = origin_rows(r, entry).await?;
            tracing::warn!(entry = entry.id, error = %e, "the origin refused a queued entry; it is set aside");
            let dataset = entry
                .ops
                .first()
                .map(|o| o.dataset.clone())
                .unwrap_or_default();
            let policy = r
                .datasets
                .get(&dataset)
                .and_then(|d| d.mode.sync())
                .map(|s| s.conflict.as_str())
                .unwrap_or_default()
                .to_string();
            let record = ConflictRecord {
                entry: entry.id,
                dataset,
                kind: "origin_refused".into(),
                policy,
                outcome: "set_aside".into(),
                sqlstate: Some(e.sqlstate().code().to_string()),
                message: Some(e.to_string()),
                ..Default::default()
            };
            Ok(Replay::Ended(finished(
                entry,
                Outcome::Refused,
                None,
                settle,
                vec![record],
            )))
        }
    }
}

/// What an entry's replay did so far.
#[derive(Default)]
struct Replayed {
    conflicts: Vec<ConflictRecord>,
    settle: Vec<Settle>,
}

/// The key columns of `op`'s dataset (as its copy names them) in `schema`.
fn key_columns(r: &Replayer, op: &QueuedOp, schema: &SchemaRef) -> Result<Vec<usize>, Stop> {
    let cached = r
        .keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&op.dataset)
        .cloned();
    let names = match cached {
        Some(k) => k,
        None => {
            let info = r.store.copy_info(&op.dataset)?.ok_or_else(|| {
                Stop::Retry(ConnectorError::NotMaterialized {
                    dataset: op.dataset.clone(),
                    why: "its local copy is being taken again".into(),
                })
            })?;
            r.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(op.dataset.clone(), info.key.clone());
            info.key
        }
    };
    Ok(names
        .iter()
        .filter_map(|k| schema.index_of(k).ok())
        .collect())
}

fn value(batch: &RecordBatch, column: usize, row: usize) -> Result<ScalarValue, Stop> {
    ScalarValue::try_from_array(batch.column(column), row)
        .map_err(|e| Stop::Refused(ConnectorError::DataFusion(e)))
}

fn column(batch: &RecordBatch, i: usize) -> Expr {
    Expr::Column(Column::new_unqualified(batch.schema().field(i).name()))
}

/// `key = values of row`.
fn key_filter(batch: &RecordBatch, key: &[usize], row: usize) -> Result<Expr, Stop> {
    let mut out: Option<Expr> = None;
    for &k in key {
        let e = column(batch, k).eq(lit(value(batch, k, row)?));
        out = Some(match out {
            None => e,
            Some(o) => o.and(e),
        });
    }
    out.ok_or_else(|| {
        Stop::Refused(ConnectorError::NotWritable {
            origin: String::new(),
            dataset: String::new(),
            why: "a queued change has no key".into(),
        })
    })
}

/// The row is as it was when the local copy was changed: its `version_column`,
/// or every column whose values the origin can compare.
fn unchanged_since(
    batch: &RecordBatch,
    row: usize,
    version: Option<&str>,
) -> Result<Option<Expr>, Stop> {
    let schema = batch.schema();
    let columns: Vec<usize> = match version {
        Some(v) => schema.index_of(v).into_iter().collect(),
        None => (0..schema.fields().len())
            .filter(|&i| comparable(schema.field(i)))
            .collect(),
    };
    let mut out: Option<Expr> = None;
    for i in columns {
        let e = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(column(batch, i)),
            Operator::IsNotDistinctFrom,
            Box::new(lit(value(batch, i, row)?)),
        ));
        out = Some(match out {
            None => e,
            Some(o) => o.and(e),
        });
    }
    Ok(out)
}

/// Whether the column takes part in the before-image: the origin has `=` for its
/// type (json, xml and geometric types have none) and its values are plain
/// literals (arrays, composites and intervals are left out).
fn comparable(field: &datafusion::arrow::datatypes::Field) -> bool {
    use datafusion::arrow::datatypes::DataType::*;
    let pg = field
        .metadata()
        .get(switchyard_connectors::columns::PG_TYPE_KEY)
        .map(String::as_str)
        .unwrap_or("");
    let plain = matches!(
        field.data_type(),
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Decimal128(_, _)
            | Decimal256(_, _)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Date32
            | Date64
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
    );
    plain
        && !matches!(
            pg,
            "json" | "xml" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle"
        )
}

fn and(a: Expr, b: Option<Expr>) -> Expr {
    match b {
        Some(b) => a.and(b),
        None => a,
    }
}

fn one_row(batch: &RecordBatch, row: usize) -> RecordBatch {
    batch.slice(row, 1)
}

fn key_batch(batch: &RecordBatch, key: &[usize], row: usize) -> Result<RecordBatch, Stop> {
    batch
        .slice(row, 1)
        .project(key)
        .map_err(|e| Stop::Refused(ConnectorError::DataFusion(e.into())))
}

struct Ctx<'a> {
    entry: &'a Entry,
    dataset: &'a Dataset,
    policy: ConflictPolicy,
    version: Option<&'a str>,
    schema: SchemaRef,
    key: Vec<usize>,
}

impl Ctx<'_> {
    fn record(
        &self,
        kind: &str,
        outcome: &str,
        key: String,
        local: Option<String>,
        origin: Option<String>,
    ) -> ConflictRecord {
        ConflictRecord {
            entry: self.entry.id,
            dataset: self.dataset.qualified_name(),
            kind: kind.into(),
            policy: self.policy.as_str().into(),
            outcome: outcome.into(),
            key: Some(key),
            local_row: local,
            origin_row: origin,
            ..Default::default()
        }
    }

    fn request<'b>(&'b self, write: &'b Write, returning: bool) -> WriteRequest<'b> {
        WriteRequest {
            dataset: self.dataset,
            schema: &self.schema,
            write,
            returning,
            check: None,
        }
    }

    /// Whether the local version wins by `version_column` (strictly newer).
    fn local_newer(&self, local: &RecordBatch, origin: &RecordBatch) -> Result<bool, Stop> {
        let Some(v) = self.version else {
            return Ok(false);
        };
        let (Ok(l), Ok(o)) = (local.schema().index_of(v), origin.schema().index_of(v)) else {
            return Ok(false);
        };
        let (l, o) = (value(local, l, 0)?, value(origin, o, 0)?);
        Ok(
            matches!(l.partial_cmp(&o), Some(std::cmp::Ordering::Greater))
                || (o.is_null() && !l.is_null()),
        )
    }
}

/// The origin's row of `filter`, locked.
async fn origin_row(
    t: &mut dyn WriteTransaction,
    cx: &Ctx<'_>,
    filter: &Expr,
) -> Result<Option<RecordBatch>, Stop> {
    let rows = t.lock_rows(cx.dataset, &cx.schema, filter).await?;
    Ok(rows
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.slice(0, 1)))
}

/// Settles the local copy's row of `key` to `row`.
fn settle(done: &mut Replayed, cx: &Ctx<'_>, key: RecordBatch, row: Option<RecordBatch>) {
    done.settle.push(Settle {
        dataset: cx.dataset.qualified_name(),
        key,
        row,
    });
}

fn returned_row(w: switchyard_connectors::write::Written) -> Option<RecordBatch> {
    w.returned
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.slice(0, 1))
}

async fn replay_op(
    t: &mut dyn WriteTransaction,
    r: &Replayer,
    entry: &Entry,
    dataset: &Dataset,
    op: &QueuedOp,
    done: &mut Replayed,
) -> Result<(), Stop> {
    let sync = dataset.mode.sync().cloned().ok_or_else(|| {
        Stop::Refused(ConnectorError::NotWritable {
            origin: dataset.origin.clone(),
            dataset: dataset.qualified_name(),
            why: "the dataset is no longer mode: sync".into(),
        })
    })?;
    let rows = op.new.as_ref().or(op.old.as_ref()).expect("an op has rows");
    let schema = rows.schema();
    let key = key_columns(r, op, &schema)?;
    let cx = Ctx {
        entry,
        dataset,
        policy: sync.conflict,
        version: sync.version_column.as_deref(),
        schema: Arc::clone(&schema),
        key,
    };
    match op.kind {
        OpKind::Insert => replay_insert(t, &cx, op, done).await,
        OpKind::Update => replay_update(t, &cx, op, done).await,
        OpKind::Delete => replay_delete(t, &cx, op, done).await,
    }
}

async fn replay_insert(
    t: &mut dyn WriteTransaction,
    cx: &Ctx<'_>,
    op: &QueuedOp,
    done: &mut Replayed,
) -> Result<(), Stop> {
    let new = op.new.as_ref().expect("an insert has new rows");
    let given: Vec<usize> = op
        .columns
        .iter()
        .filter_map(|c| new.schema().index_of(c).ok())
        .collect();
    let key_names: Vec<String> = cx
        .key
        .iter()
        .map(|&k| new.schema().field(k).name().clone())
        .collect();
    let rows = new
        .project(&given)
        .map_err(|e| Stop::Refused(ConnectorError::DataFusion(e.into())))?;
    let write = Write::Insert {
        rows,
        on_conflict: Some(OnConflict {
            target: ConflictTarget::Columns(key_names),
            action: ConflictAction::DoNothing,
        }),
    };
    let written = t.write(cx.request(&write, true)).await?;
    // Rows the origin took, by key; the others met a row with their key.
    let mut inserted = std::collections::HashMap::new();
    for b in &written.returned {
        let idx: Vec<usize> = cx
            .key
            .iter()
            .filter_map(|&k| b.schema().index_of(new.schema().field(k).name()).ok())
            .collect();
        for row in 0..b.num_rows() {
            inserted.insert(key_text(b, &idx, row)?, one_row(b, row));
        }
    }
    for row in 0..new.num_rows() {
        let text = key_text(new, &cx.key, row)?;
        let key = key_batch(new, &cx.key, row)?;
        if let Some(origin) = inserted.remove(&text) {
            settle(done, cx, key, Some(origin));
            continue;
        }
        let filter = key_filter(new, &cx.key, row)?;
        let local = one_row(new, row);
        let origin = origin_row(t, cx, &filter).await?;
        let Some(origin) = origin else {
            // Gone again between the insert and the look: the insert is retried.
            return Err(Stop::Retry(ConnectorError::ConnectionLost {
                origin: cx.dataset.origin.clone(),
                message: "a conflicting row vanished during the replay".into(),
            }));
        };
        let local_json = Some(row_json(&local, 0)?);
        let origin_json = Some(row_json(&origin, 0)?);
        let local_wins = match cx.policy {
            ConflictPolicy::OriginWins => false,
            ConflictPolicy::LocalWins => true,
            ConflictPolicy::LastWriteWins => cx.local_newer(&local, &origin)?,
            ConflictPolicy::Reject => {
                return Err(Stop::Reject(Box::new(cx.record(
                    "insert_exists",
                    "set_aside",
                    text,
                    local_json,
                    origin_json,
                ))))
            }
        };
        if local_wins {
            let assignments = given
                .iter()
                .filter(|i| !cx.key.contains(i))
                .map(|&i| {
                    Ok((
                        new.schema().field(i).name().clone(),
                        lit(value(new, i, row)?),
                    ))
                })
                .collect::<Result<Vec<_>, Stop>>()?;
            let row_now = if assignments.is_empty() {
                Some(origin.clone())
            } else {
                let write = Write::Update {
                    assignments,
                    filter: Some(filter),
                };
                returned_row(t.write(cx.request(&write, true)).await?)
            };
            settle(done, cx, key, row_now);
            done.conflicts.push(cx.record(
                "insert_exists",
                "local_applied",
                text,
                local_json,
                origin_json,
            ));
        } else {
            settle(done, cx, key, Some(origin));
            done.conflicts.push(cx.record(
                "insert_exists",
                "origin_kept",
                text,
                local_json,
                origin_json,
            ));
        }
    }
    Ok(())
}

async fn replay_update(
    t: &mut dyn WriteTransaction,
    cx: &Ctx<'_>,
    op: &QueuedOp,
    done: &mut Replayed,
) -> Result<(), Stop> {
    let old = op.old.as_ref().expect("an update has old rows");
    let new = op.new.as_ref().expect("an update has new rows");
    for row in 0..new.num_rows() {
        let mut assignments = Vec::new();
        for i in 0..new.num_columns() {
            let (b, a) = (value(old, i, row)?, value(new, i, row)?);
            if b != a {
                assignments.push((new.schema().field(i).name().clone(), lit(a)));
            }
        }
        if assignments.is_empty() {
            continue;
        }
        let by_key = key_filter(old, &cx.key, row)?;
        let old_key = key_batch(old, &cx.key, row)?;
        let new_key = key_batch(new, &cx.key, row)?;
        let key_changed = key_text(old, &cx.key, row)? != key_text(new, &cx.key, row)?;
        let guarded = and(by_key.clone(), unchanged_since(old, row, cx.version)?);
        let write = Write::Update {
            assignments: assignments.clone(),
            filter: Some(guarded),
        };
        let written = t.write(cx.request(&write, true)).await?;
        if written.rows > 0 {
            if key_changed {
                settle(done, cx, old_key, None);
            }
            settle(done, cx, new_key, returned_row(written));
            continue;
        }
        let origin = origin_row(t, cx, &by_key).await?;
        let text = key_text(old, &cx.key, row)?;
        let local = one_row(new, row);
        let local_json = Some(row_json(&local, 0)?);
        let origin_json = origin.as_ref().map(|o| row_json(o, 0)).transpose()?;
        let kind = if origin.is_some() {
            "update_origin_differs"
        } else {
            "update_missing"
        };
        let local_wins = match (cx.policy, &origin) {
            (ConflictPolicy::Reject, _) => {
                return Err(Stop::Reject(Box::new(cx.record(
                    kind,
                    "set_aside",
                    text,
                    local_json,
                    origin_json,
                ))))
            }
            (ConflictPolicy::OriginWins, _) => false,
            (ConflictPolicy::LocalWins, _) => true,
            // A deleted row has no version to compare: the delete stands.
            (ConflictPolicy::LastWriteWins, None) => false,
            (ConflictPolicy::LastWriteWins, Some(o)) => cx.local_newer(&local, o)?,
        };
        if local_wins {
            let row_now = match &origin {
                Some(_) => {
                    let write = Write::Update {
                        assignments,
                        filter: Some(by_key),
                    };
                    returned_row(t.write(cx.request(&write, true)).await?)
                }
                None => {
                    let write = Write::Insert {
                        rows: local.clone(),
                        on_conflict: None,
                    };
                    returned_row(t.write(cx.request(&write, true)).await?)
                }
            };
            if key_changed {
                settle(done, cx, old_key, None);
            }
            settle(done, cx, new_key, row_now);
        } else {
            if key_changed {
                settle(done, cx, new_key, None);
            }
            settle(done, cx, old_key, origin);
        }
        done.conflicts.push(cx.record(
            kind,
            if local_wins {
                "local_applied"
            } else {
                "origin_kept"
            },
            text,
            local_json,
            origin_json,
        ));
    }
    Ok(())
}

async fn replay_delete(
    t: &mut dyn WriteTransaction,
    cx: &Ctx<'_>,
    op: &QueuedOp,
    done: &mut Replayed,
) -> Result<(), Stop> {
    let old = op.old.as_ref().expect("a delete has old rows");
    for row in 0..old.num_rows() {
        let by_key = key_filter(old, &cx.key, row)?;
        let guarded = and(by_key.clone(), unchanged_since(old, row, cx.version)?);
        let write = Write::Delete {
            filter: Some(guarded),
        };
        if t.write(cx.request(&write, false)).await?.rows > 0 {
            continue;
        }
        let origin = origin_row(t, cx, &by_key).await?;
        let text = key_text(old, &cx.key, row)?;
        let local = one_row(old, row);
        let local_json = Some(row_json(&local, 0)?);
        let key = key_batch(old, &cx.key, row)?;
        let Some(origin) = origin else {
            // Deleted at both ends: the same outcome under every policy.
            done.conflicts.push(cx.record(
                "delete_missing",
                "nothing_to_do",
                text,
                local_json,
                None,
            ));
            continue;
        };
        let origin_json = Some(row_json(&origin, 0)?);
        let local_wins = match cx.policy {
            ConflictPolicy::Reject => {
                return Err(Stop::Reject(Box::new(cx.record(
                    "delete_origin_differs",
                    "set_aside",
                    text,
                    local_json,
                    origin_json,
                ))))
            }
            ConflictPolicy::OriginWins => false,
            ConflictPolicy::LocalWins => true,
            // The origin's row changed after the copy's: it is the later write.
            ConflictPolicy::LastWriteWins => false,
        };
        if local_wins {
            let write = Write::Delete {
                filter: Some(by_key),
            };
            t.write(cx.request(&write, false)).await?;
            settle(done, cx, key, None);
        } else {
            settle(done, cx, key, Some(origin));
        }
        done.conflicts.push(cx.record(
            "delete_origin_differs",
            if local_wins {
                "local_applied"
            } else {
                "origin_kept"
            },
            text,
            local_json,
            origin_json,
        ));
    }
    Ok(())
}

/// The origin's rows of every key `entry` touched (read in a transaction of
/// their own), to settle the local copy with when the entry did not go through.
async fn origin_rows(r: &Replayer, entry: &Entry) -> Result<Vec<Settle>, ConnectorError> {
    let mut t = r.writes.begin().await?;
    let mut out = Vec::new();
    let result = async {
        for op in &entry.ops {
            let Some(dataset) = r.datasets.get(&op.dataset) else {
                continue;
            };
            for batch in op.old.iter().chain(op.new.iter()) {
                let schema = batch.schema();
                let key = key_columns(r, op, &schema).map_err(stop_error)?;
                for row in 0..batch.num_rows() {
                    let filter = key_filter(batch, &key, row).map_err(stop_error)?;
                    let found = t.lock_rows(dataset, &schema, &filter).await?;
                    out.push(Settle {
                        dataset: op.dataset.clone(),
                        key: key_batch(batch, &key, row).map_err(stop_error)?,
                        row: found
                            .into_iter()
                            .find(|b| b.num_rows() > 0)
                            .map(|b| b.slice(0, 1)),
                    });
                }
            }
        }
        Ok::<_, ConnectorError>(())
    }
    .await;
    let _ = t.rollback().await;
    result.map(|()| out)
}

fn stop_error(s: Stop) -> ConnectorError {
    match s {
        Stop::Refused(e) | Stop::Retry(e) => e,
        Stop::Reject(c) => ConnectorError::NotWritable {
            origin: String::new(),
            dataset: c.dataset,
            why: c.kind,
        },
    }
}

impl From<Stop> for ConnectorError {
    fn from(s: Stop) -> Self {
        stop_error(s)
    }
}

/// The datasets of `datasets` that are sync datasets of `origin`.
pub(crate) fn of_origin<'a>(
    datasets: impl Iterator<Item = &'a Dataset>,
    origin: &str,
) -> BTreeMap<String, Dataset> {
    datasets
        .filter(|d| d.origin == origin && d.mode.sync().is_some())
        .map(|d| (d.qualified_name(), d.clone()))
        .collect()
}
