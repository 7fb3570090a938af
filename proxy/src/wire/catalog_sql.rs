//! Small rewrites of catalog-only queries (every table read is in pg_catalog or
//! information_schema) that clients send and DataFusion cannot plan as written.
//! Applied to the text before datafusion-postgres parses it; statements reading any
//! other table are never changed.
//!
//! - `(information_schema._pg_expandarray(a)).x` → `unnest(a)`, `.n` →
//!   `unnest(generate_series(1, array_length(a)))` (pgjdbc's key and index
//!   metadata); a bare `_pg_expandarray(a)` → `unnest(a)` and `(alias.keys).x` →
//!   `alias.keys` to match.
//! - `generate_subscripts(a, 1)` → `unnest(generate_series(1, array_length(a)))`
//!   (SQLAlchemy's key and index reflection).
//! - A scalar subquery whose single item is not an aggregate gets it wrapped in
//!   `max()`: DataFusion plans a correlated scalar subquery only when aggregated
//!   (psql's and SQLAlchemy's column defaults). One in a SELECT list is also
//!   parenthesised, since datafusion-postgres replaces a correlated subquery there
//!   by NULL. A catalog subquery returning more than one row (an error in
//!   PostgreSQL) gives its largest value instead.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, GroupByExpr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query,
    SelectItem, SetExpr, Statement, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Functions that already aggregate (a subquery over one of them is left alone).
const AGGREGATES: &[&str] = &[
    "max",
    "min",
    "count",
    "sum",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "first_value",
    "last_value",
];

