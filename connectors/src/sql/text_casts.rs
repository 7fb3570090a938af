//! Origin SQL keeps the casts to text that DataFusion drops.
//!
//! Switchyard holds uuid, json and jsonb columns as text, so DataFusion treats
//! `u::text` as a no-op and plans `u::text LIKE 'a0%'` as `u LIKE 'a0%'`, which
//! PostgreSQL refuses (no `uuid ~~ unknown` operator; no `json = json` at all). In
//! an origin's part of a plan such a column is therefore read as `CAST(u AS TEXT)`
//! wherever it is used as text: in a function, an operator, a comparison with
//! another kind of column. A bare output column, `IS NULL`, and a uuid or jsonb
//! column compared with literals (or with a column of its own type) stay as they
//! are, so the origin can use its indexes. Runs after [`super::derived_names`].

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, LogicalPlan, Operator};

use crate::columns::PG_TYPE_KEY;

/// `plan` with the text casts of uuid, json and jsonb columns restored.
pub fn restore_text_casts(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schemas: Vec<Arc<DFSchema>> = match &node {
            LogicalPlan::TableScan(scan) => vec![Arc::clone(&scan.projected_schema)],
            other => other
                .inputs()
                .iter()
                .map(|i| Arc::clone(i.schema()))
                .collect(),
        };
        if !schemas.iter().any(|s| {
            s.fields()
                .iter()
                .any(|f| typed_name(f.metadata()).is_some())
        }) {
            return Ok(Transformed::no(node));
        }
        // Output expressions keep their names; a bare output column stays bare.
        let named_output = matches!(
            node,
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
        );
        node.map_expressions(|expr| {
            if named_output && matches!(expr, Expr::Column(_)) {
                return Ok(Transformed::no(expr));
            }
            let name = expr.schema_name().to_string();
            let fixed = fix(expr, &schemas, false)?;
            if !fixed.transformed || !named_output {
                return Ok(fixed);
            }
            let expr = match fixed.data {
                Expr::Alias(alias) => Expr::Alias(alias),
                other => other.alias(name),
            };
            Ok(Transformed::yes(expr))
        })
    })
    .map(|t| t.data)
}

/// The PostgreSQL type a field's metadata names, if it is one read as text here.
fn typed_name(metadata: &std::collections::HashMap<String, String>) -> Option<&str> {
    metadata
        .get(PG_TYPE_KEY)
        .map(String::as_str)
        .filter(|t| matches!(*t, "uuid" | "json" | "jsonb"))
}

/// The PostgreSQL type of a column expression read as text, if any.
fn typed<'a>(expr: &Expr, schemas: &'a [Arc<DFSchema>]) -> Option<&'a str> {
    let Expr::Column(c) = expr else {
        return None;
    };
    schemas
        .iter()
        .find_map(|s| s.qualified_field_from_column(c).ok().map(|(_, f)| f))
        .and_then(|f| typed_name(f.metadata()))
}

fn is_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(..))
        || matches!(expr, Expr::Cast(c) if matches!(c.expr.as_ref(), Expr::Literal(..)))
}

