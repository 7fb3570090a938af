//! `derived_names`: in SQL for an origin, the columns of a derived table get explicit
//! names.
//!
//! Decorrelated subqueries become `(SELECT 0.2 * avg(x), k ... GROUP BY k) AS
//! __scalar_sq_1` joined on `__scalar_sq_1."0.2 * avg(t.x)"`: the outer query refers
//! to each column by DataFusion's display name. The unparser writes computed columns
//! (and aggregates, also those a projection between derived table and aggregate passes
//! on, as `constant_group_keys` adds) without an alias, so PostgreSQL names them
//! `avg` or `?column?` and refuses the reference (TPC-H Q2, Q17, Q20:
//! `column "min(...)" does not exist`). Naming every column of the projections under a
//! derived table after itself changes nothing here and makes the unparser write
//! `avg(x) AS "avg(t.x)"` at the origin. Two more shapes the unparser writes with
//! tables out of scope are reshaped on the way ([`merged`], [`without_passthrough_projections`]),
//! and references federation renamed inconsistently are matched ([`matched_references`]).
//!
//! It all runs on each origin's part as the last step before unparsing (a table's
//! `logical_optimizer`), after federation has renamed the tables to the origin's own
//! names: earlier, that renaming would change the columns' names and not the aliases.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, SubqueryAlias};

/// `plan` with the columns of every derived table named after themselves.
pub fn name_derived_columns(plan: LogicalPlan) -> Result<LogicalPlan> {
    let named = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::SubqueryAlias(alias) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some(input) = named_outputs(&alias.input)? else {
                return Ok(Transformed::no(node));
            };
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(Arc::new(input), alias.alias.clone())?,
            )))
        })?
        .data;
    matched_references(without_passthrough_projections(named)?)
}

/// A projection that only passes columns on, under another projection (with only
/// sorts and limits between), is dropped.
///
/// The unparser writes it as `(SELECT ...) AS "derived_projection"` but keeps the
/// upper projection's and the sort's references qualified by the tables inside it
/// (TPC-H Q2: `missing FROM-clause entry for table "supplier"`). Without it the sort
/// and limit see more columns, and the upper projection picks the same ones.
fn without_passthrough_projections(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Projection(upper) = &node else {
            return Ok(Transformed::no(node));
        };
        let Some(input) = skip_passthrough(&upper.input)? else {
            return Ok(Transformed::no(node));
        };
        Ok(Transformed::yes(LogicalPlan::Projection(
            Projection::try_new(upper.expr.clone(), Arc::new(input))?,
        )))
    })
    .map(|t| t.data)
}

/// `plan` (sorts and limits over a pass-through projection) without that projection.
fn skip_passthrough(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    match plan {
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
            let Some(input) = skip_passthrough(plan.inputs()[0])? else {
                return Ok(None);
            };
            Ok(Some(plan.with_new_exprs(plan.expressions(), vec![input])?))
        }
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            Ok(Some(p.input.as_ref().clone()))
        }
        _ => Ok(None),
    }
}

/// Federation renames the tables in column names (`avg(sales.t.x)` becomes
/// `avg(public.t.x)` when the origin's table is `public.t`) inside a derived table
/// but not always in the references to it from outside. A reference to a derived
/// table's column that is not there is pointed at the one column whose name matches
/// once schema names are set aside.
fn matched_references(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut columns: HashMap<TableReference, Vec<String>> = HashMap::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::SubqueryAlias(alias) = node {
            columns.insert(
                alias.alias.clone(),
                alias
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if columns.is_empty() {
        return Ok(plan);
    }
    let fix = |c: &Column| -> Option<Column> {
        let names = columns.get(c.relation.as_ref()?)?;
        if names.contains(&c.name) {
            return None;
        }
        let wanted = without_schemas(&c.name);
        let mut found = names.iter().filter(|n| without_schemas(n) == wanted);
        match (found.next(), found.next()) {
            (Some(name), None) => Some(Column::new(c.relation.clone(), name)),
            _ => None,
        }
    };
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform(|e| match &e {
                Expr::Column(c) => Ok(match fix(c) {
                    Some(c) => Transformed::yes(Expr::Column(c)),
                    None => Transformed::no(e),
                }),
                _ => Ok(Transformed::no(e)),
            })
        })
    })
    .map(|t| t.data)
}

/// `name` with every `schema.table.column` chain shortened to `table.column`.
fn without_schemas(name: &str) -> String {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(start) = rest.find(ident) {
        out.push_str(&rest[..start]);
        let chain = &rest[start..];
        let end = chain.find(|c| !ident(c)).unwrap_or(chain.len());
        let parts: Vec<&str> = chain[..end].split('.').collect();
        let keep = if parts.len() >= 3 {
            &parts[parts.len() - 2..]
        } else {
            &parts[..]
        };
        out.push_str(&keep.join("."));
        rest = &chain[end..];
    }
    out.push_str(rest);
    out
}

