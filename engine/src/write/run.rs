//! Runs a [`WriteNode`] at its origin: in the block's origin transaction when the
//! session is in a block, else in one of its own that commits only if the whole
//! statement succeeded (every chunk of a large insert, every row passing the check).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use switchyard_config::{Config, Dataset};
use switchyard_connectors::write::{
    ConflictAction, ConflictTarget, OnConflict, SharedWrites, Write, WriteRequest,
    WriteTransaction, Written,
};
use switchyard_connectors::Origins;
use switchyard_sqlstate::SqlState;

use super::node::{Conflict, ConflictOn, WriteKind, WriteNode};
use crate::session::Engine;
use crate::transaction::Transaction;
use crate::EngineError;

/// Where a write runs.
pub(crate) struct Scope<'a> {
    pub engine: &'a Engine,
    pub config: &'a Config,
    pub default_schema: &'a str,
    pub origins: Option<&'a Origins>,
    pub transaction: &'a Transaction,
    /// In a transaction block (else the statement is its own transaction).
    pub in_block: bool,
}

/// The dataset `node` writes.
pub(crate) fn dataset<'a>(
    engine: &'a Engine,
    node: &WriteNode,
) -> Result<&'a Dataset, EngineError> {
    engine
        .dataset(node.table.schema().unwrap_or_default(), node.table.table())
        .ok_or_else(|| {
            EngineError::coded(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", node.table),
            )
        })
}

/// Where `dataset`'s writes go: the name a block's transaction knows them by, and
/// the writes. A sync dataset's writes go to its local copy and queue (the origin
/// gets them from the replayer); the others' to the origin.
pub(crate) fn writes_of(
    origins: Option<&Origins>,
    dataset: &Dataset,
) -> Result<(String, SharedWrites), EngineError> {
    let origin = &dataset.origin;
    if dataset.mode.sync().is_some() {
        if let Some(store) = origins.and_then(|o| o.store()) {
            return Ok((
                switchyard_connectors::local::sync_write::sync_origin(origin),
                Arc::new(store.sync_writes(origin)),
            ));
        }
    }
    origins
        .and_then(|o| o.get(origin))
        .and_then(|o| o.writes())
        .map(|w| (origin.clone(), w))
        .ok_or_else(|| {
            EngineError::coded(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!("origin {origin} does not take writes through Switchyard yet"),
            )
        })
}

