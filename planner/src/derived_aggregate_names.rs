//! `derived_aggregate_names`: the columns of an aggregate used as a derived table get
//! explicit names.
//!
//! Decorrelated subqueries become `(SELECT min(x), k ... GROUP BY k) AS __scalar_sq_1`
//! joined on `__scalar_sq_1."min(t.x)"`. DataFusion's unparser writes the aggregate
//! without an alias, so PostgreSQL names that column `min` and refuses the reference
//! (TPC-H Q2, Q17, Q20: `column "min(...)" does not exist`). A projection that names
//! every column after itself changes nothing here and makes the unparser write
//! `min(x) AS "min(t.x)"` at the origin.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, SubqueryAlias};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module documentation. It runs before the federation
/// rule, so the per-origin SQL is unparsed from the rewritten plan.
#[derive(Debug, Default)]
pub struct DerivedAggregateNames;

/// `e` named after itself, unless it already has a name of its own.
fn named(e: &Expr) -> Expr {
    match e {
        Expr::Column(c) => e.clone().alias_qualified(c.relation.clone(), &c.name),
        other => other.clone(),
    }
}

impl OptimizerRule for DerivedAggregateNames {
    fn name(&self) -> &str {
        "derived_aggregate_names"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::SubqueryAlias(alias) = &node else {
                return Ok(Transformed::no(node));
            };
            let input = match alias.input.as_ref() {
                LogicalPlan::Aggregate(agg) => Projection::try_new(
                    agg.schema
                        .iter()
                        .map(|(q, f)| named(&Expr::Column(Column::new(q.cloned(), f.name()))))
                        .collect(),
                    Arc::clone(&alias.input),
                )?,
                LogicalPlan::Projection(p)
                    if matches!(p.input.as_ref(), LogicalPlan::Aggregate(_))
                        && p.expr.iter().any(|e| matches!(e, Expr::Column(_))) =>
                {
                    Projection::try_new(p.expr.iter().map(named).collect(), Arc::clone(&p.input))?
                }
                _ => return Ok(Transformed::no(node)),
            };
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(
                    Arc::new(LogicalPlan::Projection(input)),
                    alias.alias.clone(),
                )?,
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::expr_fn::min;
    use datafusion::logical_expr::{col, table_scan};
    use datafusion::optimizer::OptimizerContext;
    use datafusion::sql::unparser::plan_to_sql;

    #[test]
    fn an_aggregate_derived_table_names_its_columns_at_the_origin() {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Int32, false),
        ]);
        let plan = table_scan(Some("t"), &schema, None)
            .unwrap()
            .aggregate(vec![col("k")], vec![min(col("v"))])
            .unwrap()
            .alias("sq")
            .unwrap()
            .build()
            .unwrap();
        let before = plan_to_sql(&plan).unwrap().to_string();
        assert!(!before.contains("AS \"min(t.v)\""), "{before}");
        let after = DerivedAggregateNames
            .rewrite(plan, &OptimizerContext::new())
            .unwrap();
        assert!(after.transformed);
        let sql = plan_to_sql(&after.data).unwrap().to_string();
        assert!(sql.contains("min(t.v) AS \"min(t.v)\""), "{sql}");
        // Once named, nothing more to do.
        let again = DerivedAggregateNames
            .rewrite(after.data, &OptimizerContext::new())
            .unwrap();
        assert!(!again.transformed);
    }
}
