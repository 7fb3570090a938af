//! MQL steps: a MongoDB `find` or `aggregate` as JSON, checked on the parsed JSON
//! and run natively at the origin.
//!
//! - RBAC_GATE: the collection's dataset must be readable; a field the user may not
//!   read may not be referenced anywhere (filter, projection, sort, group keys,
//!   expressions), a masked one only returned (plain projection or whole documents),
//!   never filtered, sorted or computed on; `$$ROOT` is refused where column rules
//!   apply. Row filters are put in front of the query as a `$match`; denied columns
//!   are left out of the result and masked ones masked, as SQL reads them.
//! - AST_CHECKER: write and server-side code stages and operators (`$out`, `$merge`,
//!   `$function`, `$where`, `$accumulator`) and admin stages are refused anywhere;
//!   `$lookup`/`$graphLookup`/`$unionWith` only into a collection the user reads
//!   whole (no row filter, no column rules).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{col, lit, Expr};
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};
use switchyard_config::{Dataset, Mask, Privilege};
use switchyard_connectors::native::SharedNative;
use switchyard_engine::SqlState;
use switchyard_safety::{
    ColumnAccess, Limits, Outcome, Principal, Stage, StageResult, TableAccess,
};

use crate::error::{Kind, Result, StepError};
use crate::request::Step;
use crate::resolve::OriginTables;
use crate::sql::{denial, Denial, StepRows, LINK_BATCH};

/// Stages and operators that write or run code at the server.
const FORBIDDEN: &[&str] = &["$out", "$merge", "$function", "$where", "$accumulator"];
/// Stages that read the server's own state.
const ADMIN: &[&str] = &[
    "$currentOp",
    "$listSessions",
    "$listLocalSessions",
    "$collStats",
    "$indexStats",
    "$planCacheStats",
    "$listSearchIndexes",
    "$listSampledQueries",
    "$shardedDataDistribution",
];
/// Stages that read another collection.
const JOINS: &[&str] = &["$lookup", "$graphLookup", "$unionWith"];

/// An MQL step the checks allowed.
#[derive(Clone)]
pub struct MqlReady {
    /// The collection's dataset.
    pub dataset: Dataset,
    /// The query as pipeline stages.
    pub stages: Vec<Value>,
    /// The user's row filter, as a predicate over the dataset's columns.
    pub row_filter: Option<Expr>,
    /// Output columns the user reads masked.
    pub masks: Vec<(String, Mask)>,
    /// Output columns the user may not read (left out).
    pub denied: Vec<String>,
    /// The stages passed.
    pub stages_passed: Vec<StageResult>,
    /// The runtime limits (timeout, result bytes).
    pub limits: Limits,
    /// Columns a find's plain projection names (what a stripped step would have).
    pub projected: Vec<String>,
}

/// The outcome of checking an MQL step.
pub enum Checked {
    /// Allowed.
    Ready(Box<MqlReady>),
    /// Refused.
    Denied(Denial),
}

fn refused(stage: Stage, message: String) -> Checked {
    Checked::Denied(denial(stage, SqlState::INSUFFICIENT_PRIVILEGE, message))
}

