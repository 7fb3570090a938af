//! The merge: each step's result registered under its step id in a DataFusion
//! context of its own (no origin, no dataset is reachable from it), and the
//! read-only merge statement run there.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Result, StepError};

/// One step's result as the merge sees it.
pub struct Input {
    /// The step id (the table's name).
    pub name: String,
    /// Its columns.
    pub schema: SchemaRef,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

/// Runs `sql` over `inputs`: its columns and its rows as they come.
pub async fn run(sql: &str, inputs: Vec<Input>) -> Result<(SchemaRef, SendableRecordBatchStream)> {
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.dialect = datafusion::common::config::Dialect::PostgreSQL;
    let ctx = SessionContext::new_with_config(config);
    for input in inputs {
        let table = MemTable::try_new(input.schema, vec![input.batches])?;
        ctx.register_table(input.name.as_str(), Arc::new(table))?;
    }
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| StepError::from(e).context("merge"))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name().as_str()) {
            return Err(StepError::invalid(format!(
                "merge returns the column '{}' twice; name each column once (AS ...)",
                f.name()
            )));
        }
    }
    let batches = df
        .execute_stream()
        .await
        .map_err(|e| StepError::from(e).context("merge"))?;
    Ok((schema, batches))
}
