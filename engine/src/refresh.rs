//! `REFRESH MATERIALIZED VIEW schema.name`: copies a materialized dataset again
//! and waits for the copy, as PostgreSQL's statement does. DataFusion's parser
//! has no such statement, so doors recognise it with [`parse`] before parsing.
//!
//! Who may refresh: PostgreSQL allows a materialized view's owner; here, a role
//! granted `update` on the dataset (the right to change what it holds).

use std::time::Instant;

use switchyard_config::Privilege;
use switchyard_safety::statement_hash;
use switchyard_sqlstate::SqlState;

use crate::{EngineError, Protocol, Session};

/// The command tag of a refresh.
pub const TAG: &str = "REFRESH MATERIALIZED VIEW";

/// A recognised refresh statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// `schema.name` as written (unquoted names folded to lower case).
    pub dataset: String,
}

/// `Some` when `sql` is a `REFRESH MATERIALIZED VIEW` statement (an error when it
/// is one Switchyard cannot run: `WITH NO DATA`, or a malformed name).
pub fn parse(sql: &str) -> Option<Result<Refresh, EngineError>> {
    // Every statement of the simple protocol passes here: leave the others at once.
    let head = sql.trim_start();
    let commented = head.starts_with("--") || head.starts_with("/*");
    if !commented
        && !head
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case("refresh"))
    {
        return None;
    }
    let text = strip_comments(sql);
    let text = text.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    let head: Vec<String> = words
        .by_ref()
        .take(3)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    if head != ["REFRESH", "MATERIALIZED", "VIEW"] {
        return None;
    }
    let mut rest: Vec<&str> = words.collect();
    if rest
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("CONCURRENTLY"))
    {
        // Reads never block on a refresh here: every refresh is concurrent.
        rest.remove(0);
    }
    let syntax = |m: &str| {
        Some(Err(EngineError::coded(
            SqlState::SYNTAX_ERROR,
            m.to_string(),
        )))
    };
    let Some(name) = rest.first() else {
        return syntax("REFRESH MATERIALIZED VIEW needs a dataset name");
    };
    let tail: Vec<String> = rest[1..].iter().map(|w| w.to_ascii_uppercase()).collect();
    match tail.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] | ["WITH", "DATA"] => {}
        ["WITH", "NO", "DATA"] => return Some(Err(EngineError::coded(
            SqlState::FEATURE_NOT_SUPPORTED,
            "REFRESH ... WITH NO DATA is not supported: a materialized dataset always keeps a copy",
        ))),
        _ => {
            return syntax(
                "expected REFRESH MATERIALIZED VIEW [CONCURRENTLY] schema.name [WITH DATA]",
            )
        }
    }
    let parts: Option<Vec<String>> = name.split('.').map(identifier).collect();
    match parts.as_deref() {
        Some([schema, table]) => Some(Ok(Refresh {
            dataset: format!("{schema}.{table}"),
        })),
        Some([table]) => Some(Ok(Refresh {
            dataset: format!("public.{table}"),
        })),
        _ => syntax(&format!("bad dataset name {name}")),
    }
}

/// One name part: `"Quoted"` kept as written, otherwise folded to lower case.
fn identifier(part: &str) -> Option<String> {
    if let Some(inner) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        return (!inner.is_empty()).then(|| inner.replace("\"\"", "\""));
    }
    let ok = !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| part.to_ascii_lowercase())
}

/// The text without `--` and `/* */` comments (names with spaces are not supported).
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('-', Some('-')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

impl Session {
    /// Runs a refresh for this session's user: authorised, audited, and finished
    /// when the new copy is in place. Returns the rows copied.
    pub async fn refresh(&self, refresh: &Refresh, protocol: Protocol) -> Result<u64, EngineError> {
        let started = Instant::now();
        let mut record = self.new_record(
            protocol,
            "REFRESH MATERIALIZED VIEW ?".into(),
            statement_hash(&format!("REFRESH MATERIALIZED VIEW {}", refresh.dataset)),
        );
        record.tables = vec![refresh.dataset.clone()];
        let mut audit = self.audit(record, started);
        match self.run_refresh(refresh).await {
            Ok(rows) => {
                audit.record_mut().rows = rows;
                audit.finish(None);
                Ok(rows)
            }
            Err(e) => {
                audit.finish(Some(e.record()));
                Err(e)
            }
        }
    }

    async fn run_refresh(&self, refresh: &Refresh) -> Result<u64, EngineError> {
        let Some((schema, table)) = refresh.dataset.split_once('.') else {
            return Err(EngineError::coded(
                SqlState::SYNTAX_ERROR,
                "bad dataset name",
            ));
        };
        let engine = self.engine();
        let known = engine
            .config()
            .datasets
            .iter()
            .any(|d| d.schema == schema && d.name == table);
        let access = engine
            .pipeline()
            .policy()
            .access(self.principal(), schema, table);
        if !known || access.privileges.is_empty() {
            // Unknown and unreadable look alike, as for queries.
            return Err(EngineError::coded(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", refresh.dataset),
            ));
        }
        if !access.privileges.contains(&Privilege::Update) {
            return Err(EngineError::coded(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!(
                    "permission denied to refresh {}: it needs the update privilege on it",
                    refresh.dataset
                ),
            ));
        }
        let Some(materializer) = engine.materializer() else {
            return Err(EngineError::coded(
                SqlState::WRONG_OBJECT_TYPE,
                format!("\"{}\" is not a materialized dataset", refresh.dataset),
            ));
        };
        let copy = materializer
            .refresh(&refresh.dataset)
            .await
            .map_err(|e| EngineError::coded(e.sqlstate(), e.to_string()))?;
        Ok(copy.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_refresh_statements() {
        let ok = |sql: &str| parse(sql).map(|r| r.map(|r| r.dataset).map_err(|e| e.sqlstate()));
        assert_eq!(
            ok("REFRESH MATERIALIZED VIEW shop.users"),
            Some(Ok("shop.users".into()))
        );
        assert_eq!(
            ok("  refresh materialized view concurrently Shop.\"Users\" with data ; "),
            Some(Ok("shop.Users".into()))
        );
        assert_eq!(
            ok("/* nightly */ REFRESH MATERIALIZED VIEW -- x\n shop.users"),
            Some(Ok("shop.users".into()))
        );
        assert_eq!(
            ok("refresh materialized view t"),
            Some(Ok("public.t".into()))
        );
        assert_eq!(
            ok("REFRESH MATERIALIZED VIEW shop.users WITH NO DATA"),
            Some(Err(SqlState::FEATURE_NOT_SUPPORTED))
        );
        assert_eq!(
            ok("REFRESH MATERIALIZED VIEW"),
            Some(Err(SqlState::SYNTAX_ERROR))
        );
        assert_eq!(
            ok("REFRESH MATERIALIZED VIEW a.b.c"),
            Some(Err(SqlState::SYNTAX_ERROR))
        );
        assert_eq!(ok("SELECT 1"), None);
        assert_eq!(ok("REFRESH VIEW x"), None);
    }
}