/// A projection over a projection of plain columns and constants (what
/// `constant_group_keys` puts over an aggregate) as one projection.
///
/// The unparser writes the lower one as a derived table but leaves the upper one's
/// column references qualified by the tables inside it (`"lineitem"."l_partkey"` from
/// outside `(...) AS "derived_projection"`), which PostgreSQL refuses. Substituting
/// the lower projection's columns and constants into the upper one asks the same.
fn merged(p: &Projection) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Projection(inner) = p.input.as_ref() else {
        return Ok(None);
    };
    let plain = inner.expr.iter().all(|e| {
        matches!(
            e.clone().unalias_nested().data,
            Expr::Column(_) | Expr::Literal(..)
        )
    });
    if !plain {
        return Ok(None);
    }
    let by_column: HashMap<Column, Expr> = inner
        .schema
        .iter()
        .zip(&inner.expr)
        .map(|((q, f), e)| {
            (
                Column::new(q.cloned(), f.name()),
                e.clone().unalias_nested().data,
            )
        })
        .collect();
    let expr = p
        .expr
        .iter()
        .map(|e| {
            let substituted = e
                .clone()
                .transform(|e| match &e {
                    Expr::Column(c) => Ok(match by_column.get(c) {
                        Some(inner) => Transformed::yes(inner.clone()),
                        None => Transformed::no(e),
                    }),
                    _ => Ok(Transformed::no(e)),
                })?
                .data;
            Ok(substituted)
        })
        .collect::<Result<Vec<_>>>()?;
    // The upper projection's output names, exactly.
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        named_after(expr, &p.schema),
        Arc::clone(&inner.input),
    )?)))
}

/// Each expression aliased to the name `schema` gives its column, unless it already
/// has an alias: the unparser then writes that name at the origin.
fn named_after(expr: Vec<Expr>, schema: &DFSchema) -> Vec<Expr> {
    expr.into_iter()
        .zip(schema.iter())
        .map(|(e, (q, f))| match e {
            Expr::Alias(_) => e,
            other => other.alias_qualified(q.cloned(), f.name()),
        })
        .collect()
}

/// `plan` with every output column explicitly named, or `None` if it already is (or
/// is neither a projection nor an aggregate, whose columns the unparser names itself).
fn named_outputs(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    match plan {
        LogicalPlan::Aggregate(agg) => {
            let columns = agg
                .schema
                .iter()
                .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
                .collect::<Vec<_>>();
            let projection = Projection::try_new(columns, Arc::new(plan.clone()))?;
            Ok(Some(
                named_outputs(&LogicalPlan::Projection(projection.clone()))?
                    .unwrap_or(LogicalPlan::Projection(projection)),
            ))
        }
        LogicalPlan::Projection(p) => {
            if let Some(merged) = merged(p)? {
                return Ok(Some(named_outputs(&merged)?.unwrap_or(merged)));
            }
            let input = match p.input.as_ref() {
                // A projection under this one is written as a derived table of its own.
                inner @ LogicalPlan::Projection(_) => named_outputs(inner)?.map(Arc::new),
                _ => None,
            };
            let unnamed = p.expr.iter().any(|e| !matches!(e, Expr::Alias(_)));
            if input.is_none() && !unnamed {
                return Ok(None);
            }
            let input = input.unwrap_or_else(|| Arc::clone(&p.input));
            Ok(Some(LogicalPlan::Projection(Projection::try_new(
                named_after(p.expr.clone(), &p.schema),
                input,
            )?)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::expr_fn::min;
    use datafusion::logical_expr::{col, lit, table_scan};
    use datafusion::sql::unparser::plan_to_sql;

    /// `SELECT k, min(v) FROM t GROUP BY k`, to build on.
    fn grouped_t() -> datafusion::logical_expr::LogicalPlanBuilder {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Int32, false),
        ]);
        table_scan(Some("t"), &schema, None)
            .unwrap()
            .aggregate(vec![col("k")], vec![min(col("v"))])
            .unwrap()
    }

    #[test]
    fn schema_names_are_set_aside_in_chains_of_three() {
        assert_eq!(
            without_schemas("Decimal128(0.2,1,1) * avg(public.lineitem.l_quantity)"),
            "Decimal128(0.2,1,1) * avg(lineitem.l_quantity)"
        );
        assert_eq!(without_schemas("min(t.v)"), "min(t.v)");
    }

    #[test]
    fn a_projection_over_plain_columns_merges_into_one_select() {
        let plan = grouped_t()
            .project(vec![col("t.k"), lit(true).alias("always"), col("min(t.v)")])
            .unwrap()
            .project(vec![col("min(t.v)") * lit(2), col("t.k"), col("always")])
            .unwrap()
            .alias("sq")
            .unwrap()
            .build()
            .unwrap();
        let after = name_derived_columns(plan.clone()).unwrap();
        assert_eq!(after.schema(), plan.schema());
        let sql = plan_to_sql(&after).unwrap().to_string();
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT (min(t.v) * 2) AS \"min(t.v) * Int32(2)\", t.k AS k, true AS \"always\" FROM t GROUP BY t.k) AS sq"
        );
    }

    #[test]
    fn an_aggregate_derived_table_names_its_columns_at_the_origin() {
        let plan = grouped_t().alias("sq").unwrap().build().unwrap();
        let before = plan_to_sql(&plan).unwrap().to_string();
        assert!(!before.contains("AS \"min(t.v)\""), "{before}");
        let after = name_derived_columns(plan.clone()).unwrap();
        assert_ne!(after, plan);
        assert_eq!(after.schema(), plan.schema(), "the names do not change");
        let sql = plan_to_sql(&after).unwrap().to_string();
        assert!(sql.contains("min(t.v) AS \"min(t.v)\""), "{sql}");
        // Once named, nothing more to do.
        assert_eq!(name_derived_columns(after.clone()).unwrap(), after);
    }
}
