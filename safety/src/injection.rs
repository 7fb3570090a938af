//! INJECTION_ANALYSER: shapes that are rarely meant and often injected.
//!
//! Findings come from the plan and the parsed statement: a tautology inside an OR
//! (`OR 1=1`, `OR 'a'='a'`, `OR x=x`), a UNION that mixes user tables with the
//! catalogs, several statements in one query string, a line comment that ends a
//! statement (`... --`, which truncates what followed), and sleep-like timing
//! probes. Each finding is allowed, warned about or denied per the config.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use switchyard_config::Action;

use crate::policy::{Policy, TIMING_FUNCTIONS};
use crate::rbac::{is_catalog, is_table_function, resolve};

/// One finding: its name (as in the config) and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub name: &'static str,
    pub detail: String,
    pub action: Action,
}

/// What the analyser sees beyond the plan.
pub(crate) struct Context<'a> {
    pub stacked: usize,
    pub trailing_comment: bool,
    pub functions: &'a [String],
}

pub(crate) fn analyse(policy: &Policy, plan: Option<&LogicalPlan>, cx: &Context) -> Vec<Finding> {
    let p = &policy.injection;
    let mut out = Vec::new();
    if cx.stacked > 1 {
        out.push(Finding {
            name: "stacked",
            detail: format!("{} statements in one query string", cx.stacked),
            action: p.stacked,
        });
    }
    if cx.trailing_comment {
        out.push(Finding {
            name: "comment",
            detail: "a line comment ends the statement".into(),
            action: p.comment,
        });
    }
    if let Some(f) = cx
        .functions
        .iter()
        .find(|f| TIMING_FUNCTIONS.contains(&f.as_str()))
    {
        out.push(Finding {
            name: "timing",
            detail: format!("{f}() is a timing probe"),
            action: p.timing,
        });
    }
    if let Some(plan) = plan {
        if let Some(t) = tautology(plan) {
            out.push(Finding {
                name: "tautology",
                detail: format!("always-true condition `{t}` in an OR"),
                action: p.tautology,
            });
        }
        if union_reads_catalog(policy, plan) {
            out.push(Finding {
                name: "union_catalog",
                detail: "a UNION combines user tables with pg_catalog/information_schema".into(),
                action: p.union_catalog,
            });
        }
    }
    out.retain(|f| f.action != Action::Allow);
    out
}

/// The first always-true disjunct of an OR in any filter or join condition.
fn tautology(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        let conditions: Vec<&Expr> = match node {
            LogicalPlan::Filter(f) => vec![&f.predicate],
            LogicalPlan::Join(j) => j.filter.iter().collect(),
            _ => vec![],
        };
        for c in conditions {
            c.apply(|e| {
                if let Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Or,
                    right,
                }) = e
                {
                    for side in [left, right] {
                        if always_true(side) {
                            found = Some(side.to_string());
                            return Ok(TreeNodeRecursion::Stop);
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            if found.is_some() {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("the visitor never fails");
    found
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip(&c.expr),
        Expr::TryCast(c) => strip(&c.expr),
        Expr::Alias(a) => strip(&a.expr),
        other => other,
    }
}

fn always_true(e: &Expr) -> bool {
    match strip(e) {
        Expr::Literal(v, _) => matches!(v, datafusion::common::ScalarValue::Boolean(Some(true))),
        Expr::Not(inner) => matches!(
            strip(inner),
            Expr::Literal(datafusion::common::ScalarValue::Boolean(Some(false)), _)
        ),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (l, r) = (strip(left), strip(right));
            match op {
                Operator::Eq | Operator::GtEq | Operator::LtEq | Operator::IsNotDistinctFrom => {
                    // x = x, 1 = 1, 'a' = 'a' (a column compared with itself is true
                    // for every non-NULL row: that is the injection idiom).
                    l == r && !matches!(l, Expr::ScalarFunction(_))
                        || literal_compare(l, r, *op) == Some(true)
                }
                Operator::NotEq | Operator::Lt | Operator::Gt => {
                    literal_compare(l, r, *op) == Some(true)
                }
                Operator::Or => always_true(l) || always_true(r),
                Operator::And => always_true(l) && always_true(r),
                _ => false,
            }
        }
        Expr::Like(like) if !like.negated => {
            // x LIKE '%' is true for every non-NULL x.
            matches!(strip(&like.pattern), Expr::Literal(v, _) if v.to_string() == "%")
        }
        _ => false,
    }
}

fn literal_compare(l: &Expr, r: &Expr, op: Operator) -> Option<bool> {
    let (Expr::Literal(a, _), Expr::Literal(b, _)) = (l, r) else {
        return None;
    };
    let ord = a.partial_cmp(b).or_else(|| {
        // 1 = 1.0 and the like: compare as numbers when both are numbers.
        let x: f64 = a.to_string().parse().ok()?;
        let y: f64 = b.to_string().parse().ok()?;
        x.partial_cmp(&y)
    })?;
    use std::cmp::Ordering::*;
    Some(match op {
        Operator::Eq | Operator::IsNotDistinctFrom => ord == Equal,
        Operator::NotEq => ord != Equal,
        Operator::Lt => ord == Less,
        Operator::LtEq => ord != Greater,
        Operator::Gt => ord == Greater,
        Operator::GtEq => ord != Less,
        _ => return None,
    })
}

/// Whether a UNION has branches over user tables and branches over the catalogs.
fn union_reads_catalog(policy: &Policy, plan: &LogicalPlan) -> bool {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Union(u) = node {
            let (mut user, mut catalog) = (false, false);
            for input in &u.inputs {
                input
                    .apply_with_subqueries(|n| {
                        if let LogicalPlan::TableScan(scan) = n {
                            let (s, _) = resolve(policy, &scan.table_name);
                            if is_catalog(&s) {
                                catalog = true;
                            } else if !is_table_function(&scan.table_name) {
                                user = true;
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                    .expect("the visitor never fails");
            }
            if user && catalog {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("the visitor never fails");
    found
}
