//! One dataset's replication stream as feed events: pgoutput messages of its
//! table are gathered per origin transaction, decoded into Arrow rows of the
//! copy's schema, filtered by the dataset's `filters:`, and handed out in batches
//! between [`FeedEvent::Begin`] and [`FeedEvent::Commit`].
//!
//! A transaction whose commit lies before the position the stream started from
//! (sent again after a restart) is skipped, so nothing is applied twice; a
//! transaction without changes to the table only moves the position.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationEvent};
use switchyard_config::FilterValue;
use switchyard_sqlstate::SqlState;
use tokio_postgres::types::Type;

use super::pgoutput::{self, Cell, Message, Relation, Tuple};
use crate::changes::{Change, ChangeBatch, ChangeStream, FeedEvent, Position};
use crate::postgres::rows::{self, RawRows};
use crate::postgres::types::{arrow_type, field};
use crate::postgres::PgPool;
use crate::{ConnectorError, Result};

/// Changes gathered before a batch is handed out (large transactions stream in
/// batches of this many rows).
const BATCH_CHANGES: usize = 4096;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A change as received, before decoding.
enum Pending {
    Insert(Tuple),
    Update(Option<Tuple>, Tuple),
    Delete(Tuple),
    Truncate,
}

/// The table's relation as the stream describes it, against the copy's columns.
struct Mapping {
    /// For each copy column, its index in the relation's tuples.
    at: Vec<usize>,
    /// For each copy column, its PostgreSQL type.
    types: Vec<Type>,
}

/// The replication stream of one live dataset.
pub struct PgStream {
    client: ReplicationClient,
    started: bool,
    pool: Arc<PgPool>,
    dataset: String,
    /// `"schema"."table"` at the origin, and its OID.
    table: String,
    relid: u32,
    schema: SchemaRef,
    /// Copy columns of the filters, with their values in the column's type.
    filters: Vec<(usize, ScalarValue)>,
    mapping: Option<Mapping>,
    /// Where the stream stands: the end of the last transaction seen.
    position: Lsn,
    /// The open transaction: skipped (sent again), and whether its Begin went out.
    in_transaction: bool,
    /// When `next` last returned an event.
    returned: std::time::Instant,
    skipping: bool,
    begun: bool,
    committed_at: DateTime<Utc>,
    /// The open transaction's xid.
    xid: u32,
    pending: Vec<Pending>,
    out: VecDeque<FeedEvent>,
}

impl std::fmt::Debug for PgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStream")
            .field("dataset", &self.dataset)
            .field("position", &self.position.to_string())
            .finish()
    }
}

/// A replication error as a connector error: the origin's SQLSTATE when it sent
/// one, unreachable when the connection failed.
pub(crate) fn replication_error(origin: &str, e: PgWireError) -> ConnectorError {
    match e {
        PgWireError::Server(message) => {
            let code = message
                .rsplit_once("(SQLSTATE ")
                .and_then(|(_, c)| SqlState::parse(c.trim_end_matches(')')))
                .unwrap_or(SqlState::INTERNAL_ERROR);
            let message = message
                .rsplit_once(" (SQLSTATE ")
                .map(|(m, _)| m.to_string())
                .unwrap_or(message);
            ConnectorError::Origin {
                origin: origin.to_string(),
                code,
                message,
            }
        }
        PgWireError::Auth(message) => ConnectorError::Origin {
            origin: origin.to_string(),
            code: SqlState::INVALID_AUTHORIZATION,
            message,
        },
        PgWireError::Io(e) => ConnectorError::Unreachable {
            origin: origin.to_string(),
            message: format!("replication connection: {e}"),
        },
        other => ConnectorError::ConnectionLost {
            origin: origin.to_string(),
            message: format!("replication stream: {other}"),
        },
    }
}

fn filter_value(v: &FilterValue) -> ScalarValue {
    match v {
        FilterValue::Bool(b) => ScalarValue::Boolean(Some(*b)),
        FilterValue::Int(i) => ScalarValue::Int64(Some(*i)),
        FilterValue::Float(f) => ScalarValue::Float64(Some(*f)),
        FilterValue::Text(t) => ScalarValue::Utf8(Some(t.clone())),
    }
}

