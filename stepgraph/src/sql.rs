//! SQL steps: the origin's table names resolved to datasets, the statement
//! planned and checked by the engine like a pgwire statement, the link's values
//! put on the declared table's scan, and the checked plan run.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{lit, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use switchyard_engine::{
    Approval, Output, Protocol, QueryText, RunOptions, Session, SqlState, Verdict,
};
use switchyard_safety::{Outcome, Stage, StageResult};
use tokio_util::sync::CancellationToken;

use crate::error::{Kind, Result, StepError};
use crate::request::Step;
use crate::resolve::OriginTables;

/// Values sent to the origin per query of a linked step (`link_to IN (...)`).
pub const LINK_BATCH: usize = 1000;

/// A step the pipeline allowed, ready to run.
#[derive(Clone)]
pub struct Ready {
    /// The checked plan.
    pub plan: LogicalPlan,
    /// What each run is limited by.
    pub approval: Approval,
    /// The pipeline's stages.
    pub stages: Vec<StageResult>,
    /// The pipeline's warnings.
    pub warnings: Vec<String>,
    /// Datasets it reads, as `schema.name`.
    pub tables: Vec<String>,
    /// Origins it reads.
    pub origins: Vec<String>,
    /// Its result's columns.
    pub schema: SchemaRef,
    /// The declared table's dataset (where a link's filter goes).
    pub target: (String, String),
}

/// A step the pipeline refused.
#[derive(Clone)]
pub struct Denial {
    /// Why.
    pub error: StepError,
    /// The stages up to the refusing one.
    pub stages: Vec<StageResult>,
    /// The columns it would have returned (a stripped step is an empty table of them).
    pub schema: SchemaRef,
}

/// The outcome of checking a step.
pub enum Checked {
    /// Allowed.
    Ready(Box<Ready>),
    /// Refused by the pipeline.
    Denied(Denial),
}

pub(crate) fn denial(stage: Stage, code: SqlState, message: String) -> Denial {
    Denial {
        stages: vec![StageResult {
            stage,
            outcome: Outcome::Denied,
            notes: vec![message.clone()],
        }],
        error: StepError::new(Kind::Denied, code, message),
        schema: Arc::new(Schema::empty()),
    }
}

/// Plans and checks a SQL step.
pub async fn check(
    session: &Session,
    state: &SessionState,
    step: &Step,
    sql: &str,
    tables: &OriginTables<'_>,
    protocol: Protocol,
) -> Result<Checked> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| {
        StepError::new(
            Kind::Invalid,
            SqlState::SYNTAX_ERROR,
            format!("step '{}': {e}", step.id),
        )
    })?;
    if statements.len() != 1 {
        return Err(StepError::new(
            Kind::Invalid,
            SqlState::SYNTAX_ERROR,
            format!(
                "step '{}': a step's query is one statement ({} were sent)",
                step.id,
                statements.len()
            ),
        ));
    }
    let mut statement = statements.remove(0);
    if !matches!(statement, Statement::Query(_)) {
        let kind = statement.to_string();
        let kind = kind
            .split_whitespace()
            .next()
            .unwrap_or("it")
            .to_uppercase();
        return Ok(Checked::Denied(denial(
            Stage::AstChecker,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            format!("steps are read-only (SELECT, CTEs, set operations): {kind} is not allowed"),
        )));
    }
    let named = tables
        .rewrite(&mut statement)
        .map_err(|e| e.context(&format!("step '{}'", step.id)))?;
    let declared = tables
        .resolve(std::slice::from_ref(&step.table))
        .or_else(|_| {
            let parts: Vec<String> = step.table.split('.').map(str::to_string).collect();
            tables.resolve(&parts)
        })
        .map_err(|e| e.context(&format!("step '{}': table", step.id)))?;
    if !named
        .iter()
        .any(|d| d.qualified_name() == declared.qualified_name())
    {
        return Err(StepError::invalid(format!(
            "step '{}' declares table '{}' but its query does not read it",
            step.id, step.table
        )));
    }
    let target = (declared.schema.clone(), declared.name.clone());
    let text = QueryText::from_sql(sql).take();
    let (verdict, record) = session
        .check_unaudited(&statement, state, text, protocol)
        .await;
    match verdict {
        Verdict::Allowed(allowed) => {
            let schema = Arc::new(allowed.plan.schema().as_arrow().clone());
            let decision = allowed.decision;
            let (plan, approval) = uncapped(allowed.plan, in_request(allowed.approval));
            Ok(Checked::Ready(Box::new(Ready {
                plan,
                approval,
                stages: decision.stages,
                warnings: decision.warnings,
                tables: decision.tables,
                origins: decision.origins,
                schema,
                target,
            })))
        }
        Verdict::Refused(e) => {
            let record = record.unwrap_or_default();
            if record.outcome != "denied" {
                return Err(StepError::from(e).context(&format!("step '{}'", step.id)));
            }
            // The columns it would have had, so that a merge over it still plans.
            let schema = match state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    statement,
                )))
                .await
            {
                Ok(plan) => Arc::new(plan.schema().as_arrow().clone()),
                Err(_) => Arc::new(Schema::empty()),
            };
            Ok(Checked::Denied(Denial {
                error: StepError::from(e),
                stages: record.stages,
                schema,
            }))
        }
        Verdict::PassThrough => Err(StepError::invalid(format!(
            "step '{}': not a query",
            step.id
        ))),
    }
}

