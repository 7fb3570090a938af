//! A request as sent (JSON) → a checked [`Graph`], with faz's validation messages.
//!
//! Everything here is decided before any step runs: the shape of the JSON, the
//! step ids and their dependencies, the databases, each step's language and
//! link, and whether a merge is needed and read-only.

use datafusion::sql::sqlparser::ast::{Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::Deserialize;
use serde_json::Value;
use switchyard_config::{Config, OriginKind};

use crate::error::{Result, StepError};

/// A checked request: steps in request order (each depends only on earlier ones).
#[derive(Debug, Clone)]
pub struct Graph {
    /// The steps.
    pub steps: Vec<Step>,
    /// The merge statement over the steps' results, when given.
    pub merge: Option<String>,
}

/// The query language of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// SQL over the origin's tables.
    Sql,
    /// A MongoDB `find` or `aggregate`, as JSON.
    Mql,
}

impl Language {
    /// As written in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Sql => "sql",
            Language::Mql => "mql",
        }
    }
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique within the request; the merge reads its result under this name.
    pub id: String,
    /// The origin it asks.
    pub database: String,
    /// The declared target (a table or collection of that origin).
    pub table: String,
    /// Its language.
    pub language: Language,
    /// Its native query.
    pub query: Query,
    /// Steps it waits for (all earlier in the request).
    pub depends_on: Vec<String>,
    /// Values taken from a dependency's result into this step's filter.
    pub link: Option<Link>,
}

/// A step's native query.
#[derive(Debug, Clone)]
pub enum Query {
    /// SQL text.
    Sql(String),
    /// An MQL query object (`operation` and its arguments).
    Mql(serde_json::Map<String, Value>),
}

impl Query {
    /// The query as text (for the audit fingerprint and the prompt guard).
    pub fn text(&self) -> String {
        match self {
            Query::Sql(s) => s.clone(),
            Query::Mql(m) => Value::Object(m.clone()).to_string(),
        }
    }
}

/// `link_from` / `link_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The dependency's column whose distinct values are taken.
    pub from: String,
    /// This step's field they filter (`link_to IN (...)`).
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    steps: Vec<RawStep>,
    merge: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    step_id: Option<String>,
    database: Option<String>,
    table: Option<String>,
    language: Option<String>,
    query: Option<Value>,
    depends_on: Option<Vec<String>>,
    link_from: Option<String>,
    link_to: Option<String>,
}

/// Parses a `POST /v1/query` body: `{"steps": [...], "merge": ...}`, or one step
/// without `steps` (`query_simple`). `databases` are the origin names the caller
/// may use (listed in the unknown-database error).
pub fn parse(body: &[u8], config: &Config, databases: &[String]) -> Result<Graph> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| StepError::invalid(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(StepError::invalid(
            "the request must be a JSON object: {\"steps\": [...], \"merge\": \"...\"}",
        ));
    }
    if value.get("steps").is_some() {
        let raw: RawGraph = serde_json::from_value(value)
            .map_err(|e| StepError::invalid(format!("invalid request: {e}")))?;
        build(raw.steps, raw.merge, config, databases)
    } else {
        simple(value, config, databases)
    }
}

/// A `query_simple` body (one step; its `step_id` defaults to `s0`).
pub fn simple(value: Value, config: &Config, databases: &[String]) -> Result<Graph> {
    let mut raw: RawStep = serde_json::from_value(value)
        .map_err(|e| StepError::invalid(format!("invalid request: {e}")))?;
    if raw.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(StepError::invalid(
            "a single query has no dependencies: send {\"steps\": [...]} for a step graph",
        ));
    }
    raw.step_id.get_or_insert_with(|| "s0".to_string());
    build(vec![raw], None, config, databases)
}