impl PgStream {
    /// A stream over `client` (a gated session, started at the first event) for
    /// `dataset`, whose copy has `schema` and `key`, standing at `position`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: ReplicationClient,
        pool: Arc<PgPool>,
        dataset: String,
        table: String,
        relid: u32,
        schema: SchemaRef,
        key: &[String],
        filters: &[(String, FilterValue)],
        position: Lsn,
    ) -> Result<Self> {
        let column = |name: &str| -> Result<usize> {
            schema
                .index_of(name)
                .map_err(|_| ConnectorError::Resnapshot {
                    dataset: dataset.clone(),
                    why: format!("column {name} is not in the copy"),
                })
        };
        for k in key {
            column(k)?;
        }
        let mut typed = Vec::new();
        for (name, value) in filters {
            let at = column(name)?;
            let literal = filter_value(value)
                .cast_to(schema.field(at).data_type())
                .map_err(|e| ConnectorError::NotLive {
                    origin: pool.origin().to_string(),
                    code: SqlState::DATATYPE_MISMATCH,
                    message: format!("filter {name} = {value:?} on the stream: {e}"),
                    fix: "give the filter a value of the column's type".into(),
                })?;
            typed.push((at, literal));
        }
        Ok(PgStream {
            client,
            started: false,
            pool,
            dataset,
            table,
            relid,
            schema,
            filters: typed,
            mapping: None,
            position,
            in_transaction: false,
            returned: std::time::Instant::now(),
            skipping: false,
            begun: false,
            committed_at: Utc::now(),
            xid: 0,
            pending: Vec::new(),
            out: VecDeque::new(),
        })
    }

    fn origin(&self) -> &str {
        self.pool.origin()
    }

    fn resnapshot(&self, why: String) -> ConnectorError {
        ConnectorError::Resnapshot {
            dataset: self.dataset.clone(),
            why,
        }
    }

    async fn start(&mut self) -> Result<()> {
        let origin = self.origin().to_string();
        self.client
            .start()
            .await
            .map_err(|e| replication_error(&origin, e))?;
        match self.client.wait_started().await {
            Ok(()) => {
                self.started = true;
                tracing::debug!(dataset = %self.dataset, position = %self.position, "streaming");
                Ok(())
            }
            Err(e) => Err(match replication_error(&origin, e) {
                // The slot is gone or can no longer stream: only a new snapshot helps.
                ConnectorError::Origin { code, message, .. }
                    if code == SqlState::UNDEFINED_OBJECT
                        || code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE =>
                {
                    self.resnapshot(message)
                }
                other => other,
            }),
        }
    }

    /// A relation message: the table's columns as of the changes that follow.
    async fn relation(&mut self, r: Relation) -> Result<()> {
        let fields = self.schema.fields();
        if r.columns.len() < fields.len() {
            return Err(self.resnapshot(format!(
                "table {} lost columns at the origin ({} now, {} in the copy)",
                self.table,
                r.columns.len(),
                fields.len()
            )));
        }
        let mut types = Vec::with_capacity(r.columns.len());
        for c in &r.columns {
            let t = Type::from_oid(c.type_oid);
            let dt = t.as_ref().and_then(|t| arrow_type(t, c.type_modifier));
            match (t, dt) {
                (Some(t), Some(dt)) => types.push((t, dt)),
                _ => {
                    return Err(self.resnapshot(format!(
                        "column {} of {} has a type (oid {}) the copy cannot hold",
                        c.name, self.table, c.type_oid
                    )))
                }
            }
        }
        for (i, f) in fields.iter().enumerate() {
            let c = &r.columns[i];
            if c.name != *f.name() || types[i].1 != *f.data_type() {
                return Err(self.resnapshot(format!(
                    "column {} of {} changed at the origin (now {} {})",
                    f.name(),
                    self.table,
                    c.name,
                    types[i].0.name()
                )));
            }
        }
        if r.columns.len() > fields.len() {
            // An added column is followed when the rows already there are NULL in
            // it (no default): the stream sends no change for them.
            let defaults = self
                .pool
                .query(
                    "SELECT attname::text, atthasdef OR atthasmissing FROM pg_attribute
                      WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                    &self.table,
                )
                .await?;
            let mut added: Vec<FieldRef> = Vec::new();
            for (i, c) in r.columns.iter().enumerate().skip(fields.len()) {
                let has_default = defaults
                    .iter()
                    .find(|row| row.get::<_, String>(0) == c.name)
                    .map(|row| row.get::<_, bool>(1));
                if has_default != Some(false) {
                    return Err(self.resnapshot(format!(
                        "column {} was added to {} with a default, which the rows already copied do not have",
                        c.name, self.table
                    )));
                }
                let (t, dt) = &types[i];
                added.push(Arc::new(field(&c.name, t, c.type_modifier, dt.clone())));
            }
            tracing::info!(dataset = %self.dataset, columns = ?added.iter().map(|f| f.name()).collect::<Vec<_>>(), "following added columns");
            let mut all: Vec<FieldRef> = fields.iter().cloned().collect();
            all.extend(added.iter().cloned());
            self.flush()?;
            self.schema = Arc::new(Schema::new_with_metadata(
                all,
                self.schema.metadata().clone(),
            ));
            self.out.push_back(FeedEvent::AddColumns(added));
        }
        self.mapping = Some(Mapping {
            at: (0..self.schema.fields().len()).collect(),
            types: types
                .into_iter()
                .take(self.schema.fields().len())
                .map(|(t, _)| t)
                .collect(),
        });
        Ok(())
    }

    fn ours(&self, relation: u32) -> Result<bool> {
        if relation != self.relid {
            return Ok(false);
        }
        match &self.mapping {
            Some(_) => Ok(true),
            None => Err(ConnectorError::Origin {
                origin: self.origin().to_string(),
                code: SqlState::PROTOCOL_VIOLATION,
                message: format!("a change of {} came before its description", self.table),
            }),
        }
    }

    async fn message(&mut self, data: bytes::Bytes) -> Result<()> {
        let message = pgoutput::decode(data).map_err(|e| ConnectorError::Origin {
            origin: self.origin().to_string(),
            code: SqlState::PROTOCOL_VIOLATION,
            message: e.to_string(),
        })?;
        let change = match message {
            Message::Relation(r) => {
                if r.id == self.relid {
                    self.relation(r).await?;
                }
                return Ok(());
            }
            Message::Insert { relation, new } if self.ours(relation)? => Pending::Insert(new),
            Message::Update { relation, old, new } if self.ours(relation)? => {
                Pending::Update(old, new)
            }
            Message::Delete { relation, old } if self.ours(relation)? => Pending::Delete(old),
            Message::Truncate { relations } if relations.contains(&self.relid) => Pending::Truncate,
            _ => return Ok(()),
        };
        if !self.begun {
            self.begun = true;
            self.out.push_back(FeedEvent::Begin {
                transaction: Some(self.xid.to_string()),
            });
        }
        self.pending.push(change);
        if self.pending.len() >= BATCH_CHANGES {
            self.flush()?;
        }
        Ok(())
    }

    /// Decodes the pending changes into a batch.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mapping = self.mapping.as_ref().expect("changes follow a relation");
        let mut tuples: Vec<&Tuple> = Vec::new();
        let mut changes = Vec::new();
        let unchanged = |t: &Tuple| -> Vec<usize> {
            mapping
                .at
                .iter()
                .enumerate()
                .filter(|(_, &at)| matches!(t.get(at), Some(Cell::Unchanged)))
                .map(|(i, _)| i)
                .collect()
        };
        for p in &self.pending {
            match p {
                Pending::Insert(new) => {
                    tuples.push(new);
                    changes.push(Change::Insert {
                        row: tuples.len() - 1,
                    });
                }
                Pending::Update(old, new) => {
                    let old = old.as_ref().map(|o| {
                        tuples.push(o);
                        tuples.len() - 1
                    });
                    tuples.push(new);
                    changes.push(Change::Update {
                        old,
                        new: tuples.len() - 1,
                        unchanged: unchanged(new),
                        upsert: false,
                    });
                }
                Pending::Delete(old) => {
                    tuples.push(old);
                    changes.push(Change::Delete {
                        old: tuples.len() - 1,
                    });
                }
                Pending::Truncate => changes.push(Change::Truncate),
            }
        }
        let raw = Tuples {
            tuples: &tuples,
            names: mapping
                .at
                .iter()
                .map(|&i| self.schema.field(i).name().as_str())
                .collect(),
        };
        let columns = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let array = rows::column(&raw, mapping.at[i], &mapping.types[i], f.data_type())?;
                crate::columns::as_planned(array, f.data_type())
            })
            .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
        let rows = if tuples.is_empty() {
            RecordBatch::new_empty(Arc::clone(&self.schema))
        } else {
            RecordBatch::try_new(Arc::clone(&self.schema), columns)
                .map_err(datafusion::error::DataFusionError::from)?
        };
        let changes = if self.filters.is_empty() {
            changes
        } else {
            self.filtered(&rows, changes)?
        };
        self.pending.clear();
        self.out
            .push_back(FeedEvent::Changes(ChangeBatch { rows, changes }));
        Ok(())
    }

    /// The changes as the filtered dataset sees them: an insert outside the
    /// filter is no change; an update into it inserts, out of it deletes.
    fn filtered(&self, rows: &RecordBatch, changes: Vec<Change>) -> Result<Vec<Change>> {
        let matches = |row: usize| -> Result<bool> {
            for (at, literal) in &self.filters {
                let v = ScalarValue::try_from_array(rows.column(*at), row)?;
                if v.is_null() || v != *literal {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Insert { row } => {
                    if matches(row)? {
                        out.push(c);
                    }
                }
                Change::Update {
                    old,
                    new,
                    unchanged,
                    ..
                } => {
                    if self.filters.iter().any(|(at, _)| unchanged.contains(at)) {
                        // The filter's value did not change: neither did membership.
                        out.push(Change::Update {
                            old,
                            new,
                            unchanged,
                            upsert: false,
                        });
                    } else if matches(new)? {
                        out.push(Change::Update {
                            old,
                            new,
                            unchanged,
                            upsert: true,
                        });
                    } else {
                        out.push(Change::Delete {
                            old: old.unwrap_or(new),
                        });
                    }
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }
}

/// Tuples as rows of binary cells (unchanged values read as NULL; the change
/// says which they are).
struct Tuples<'a> {
    tuples: &'a [&'a Tuple],
    names: Vec<&'a str>,
}

impl RawRows for Tuples<'_> {
    fn row_count(&self) -> usize {
        self.tuples.len()
    }

    fn cell(&self, row: usize, col: usize) -> datafusion::error::Result<Option<&[u8]>> {
        Ok(match self.tuples[row].get(col) {
            Some(Cell::Value(b)) => Some(b.as_ref()),
            _ => None,
        })
    }

    fn column_name(&self, col: usize) -> &str {
        self.names.get(col).copied().unwrap_or("?")
    }
}

