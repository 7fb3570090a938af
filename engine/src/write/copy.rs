//! `COPY table FROM STDIN` as batched inserts: the front door checks it as the
//! `INSERT INTO table (columns) VALUES (...)` it amounts to (privilege, columns,
//! the row filter as a check) and parses the client's rows into batches of text
//! columns; each batch is one insert at the origin, whose columns read the text as
//! their own types, as PostgreSQL's COPY does. The whole COPY is one origin
//! transaction (the block's, in a block): a failure anywhere keeps none of it.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use switchyard_config::Dataset;
use switchyard_connectors::write::{SharedWrites, Write, WriteRequest, WriteTransaction};
use switchyard_sqlstate::SqlState;

use super::node::{write_node, WriteKind, WriteNode};
use crate::session::Running;
use crate::EngineError;

/// A COPY FROM STDIN under way.
pub struct CopyIn {
    running: Option<Running>,
    node: WriteNode,
    dataset: Dataset,
    schema: SchemaRef,
    writes: SharedWrites,
    /// The name the block's transaction knows the writes by.
    origin: String,
    /// The COPY's own transaction, outside a block.
    own: Option<Box<dyn WriteTransaction>>,
    rows: u64,
}

impl CopyIn {
    /// Starts the COPY of `plan` (the checked insert it amounts to).
    pub(crate) async fn start(
        running: Running,
        ctx: &SessionContext,
        plan: &LogicalPlan,
    ) -> Result<CopyIn, EngineError> {
        // What the run knows, taken out of it: the run is not shared across awaits.
        let engine = std::sync::Arc::clone(running.engine());
        let in_block = running.in_block();
        let begun = async {
            let node = write_node(plan)
                .cloned()
                .filter(|n| matches!(n.kind, WriteKind::Insert { on_conflict: None }))
                .ok_or_else(|| {
                    EngineError::coded(SqlState::INTERNAL_ERROR, "COPY FROM needs an insert")
                })?;
            let dataset = super::run::dataset(&engine, &node)?.clone();
            let (origin, writes) = super::run::writes_of(engine.origins(), &dataset)?;
            let schema = ctx
                .table_provider(node.table.clone())
                .await
                .map_err(EngineError::from)?
                .schema();
            let own = if in_block {
                None
            } else {
                Some(writes.begin().await?)
            };
            Ok::<_, EngineError>((node, dataset, origin, writes, schema, own))
        };
        match begun.await {
            Ok((node, dataset, origin, writes, schema, own)) => Ok(CopyIn {
                origin,
                running: Some(running),
                node,
                dataset,
                schema,
                writes,
                own,
                rows: 0,
            }),
            Err(e) => Err(running.fail(e)),
        }
    }

    /// The target columns the rows give, in order.
    pub fn columns(&self) -> Vec<String> {
        self.node
            .input
            .as_ref()
            .map(|p| {
                p.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Inserts `rows` (text columns named as [`Self::columns`]).
    pub async fn write(&mut self, rows: RecordBatch) -> Result<(), EngineError> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let write = Write::Insert {
            rows,
            on_conflict: None,
        };
        let request = WriteRequest {
            dataset: &self.dataset,
            schema: &self.schema,
            write: &write,
            returning: false,
            check: self.node.check.as_ref(),
        };
        let written = match self.own.as_mut() {
            Some(t) => t.write(request).await?,
            None => {
                let transaction = std::sync::Arc::clone(
                    self.running
                        .as_ref()
                        .expect("a running COPY has its run")
                        .transaction(),
                );
                let mut t = transaction.at(&self.origin, &self.writes).await?;
                t.get().write(request).await?
            }
        };
        self.rows += written.rows;
        if written.violations > 0 {
            return Err(EngineError::coded(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!(
                    "new row violates row-level security policy for table \"{}\"",
                    self.node.table.table()
                ),
            ));
        }
        Ok(())
    }

    /// Ends it: commits its own transaction; the rows copied.
    pub async fn finish(mut self) -> Result<u64, EngineError> {
        let running = self.running.take().expect("a running COPY has its run");
        if let Some(t) = self.own.take() {
            if let Err(e) = t.commit().await {
                return Err(running.fail(e.into()));
            }
        }
        running.finish_with_rows(self.rows);
        Ok(self.rows)
    }

    /// Ends it with `error` (its own transaction rolled back), which is returned.
    pub async fn fail(mut self, error: EngineError) -> EngineError {
        if let Some(t) = self.own.take() {
            if let Err(e) = t.rollback().await {
                tracing::debug!(error = %e, "rollback after a failed COPY");
            }
        }
        match self.running.take() {
            Some(r) => r.fail(error),
            None => error,
        }
    }
}
