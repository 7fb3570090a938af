//! PostgreSQL compatibility for pgwire clients: the catalogs they read (pg_catalog,
//! information_schema, by the user's grants), the functions they call, and the SQL
//! text rewrites datafusion-postgres's parser and DataFusion's planner need.

pub mod catalog;
pub mod catalog_facts;
pub mod catalog_sql;
pub mod column_names;
pub mod column_type;
pub mod functions;
pub mod guard;
pub mod information_schema;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use pgwire::error::PgWireError;

/// The text datafusion-postgres gets for `sql`: refused ([`guard`]) if it would be
/// rewritten into a different question, else with PostgreSQL's column names
/// ([`column_names`]) and the catalog rewrites ([`catalog_sql`]); `None` when
/// unchanged. One parse serves all three. datafusion-postgres parses the text once
/// more: its own compatibility rewrites match token patterns of the text, before
/// its parse, and are not reachable from an AST.
pub fn prepare(sql: &str) -> Result<Option<String>, PgWireError> {
    // Unparsable text is reported by the normal path with its own error.
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Ok(None);
    };
    guard::check(&statements)?;
    let named = column_names::name(&mut statements);
    let rewritten = catalog_sql::rewrite(sql, &mut statements);
    Ok((named || rewritten).then(|| text(&statements)))
}

/// Statements as one text, as datafusion-postgres reads it.
pub(crate) fn text(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