/// Runs `node`: the rows it changed and, with RETURNING, its rows.
pub(crate) async fn run(
    node: &WriteNode,
    ctx: &SessionContext,
    scope: Scope<'_>,
) -> Result<(u64, Option<SendableRecordBatchStream>), EngineError> {
    let dataset = dataset(scope.engine, node)?;
    let (origin, writes) = writes_of(scope.origins, dataset)?;
    let schema = ctx
        .table_provider(node.table.clone())
        .await
        .map_err(EngineError::from)?
        .schema();
    let written = if scope.in_block {
        let mut t = scope.transaction.at(&origin, &writes).await?;
        let written = write_all(node, ctx, &scope, dataset, &schema, t.get()).await?;
        refuse_violations(node, &written)?;
        written
    } else {
        let mut t = writes.begin().await?;
        match write_all(node, ctx, &scope, dataset, &schema, t.as_mut()).await {
            Ok(written) => match refuse_violations(node, &written) {
                Ok(()) => {
                    t.commit().await?;
                    written
                }
                Err(e) => {
                    t.rollback().await?;
                    return Err(e);
                }
            },
            Err(e) => {
                // The statement's error is the one to report; the connection is
                // closed if the rollback fails too.
                if let Err(r) = t.rollback().await {
                    tracing::debug!(error = %r, "rollback after a failed write");
                }
                return Err(e);
            }
        }
    };
    let Some(returning) = &node.returning else {
        return Ok((written.rows, None));
    };
    let rows = written.rows;
    let table = MemTable::try_new(Arc::clone(&schema), vec![written.returned])
        .map_err(EngineError::from)?;
    let source = provider_as_source(Arc::new(table));
    let plan = returning
        .clone()
        .transform_up_with_subqueries(|p| match p {
            LogicalPlan::TableScan(mut scan)
                if scan.table_name.table() == node.table.table()
                    && scan
                        .table_name
                        .schema()
                        .is_none_or(|s| Some(s) == node.table.schema()) =>
            {
                scan.source = Arc::clone(&source);
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map_err(EngineError::from)?
        .data;
    let stream = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(EngineError::from)?
        .execute_stream()
        .await
        .map_err(EngineError::from)?;
    Ok((rows, Some(stream)))
}

fn refuse_violations(node: &WriteNode, written: &Written) -> Result<(), EngineError> {
    if written.violations == 0 {
        return Ok(());
    }
    Err(EngineError::coded(
        SqlState::INSUFFICIENT_PRIVILEGE,
        format!(
            "new row violates row-level security policy for table \"{}\"",
            node.table.table()
        ),
    ))
}

fn conflict(c: &Conflict) -> OnConflict {
    OnConflict {
        target: match &c.target {
            ConflictOn::Any => ConflictTarget::Any,
            ConflictOn::Columns(cols) => ConflictTarget::Columns(cols.clone()),
            ConflictOn::Constraint(name) => ConflictTarget::Constraint(name.clone()),
        },
        action: match &c.update {
            None => ConflictAction::DoNothing,
            Some(assignments) => ConflictAction::DoUpdate {
                assignments: assignments.clone(),
                filter: c.filter.clone(),
            },
        },
    }
}

async fn write_all(
    node: &WriteNode,
    ctx: &SessionContext,
    scope: &Scope<'_>,
    dataset: &Dataset,
    schema: &SchemaRef,
    t: &mut dyn WriteTransaction,
) -> Result<Written, EngineError> {
    fn request<'a>(
        node: &'a WriteNode,
        dataset: &'a Dataset,
        schema: &'a SchemaRef,
        write: &'a Write,
    ) -> WriteRequest<'a> {
        WriteRequest {
            dataset,
            schema,
            write,
            returning: node.returning.is_some(),
            check: node.check.as_ref(),
        }
    }
    match &node.kind {
        WriteKind::Insert { on_conflict } => {
            let input = node.input.clone().expect("an insert has its rows");
            // Rows read from the written origin are read inside its transaction, and
            // read whole first: the transaction's one connection cannot send an
            // insert while it still streams the rows.
            let input = inside(input, scope.config, scope.default_schema, &*t)?;
            let df = ctx
                .execute_logical_plan(input.data)
                .await
                .map_err(EngineError::from)?;
            let mut rows: SendableRecordBatchStream = if input.transformed {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await.map_err(EngineError::from)?;
                Box::pin(
                    datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        schema,
                        futures::stream::iter(batches.into_iter().map(Ok)),
                    ),
                )
            } else {
                df.execute_stream().await.map_err(EngineError::from)?
            };
            let on_conflict = on_conflict.as_ref().map(conflict);
            let mut total = Written::default();
            while let Some(batch) = rows.next().await {
                let batch: RecordBatch = batch.map_err(EngineError::from)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                let write = Write::Insert {
                    rows: batch,
                    on_conflict: on_conflict.clone(),
                };
                let w = t.write(request(node, dataset, schema, &write)).await?;
                total.rows += w.rows;
                total.violations += w.violations;
                total.returned.extend(w.returned);
                if total.violations > 0 {
                    break;
                }
            }
            Ok(total)
        }
        WriteKind::Update { assignments } => {
            let write = Write::Update {
                assignments: assignments.clone(),
                filter: node.filter.clone(),
            };
            Ok(t.write(request(node, dataset, schema, &write)).await?)
        }
        WriteKind::Delete => {
            let write = Write::Delete {
                filter: node.filter.clone(),
            };
            Ok(t.write(request(node, dataset, schema, &write)).await?)
        }
    }
}

/// `plan` reading, inside the block's origin transaction, the federated datasets of
/// the origin the block writes: a block's reads see its own writes, as in
/// PostgreSQL. Scans of other origins (and of local copies) are left as they are.
pub(crate) async fn reading_own_writes(
    plan: LogicalPlan,
    config: &Config,
    default_schema: &str,
    transaction: &Transaction,
) -> Result<LogicalPlan, EngineError> {
    match transaction
        .with_open(|t| inside(plan.clone(), config, default_schema, t))
        .await
    {
        None => Ok(plan),
        Some(r) => Ok(r?.data),
    }
}

/// [`reading_own_writes`] with the transaction at hand.
fn inside(
    plan: LogicalPlan,
    config: &Config,
    default_schema: &str,
    t: &dyn WriteTransaction,
) -> Result<Transformed<LogicalPlan>, EngineError> {
    use datafusion::datasource::source_as_provider;
    use switchyard_config::Mode;
    use switchyard_planner::Unfederated;
    plan.transform_up_with_subqueries(|p| {
        let LogicalPlan::TableScan(mut scan) = p else {
            return Ok(Transformed::no(p));
        };
        let schema = scan.table_name.schema().unwrap_or(default_schema);
        let Some(dataset) = config.datasets.iter().find(|d| {
            d.schema == schema
                && d.name == scan.table_name.table()
                && d.origin == t.origin()
                && d.mode == Mode::Federate
        }) else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        let Some(provider) = t.table(dataset, scan.source.schema())? else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        // A masked scan stays unfederated (its masks are evaluated here).
        let unfederated = source_as_provider(&scan.source)
            .is_ok_and(|p| p.downcast_ref::<Unfederated>().is_some());
        let provider: Arc<dyn datafusion::catalog::TableProvider> = if unfederated {
            Arc::new(Unfederated::new(scan.table_name.clone(), provider))
        } else {
            provider
        };
        scan.source = provider_as_source(provider);
        Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
    })
    .map_err(EngineError::from)
}
