//! `constant_group_keys`: GROUP BY keys that are constants leave the grouping and come
//! back as a projection above it.
//!
//! DataFusion's scalar-subquery decorrelation groups by `true AS __always_true`;
//! unparsed for a PostgreSQL origin that is `GROUP BY ..., true`, which PostgreSQL
//! refuses ("non-integer constant in GROUP BY"; TPC-H Q2). Next to other keys a
//! constant key groups the same rows, so the answer is unchanged. An aggregate whose
//! keys are all constants is left alone: without them, no input rows would give one
//! global row instead of none.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module documentation. It runs before the federation
/// rule, so the per-origin SQL is unparsed from the rewritten plan.
#[derive(Debug, Default)]
pub struct ConstantGroupKeys;

/// The literal under any aliases, if `e` is one.
fn constant(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Alias(a) => constant(&a.expr),
        Expr::Literal(..) => Some(e),
        _ => None,
    }
}

impl OptimizerRule for ConstantGroupKeys {
    fn name(&self) -> &str {
        "constant_group_keys"
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
            let LogicalPlan::Aggregate(agg) = node else {
                return Ok(Transformed::no(node));
            };
            let grouping_sets = agg
                .group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)));
            let constants = agg
                .group_expr
                .iter()
                .filter(|e| constant(e).is_some())
                .count();
            if grouping_sets || constants == 0 || constants == agg.group_expr.len() {
                return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
            }
            let keys: Vec<Expr> = agg
                .group_expr
                .iter()
                .filter(|e| constant(e).is_none())
                .cloned()
                .collect();
            // The original output, column for column: constants as literals under
            // their old names, everything else read from the narrower aggregate.
            let outputs: Vec<Expr> = agg
                .schema
                .iter()
                .enumerate()
                .map(
                    |(i, (qualifier, field))| match agg.group_expr.get(i).and_then(constant) {
                        Some(literal) => literal
                            .clone()
                            .alias_qualified(qualifier.cloned(), field.name()),
                        None => Expr::Column(Column::new(qualifier.cloned(), field.name())),
                    },
                )
                .collect();
            let narrower = Aggregate::try_new(Arc::clone(&agg.input), keys, agg.aggr_expr.clone())?;
            let projection =
                Projection::try_new(outputs, Arc::new(LogicalPlan::Aggregate(narrower)))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::expr_fn::min;
    use datafusion::logical_expr::{col, lit, table_scan};
    use datafusion::optimizer::OptimizerContext;

    fn scan() -> datafusion::logical_expr::LogicalPlanBuilder {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Int32, false),
        ]);
        table_scan(Some("t"), &schema, None).unwrap()
    }

    #[test]
    fn a_constant_key_beside_others_moves_above_the_aggregate() {
        let plan = scan()
            .aggregate(
                vec![col("k"), lit(true).alias("__always_true")],
                vec![min(col("v"))],
            )
            .unwrap()
            .build()
            .unwrap();
        let before = plan.schema().clone();
        let after = ConstantGroupKeys
            .rewrite(plan, &OptimizerContext::new())
            .unwrap();
        assert!(after.transformed);
        let columns = |s: &datafusion::common::DFSchema| {
            s.iter()
                .map(|(q, f)| (q.cloned(), f.as_ref().clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            columns(after.data.schema()),
            columns(&before),
            "same output columns"
        );
        let text = after.data.display_indent().to_string();
        assert!(text.contains("Aggregate: groupBy=[[t.k]]"), "{text}");
        assert!(text.contains("Boolean(true) AS __always_true"), "{text}");
    }

    #[test]
    fn only_constant_keys_stay() {
        let plan = scan()
            .aggregate(vec![lit(true).alias("__always_true")], vec![min(col("v"))])
            .unwrap()
            .build()
            .unwrap();
        let after = ConstantGroupKeys
            .rewrite(plan, &OptimizerContext::new())
            .unwrap();
        assert!(!after.transformed);
    }
}