/// Checks an MQL step over the dataset it declares; `columns` is the dataset's
/// schema (for row filters and column rules).
#[allow(clippy::too_many_arguments)]
pub fn check(
    step: &Step,
    query: &Map<String, Value>,
    tables: &OriginTables<'_>,
    policy: &switchyard_safety::Policy,
    who: &Principal,
    columns: &SchemaRef,
    state: &SessionState,
    limits: Limits,
) -> Result<Checked> {
    let dataset = tables
        .resolve(std::slice::from_ref(&step.table))
        .map_err(|e| e.context(&format!("step '{}': table", step.id)))?
        .clone();
    let (stages, projected) = stages_of(step, query)?;
    let access = policy.access(who, &dataset.schema, &dataset.name);
    let qualified = dataset.qualified_name();
    if !access.privileges.contains(&Privilege::Select) {
        return Ok(refused(
            Stage::RbacGate,
            format!("permission denied for table {qualified}"),
        ));
    }
    // AST_CHECKER first on the shape: nothing below may write or run code.
    if let Some(found) = forbidden(&Value::Array(stages.clone())) {
        return Ok(Checked::Denied(denial(
            Stage::AstChecker,
            SqlState::INSUFFICIENT_PRIVILEGE,
            format!(
                "{found} is not allowed in a step (steps read; writes, server-side code and admin stages are refused)"
            ),
        )));
    }
    if let Some(message) = joins_refused(&stages, tables, policy, who) {
        return Ok(refused(Stage::RbacGate, message));
    }
    let ruled = access.has_column_rules();
    if ruled && dataset.columns.iter().any(|c| c.path.contains('.')) {
        return Ok(refused(
            Stage::RbacGate,
            format!("{qualified} has column rules on nested fields for you; query it with SQL"),
        ));
    }
    let mut refs = References::default();
    for stage in &stages {
        refs.stage(stage);
    }
    if ruled && refs.root {
        return Ok(refused(
            Stage::RbacGate,
            "$$ROOT and $$CURRENT are refused where column rules apply".to_string(),
        ));
    }
    for path in &refs.used {
        let column = column_of(&dataset, path);
        match access.column(&column) {
            ColumnAccess::Plain => {}
            ColumnAccess::Denied => {
                return Ok(refused(
                    Stage::RbacGate,
                    format!("permission denied for column {column} of {qualified}"),
                ))
            }
            ColumnAccess::Masked(_) => {
                return Ok(refused(
                    Stage::RbacGate,
                    format!(
                        "column {column} of {qualified} is masked for you: it can be returned, not filtered, sorted, grouped or computed on"
                    ),
                ))
            }
        }
    }
    for path in &refs.projected {
        if access.column(&column_of(&dataset, path)) == ColumnAccess::Denied {
            return Ok(refused(
                Stage::RbacGate,
                format!(
                    "permission denied for column {} of {qualified}",
                    column_of(&dataset, path)
                ),
            ));
        }
    }
    let row_filter = row_filter(&access, columns, state, &qualified)?;
    let (masks, denied) = column_rules(&access, columns, &refs);
    let mut notes = Vec::new();
    if row_filter.is_some() {
        notes.push(format!("row filter on {qualified}"));
    }
    for (c, _) in &masks {
        notes.push(format!("mask on {qualified}.{c}"));
    }
    let pass = |stage, notes| StageResult {
        stage,
        outcome: Outcome::Passed,
        notes,
    };
    Ok(Checked::Ready(Box::new(MqlReady {
        dataset,
        stages,
        row_filter,
        masks,
        denied,
        stages_passed: vec![
            pass(Stage::RbacGate, notes),
            pass(Stage::AstChecker, vec![]),
            pass(Stage::InjectionAnalyser, vec![]),
            pass(Stage::Guardrails, vec![]),
        ],
        limits,
        projected,
    })))
}

/// The query as pipeline stages, and a find's plainly projected fields.
fn stages_of(step: &Step, query: &Map<String, Value>) -> Result<(Vec<Value>, Vec<String>)> {
    let id = &step.id;
    let allowed = |keys: &[&str]| -> Result<()> {
        for k in query.keys() {
            if k != "operation" && !keys.contains(&k.as_str()) {
                return Err(StepError::invalid(format!(
                    "step '{id}': unknown key '{k}' (use {})",
                    keys.join(", ")
                )));
            }
        }
        Ok(())
    };
    let object = |key: &str| -> Result<Option<Map<String, Value>>> {
        match query.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(StepError::invalid(format!(
                "step '{id}': '{key}' must be an object"
            ))),
        }
    };
    let count = |key: &str| -> Result<Option<u64>> {
        match query.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                StepError::invalid(format!("step '{id}': '{key}' must be a whole number ≥ 0"))
            }),
        }
    };
    match query.get("operation").and_then(Value::as_str) {
        Some("find") => {
            allowed(&["filter", "projection", "sort", "skip", "limit"])?;
            let mut stages = Vec::new();
            if let Some(f) = object("filter")? {
                stages.push(serde_json::json!({"$match": f}));
            }
            if let Some(s) = object("sort")? {
                stages.push(serde_json::json!({"$sort": s}));
            }
            if let Some(n) = count("skip")? {
                stages.push(serde_json::json!({"$skip": n}));
            }
            if let Some(n) = count("limit")? {
                if n > 0 {
                    stages.push(serde_json::json!({"$limit": n}));
                }
            }
            let mut projected = Vec::new();
            if let Some(p) = object("projection")? {
                projected = p
                    .iter()
                    .filter(|(_, v)| inclusion(v))
                    .map(|(k, _)| k.clone())
                    .collect();
                stages.push(serde_json::json!({"$project": p}));
            }
            Ok((stages, projected))
        }
        Some("aggregate") => {
            allowed(&["pipeline"])?;
            match query.get("pipeline") {
                Some(Value::Array(stages)) if stages.iter().all(Value::is_object) => {
                    Ok((stages.clone(), vec![]))
                }
                _ => Err(StepError::invalid(format!(
                    "step '{id}': 'pipeline' must be an array of stage objects"
                ))),
            }
        }
        _ => Err(StepError::invalid(format!(
            "step '{id}': 'operation' must be 'find' or 'aggregate'"
        ))),
    }
}

fn inclusion(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_f64().is_some_and(|n| n != 0.0)
}