fn build(
    raw: Vec<RawStep>,
    merge: Option<String>,
    config: &Config,
    databases: &[String],
) -> Result<Graph> {
    if raw.is_empty() {
        return Err(StepError::invalid("'steps' must contain at least one step"));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for r in raw {
        let id = r.step_id.unwrap_or_default();
        if id.is_empty() {
            return Err(StepError::invalid("step missing 'step_id'"));
        }
        if seen.contains(&id) {
            return Err(StepError::invalid(format!("duplicate step_id: '{id}'")));
        }
        let depends_on = r.depends_on.unwrap_or_default();
        for dep in &depends_on {
            if *dep == id {
                return Err(StepError::invalid(format!("step '{id}' depends on itself")));
            }
            if !seen.contains(dep) {
                return Err(StepError::invalid(format!(
                    "step '{id}' depends on unknown or forward-referenced step '{dep}'"
                )));
            }
        }
        let database = r
            .database
            .filter(|d| !d.is_empty())
            .ok_or_else(|| StepError::invalid(format!("step '{id}' missing 'database'")))?;
        let Some(origin) = config
            .origin(&database)
            .filter(|_| databases.contains(&database))
        else {
            let listed: Vec<String> = databases.iter().map(|d| format!("'{d}'")).collect();
            return Err(StepError::invalid(format!(
                "unknown database: '{database}'. Configured: [{}]",
                listed.join(", ")
            )));
        };
        let table = r
            .table
            .filter(|t| !t.is_empty())
            .ok_or_else(|| StepError::invalid(format!("step '{id}' missing 'table'")))?;
        let native = match origin.kind {
            OriginKind::Mongodb(_) => Language::Mql,
            _ => Language::Sql,
        };
        let language = match r.language.as_deref() {
            None => native,
            Some("sql") => Language::Sql,
            Some("mql") => Language::Mql,
            Some(other) => {
                return Err(StepError::invalid(format!(
                    "step '{id}': unknown language '{other}' (use 'sql' or 'mql')"
                )))
            }
        };
        if language != native {
            return Err(StepError::invalid(format!(
                "step '{id}': database '{database}' is {} and takes '{}', not '{}'",
                origin.kind.name(),
                native.as_str(),
                language.as_str()
            )));
        }
        let query = match (language, r.query) {
            (_, None) => return Err(StepError::invalid(format!("step '{id}' missing 'query'"))),
            (Language::Sql, Some(Value::String(s))) if !s.trim().is_empty() => Query::Sql(s),
            (Language::Sql, Some(_)) => {
                return Err(StepError::invalid(format!(
                    "step '{id}': 'query' must be SQL text"
                )))
            }
            (Language::Mql, Some(v)) => Query::Mql(mql_object(&id, v)?),
        };
        let link = match (r.link_from, r.link_to) {
            (None, None) => None,
            (Some(from), Some(to)) if !from.is_empty() && !to.is_empty() => {
                if depends_on.is_empty() {
                    return Err(StepError::invalid(format!(
                        "step '{id}': link_from needs the step it reads in 'depends_on'"
                    )));
                }
                Some(Link { from, to })
            }
            _ => {
                return Err(StepError::invalid(format!(
                    "step '{id}': link_from and link_to go together"
                )))
            }
        };
        seen.push(id.clone());
        steps.push(Step {
            id,
            database,
            table,
            language,
            query,
            depends_on,
            link,
        });
    }
    if let Some(m) = &merge {
        check_merge(m)?;
    } else if steps.len() > 1 {
        return Err(StepError::invalid(
            "'merge' is required when two or more steps return data",
        ));
    }
    Ok(Graph { steps, merge })
}

/// An MQL query: a JSON object, or a string holding one (as faz sends it).
fn mql_object(id: &str, v: Value) -> Result<serde_json::Map<String, Value>> {
    let v = match v {
        Value::String(s) => serde_json::from_str(&s).map_err(|e| {
            StepError::invalid(format!("step '{id}': 'query' is not a JSON object: {e}"))
        })?,
        other => other,
    };
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(StepError::invalid(format!(
            "step '{id}': 'query' must be an object such as {{\"operation\": \"find\", \"filter\": {{}}}}"
        ))),
    }
}

/// The merge guard: one statement, a query (SELECT, CTEs, set operations), with
/// no data-modifying statement inside it. Decided on the parsed AST.
pub fn check_merge(sql: &str) -> Result<()> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| StepError {
        kind: crate::Kind::Invalid,
        code: switchyard_engine::SqlState::SYNTAX_ERROR,
        message: format!("merge: {e}"),
    })?;
    let refuse = |what: &str| {
        StepError::invalid(format!(
            "merge must be read-only (SELECT, CTEs, set operations); {what} is not allowed"
        ))
    };
    match statements.as_slice() {
        [Statement::Query(_)] => {}
        [] => return Err(StepError::invalid("merge: no statement")),
        [one] => return Err(refuse(statement_kind(one))),
        _ => return Err(refuse("more than one statement")),
    }
    struct Writes(Option<&'static str>);
    impl Visitor for Writes {
        type Break = ();
        fn pre_visit_statement(&mut self, s: &Statement) -> std::ops::ControlFlow<()> {
            if !matches!(s, Statement::Query(_)) {
                self.0 = Some(statement_kind(s));
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut writes = Writes(None);
    let _ = statements[0].visit(&mut writes);
    match writes.0 {
        Some(kind) => Err(refuse(kind)),
        None => Ok(()),
    }
}

fn statement_kind(s: &Statement) -> &'static str {
    match s {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge(_) => "MERGE",
        Statement::Query(_) => "SELECT",
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::Drop { .. }
        | Statement::AlterTable(_)
        | Statement::Truncate(_) => "DDL",
        _ => "this statement",
    }
}
