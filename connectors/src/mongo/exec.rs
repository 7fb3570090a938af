//! `MongoExec`: runs one aggregation pipeline and streams its documents as Arrow batches.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::TryStreamExt;
use mongodb::bson::Document;

use super::decode::{self, Target};
use super::MongoCollection;

/// Runs `pipeline` on a collection; output column `i` is read from `targets[i]`.
#[derive(Debug)]
pub struct MongoExec {
    collection: Arc<MongoCollection>,
    pipeline: Vec<Document>,
    targets: Vec<Target>,
    /// For an aggregate without GROUP BY: the row SQL returns over no input
    /// (MongoDB's `$group` returns no document then).
    empty_row: Option<Vec<ScalarValue>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl MongoExec {
    /// A plan running `pipeline`.
    pub fn new(
        collection: Arc<MongoCollection>,
        pipeline: Vec<Document>,
        targets: Vec<Target>,
        empty_row: Option<Vec<ScalarValue>>,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        MongoExec {
            collection,
            pipeline,
            targets,
            empty_row,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The pipeline as relaxed Extended JSON, as EXPLAIN shows it.
    pub fn pipeline_json(&self) -> String {
        pipeline_json(&self.pipeline)
    }
}

/// Stages as one JSON array (relaxed Extended JSON).
pub fn pipeline_json(stages: &[Document]) -> String {
    let values: Vec<serde_json::Value> = stages
        .iter()
        .map(|d| mongodb::bson::Bson::Document(d.clone()).into_relaxed_extjson())
        .collect();
    serde_json::Value::Array(values).to_string()
}

impl DisplayAs for MongoExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "MongoExec: origin={} collection={}.{} pipeline={}",
            self.collection.origin,
            self.collection.database,
            self.collection.name,
            self.pipeline_json()
        )
    }
}

/// Documents fetched per batch.
const BATCH_DOCS: usize = 4096;

impl ExecutionPlan for MongoExec {
    fn name(&self) -> &str {
        "MongoExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "MongoExec has no children".into(),
            ))
        }
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let collection = Arc::clone(&self.collection);
        let pipeline = self.pipeline.clone();
        let schema = Arc::clone(&self.schema);
        let targets = self.targets.clone();
        let empty_row = self.empty_row.clone();
        let origin = collection.origin.clone();
        tracing::debug!(origin = %origin, pipeline = %pipeline_json(&pipeline), "mongodb aggregate");

        let mut builder = RecordBatchReceiverStreamBuilder::new(Arc::clone(&schema), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            let mut cursor = collection
                .handle()
                .aggregate(pipeline)
                .batch_size(BATCH_DOCS as u32)
                // Large $sort/$group spill instead of failing at the 100 MB stage limit.
                .allow_disk_use(true)
                .await
                .map_err(|e| DataFusionError::from(super::error(&origin, e)))?;
            let mut docs = Vec::with_capacity(BATCH_DOCS);
            let mut rows = 0usize;
            loop {
                let next = cursor
                    .try_next()
                    .await
                    .map_err(|e| DataFusionError::from(super::error(&origin, e)))?;
                let done = next.is_none();
                docs.extend(next);
                if docs.len() == BATCH_DOCS || (done && !docs.is_empty()) {
                    let batch = decode::batch(&origin, &docs, &schema, &targets)
                        .map_err(DataFusionError::from)?;
                    docs.clear();
                    rows += batch.num_rows();
                    baseline.record_output(batch.num_rows());
                    if tx.send(Ok(batch)).await.is_err() {
                        return Ok(()); // the consumer is gone
                    }
                }
                if done {
                    break;
                }
            }
            if rows == 0 {
                if let Some(batch) = empty_batch(&schema, empty_row)? {
                    let _ = tx.send(Ok(batch)).await;
                }
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

fn empty_batch(schema: &SchemaRef, row: Option<Vec<ScalarValue>>) -> Result<Option<RecordBatch>> {
    let Some(row) = row else { return Ok(None) };
    let columns = row
        .iter()
        .map(|v| v.to_array_of_size(1))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}