/// The first forbidden stage or operator anywhere in `v`.
fn forbidden(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if FORBIDDEN.contains(&k.as_str()) || ADMIN.contains(&k.as_str()) {
                Some(k.clone())
            } else {
                forbidden(v)
            }
        }),
        Value::Array(items) => items.iter().find_map(forbidden),
        _ => None,
    }
}

/// Why a join stage is refused, if one is: its collection must be a dataset of the
/// same origin that the user reads whole.
fn joins_refused(
    stages: &[Value],
    tables: &OriginTables<'_>,
    policy: &switchyard_safety::Policy,
    who: &Principal,
) -> Option<String> {
    let mut pending: Vec<&Value> = stages.iter().collect();
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(m) => {
                for (k, body) in m {
                    if JOINS.contains(&k.as_str()) {
                        let from = match body {
                            Value::String(s) => Some(s.as_str()),
                            Value::Object(b) => b
                                .get(if k == "$unionWith" { "coll" } else { "from" })
                                .and_then(Value::as_str),
                            _ => None,
                        };
                        let Some(from) = from else {
                            return Some(format!("{k} must name a collection of this database"));
                        };
                        let whole = tables.resolve(&[from.to_string()]).ok().filter(|d| {
                            let a: TableAccess = policy.access(who, &d.schema, &d.name);
                            a.privileges.contains(&Privilege::Select)
                                && a.row_filter.is_none()
                                && !a.has_column_rules()
                        });
                        if whole.is_none() {
                            return Some(format!(
                                "permission denied: {k} into '{from}', which you may not read whole"
                            ));
                        }
                    }
                    pending.push(body);
                }
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    None
}

/// Field paths a query uses (filtered, sorted, grouped, computed on) and those it
/// only returns.
#[derive(Default)]
struct References {
    used: Vec<String>,
    projected: Vec<String>,
    root: bool,
}

impl References {
    fn stage(&mut self, stage: &Value) {
        let Value::Object(m) = stage else { return };
        for (name, body) in m {
            match name.as_str() {
                "$match" => self.filter(body),
                "$sort" => {
                    if let Value::Object(keys) = body {
                        self.used.extend(keys.keys().cloned());
                    }
                }
                "$project" => {
                    if let Value::Object(fields) = body {
                        for (k, v) in fields {
                            if inclusion(v) {
                                self.projected.push(k.clone());
                            } else if !matches!(v, Value::Bool(false)) && v.as_f64() != Some(0.0) {
                                self.expressions(v);
                            }
                        }
                    }
                }
                "$lookup" | "$graphLookup" => {
                    if let Value::Object(b) = body {
                        for key in ["localField", "connectFromField"] {
                            if let Some(Value::String(f)) = b.get(key) {
                                self.used.push(f.clone());
                            }
                        }
                    }
                    self.expressions(body);
                }
                "$facet" => {
                    if let Value::Object(facets) = body {
                        for pipeline in facets.values() {
                            if let Value::Array(stages) = pipeline {
                                for s in stages {
                                    self.stage(s);
                                }
                            }
                        }
                    }
                }
                _ => self.expressions(body),
            }
        }
    }

    /// A query filter: its field keys, and expressions under `$expr`.
    fn filter(&mut self, v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$expr" {
                        self.expressions(v);
                    } else if k.starts_with('$') {
                        self.filter(v);
                    } else {
                        self.used.push(k.clone());
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.filter(item);
                }
            }
            _ => {}
        }
    }

    /// Field paths in aggregation expressions: strings `$path` (not `$$var`).
    fn expressions(&mut self, v: &Value) {
        match v {
            Value::String(s) => {
                let upper = s.to_ascii_uppercase();
                if upper.starts_with("$$ROOT") || upper.starts_with("$$CURRENT") {
                    self.root = true;
                } else if let Some(path) = s.strip_prefix('$') {
                    if !path.starts_with('$') && !path.is_empty() {
                        self.used.push(path.to_string());
                    }
                }
            }
            Value::Object(m) => m.values().for_each(|v| self.expressions(v)),
            Value::Array(items) => items.iter().for_each(|v| self.expressions(v)),
            _ => {}
        }
    }
}

/// The dataset column a field path reads: a declared column at that path (or
/// above it), else the path's first field.
fn column_of(dataset: &Dataset, path: &str) -> String {
    dataset
        .columns
        .iter()
        .find(|c| path == c.path || path.starts_with(&format!("{}.", c.path)))
        .map(|c| c.name.clone())
        .unwrap_or_else(|| path.split('.').next().unwrap_or(path).to_string())
}

/// The user's row filter as one predicate over the dataset's columns.
fn row_filter(
    access: &TableAccess,
    columns: &SchemaRef,
    state: &SessionState,
    qualified: &str,
) -> Result<Option<Expr>> {
    let Some(filters) = &access.row_filter else {
        return Ok(None);
    };
    let schema = DFSchema::try_from(columns.as_ref().clone())?;
    let mut out: Option<Expr> = None;
    for f in filters {
        let e = state
            .create_logical_expr(&f.to_string(), &schema)
            .map_err(|e| {
                StepError::new(
                    Kind::Internal,
                    SqlState::INTERNAL_ERROR,
                    format!("row filter on {qualified}: {e}"),
                )
            })?;
        out = Some(match out {
            None => e,
            Some(o) => o.or(e),
        });
    }
    Ok(out)
}

