//! [`Unfederated`]: a federated origin table read on its own, so that nothing above
//! its scan is sent to the origin.
//!
//! The safety pipeline masks columns with expressions only DataFusion evaluates the
//! same way everywhere; under a federated scan the federation rule would send the
//! mask (and everything above it) to the origin as SQL. Swapping the scan's source
//! for this provider keeps the mask local while filters, the column list and a
//! LIMIT still reach the origin: each scan is planned as its own one-table
//! federated plan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result, TableReference};
use datafusion::datasource::{provider_as_source, TableProvider, TableType};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// A federated table scanned as a one-table origin query.
#[derive(Debug)]
pub struct Unfederated {
    name: TableReference,
    table: Arc<dyn TableProvider>,
}

impl Unfederated {
    /// Wraps `table` (a federated table registered as `name`).
    pub fn new(name: TableReference, table: Arc<dyn TableProvider>) -> Self {
        Unfederated { name, table }
    }
}

#[async_trait]
impl TableProvider for Unfederated {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = DFSchema::try_from_qualified_schema(self.name.clone(), &self.schema())?;
        Ok(filters
            .iter()
            .map(|f| {
                if crate::portable(f, &schema) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("unfederated scan without a SessionState".into())
            })?;
        let source = provider_as_source(Arc::clone(&self.table));
        // Filters may use columns the projection leaves out: filter first, then narrow.
        let mut plan = LogicalPlanBuilder::scan(self.name.clone(), source, None)?;
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            plan = plan.filter(predicate)?;
        }
        // count(*) asks for no columns; fetch the first and drop it after the scan.
        let no_columns = projection.is_some_and(|p| p.is_empty());
        let first = vec![0];
        let projection = if no_columns { Some(&first) } else { projection };
        if let Some(indices) = projection {
            let schema = self.table.schema();
            let columns = indices.iter().map(|&i| {
                Expr::Column(datafusion::common::Column::new(
                    Some(self.name.clone()),
                    schema.field(i).name(),
                ))
            });
            plan = plan.project(columns)?;
        }
        if limit.is_some() {
            plan = plan.limit(0, limit)?;
        }
        let plan = plan.build()?;
        // The plan reads one origin table: hand it to that origin's federation provider
        // as a whole (one query), skipping DataFusion's optimizer — the filters and
        // columns arrive here already optimized.
        let exec = match datafusion_federation::get_table_source(&provider_as_source(Arc::clone(
            &self.table,
        )))? {
            Some(fed) => match fed.federation_provider().optimizer() {
                Some(optimizer) => {
                    let federated = optimizer.optimize(
                        plan,
                        &datafusion::optimizer::OptimizerContext::new(),
                        |_, _| {},
                    )?;
                    state
                        .query_planner()
                        .create_physical_plan(&federated, state)
                        .await?
                }
                None => state.create_physical_plan(&plan).await?,
            },
            None => state.create_physical_plan(&plan).await?,
        };
        if no_columns {
            let empty: Vec<datafusion::physical_plan::projection::ProjectionExpr> = vec![];
            return Ok(Arc::new(
                datafusion::physical_plan::projection::ProjectionExec::try_new(empty, exec)?,
            ));
        }
        Ok(exec)
    }
}
