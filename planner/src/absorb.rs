//! `absorb_into_federated`: gives each origin's part of a cross-origin plan its own
//! filters and only the columns it needs.
//!
//! datafusion-federation cuts per-origin subplans out before DataFusion pushes
//! filters and prunes columns, so those end up *above* the opaque `Federated`
//! node and the origin is asked for every row and column. This rule runs after
//! DataFusion's own rules and moves two things into the node:
//!
//! 1. A `Filter` directly above a `Federated` node, when its predicate means the
//!    same at the origin as here ([`portable`]); it is placed only on top of plan
//!    shapes that unparse as a plain `WHERE` (scans, filters, joins, column-only
//!    projections) — never above LIMIT, ORDER BY, aggregates or windows, where a
//!    `WHERE` would change the answer.
//! 2. A column-only `Projection` narrowing the node to the columns the plan above
//!    it uses, when that is fewer than it returns.
//!
//! Both rewrites leave the node's output unchanged, so the rule can run on every
//! optimizer pass (it is idempotent: an absorbed filter is gone from above).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Filter, LogicalPlan, Operator, Projection, Volatility,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion_federation::FederatedPlanNode;

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct AbsorbIntoFederated;

impl OptimizerRule for AbsorbIntoFederated {
    fn name(&self) -> &str {
        "absorb_into_federated"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(absorb)
    }
}

fn federated(plan: &LogicalPlan) -> Option<&FederatedPlanNode> {
    match plan {
        LogicalPlan::Extension(Extension { node }) => {
            node.as_any().downcast_ref::<FederatedPlanNode>()
        }
        _ => None,
    }
}

fn rewrap(node: &FederatedPlanNode, inner: LogicalPlan) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(FederatedPlanNode::new(inner, Arc::clone(&node.planner))),
    })
}

fn absorb(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    // Filter directly over a federated node.
    if let LogicalPlan::Filter(filter) = &plan {
        if let Some(node) = federated(&filter.input) {
            if portable(&filter.predicate, node.plan.schema()) {
                if let Some(inner) = filter_inside(&node.plan, &filter.predicate)? {
                    return Ok(Transformed::yes(rewrap(node, inner)));
                }
            }
        }
    }
    // Any node: narrow each federated input to the columns this node uses.
    if matches!(plan, LogicalPlan::Extension(_))
        || plan.inputs().iter().all(|i| federated(i).is_none())
    {
        return Ok(Transformed::no(plan));
    }
    let mut changed = false;
    let new_inputs = plan
        .inputs()
        .into_iter()
        .enumerate()
        .map(|(index, input)| {
            let Some(node) = federated(input) else {
                return Ok(input.clone());
            };
            match narrow(node, &needed_from_input(&plan, index)?)? {
                Some(inner) => {
                    changed = true;
                    Ok(rewrap(node, inner))
                }
                None => Ok(input.clone()),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if !changed {
        return Ok(Transformed::no(plan));
    }
    Ok(Transformed::yes(
        plan.with_new_exprs(plan.expressions(), new_inputs)?,
    ))
}

/// Columns `plan` needs from its input number `index`.
fn needed_from_input(plan: &LogicalPlan, index: usize) -> Result<Option<HashSet<Column>>> {
    if let LogicalPlan::Join(join) = plan {
        use datafusion::logical_expr::JoinType;
        // The filtering side of a semi/anti join contributes no output columns: it
        // needs only what the join condition reads (e.g. `EXISTS (SELECT 1 ...)`).
        let filtering_side = match join.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti => Some(1),
            JoinType::RightSemi | JoinType::RightAnti => Some(0),
            _ => None,
        };
        if filtering_side == Some(index) {
            let mut cols = HashSet::new();
            let exprs = join
                .on
                .iter()
                .flat_map(|(l, r)| [l, r])
                .chain(join.filter.as_ref());
            for e in exprs {
                cols.extend(e.column_refs().into_iter().cloned());
            }
            return Ok(Some(cols));
        }
        return Ok(None);
    }
    used_columns(plan)
}

/// Columns referenced by `plan`'s own expressions (all of its inputs' columns when
/// the node's semantics depend on whole rows).
fn used_columns(plan: &LogicalPlan) -> Result<Option<HashSet<Column>>> {
    match plan {
        // These pass rows through or compare whole rows: every column is needed.
        LogicalPlan::Union(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Extension(_)
        | LogicalPlan::Unnest(_)
        | LogicalPlan::RecursiveQuery(_) => Ok(None),
        LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) => {
            let mut cols = HashSet::new();
            let mut outer = false;
            for e in plan.expressions() {
                e.apply(|e| {
                    match e {
                        Expr::Column(c) => {
                            cols.insert(c.clone());
                        }
                        Expr::OuterReferenceColumn(..)
                        | Expr::ScalarSubquery(_)
                        | Expr::Exists(_)
                        | Expr::InSubquery(_) => {
                            outer = true;
                        }
                        _ => {}
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
            if let LogicalPlan::Window(_) = plan {
                // A window's output keeps all input columns.
                return Ok(None);
            }
            Ok((!outer).then_some(cols))
        }
        _ => Ok(None),
    }
}

/// A column-only projection inside `node` keeping only `needed` columns, if that drops any.
fn narrow(
    node: &FederatedPlanNode,
    needed: &Option<HashSet<Column>>,
) -> Result<Option<LogicalPlan>> {
    let Some(needed) = needed else {
        return Ok(None);
    };
    let schema = node.plan.schema();
    let keep: Vec<Expr> = schema
        .columns()
        .into_iter()
        .filter(|c| {
            needed.contains(c)
                || needed
                    .iter()
                    .any(|n| n.relation.is_none() && n.name == c.name)
        })
        .map(Expr::Column)
        .collect();
    // Keep at least one column: some origins cannot answer `SELECT FROM t`; and do
    // nothing when no column would be dropped.
    if keep.len() == schema.fields().len() || !accepts_projection_on_top(&node.plan) {
        return Ok(None);
    }
    let keep = if keep.is_empty() {
        vec![Expr::Column(schema.columns()[0].clone())]
    } else {
        keep
    };
    if keep.len() == schema.fields().len() {
        return Ok(None);
    }
    let input = match &node.plan {
        // Replace a column-only projection rather than stacking a second one.
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            Arc::clone(&p.input)
        }
        other => Arc::new(other.clone()),
    };
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        keep, input,
    )?)))
}

/// Whether a plain `WHERE` or column list on top of `plan` unparses to SQL that means
/// "filter / narrow the rows of `plan`".
fn accepts_on_top(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.fetch.is_none(),
        LogicalPlan::Filter(f) => accepts_on_top(&f.input),
        LogicalPlan::Join(_) => true,
        LogicalPlan::SubqueryAlias(a) => {
            matches!(a.input.as_ref(), LogicalPlan::TableScan(s) if s.fetch.is_none())
        }
        LogicalPlan::Projection(p) => {
            p.expr.iter().all(|e| matches!(e, Expr::Column(_))) && accepts_on_top(&p.input)
        }
        _ => false,
    }
}

