//! AST_CHECKER: which kinds of statement a role may run, and which functions may be
//! called at all.
//!
//! Kinds come from the plan (a DML node is a write however it was spelled; a DDL
//! or COPY node never reaches an origin). Functions are checked on the parsed
//! statement too, so a denied function is refused by name even where DataFusion
//! does not know it.

use std::ops::ControlFlow;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast::{self, Visit, Visitor};

use crate::policy::Policy;
use crate::rbac::write_target;
use crate::SafetyError;

/// The kind of a statement that changes schema or writes files, if `plan` is one.
fn ddl_kind(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Ddl(ddl) => Some(ddl.name().to_string()),
        LogicalPlan::Copy(_) => Some("COPY".to_string()),
        LogicalPlan::Explain(e) => ddl_kind(&e.plan),
        LogicalPlan::Analyze(a) => ddl_kind(&a.input),
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p)) => {
            ddl_kind(&p.input)
        }
        _ => None,
    }
}

/// Refuses DDL and COPY always, and writes a role holds no privilege for.
pub(crate) fn check_kind(plan: &LogicalPlan) -> Result<Option<String>, SafetyError> {
    if let Some(kind) = ddl_kind(plan) {
        return Err(SafetyError::ReadOnly { kind });
    }
    Ok(write_target(plan).map(|(t, p)| format!("{} on {t}", p.name())))
}

/// Every function name the plan calls (scalar, aggregate, window), lower case.
pub(crate) fn plan_functions(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let name = match e {
                    Expr::ScalarFunction(f) => Some(f.name().to_string()),
                    Expr::AggregateFunction(f) => Some(f.func.name().to_string()),
                    Expr::WindowFunction(f) => Some(f.fun.name().to_string()),
                    _ => None,
                };
                if let Some(n) = name {
                    names.push(n.to_ascii_lowercase());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .expect("the visitor never fails");
    names
}

/// Every function name the parsed statement calls, lower case, without schema.
pub(crate) fn ast_functions(statement: &ast::Statement) -> Vec<String> {
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::Function(f) = expr {
                if let Some(last) = f.name.0.last().and_then(|p| p.as_ident()) {
                    self.0.push(last.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &ast::TableFactor) -> ControlFlow<()> {
            // Table functions: FROM dblink(...), FROM pg_ls_dir(...).
            if let ast::TableFactor::Table {
                name,
                args: Some(_),
                ..
            } = t
            {
                if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                    self.0.push(last.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Names(Vec::new());
    let _ = statement.visit(&mut v);
    v.0
}

/// The first denied function among `names`.
pub(crate) fn denied_function<'a>(
    policy: &Policy,
    names: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    names
        .into_iter()
        .find(|n| policy.function_denied(n))
        .cloned()
}
