//! GUARDRAILS: limits on what one statement may do.
//!
//! Checked on the plan: UPDATE/DELETE without WHERE, and cartesian products larger
//! than `max_cartesian_rows` (a product whose size cannot be bounded counts as too
//! large). Put into the plan: the row cap, as a LIMIT of `max_rows + 1` so the
//! front door can tell whether rows were cut. Enforced by the front door while the
//! result streams: [`Limits`] (timeout, bytes, rows, concurrency).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{Expr, JoinType, Limit, LogicalPlan, WriteOp};
use switchyard_config::{Guardrails, RowCapAction};

use crate::policy::Policy;
use crate::rbac::{is_catalog, is_table_function, resolve};
use crate::SafetyError;

/// What the front door enforces while a statement runs and streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Rows the client may receive; the plan yields one more when there are more.
    pub max_rows: Option<u64>,
    /// What to do with the extra row.
    pub on_max_rows: Option<RowCapAction>,
    /// Deadline for the whole statement, streaming included (57014).
    pub statement_timeout: Option<Duration>,
    /// Bytes the result may carry (54000).
    pub max_result_bytes: Option<u64>,
    /// Statements the user may run at once.
    pub max_concurrent_statements: Option<u32>,
}

impl Limits {
    pub(crate) fn from(g: &Guardrails) -> Limits {
        Limits {
            max_rows: g.max_rows,
            on_max_rows: g
                .max_rows
                .map(|_| g.on_max_rows.unwrap_or(RowCapAction::Truncate)),
            statement_timeout: g.statement_timeout,
            max_result_bytes: g.max_result_bytes,
            max_concurrent_statements: g.max_concurrent_statements,
        }
    }
}