/// `expr` with typed columns cast to text where PostgreSQL would not take them as
/// they are; `bare_ok` when `expr` itself may stay a bare column.
fn fix(expr: Expr, schemas: &[Arc<DFSchema>], bare_ok: bool) -> Result<Transformed<Expr>> {
    if typed(&expr, schemas).is_some() {
        if bare_ok {
            return Ok(Transformed::no(expr));
        }
        return Ok(Transformed::yes(Expr::Cast(Cast::new(
            Box::new(expr),
            DataType::Utf8,
        ))));
    }
    match expr {
        // Already read as text (this rule may run twice on one plan).
        Expr::Cast(c) if typed(&c.expr, schemas).is_some() => Ok(Transformed::no(Expr::Cast(c))),
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ) =>
        {
            let (lt, rt) = (typed(&left, schemas), typed(&right, schemas));
            // uuid and jsonb compare with literals and with their own type; json with nothing.
            let comparable = |t: Option<&str>| matches!(t, Some("uuid" | "jsonb"));
            let keep_left = comparable(lt) && (is_literal(&right) || rt == lt);
            let keep_right = comparable(rt) && (is_literal(&left) || rt == lt);
            let l = fix(*left, schemas, keep_left)?;
            let r = fix(*right, schemas, keep_right)?;
            let transformed = l.transformed || r.transformed;
            let e = Expr::BinaryExpr(BinaryExpr::new(Box::new(l.data), op, Box::new(r.data)));
            Ok(if transformed {
                Transformed::yes(e)
            } else {
                Transformed::no(e)
            })
        }
        Expr::InList(InList {
            expr: inner,
            list,
            negated,
        }) if matches!(typed(&inner, schemas), Some("uuid" | "jsonb"))
            && list.iter().all(is_literal) =>
        {
            Ok(Transformed::no(Expr::InList(InList {
                expr: inner,
                list,
                negated,
            })))
        }
        Expr::IsNull(inner) if typed(&inner, schemas).is_some() => {
            Ok(Transformed::no(Expr::IsNull(inner)))
        }
        Expr::IsNotNull(inner) if typed(&inner, schemas).is_some() => {
            Ok(Transformed::no(Expr::IsNotNull(inner)))
        }
        Expr::Alias(alias) => {
            let inner = fix(*alias.expr, schemas, bare_ok)?;
            Ok(inner.update_data(|e| e.alias_qualified(alias.relation, alias.name)))
        }
        other => other.map_children(|child| fix(child, schemas, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::functions::expr_fn::lower;
    use datafusion::logical_expr::{col, lit, table_scan};
    use datafusion::sql::unparser::plan_to_sql;

    fn table() -> datafusion::logical_expr::LogicalPlanBuilder {
        let tagged = |name: &str, t: &str| {
            Field::new(name, DataType::Utf8, true).with_metadata(
                [(PG_TYPE_KEY.to_string(), t.to_string())]
                    .into_iter()
                    .collect(),
            )
        };
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            tagged("u", "uuid"),
            tagged("j", "json"),
            Field::new("t", DataType::Utf8, true),
        ]);
        table_scan(Some("t"), &schema, None).unwrap()
    }

    fn sql(plan: LogicalPlan) -> String {
        plan_to_sql(&restore_text_casts(plan).unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn typed_columns_used_as_text_are_cast() {
        let plan = table()
            .filter(col("u").like(lit("a0%")))
            .unwrap()
            .project(vec![col("id"), col("u"), lower(col("j"))])
            .unwrap()
            .build()
            .unwrap();
        let text = sql(plan);
        assert!(text.contains("CAST(t.u AS VARCHAR) LIKE 'a0%'"), "{text}");
        assert!(text.contains("lower(CAST(t.j AS VARCHAR))"), "{text}");
        assert!(text.contains("SELECT t.id, t.u,"), "{text}");
        // Idempotent: federation may run a table's optimizer more than once.
        let plan = table()
            .filter(col("u").like(lit("a0%")))
            .unwrap()
            .build()
            .unwrap();
        let twice = restore_text_casts(restore_text_casts(plan).unwrap()).unwrap();
        let text = plan_to_sql(&twice).unwrap().to_string();
        assert!(text.contains("WHERE CAST(t.u AS VARCHAR) LIKE"), "{text}");
    }

    #[test]
    fn comparisons_with_literals_keep_the_column() {
        let plan = table()
            .filter(
                col("u")
                    .eq(lit("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
                    .and(col("u").eq(col("t")))
                    .and(col("j").eq(lit("{}"))),
            )
            .unwrap()
            .build()
            .unwrap();
        let text = sql(plan);
        assert!(text.contains("t.u = 'a0eebc99"), "{text}");
        assert!(text.contains("CAST(t.u AS VARCHAR) = t.t"), "{text}");
        assert!(text.contains("CAST(t.j AS VARCHAR) = '{}'"), "{text}");
    }
}
