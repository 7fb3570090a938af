//! `switchyard.datasets`: one row per materialized dataset, read fresh by every
//! statement. Who may see it is decided by grants, like any table.

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

/// The `switchyard` schema: `datasets`.
#[derive(Debug)]
pub struct StatusSchema {
    datasets: Arc<DatasetsTable>,
}

impl StatusSchema {
    /// The schema over `materializer`'s datasets.
    pub fn new(materializer: &Arc<Materializer>) -> Self {
        StatusSchema {
            datasets: Arc::new(DatasetsTable {
                materializer: Arc::downgrade(materializer),
                schema: datasets_schema(),
            }),
        }
    }
}

#[async_trait]
impl SchemaProvider for StatusSchema {
    fn table_names(&self) -> Vec<String> {
        vec!["datasets".into()]
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok((name == "datasets").then(|| Arc::clone(&self.datasets) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == "datasets"
    }
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

/// The `datasets` table.
#[derive(Debug)]
struct DatasetsTable {
    materializer: Weak<Materializer>,
    schema: SchemaRef,
}

impl DatasetsTable {
    fn batch(&self) -> Result<RecordBatch> {
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
                Some(if s.live {
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
            .map_err(|e| DataFusionError::Context("switchyard.datasets".into(), Box::new(e)))?;
        table.scan(state, projection, filters, limit).await
    }
}