fn timestamp(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros + PG_EPOCH_MICROS).unwrap_or_else(Utc::now)
}

/// How long a quiet stream waits before it reports its position again.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

#[async_trait]
impl ChangeStream for PgStream {
    async fn next(&mut self) -> Result<FeedEvent> {
        loop {
            if let Some(event) = self.out.pop_front() {
                self.returned = std::time::Instant::now();
                return Ok(event);
            }
            if !self.started {
                self.start().await?;
            }
            let origin = self.origin().to_string();
            // A quiet stream still says where it is now and then, so that what
            // became durable meanwhile is acknowledged (a shutting-down origin
            // waits for that). `recv` is cancel-safe.
            let Ok(received) = tokio::time::timeout(IDLE_TICK, self.client.recv()).await else {
                if !self.in_transaction {
                    self.out.push_back(FeedEvent::Idle {
                        position: self.position.to_string(),
                    });
                }
                continue;
            };
            let event = received
                .map_err(|e| replication_error(&origin, e))?
                .ok_or_else(|| ConnectorError::ConnectionLost {
                    origin: origin.clone(),
                    message: "the replication stream ended".into(),
                })?;
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    commit_time_micros,
                    xid,
                } => {
                    self.xid = xid;
                    // Sent again after a restart: applied already.
                    self.skipping = final_lsn < self.position;
                    self.in_transaction = true;
                    self.begun = false;
                    self.committed_at = timestamp(commit_time_micros);
                }
                ReplicationEvent::XLogData { data, .. } => {
                    if !self.skipping {
                        self.message(data).await?;
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    self.in_transaction = false;
                    if std::mem::take(&mut self.skipping) {
                        continue;
                    }
                    self.flush()?;
                    self.position = self.position.max(end_lsn);
                    if std::mem::take(&mut self.begun) {
                        self.out.push_back(FeedEvent::Commit {
                            position: end_lsn.to_string(),
                            committed_at: self.committed_at,
                        });
                    } else {
                        self.out.push_back(FeedEvent::Idle {
                            position: self.position.to_string(),
                        });
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    // Also when the position stays: a stopping origin pings
                    // without pause until what it sent is acknowledged, and the
                    // acknowledgement needs `next` to return now and then.
                    if !self.in_transaction
                        && (wal_end > self.position || self.returned.elapsed() >= IDLE_TICK)
                    {
                        self.position = self.position.max(wal_end);
                        self.out.push_back(FeedEvent::Idle {
                            position: self.position.to_string(),
                        });
                    }
                }
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::StoppedAt { .. } => {
                    return Err(ConnectorError::ConnectionLost {
                        origin,
                        message: "the replication stream stopped".into(),
                    })
                }
            }
        }
    }

    fn durable(&mut self, position: &Position) {
        if let Ok(lsn) = Lsn::parse(position) {
            self.client.update_applied_lsn(lsn);
        }
    }
}