/// Whether a column list on top of `plan` unparses to SQL that selects those columns
/// of `plan`'s rows (a derived table where needed).
fn accepts_projection_on_top(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(_) => true,
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            accepts_projection_on_top(&p.input)
        }
        other => accepts_on_top(other),
    }
}

/// `Filter(predicate)` placed inside the federated plan, if its shape allows.
fn filter_inside(plan: &LogicalPlan, predicate: &Expr) -> Result<Option<LogicalPlan>> {
    if !accepts_on_top(plan) {
        return Ok(None);
    }
    let inner = match plan {
        // Under a column-only projection, so the WHERE sees the same columns.
        LogicalPlan::Projection(p) => LogicalPlan::Projection(Projection::try_new(
            p.expr.clone(),
            Arc::new(LogicalPlan::Filter(Filter::try_new(
                predicate.clone(),
                Arc::clone(&p.input),
            )?)),
        )?),
        other => LogicalPlan::Filter(Filter::try_new(predicate.clone(), Arc::new(other.clone()))?),
    };
    Ok(Some(inner))
}

/// Scalar functions whose result is the same in PostgreSQL and SQLite as in DataFusion
/// for every input (no locale, time zone or rounding-mode dependence).
const PORTABLE_FUNCTIONS: &[&str] = &[
    "lower", "upper", "abs", "coalesce", "nullif", "btrim", "ltrim", "rtrim",
];

/// Whether `expr` means exactly the same at the origin as in DataFusion.
pub fn portable(expr: &Expr, schema: &DFSchema) -> bool {
    let mut ok = true;
    let _ = expr.apply(|e| {
        let fine = match e {
            Expr::Column(_)
            | Expr::Literal(..)
            | Expr::Alias(_)
            | Expr::Not(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_) => true,
            Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::Negative(_) => true,
            Expr::InList(list) => !list.list.is_empty(),
            Expr::Like(like) => !like.case_insensitive && like.escape_char.is_none(),
            Expr::Between(b) => !is_text(&b.expr, schema),
            Expr::BinaryExpr(BinaryExpr { left, op, .. }) => match op {
                Operator::Eq | Operator::NotEq | Operator::And | Operator::Or => true,
                Operator::IsDistinctFrom | Operator::IsNotDistinctFrom => true,
                // Text ordering depends on collation: PostgreSQL's may differ from byte order.
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                    !is_text(left, schema)
                }
                Operator::Plus | Operator::Minus | Operator::Multiply => true,
                _ => false,
            },
            Expr::Cast(c) => matches!(
                c.field.data_type(),
                DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::Float64
                    | DataType::Boolean
                    | DataType::Date32
            ),
            Expr::ScalarFunction(f) => {
                f.func.signature().volatility != Volatility::Volatile
                    && PORTABLE_FUNCTIONS.contains(&f.name())
            }
            // Subqueries, outer references, parameters, aggregates, windows, UDFs, CASE and the rest stay here.
            _ => false,
        };
        if fine {
            Ok(TreeNodeRecursion::Continue)
        } else {
            ok = false;
            Ok(TreeNodeRecursion::Stop)
        }
    });
    ok
}

fn is_text(expr: &Expr, schema: &DFSchema) -> bool {
    use datafusion::logical_expr::ExprSchemable;
    match expr.get_type(schema) {
        Ok(t) => matches!(
            t,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..)
        ),
        Err(_) => true,
    }
}