/// `sql` rewritten as above; `None` when it is not catalog-only or nothing changed.
pub fn rewrite(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("pg_catalog") && !lower.contains("information_schema") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if !statements.iter().all(catalog_only) {
        return None;
    }
    let mut visitor = Rewriter { changed: false };
    for statement in statements.iter_mut() {
        let _ = statement.visit(&mut visitor);
    }
    visitor.changed.then(|| {
        statements
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn catalog_only(statement: &Statement) -> bool {
    struct Tables {
        other: bool,
        any: bool,
    }
    impl Visitor for Tables {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = relation
                .0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(|i| i.value.to_lowercase())
                .collect();
            self.any = true;
            let catalog = parts
                .first()
                .is_some_and(|s| s == "pg_catalog" || s == "information_schema")
                || (parts.len() == 1 && parts[0].starts_with("pg_"))
                || parts.last().is_some_and(|s| s == "generate_series");
            // CTE and derived-table names are not relations; an unqualified name that
            // is none of the above could be a user table, so the statement is left alone.
            if !catalog {
                self.other = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut tables = Tables {
        other: false,
        any: false,
    };
    let _ = statement.visit(&mut tables);
    matches!(statement, Statement::Query(_)) && tables.any && !tables.other
}

struct Rewriter {
    changed: bool,
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        _ => None,
    }
}

/// The plain arguments of a function call.
fn arguments(expr: &Expr) -> Vec<&Expr> {
    let Expr::Function(f) = expr else {
        return vec![];
    };
    let FunctionArguments::List(list) = &f.args else {
        return vec![];
    };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn strip_nested(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

fn positions(array: &str) -> Option<Expr> {
    parse_expr(&format!(
        "unnest(generate_series(1, array_length({array}, 1)))"
    ))
}

/// Wraps the single item of a scalar subquery in max() unless it aggregates.
fn aggregate_item(query: &mut Query) -> bool {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    if select.projection.len() != 1 || !matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty()) {
        return false;
    }
    let item = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) => e,
        SelectItem::ExprWithAlias { expr, .. } => expr,
        _ => return false,
    };
    if function_name(item).is_some_and(|n| AGGREGATES.contains(&n.as_str())) {
        return false;
    }
    let Some(wrapped) = parse_expr(&format!("max({item})")) else {
        return false;
    };
    *item = wrapped;
    true
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // A scalar subquery as a SELECT-list item: parenthesised so that
        // datafusion-postgres keeps it (see the module comment).
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in select.projection.iter_mut() {
                let expr = match item {
                    SelectItem::UnnamedExpr(e) => e,
                    SelectItem::ExprWithAlias { expr, .. } => expr,
                    _ => continue,
                };
                if let Expr::Subquery(q) = expr {
                    let q = q.clone();
                    *expr = Expr::Nested(Box::new(Expr::Subquery(q)));
                    self.changed = true;
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundFieldAccess { root, access_chain } = expr {
            let [AccessExpr::Dot(Expr::Identifier(key))] = access_chain.as_slice() else {
                return ControlFlow::Continue(());
            };
            let key = key.value.to_lowercase();
            let root = strip_nested(root.as_ref()).clone();
            let replacement = match function_name(&root).as_deref() {
                Some("_pg_expandarray") => {
                    let Some(array) = arguments(&root).first().map(|a| a.to_string()) else {
                        return ControlFlow::Continue(());
                    };
                    match key.as_str() {
                        "x" => parse_expr(&format!("unnest({array})")),
                        "n" => positions(&array),
                        _ => None,
                    }
                }
                // `(alias.keys).x` over a column that was `_pg_expandarray(...)`.
                None if key == "x"
                    && matches!(root, Expr::CompoundIdentifier(_) | Expr::Identifier(_)) =>
                {
                    Some(root)
                }
                _ => None,
            };
            if let Some(replacement) = replacement {
                *expr = replacement;
                self.changed = true;
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match function_name(expr).as_deref() {
            Some("_pg_expandarray") => {
                if let Some(array) = arguments(expr).first().map(|a| a.to_string()) {
                    if let Some(e) = parse_expr(&format!("unnest({array})")) {
                        *expr = e;
                        self.changed = true;
                    }
                }
            }
            Some("generate_subscripts") => {
                if let Some(array) = arguments(expr).first().map(|a| a.to_string()) {
                    if let Some(e) = positions(&array) {
                        *expr = e;
                        self.changed = true;
                    }
                }
            }
            _ => {}
        }
        if let Expr::Subquery(query) = expr {
            if aggregate_item(query) {
                self.changed = true;
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn expandarray_becomes_unnest() {
        let sql = rewrite("SELECT (information_schema._pg_expandarray(i.indkey)).n AS k, information_schema._pg_expandarray(i.indkey) AS keys FROM pg_catalog.pg_index i").unwrap();
        assert!(
            sql.contains("unnest(generate_series(1, array_length(i.indkey, 1))) AS k"),
            "{sql}"
        );
        assert!(sql.contains("unnest(i.indkey) AS keys"), "{sql}");
        let sql = rewrite("SELECT r.a FROM (SELECT 1 AS a, information_schema._pg_expandarray(i.indkey) AS keys FROM pg_catalog.pg_index i) r WHERE r.a = (r.keys).x").unwrap();
        assert!(sql.contains("r.a = r.keys"), "{sql}");
    }

    #[test]
    fn correlated_scalar_subqueries_are_aggregated_and_kept() {
        let sql = rewrite("SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a").unwrap();
        assert!(
            sql.contains("((SELECT max(pg_catalog.pg_get_expr(d.adbin, d.adrelid, true))"),
            "{sql}"
        );
        let sql = rewrite("SELECT (SELECT count(*) FROM pg_catalog.pg_class) FROM pg_catalog.pg_namespace").unwrap();
        assert!(sql.contains("((SELECT count(*)"), "{sql}");
    }

    #[test]
    fn statements_over_user_tables_are_left_alone() {
        assert_eq!(
            rewrite("SELECT (SELECT x FROM pg_catalog.pg_class c WHERE c.oid = o.id) FROM sales.orders o"),
            None
        );
        assert_eq!(rewrite("SELECT 1"), None);
    }
}
