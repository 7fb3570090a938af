//! Switchyard's own tables, read fresh by every statement: `switchyard.datasets`
//! (one row per materialized dataset), `switchyard.sync_queue` (one row per sync
//! dataset) and `switchyard.conflicts` (every sync conflict and refusal). Who may
//! see them is decided by grants, like any table.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::Materializer;

/// The schema Switchyard's own tables appear under.
pub const STATUS_SCHEMA: &str = "switchyard";

/// The `switchyard` schema: `datasets`, `sync_queue`, `conflicts`.
#[derive(Debug)]
pub struct StatusSchema {
    tables: Vec<(&'static str, Arc<dyn TableProvider>)>,
}

impl StatusSchema {
    /// The schema over `materializer`'s datasets.
    pub fn new(materializer: &Arc<Materializer>) -> Self {
        let table = |kind: Kind| -> Arc<dyn TableProvider> {
            Arc::new(DatasetsTable {
                materializer: Arc::downgrade(materializer),
                schema: match kind {
                    Kind::Datasets => datasets_schema(),
                    Kind::SyncQueue => sync_queue_schema(),
                    Kind::Conflicts => conflicts_schema(),
                },
                kind,
            })
        };
        StatusSchema {
            tables: vec![
                ("datasets", table(Kind::Datasets)),
                ("sync_queue", table(Kind::SyncQueue)),
                ("conflicts", table(Kind::Conflicts)),
            ],
        }
    }
}

#[async_trait]
impl SchemaProvider for StatusSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|(n, _)| n.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .tables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| Arc::clone(t)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|(n, _)| *n == name)
    }
}

/// Which of the tables.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Datasets,
    SyncQueue,
    Conflicts,
}

fn sync_queue_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("conflict", DataType::Utf8, false),
        Field::new("pending", DataType::Int64, false),
        Field::new("oldest_pending", ts.clone(), true),
        Field::new("oldest_pending_age_ms", DataType::Int64, true),
        Field::new("set_aside", DataType::Int64, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("last_applied", ts, true),
    ]))
}

fn conflicts_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("entry", DataType::Int64, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("local_row", DataType::Utf8, true),
        Field::new("origin_row", DataType::Utf8, true),
        Field::new("sqlstate", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, true),
        Field::new("at", ts, false),
    ]))
}

fn parsed(t: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn ts_array(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn status_error(e: crate::MaterializeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn datasets_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("snapshot_rows", DataType::Int64, true),
        Field::new("last_refresh", ts.clone(), true),
        Field::new("next_refresh", ts, true),
        Field::new("refresh_interval", DataType::Utf8, true),
        Field::new("position", DataType::Utf8, true),
        Field::new("lag_ms", DataType::Int64, true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

/// One of the tables.
#[derive(Debug)]
struct DatasetsTable {
    materializer: Weak<Materializer>,
    schema: SchemaRef,
    kind: Kind,
}

impl DatasetsTable {
    fn batch(&self) -> Result<RecordBatch> {
        match self.kind {
            Kind::Datasets => self.datasets(),
            Kind::SyncQueue => self.sync_queue(),
            Kind::Conflicts => self.conflicts(),
        }
    }

    fn sync_queue(&self) -> Result<RecordBatch> {
        let queues = match self.materializer.upgrade() {
            Some(m) => m.sync_queues().map_err(status_error)?,
            None => Vec::new(),
        };
        let now = chrono::Utc::now();
        let text = |f: &dyn Fn(&crate::SyncQueue) -> Option<String>| -> ArrayRef {
            Arc::new(queues.iter().map(f).collect::<StringArray>())
        };
        let int = |f: &dyn Fn(&crate::SyncQueue) -> Option<i64>| -> ArrayRef {
            Arc::new(queues.iter().map(f).collect::<Int64Array>())
        };
        let columns = vec![
            text(&|q| Some(q.dataset.clone())),
            text(&|q| Some(q.origin.clone())),
            text(&|q| Some(q.conflict.to_string())),
            int(&|q| Some(q.pending as i64)),
            ts_array(
                queues
                    .iter()
                    .map(|q| parsed(q.oldest_pending.as_deref()).map(|t| t.timestamp_micros())),
            ),
            int(&|q| parsed(q.oldest_pending.as_deref()).map(|t| (now - t).num_milliseconds())),
            int(&|q| Some(q.set_aside as i64)),
            text(&|q| q.last_error.clone()),
            ts_array(
                queues
                    .iter()
                    .map(|q| parsed(q.last_applied.as_deref()).map(|t| t.timestamp_micros())),
            ),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn conflicts(&self) -> Result<RecordBatch> {
        let rows = match self.materializer.upgrade() {
            Some(m) => m.conflicts().map_err(status_error)?,
            None => Vec::new(),
        };
        type Row = switchyard_connectors::local::outbox::ConflictRecord;
        let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        let columns = vec![
            Arc::new(rows.iter().map(|r| Some(r.entry)).collect::<Int64Array>()) as ArrayRef,
            text(&|r| Some(r.dataset.clone())),
            text(&|r| Some(r.kind.clone())),
            text(&|r| Some(r.policy.clone())),
            text(&|r| Some(r.outcome.clone())),
            text(&|r| r.key.clone()),
            text(&|r| r.local_row.clone()),
            text(&|r| r.origin_row.clone()),
            text(&|r| r.sqlstate.clone()),
            text(&|r| r.message.clone()),
            ts_array(rows.iter().map(|r| {
                Some(
                    parsed(Some(&r.at))
                        .map(|t| t.timestamp_micros())
                        .unwrap_or(0),
                )
            })),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn datasets(&self) -> Result<RecordBatch> {
        let status = self
            .materializer
            .upgrade()
            .map(|m| m.status())
            .unwrap_or_default();
        let micros = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_micros());
        let parsed = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let text = |f: &dyn Fn(&crate::DatasetStatus) -> Option<String>| -> ArrayRef {
            Arc::new(status.iter().map(f).collect::<StringArray>())
        };
        let int = |f: &dyn Fn(&crate::DatasetStatus) -> Option<i64>| -> ArrayRef {
            Arc::new(status.iter().map(f).collect::<Int64Array>())
        };
        let ts = |f: &dyn Fn(&crate::DatasetStatus) -> Option<i64>| -> ArrayRef {
            Arc::new(
                status
                    .iter()
                    .map(f)
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            )
        };
        let columns = vec![
            text(&|s| Some(s.dataset.clone())),
            text(&|s| {
                Some(if s.sync {
                    "sync".into()
                } else if s.live {
                    "materialize live".into()
                } else {
                    "materialize".into()
                })
            }),
            text(&|s| Some(s.state.name().into())),
            int(&|s| s.rows.map(|n| n as i64)),
            int(&|s| s.snapshot_rows.map(|n| n as i64)),
            ts(&|s| micros(parsed(&s.last_refresh))),
            ts(&|s| micros(s.next_refresh)),
            text(&|s| s.refresh.map(|d| format!("{}s", d.as_secs()))),
            text(&|s| s.position.clone()),
            int(&|s| s.lag_ms),
            text(&|s| s.last_error.clone()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for DatasetsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        // Listed by `\dt switchyard.*` like the datasets.
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = MemTable::try_new(Arc::clone(&self.schema), vec![vec![self.batch()?]])
            .map_err(|e| DataFusionError::Context("switchyard status".into(), Box::new(e)))?;
        table.scan(state, projection, filters, limit).await
    }
}
