//! Refuses SQL that datafusion-postgres would silently rewrite into a different question.
//!
//! Its PostgreSQL-compatibility parser (made for psql's catalog queries) replaces a
//! correlated scalar subquery in a SELECT list by NULL and gives an uncorrelated one a
//! `LIMIT 1`. For catalog queries that is harmless; for user data it is a wrong
//! answer. Until we plan such subqueries ourselves, statements over user tables that
//! contain one are refused with 0A000 and a hint, never answered wrongly.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, Query, SelectItem, SetExpr, Visit, Visitor,
};
use pgwire::error::{ErrorInfo, PgWireError};

/// A relation's name parts, lower-cased as PostgreSQL folds them.
pub(super) fn relation_parts(relation: &ObjectName) -> Vec<String> {
    relation
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .collect()
}

/// Whether a relation is one of the catalog's (pg_catalog, information_schema, or an
/// unqualified `pg_*` name), as opposed to a possible user table.
pub(super) fn is_catalog_relation(parts: &[String]) -> bool {
    parts
        .first()
        .is_some_and(|s| s == "pg_catalog" || s == "information_schema")
        || (parts.len() == 1 && parts[0].starts_with("pg_"))
}

#[derive(Default)]
struct Scan {
    user_table: bool,
    projected_subquery: bool,
}

impl Visitor for Scan {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if !is_catalog_relation(&relation_parts(relation)) {
            self.user_table = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_ref() {
            let subquery_item = select.projection.iter().any(|item| {
                matches!(
                    item,
                    SelectItem::UnnamedExpr(Expr::Subquery(_))
                        | SelectItem::ExprWithAlias {
                            expr: Expr::Subquery(_),
                            ..
                        }
                )
            });
            self.projected_subquery |= subquery_item;
        }
        ControlFlow::Continue(())
    }
}

/// The error for `statements`, if datafusion-postgres would rewrite them into a
/// different question.
pub fn check(statements: &[datafusion::sql::sqlparser::ast::Statement]) -> Result<(), PgWireError> {
    let mut scan = Scan::default();
    for statement in statements {
        let _ = statement.visit(&mut scan);
    }
    if scan.user_table && scan.projected_subquery {
        let mut info = ErrorInfo::new(
            "ERROR".into(),
            switchyard_engine::SqlState::FEATURE_NOT_SUPPORTED
                .code()
                .into(),
            "a subquery as a SELECT-list item is not supported yet".into(),
        );
        info.hint = Some("join the subquery's table instead, e.g. LEFT JOIN (SELECT key, count(*) ... GROUP BY key)".into());
        return Err(PgWireError::UserError(Box::new(info)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::pgwire::pgcompat::prepare as check;

    #[test]
    fn user_queries_with_select_list_subqueries_are_refused() {
        assert!(check("SELECT a.id, (SELECT count(*) FROM sales.orders o WHERE o.customer_id = a.id) FROM crm.accounts a").is_err());
        assert!(check("SELECT (SELECT max(id) FROM t) AS m").is_err());
    }

    #[test]
    fn catalog_queries_and_other_subqueries_pass() {
        assert!(check("SELECT c.relname, (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = c.relnamespace) FROM pg_catalog.pg_class c").is_ok());
        assert!(check("SELECT id FROM t WHERE id IN (SELECT id FROM u)").is_ok());
        assert!(check("SELECT (SELECT max(id) FROM t) + 1").is_ok());
        assert!(check("SELEC 1").is_ok());
    }
}
