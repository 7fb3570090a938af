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
pub mod identity;
pub mod information_schema;
pub mod set_returning;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use pgwire::error::PgWireError;

/// The text datafusion-postgres gets for `sql`: refused ([`guard`]) if it would be
/// rewritten into a different question, else with PostgreSQL's column names
/// ([`column_names`], [`set_returning`] for functions in FROM) and the catalog
/// rewrites ([`catalog_sql`]); `None` when unchanged. One parse serves them all.
/// datafusion-postgres parses the text once
/// more: its own compatibility rewrites match token patterns of the text, before
/// its parse, and are not reachable from an AST.
pub fn prepare(sql: &str) -> Result<Option<String>, PgWireError> {
    let (mut statements, local) = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => (s, false),
        Err(_) => match insert_into_local(sql)
            .and_then(|fixed| Parser::parse_sql(&PostgreSqlDialect {}, &fixed).ok())
        {
            Some(s) => (s, true),
            // Unparsable text is reported by the normal path with its own error.
            None => return Ok(None),
        },
    };
    guard::check(&statements)?;
    let named = column_names::name(&mut statements);
    let functions = set_returning::name(&mut statements);
    let rewritten = catalog_sql::rewrite(sql, &mut statements);
    Ok((named || functions || rewritten || local).then(|| text(&statements)))
}

/// `INSERT INTO local.t` with `local` quoted: sqlparser reads `INSERT INTO LOCAL`
/// as the start of Hive's `INSERT INTO LOCAL DIRECTORY` and fails on the dot.
fn insert_into_local(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    // Byte offsets of each line start, to turn a token's line and column into one.
    let lines: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |l: u64, c: u64| -> Option<usize> {
        let start = *lines.get(usize::try_from(l).ok()?.checked_sub(1)?)?;
        let chars = usize::try_from(c).ok()?.checked_sub(1)?;
        Some(start + sql[start..].char_indices().nth(chars)?.0)
    };
    let mut cuts = Vec::new();
    for w in words.windows(4) {
        let keyword = |i: usize, k: Keyword| matches!(&tokens[i].token, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == k);
        if keyword(w[0], Keyword::INSERT)
            && keyword(w[1], Keyword::INTO)
            && keyword(w[2], Keyword::LOCAL)
            && tokens[w[3]].token == Token::Period
        {
            let span = tokens[w[2]].span;
            cuts.push((
                offset(span.start.line, span.start.column)?,
                offset(span.end.line, span.end.column).unwrap_or(sql.len()),
            ));
        }
    }
    if cuts.is_empty() {
        return None;
    }
    let mut fixed = String::with_capacity(sql.len() + 2 * cuts.len());
    let mut at = 0;
    for (from, to) in cuts {
        fixed.push_str(&sql[at..from]);
        fixed.push_str("\"local\"");
        at = to;
    }
    fixed.push_str(&sql[at..]);
    Some(fixed)
}

/// Statements as one text, as datafusion-postgres reads it.
pub(crate) fn text(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod local_tests {
    #[test]
    fn insert_into_local_parses() {
        let fixed = super::insert_into_local(
            "INSERT INTO local.notes (b) VALUES ('it''s');\n insert into LOCAL.notes SELECT 1",
        );
        assert_eq!(
            fixed.as_deref(),
            Some("INSERT INTO \"local\".notes (b) VALUES ('it''s');\n insert into \"local\".notes SELECT 1")
        );
        assert!(
            super::prepare("INSERT INTO local.notes (id) VALUES (1) RETURNING id")
                .expect("no guard refusal")
                .is_some()
        );
    }
}
