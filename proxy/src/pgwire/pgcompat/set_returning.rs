//! Set-returning functions in FROM named as PostgreSQL names them.
//!
//! A function returning a scalar type in FROM gives its one column the alias's name
//! (`FROM generate_series(1, 3) g` → column `g`), or the function's name without an
//! alias (`generate_series`), or the alias's column list (`AS t(n)`); DataFusion calls
//! it `value` (or `UNNEST(...)`), so `SELECT g FROM generate_series(1, 3) g` failed.
//! `WITH ORDINALITY` adds a column `ordinality` numbering the rows from 1: DataFusion
//! ignores it for table functions (a column silently missing from `SELECT *`) and
//! refuses it for UNNEST, so such a factor becomes a derived table numbering its rows
//! with `row_number() OVER ()` (the function's single stream arrives in order).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, Statement, TableAlias, TableAliasColumnDef, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Functions DataFusion has as table functions that return one scalar column.
const SCALAR_FUNCTIONS: &[&str] = &["generate_series", "range"];

/// Names the set-returning functions' columns in `statements`; true when anything
/// changed.
pub fn name(statements: &mut [Statement]) -> bool {
    let mut namer = Namer { changed: false };
    for statement in statements.iter_mut() {
        // datafusion-postgres matches some catalog queries' text: left as sent.
        if super::column_names::reads_catalog(statement) {
            continue;
        }
        let _ = statement.visit(&mut namer);
    }
    namer.changed
}

struct Namer {
    changed: bool,
}

impl VisitorMut for Namer {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let Some(rewritten) = rewrite(factor) {
            *factor = rewritten;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

fn column(name: &str) -> TableAliasColumnDef {
    TableAliasColumnDef {
        name: Ident::with_quote('"', name),
        data_type: None,
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The factor as PostgreSQL names it, if it is a function whose naming differs.
fn rewrite(factor: &TableFactor) -> Option<TableFactor> {
    let (function, alias, ordinality) = match factor {
        TableFactor::Table {
            name,
            alias,
            args: Some(_),
            with_ordinality,
            ..
        } => {
            let function = name.0.last()?.as_ident()?.value.to_lowercase();
            if !SCALAR_FUNCTIONS.contains(&function.as_str()) {
                return None;
            }
            (function, alias.clone(), *with_ordinality)
        }
        TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality,
            ..
        } if array_exprs.len() == 1 => ("unnest".to_string(), alias.clone(), *with_ordinality),
        _ => return None,
    };
    let table = alias
        .as_ref()
        .map(|a| a.name.value.clone())
        .unwrap_or_else(|| function.clone());
    let given: Vec<String> = alias
        .as_ref()
        .map(|a| a.columns.iter().map(|c| c.name.value.clone()).collect())
        .unwrap_or_default();
    // The value column: the first alias column, else the alias, else the function.
    let value = given.first().cloned().unwrap_or_else(|| table.clone());
    if !ordinality {
        // A column list is PostgreSQL's already (or wrong, which DataFusion reports).
        if !given.is_empty() {
            return None;
        }
        let mut named = factor.clone();
        let alias = TableAlias {
            explicit: true,
            name: alias
                .map(|a| a.name)
                .unwrap_or_else(|| Ident::new(&function)),
            columns: vec![column(&value)],
            at: None,
        };
        match &mut named {
            TableFactor::Table { alias: a, .. } | TableFactor::UNNEST { alias: a, .. } => {
                *a = Some(alias)
            }
            _ => return None,
        }
        return Some(named);
    }
    let number = given
        .get(1)
        .cloned()
        .unwrap_or_else(|| "ordinality".to_string());
    // The function alone, its column named, inside a derived table that numbers it.
    let mut inner = factor.clone();
    let inner_alias = Some(TableAlias {
        explicit: true,
        name: Ident::with_quote('"', "switchyard_srf"),
        columns: vec![column("value")],
        at: None,
    });
    match &mut inner {
        TableFactor::Table {
            alias,
            with_ordinality,
            ..
        } => {
            *alias = inner_alias;
            *with_ordinality = false;
        }
        TableFactor::UNNEST {
            alias,
            with_ordinality,
            ..
        } => {
            *alias = inner_alias;
            *with_ordinality = false;
        }
        _ => return None,
    }
    let sql = format!(
        "(SELECT \"value\" AS {}, CAST(row_number() OVER () AS BIGINT) AS {} FROM {inner}) AS {}",
        quoted(&value),
        quoted(&number),
        quoted(&table)
    );
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .ok()?
        .parse_table_factor()
        .ok()
}

#[cfg(test)]
mod tests {
    fn named(sql: &str) -> String {
        let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap();
        super::name(&mut statements);
        statements[0].to_string()
    }

    #[test]
    fn functions_in_from_get_postgresql_column_names() {
        assert_eq!(
            named("SELECT g FROM generate_series(1, 3) g"),
            "SELECT g FROM generate_series(1, 3) AS g (\"g\")"
        );
        assert_eq!(
            named("SELECT * FROM generate_series(1, 3)"),
            "SELECT * FROM generate_series(1, 3) AS generate_series (\"generate_series\")"
        );
        // An explicit column list is PostgreSQL's already.
        assert_eq!(
            named("SELECT n FROM generate_series(1, 3) AS t(n)"),
            "SELECT n FROM generate_series(1, 3) AS t (n)"
        );
        assert_eq!(
            named("SELECT u FROM unnest(ARRAY[1, 2]) u"),
            "SELECT u FROM UNNEST(ARRAY[1, 2]) AS u (\"u\")"
        );
        let sql = named("SELECT * FROM generate_series(5, 7) WITH ORDINALITY AS t(v, n)");
        assert!(
            sql.contains("CAST(row_number() OVER () AS BIGINT) AS \"n\"")
                && sql.contains("AS \"v\""),
            "{sql}"
        );
        // Tables are untouched.
        assert_eq!(
            named("SELECT * FROM sales.orders o"),
            "SELECT * FROM sales.orders o"
        );
    }
}