/// The checked plan without the row cap GUARDRAILS put on top of it: in a step
/// graph the cap is the size of the inline answer and of each page, and the rest of
/// a result is kept for pagination (result bytes and the timeout still hold).
fn uncapped(plan: LogicalPlan, mut approval: Approval) -> (LogicalPlan, Approval) {
    let Some(max) = approval.limits.max_rows else {
        return (plan, approval);
    };
    let LogicalPlan::Limit(limit) = &plan else {
        return (plan, approval);
    };
    let cap = lit(i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX));
    if limit.skip.is_some() || limit.fetch.as_deref() != Some(&cap) {
        return (plan, approval);
    }
    let input = limit.input.as_ref().clone();
    approval.limits.max_rows = None;
    approval.limits.on_max_rows = None;
    (input, approval)
}

/// A step runs inside its request, which holds the user's concurrency slot.
fn in_request(mut approval: Approval) -> Approval {
    approval.limits.max_concurrent_statements = None;
    approval
}

/// A step's rows.
pub struct StepRows {
    /// Their columns.
    pub schema: SchemaRef,
    /// The batches.
    pub batches: Vec<RecordBatch>,
    /// How many.
    pub rows: u64,
    /// A notice, when the row cap cut them.
    pub cut: Option<String>,
}

/// Runs a checked step; with `link`, once per batch of the link's values, each
/// time with `link_to IN (values)` on the declared table's scan.
pub async fn run(
    session: Arc<Session>,
    ctx: SessionContext,
    ready: Ready,
    link: Option<(String, Vec<ScalarValue>)>,
    started: Instant,
    cancel: CancellationToken,
) -> Result<StepRows> {
    let mut out = StepRows {
        schema: Arc::clone(&ready.schema),
        batches: Vec::new(),
        rows: 0,
        cut: None,
    };
    let plans = match link {
        None => vec![ready.plan.clone()],
        // No values: no row can match, and the origin is not asked.
        Some((_, values)) if values.is_empty() => vec![],
        Some((column, values)) => values
            .chunks(LINK_BATCH)
            .map(|chunk| with_link(ready.plan.clone(), &ready.target, &column, chunk))
            .collect::<Result<_>>()?,
    };
    for plan in plans {
        let options = RunOptions {
            cancel: cancel.clone(),
            unaudited: true,
            ..Default::default()
        };
        let running = session.begin(ready.approval.clone(), started, options)?;
        match running.execute(&ctx, plan).await? {
            Output::Rows(mut rows) => {
                if rows.cut.is_some() {
                    out.cut = rows.cut.take();
                }
                out.schema = rows.batches.schema();
                while let Some(batch) = rows.batches.next().await {
                    let batch = batch?;
                    out.rows += batch.num_rows() as u64;
                    if batch.num_rows() > 0 {
                        out.batches.push(batch);
                    }
                }
            }
            Output::Count { .. } => {
                return Err(StepError::new(
                    Kind::Denied,
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                    "steps are read-only",
                ))
            }
        }
    }
    Ok(out)
}

/// `plan` with `column IN (values)` right above every scan of `target`, below
/// anything the query does with its rows (as faz merges `$in` into the filter).
fn with_link(
    plan: LogicalPlan,
    target: &(String, String),
    column: &str,
    values: &[ScalarValue],
) -> Result<LogicalPlan> {
    let list: Vec<Expr> = values.iter().cloned().map(lit).collect();
    let linked = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let name = &scan.table_name;
            if name.schema() != Some(target.0.as_str()) || name.table() != target.1 {
                return Ok(Transformed::no(node));
            }
            let column = Expr::Column(Column::new(Some(name.clone()), column));
            let filtered = LogicalPlanBuilder::from(node)
                .filter(column.in_list(list.clone(), false))?
                .build()?;
            Ok(Transformed::yes(filtered))
        })
        .map_err(StepError::from)?;
    Ok(linked.data)
}
