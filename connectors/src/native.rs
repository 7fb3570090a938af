//! Native queries in an origin's own language (the step graphs' MQL steps): the
//! dataset's own definition first, then the filter Switchyard decided (row filters,
//! a link's values) in the origin's terms, then the caller's checked stages.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::logical_expr::Expr;
use switchyard_config::Dataset;

use crate::Result;

/// An origin that runs native aggregation pipelines.
#[async_trait]
pub trait NativeQueries: Send + Sync + std::fmt::Debug {
    /// Runs `stages` (an aggregation pipeline, Extended JSON) over `dataset` once
    /// per filter in `filters` (none: once, unfiltered), each filter — a predicate
    /// over the dataset's columns — put before the stages. The documents of every
    /// run are read into batches of one schema inferred from them all.
    async fn aggregate(
        &self,
        dataset: &Dataset,
        filters: Vec<Option<Expr>>,
        stages: Vec<serde_json::Value>,
    ) -> Result<Vec<RecordBatch>>;
}

/// A shared handle on an origin's native queries.
pub type SharedNative = Arc<dyn NativeQueries>;