/// Refuses unfiltered UPDATE/DELETE and oversized cartesian products.
pub(crate) fn check(
    policy: &Policy,
    g: &Guardrails,
    plan: &LogicalPlan,
) -> Result<(), SafetyError> {
    let inner = match plan {
        LogicalPlan::Explain(e) => e.plan.as_ref(),
        LogicalPlan::Analyze(a) => a.input.as_ref(),
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p)) => p.input.as_ref(),
        other => other,
    };
    if let LogicalPlan::Dml(dml) = inner {
        let kind = match dml.op {
            WriteOp::Update => Some("UPDATE"),
            WriteOp::Delete => Some("DELETE"),
            _ => None,
        };
        if let Some(kind) = kind {
            let mut filtered = false;
            dml.input
                .apply_with_subqueries(|n| {
                    if matches!(n, LogicalPlan::Filter(_)) {
                        filtered = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
                .expect("the visitor never fails");
            if !filtered {
                return Err(SafetyError::UnfilteredWrite { kind: kind.into() });
            }
        }
    }
    if let Some(limit) = g.max_cartesian_rows {
        cartesian(policy, inner, limit)?;
    }
    Ok(())
}

/// An upper bound on the rows `plan` yields, when one is known without reading data.
fn bound(plan: &LogicalPlan) -> Option<u64> {
    match plan {
        LogicalPlan::Values(v) => Some(v.values.len() as u64),
        LogicalPlan::EmptyRelation(e) => Some(u64::from(e.produce_one_row)),
        LogicalPlan::Limit(l) => match l.get_fetch_type() {
            Ok(datafusion::logical_expr::logical_plan::FetchType::Literal(Some(n))) => {
                Some(n as u64)
            }
            _ => bound(&l.input),
        },
        LogicalPlan::Aggregate(a) if a.group_expr.is_empty() => Some(1),
        LogicalPlan::Projection(p) => bound(&p.input),
        LogicalPlan::Filter(f) => bound(&f.input),
        LogicalPlan::Sort(s) => bound(&s.input),
        LogicalPlan::SubqueryAlias(s) => bound(&s.input),
        _ => None,
    }
}

fn reads_user_table(policy: &Policy, plan: &LogicalPlan) -> bool {
    let mut user = false;
    plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(scan) = n {
            if !is_catalog(&resolve(policy, &scan.table_name).0)
                && !is_table_function(&scan.table_name)
            {
                user = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("the visitor never fails");
    user
}

/// Finds joins without any condition between their sides (also `FROM a, b` whose
/// WHERE never links a and b) and refuses them unless both sides are bounded and
/// the product is within `limit`.
fn cartesian(policy: &Policy, plan: &LogicalPlan, limit: u64) -> Result<(), SafetyError> {
    // Cross joins made joins by a WHERE above them (`FROM a, b, c WHERE a.x = b.x ...`).
    let mut linked: HashSet<*const LogicalPlan> = HashSet::new();
    let mut err = None;
    plan.apply_with_subqueries(|node| {
        let join = match node {
            LogicalPlan::Filter(f) => {
                mark_linked(&f.predicate, f.input.as_ref(), &mut linked);
                return Ok(TreeNodeRecursion::Continue);
            }
            LogicalPlan::Join(j) if unconditioned(j) => j,
            _ => return Ok(TreeNodeRecursion::Continue),
        };
        if linked.contains(&(node as *const LogicalPlan)) {
            return Ok(TreeNodeRecursion::Continue);
        }
        if !reads_user_table(policy, &join.left) && !reads_user_table(policy, &join.right) {
            return Ok(TreeNodeRecursion::Continue);
        }
        let (l, r) = (bound(&join.left), bound(&join.right));
        let too_big = match (l, r) {
            (Some(a), Some(b)) => a.saturating_mul(b) > limit,
            _ => true,
        };
        if too_big {
            let size = |b: Option<u64>| {
                b.map_or("an unbounded input".to_string(), |n| format!("{n} rows"))
            };
            err = Some(SafetyError::Cartesian {
                detail: format!("{} × {}", size(l), size(r)),
                limit,
            });
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("the visitor never fails");
    err.map_or(Ok(()), Err)
}

fn unconditioned(j: &datafusion::logical_expr::Join) -> bool {
    j.on.is_empty() && j.filter.is_none() && matches!(j.join_type, JoinType::Inner)
}

/// Marks the cross joins under a filter whose sides a conjunct of `pred` links.
fn mark_linked(pred: &Expr, plan: &LogicalPlan, linked: &mut HashSet<*const LogicalPlan>) {
    if let LogicalPlan::Join(j) = plan {
        if unconditioned(j) {
            if links(pred, j.left.schema(), j.right.schema()) {
                linked.insert(plan as *const LogicalPlan);
            }
            mark_linked(pred, j.left.as_ref(), linked);
            mark_linked(pred, j.right.as_ref(), linked);
        }
    }
}

/// Whether some conjunct of `pred` uses columns of both sides.
fn links(
    pred: &Expr,
    left: &datafusion::common::DFSchemaRef,
    right: &datafusion::common::DFSchemaRef,
) -> bool {
    datafusion::logical_expr::utils::split_conjunction(pred)
        .into_iter()
        .any(|c| {
            let cols = c.column_refs();
            cols.iter().any(|col| left.has_column(col))
                && cols.iter().any(|col| right.has_column(col))
        })
}

/// Puts the row cap on top of a query plan (`max_rows + 1`, see the module docs).
pub(crate) fn cap_rows(plan: LogicalPlan, limits: &Limits) -> LogicalPlan {
    let Some(max) = limits.max_rows else {
        return plan;
    };
    match plan {
        // PREPARE: cap the prepared query, which EXECUTE runs unchecked.
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(mut p)) => {
            let input = Arc::unwrap_or_clone(p.input);
            p.input = Arc::new(cap_rows(input, limits));
            LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p))
        }
        LogicalPlan::Explain(_)
        | LogicalPlan::Analyze(_)
        | LogicalPlan::Dml(_)
        | LogicalPlan::Ddl(_)
        | LogicalPlan::Statement(_)
        | LogicalPlan::Copy(_)
        | LogicalPlan::DescribeTable(_) => plan,
        query => LogicalPlan::Limit(Limit {
            skip: None,
            fetch: Some(Box::new(datafusion::logical_expr::lit(
                (max.saturating_add(1)) as i64,
            ))),
            input: Arc::new(query),
        }),
    }
}