/// Masked and denied output columns: the dataset's columns by their rules, and any
/// other field a whole document may carry when an allow-list applies.
fn column_rules(
    access: &TableAccess,
    columns: &SchemaRef,
    refs: &References,
) -> (Vec<(String, Mask)>, Vec<String>) {
    let mut masks = Vec::new();
    let mut denied = Vec::new();
    if !access.has_column_rules() {
        return (masks, denied);
    }
    let names = columns
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .chain(refs.projected.iter().cloned());
    for name in names {
        match access.column(&name) {
            ColumnAccess::Plain => {}
            ColumnAccess::Masked(m) => masks.push((name, m)),
            ColumnAccess::Denied => denied.push(name),
        }
    }
    (masks, denied)
}

/// Runs a checked MQL step: once per batch of the link's values (none: no run).
pub async fn run(
    native: SharedNative,
    ready: MqlReady,
    link: Option<(String, Vec<ScalarValue>)>,
    access: TableAccess,
) -> Result<StepRows> {
    let filters: Vec<Option<Expr>> = match &link {
        None => vec![ready.row_filter.clone()],
        Some((_, values)) if values.is_empty() => {
            return Ok(StepRows {
                schema: Arc::new(Schema::empty()),
                batches: vec![],
                rows: 0,
                cut: None,
            })
        }
        Some((column, values)) => values
            .chunks(LINK_BATCH)
            .map(|chunk| {
                let inlist =
                    col(column.as_str()).in_list(chunk.iter().cloned().map(lit).collect(), false);
                Some(match &ready.row_filter {
                    Some(f) => f.clone().and(inlist),
                    None => inlist,
                })
            })
            .collect(),
    };
    let batches = native
        .aggregate(&ready.dataset, filters, ready.stages.clone())
        .await
        .map_err(|e| {
            let code = e.sqlstate();
            StepError::new(crate::kind_of(code), code, e.to_string())
        })?;
    let batches = governed(batches, &ready, &access).await?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let bytes: u64 = batches
        .iter()
        .map(switchyard_engine::guard::result_bytes)
        .sum();
    if let Some(max) = ready.limits.max_result_bytes {
        if bytes > max {
            return Err(StepError::from(
                switchyard_engine::EngineError::ResultBytes { max },
            ));
        }
    }
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok(StepRows {
        schema,
        batches: batches.into_iter().filter(|b| b.num_rows() > 0).collect(),
        rows,
        cut: None,
    })
}

/// The result as the user may read it: denied columns left out, masked ones masked
/// by the same expressions SQL reads them through.
async fn governed(
    batches: Vec<RecordBatch>,
    ready: &MqlReady,
    access: &TableAccess,
) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    if !access.has_column_rules() {
        return Ok(batches);
    }
    let schema = first.schema();
    let mut select = Vec::new();
    for f in schema.fields() {
        let name = f.name();
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let rule = ready.masks.iter().find(|(c, _)| c == name).map(|(_, m)| *m);
        match (access.column(name), rule) {
            (ColumnAccess::Denied, _) => continue,
            (ColumnAccess::Masked(Mask::Hash), _) | (_, Some(Mask::Hash)) => {
                select.push(format!("md5(CAST({quoted} AS VARCHAR)) AS {quoted}"))
            }
            (ColumnAccess::Masked(Mask::Redact), _) | (_, Some(Mask::Redact)) => {
                select.push(match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        format!("CASE WHEN {quoted} IS NULL THEN NULL ELSE '***' END AS {quoted}")
                    }
                    _ => format!("CAST(NULL AS {}) AS {quoted}", sql_type(f)),
                })
            }
            (ColumnAccess::Plain, None) => select.push(quoted),
        }
    }
    let ctx = SessionContext::new();
    ctx.register_table(
        "result",
        Arc::new(MemTable::try_new(schema, vec![batches])?),
    )?;
    let sql = if select.is_empty() {
        "SELECT 1 AS no_readable_columns FROM result WHERE false".to_string()
    } else {
        format!("SELECT {} FROM result", select.join(", "))
    };
    Ok(ctx.sql(&sql).await?.collect().await?)
}

fn sql_type(f: &Field) -> &'static str {
    match f.data_type() {
        DataType::Boolean => "BOOLEAN",
        DataType::Int64 | DataType::Int32 => "BIGINT",
        DataType::Float64 => "DOUBLE",
        _ => "VARCHAR",
    }
}
