//! [`Engine`] (what every session shares) and [`Session`] (one login): a
//! statement's lifecycle for any front door — check, begin (audit record, slot),
//! run (timeout, row cap, result bytes, cancel), finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::execution::context::SessionState;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use switchyard_config::{Config, RowCapAction};
use switchyard_materialize::Materializer;
use switchyard_safety::{
    fingerprint, statement_hash, AuditLog, AuditRecord, Decision, Denied, ErrorRecord, Limits,
    Pipeline, Principal, StatementInput,
};
use tokio_util::sync::CancellationToken;

use crate::audit::{now, StatementAudit};
use crate::guard::{self, Guarding};
use crate::slots::Slots;
use crate::text::TextFacts;
use crate::EngineError;

/// What every session shares: the config, the safety pipeline, the audit log and
/// the running statements.
pub struct Engine {
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    audit: Arc<AuditLog>,
    materializer: Option<Arc<Materializer>>,
    origins: Option<switchyard_connectors::Origins>,
    slots: Arc<Slots>,
    running: Arc<AtomicUsize>,
}

/// Counts a statement as running while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(Arc::clone(count))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    /// An engine over a checked config, its pipeline and its audit log.
    pub fn new(config: Arc<Config>, pipeline: Arc<Pipeline>, audit: Arc<AuditLog>) -> Arc<Self> {
        Arc::new(Engine {
            config,
            pipeline,
            audit,
            materializer: None,
            origins: None,
            slots: Arc::new(Slots::default()),
            running: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The engine with `materializer` keeping its materialized datasets and
    /// `origins` taking writes.
    pub fn with_materializer(
        config: Arc<Config>,
        pipeline: Arc<Pipeline>,
        audit: Arc<AuditLog>,
        materializer: Arc<Materializer>,
        origins: switchyard_connectors::Origins,
    ) -> Arc<Self> {
        let mut engine = Arc::into_inner(Self::new(config, pipeline, audit))
            .expect("a new engine has one owner");
        engine.materializer = Some(materializer);
        engine.origins = Some(origins);
        Arc::new(engine)
    }

    /// The dataset `schema.name`: one of the config's, or a table of the local store.
    pub fn dataset(&self, schema: &str, name: &str) -> Option<&switchyard_config::Dataset> {
        self.config
            .datasets
            .iter()
            .find(|d| d.schema == schema && d.name == name)
            .or_else(|| {
                (schema == "local")
                    .then(|| self.origins.as_ref()?.local_dataset(name))
                    .flatten()
            })
    }

    /// The origins (for writes; none in tests without them).
    pub fn origins(&self) -> Option<&switchyard_connectors::Origins> {
        self.origins.as_ref()
    }

    /// What keeps the materialized datasets' copies (none in tests without them).
    pub fn materializer(&self) -> Option<&Arc<Materializer>> {
        self.materializer.as_ref()
    }

    /// Statements begun and not yet ended (their rows may still be streaming).
    pub fn running_statements(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// The checked config.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The safety pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// A session for `user`, who has authenticated: the principal is fixed here.
    pub fn login(self: &Arc<Self>, user: &str, client: Client) -> Session {
        Session {
            engine: Arc::clone(self),
            principal: self.pipeline.principal(user),
            client,
            transaction: Arc::default(),
        }
    }
}

/// Why a write statement's node could not be built.
enum WriteRefusal {
    /// A pipeline refusal (RETURNING's read).
    Denied(Box<Denied>),
    /// Anything else.
    Error(EngineError),
}

/// Who is on the other end of a session, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The session's id (the backend pid on pgwire).
    pub session_id: i32,
    /// The peer address.
    pub address: String,
}

/// Which door and sub-protocol a statement came through (the audit's `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// pgwire simple query.
    Simple,
    /// pgwire extended query (Parse/Bind/Execute).
    Extended,
    /// The step-graph REST API.
    Http,
    /// The MCP server (streamable HTTP or stdio).
    Mcp,
    /// Another front door (the engine's own tests).
    Direct,
}

impl Protocol {
    /// The name in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Http => "http",
            Protocol::Mcp => "mcp",
            Protocol::Direct => "direct",
        }
    }
}

/// One logged-in user's session.
pub struct Session {
    engine: Arc<Engine>,
    principal: Principal,
    client: Client,
    transaction: Arc<crate::transaction::Transaction>,
}

/// The outcome of checking one statement.
pub enum Verdict {
    /// Not the engine's to judge: settings, transaction control, cursors' FETCH.
    PassThrough,
    /// Refused (already audited).
    Refused(EngineError),
    /// Allowed: the checked plan and what to enforce when it runs.
    Allowed(Box<Allowed>),
}

/// A checked statement.
pub struct Allowed {
    /// The checked plan (row filters, masks and the row cap in it).
    pub plan: LogicalPlan,
    /// The pipeline's decision.
    pub decision: Decision,
    /// What each run of it is audited and limited by.
    pub approval: Approval,
}

/// What a checked statement runs under; kept with a prepared statement so that
/// each execution is audited and limited as its check decided.
#[derive(Debug, Clone)]
pub struct Approval {
    /// The audit record as checked (time and outcome are set per run).
    pub record: AuditRecord,
    /// The guardrails.
    pub limits: Limits,
    /// Warnings for the client before the rows.
    pub warnings: Vec<String>,
}

impl Approval {
    /// For an open cursor: no timeout and no concurrency slot, since it waits on
    /// the client, not on work.
    pub fn for_cursor(mut self) -> Self {
        self.limits.statement_timeout = None;
        self.limits.max_concurrent_statements = None;
        self
    }
}

/// Per-run settings of the front door.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The session's own statement timeout (e.g. `SET statement_timeout`); the
    /// shorter of it and the guardrail applies.
    pub session_timeout: Option<Duration>,
    /// Cancels the statement.
    pub cancel: CancellationToken,
    /// The session is in a transaction block (a write joins the block's origin
    /// transaction instead of committing on its own).
    pub in_block: bool,
    /// No record of its own: the front door writes one record for a request of
    /// several statements (the step graph).
    pub unaudited: bool,
}

/// Statements with no data to govern.
pub fn passes_through(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::Reset(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
    )
}

impl Session {
    /// The logged-in user and their roles.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Who is on the other end.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The user's guardrails.
    pub fn limits(&self) -> Limits {
        self.engine.pipeline.limits(&self.principal)
    }

    /// The engine this session runs in.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The session's transaction block (savepoints, the origin transaction).
    pub fn transaction(&self) -> &Arc<crate::transaction::Transaction> {
        &self.transaction
    }

    /// A new audit record for `statement`.
    pub fn record(&self, statement: &Statement, protocol: Protocol) -> AuditRecord {
        self.new_record(
            protocol,
            fingerprint(statement),
            statement_hash(&statement.to_string()),
        )
    }

    pub(crate) fn new_record(
        &self,
        protocol: Protocol,
        fingerprint: String,
        hash: String,
    ) -> AuditRecord {
        AuditRecord {
            time: now(),
            session: self.client.session_id,
            user: self.principal.user.clone(),
            roles: self.principal.roles.clone(),
            client: self.client.address.clone(),
            protocol: protocol.name().into(),
            fingerprint,
            statement_hash: hash,
            ..Default::default()
        }
    }

    /// The approval of a statement checked earlier whose decision is no longer
    /// known (a prepared statement's memo is bounded): the user's guardrails.
    pub fn approval(&self, statement: &Statement, protocol: Protocol) -> Approval {
        Approval {
            record: self.record(statement, protocol),
            limits: self.limits(),
            warnings: vec![],
        }
    }

    /// Audits query text that never became a statement (it did not parse).
    pub fn audit_unparsed(
        &self,
        sql: &str,
        protocol: Protocol,
        error: &EngineError,
        started: Instant,
    ) {
        // Literals cannot be told apart in text that does not parse: keep only its hash.
        let record = self.new_record(protocol, "(did not parse)".into(), statement_hash(sql));
        self.audit(record, started).finish(Some(error.record()));
    }

    pub(crate) fn audit(&self, record: AuditRecord, started: Instant) -> StatementAudit {
        StatementAudit::new(Arc::clone(&self.engine.audit), record, started)
    }

    /// A refusal's error and the record that tells of it (not yet written).
    fn refuse(&self, mut record: AuditRecord, denied: Denied) -> (EngineError, AuditRecord) {
        let e = EngineError::Refused(denied.error);
        record.stages = denied.decision.stages;
        record.tables = denied.decision.tables;
        record.origins = denied.decision.origins;
        record.warnings = denied.decision.warnings;
        record.outcome = "denied".into();
        tracing::info!(user = %record.user, error = %e, "statement refused");
        (e, record)
    }

    /// Plans `statement` in `state` and runs the safety pipeline on the plan. A
    /// refusal is audited here; nothing reaches an origin.
    pub async fn check(
        &self,
        statement: &Statement,
        state: &SessionState,
        text: TextFacts,
        protocol: Protocol,
    ) -> Verdict {
        let started = Instant::now();
        let (verdict, written) = self.decide(statement, state, text, protocol).await;
        if let Some((record, error)) = written {
            self.audit(record, started).finish(error);
        }
        verdict
    }

    /// Checks like [`Session::check`] but writes no audit record: for a front door
    /// that writes one record for a request of several statements. Returns the
    /// record a refusal (or a pass-through) would have written, with its error.
    pub async fn check_unaudited(
        &self,
        statement: &Statement,
        state: &SessionState,
        text: TextFacts,
        protocol: Protocol,
    ) -> (Verdict, Option<AuditRecord>) {
        let (verdict, written) = self.decide(statement, state, text, protocol).await;
        let record = written.map(|(mut record, error)| {
            if record.outcome.is_empty() {
                record.outcome = if error.is_some() { "error" } else { "ok" }.into();
            }
            record.error = error;
            record
        });
        (verdict, record)
    }

    /// The verdict, and for a refusal or pass-through the record to write.
    #[allow(clippy::type_complexity)]
    async fn decide(
        &self,
        statement: &Statement,
        state: &SessionState,
        text: TextFacts,
        protocol: Protocol,
    ) -> (Verdict, Option<(AuditRecord, Option<ErrorRecord>)>) {
        let mut record = self.record(statement, protocol);
        if let Err((kind, reason)) = self.engine.audit.health() {
            // Fail closed: a statement that cannot be audited does not run. Recording
            // this refusal is also the probe that clears the state once writes work.
            let e = EngineError::AuditUnwritable {
                disk_full: kind == std::io::ErrorKind::StorageFull,
                reason,
            };
            tracing::error!(error = %e, "audit log unwritable: refusing statements");
            record.outcome = "denied".into();
            let error = Some(e.record());
            return (Verdict::Refused(e), Some((record, error)));
        }
        if passes_through(statement) {
            record.outcome = "utility".into();
            return (Verdict::PassThrough, Some((record, None)));
        }
        // A write's RETURNING and ON CONFLICT are not DataFusion's to plan: taken off
        // here, checked when the write node is built.
        let write = match crate::write::plan::split(statement) {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                let error = Some(e.record());
                return (Verdict::Refused(e), Some((record, error)));
            }
            None => None,
        };
        let query = match (statement, &write) {
            (_, Some((core, _))) => core.clone(),
            // A cursor's query is checked like any other query.
            (Statement::Declare { stmts }, _) => {
                match stmts.first().and_then(|d| d.for_query.clone()) {
                    Some(q) => Statement::Query(q),
                    None => return (Verdict::PassThrough, None),
                }
            }
            (other, _) => other.clone(),
        };
        let input = StatementInput {
            // Functions and the analyser read the whole statement, RETURNING included.
            ast: if write.is_some() { statement } else { &query },
            stacked: text.stacked,
            trailing_comment: text.trailing_comment,
        };
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                query.clone(),
            )))
            .await;
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                if let Some(denied) = self.engine.pipeline.check_unplanned(&input) {
                    return self.refused(record, denied);
                }
                let e = EngineError::from(e);
                record.outcome = "error".into();
                let error = Some(e.record());
                return (Verdict::Refused(e), Some((record, error)));
            }
        };
        let unchecked = write.as_ref().map(|_| plan.clone());
        match self
            .engine
            .pipeline
            .check(&input, plan, &self.principal, state)
        {
            Err(denied) => self.refused(record, *denied),
            Ok(mut checked) => {
                if let (Some((_, extras)), Some(unchecked)) = (&write, &unchecked) {
                    match self
                        .write_node(extras, unchecked, checked.plan, state)
                        .await
                    {
                        Ok(node) => checked.plan = node,
                        Err(WriteRefusal::Denied(denied)) => return self.refused(record, *denied),
                        Err(WriteRefusal::Error(e)) => {
                            record.stages = checked.decision.stages.clone();
                            record.tables = checked.decision.tables.clone();
                            record.origins = checked.decision.origins.clone();
                            let error = Some(e.record());
                            return (Verdict::Refused(e), Some((record, error)));
                        }
                    }
                }
                record.stages = checked.decision.stages.clone();
                record.tables = checked.decision.tables.clone();
                record.origins = checked.decision.origins.clone();
                record.warnings = checked.decision.warnings.clone();
                let allowed = Allowed {
                    plan: checked.plan,
                    approval: Approval {
                        record,
                        limits: checked.limits,
                        warnings: checked.decision.warnings.clone(),
                    },
                    decision: checked.decision,
                };
                (Verdict::Allowed(Box::new(allowed)), None)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn refused(
        &self,
        record: AuditRecord,
        denied: Denied,
    ) -> (Verdict, Option<(AuditRecord, Option<ErrorRecord>)>) {
        let (e, record) = self.refuse(record, denied);
        let error = Some(e.record());
        (Verdict::Refused(e), Some((record, error)))
    }

    /// The checked write node of a write statement whose core plan the pipeline
    /// passed: its RETURNING checked as a read, its expressions off the checked plan.
    async fn write_node(
        &self,
        extras: &crate::write::plan::Extras,
        unchecked: &LogicalPlan,
        checked: LogicalPlan,
        state: &SessionState,
    ) -> Result<LogicalPlan, WriteRefusal> {
        use crate::write::plan;
        let policy = self.engine.pipeline.policy();
        let target = plan::target_of(&checked).cloned().ok_or_else(|| {
            WriteRefusal::Error(EngineError::coded(
                switchyard_sqlstate::SqlState::FEATURE_NOT_SUPPORTED,
                "EXPLAIN of INSERT, UPDATE or DELETE is not supported",
            ))
        })?;
        let schema = target
            .schema()
            .unwrap_or(policy.default_schema())
            .to_string();
        let name = target.table().to_string();
        let dataset = self.engine.dataset(&schema, &name).ok_or_else(|| {
            WriteRefusal::Error(EngineError::coded(
                switchyard_sqlstate::SqlState::FEATURE_NOT_SUPPORTED,
                format!("{schema}.{name} is not a dataset of an origin; only datasets take writes"),
            ))
        })?;
        crate::write::run::writes_of(self.engine.origins.as_ref(), dataset)
            .map_err(WriteRefusal::Error)?;
        let returning = match extras.returning_query() {
            None => None,
            Some(sql) => Some(self.returning_plan(&sql, state).await?),
        };
        let cx = plan::Context {
            dataset,
            target: (&schema, &name),
            who: &self.principal,
            state,
            policy,
        };
        let node =
            plan::build(&cx, unchecked, checked, extras, returning).map_err(WriteRefusal::Error)?;
        Ok(crate::write::node_plan(node))
    }

    /// RETURNING's query, planned and checked as a read.
    async fn returning_plan(
        &self,
        sql: &str,
        state: &SessionState,
    ) -> Result<LogicalPlan, WriteRefusal> {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .map_err(|e| {
                WriteRefusal::Error(EngineError::coded(
                    switchyard_sqlstate::SqlState::SYNTAX_ERROR,
                    format!("RETURNING: {e}"),
                ))
            })?
            .remove(0);
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                statement.clone(),
            )))
            .await
            .map_err(|e| WriteRefusal::Error(e.into()))?;
        let input = StatementInput {
            ast: &statement,
            stacked: 1,
            trailing_comment: false,
        };
        self.engine
            .pipeline
            .check(&input, plan, &self.principal, state)
            .map(|c| c.plan)
            .map_err(WriteRefusal::Denied)
    }

    /// Starts a run of an approved statement that arrived at `started`: its audit
    /// record is written from here on whatever happens, and the user's concurrency
    /// slot is taken (53400 when none is free, audited).
    pub fn begin(
        &self,
        approval: Approval,
        started: Instant,
        options: RunOptions,
    ) -> Result<Running, EngineError> {
        let Approval {
            mut record,
            mut limits,
            warnings,
        } = approval;
        record.time = now();
        limits.statement_timeout = match (limits.statement_timeout, options.session_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let audit = (!options.unaudited).then(|| self.audit(record, started));
        let slot = match self
            .engine
            .slots
            .acquire(&self.principal.user, limits.max_concurrent_statements)
        {
            Ok(slot) => slot,
            Err(e) => {
                if let Some(audit) = audit {
                    audit.finish(Some(e.record()));
                }
                return Err(e);
            }
        };
        Ok(Running {
            engine: Arc::clone(&self.engine),
            transaction: Arc::clone(&self.transaction),
            in_block: options.in_block || self.transaction.is_open(),
            guarding: Guarding {
                limits,
                started,
                cancel: options.cancel,
                audit,
                slot,
                running: Some(Box::new(Counted::new(&self.engine.running))),
            },
            warnings,
        })
    }
}

/// A statement that began running: finish it, fail it, or run its plan.
pub struct Running {
    engine: Arc<Engine>,
    transaction: Arc<crate::transaction::Transaction>,
    in_block: bool,
    guarding: Guarding,
    warnings: Vec<String>,
}

/// What a run produced.
pub enum Output {
    /// Rows, guarded.
    Rows(Rows),
    /// A command's row count (INSERT/UPDATE/DELETE), e.g. `INSERT 0 3`.
    Count {
        /// INSERT, UPDATE or DELETE.
        op: String,
        /// Rows affected.
        rows: u64,
    },
}

/// A result's rows.
pub struct Rows {
    /// The guarded batches; the audit record is written when they end.
    pub batches: SendableRecordBatchStream,
    /// When rows were cut at the row cap: the notice to send before them.
    pub cut: Option<String>,
    /// A write's RETURNING rows: the command and the rows it changed, for the tag.
    pub command: Option<(&'static str, u64)>,
}

/// `work` under the statement timeout (counted from the statement's arrival) and
/// the cancel token: 57014 for either, `work`'s own result otherwise.
fn bounded<T>(
    guarding: &Guarding,
    work: impl std::future::Future<Output = Result<T, EngineError>>,
) -> impl std::future::Future<Output = Result<T, EngineError>> {
    // Only owned parts go into the future: the run is not shared across awaits.
    let cancel = guarding.cancel.clone();
    let deadline = guarding
        .limits
        .statement_timeout
        .map(|t| tokio::time::Instant::from_std(guarding.started + t));
    bounded_by(cancel, deadline, work)
}

async fn bounded_by<T>(
    cancel: CancellationToken,
    deadline: Option<tokio::time::Instant>,
    work: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let timeout = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Err(EngineError::Canceled),
        _ = timeout => Err(EngineError::Timeout),
    }
}

/// Caps up to this many rows are read ahead so the notice of a cut comes first;
/// larger caps stream, and a cut is recorded in the audit log only.
const READ_AHEAD_ROWS: u64 = 10_000;

impl Running {
    /// Warnings to send the client before anything else.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The guardrails it runs under.
    pub fn limits(&self) -> &Limits {
        &self.guarding.limits
    }

    /// The engine it runs in.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Whether it runs in a transaction block.
    pub fn in_block(&self) -> bool {
        self.in_block
    }

    /// The session's transaction state.
    pub fn transaction(&self) -> &Arc<crate::transaction::Transaction> {
        &self.transaction
    }

    /// Ends a write successfully, recording the rows it changed.
    pub fn finish_with_rows(mut self, rows: u64) {
        if let Some(audit) = self.guarding.audit.as_mut() {
            audit.record_mut().rows = rows;
        }
        self.finish();
    }

    /// Starts `COPY ... FROM STDIN` of `plan` (the checked insert it amounts to).
    pub async fn copy_in(
        self,
        ctx: &SessionContext,
        plan: &LogicalPlan,
    ) -> Result<crate::write::CopyIn, EngineError> {
        crate::write::CopyIn::start(self, ctx, plan).await
    }

    /// Ends it successfully without rows.
    pub fn finish(mut self) {
        if let Some(audit) = self.guarding.audit.take() {
            audit.finish(None);
        }
    }

    /// Ends it with `error`, which is returned.
    pub fn fail(mut self, error: EngineError) -> EngineError {
        if let Some(audit) = self.guarding.audit.take() {
            audit.finish(Some(error.record()));
        }
        error
    }

    /// Runs `plan`: a query's rows (read ahead to announce a cut, when the cap is
    /// small) or a command's count. Planning and the read-ahead are under the
    /// statement timeout and the cancel token; so are the rows.
    pub async fn execute(
        self,
        ctx: &SessionContext,
        plan: LogicalPlan,
    ) -> Result<Output, EngineError> {
        if let Some(node) = crate::write::write_node(&plan) {
            let node = node.clone();
            return self.write(ctx, node).await;
        }
        let dml = match &plan {
            LogicalPlan::Dml(d) => Some(d.op.name().to_uppercase()),
            _ => None,
        };
        let limits = self.guarding.limits.clone();
        let truncate = match (limits.max_rows, limits.on_max_rows) {
            (Some(max), Some(RowCapAction::Truncate)) if max <= READ_AHEAD_ROWS => Some(max),
            _ => None,
        };
        let plan = match self.own_writes(plan).await {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e)),
        };
        let work = async {
            let df = ctx.execute_logical_plan(plan).await?;
            if dml.is_some() {
                let batches = df.collect().await?;
                let rows = batches
                    .first()
                    .and_then(|b| b.column_by_name("count"))
                    .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().map(|a| a.value(0)))
                    .unwrap_or(0);
                return Ok::<_, EngineError>((None, rows, false));
            }
            let batches = df.execute_stream().await?;
            match truncate {
                Some(max) => {
                    let (batches, cut) = guard::read_ahead(batches, max).await?;
                    Ok((Some(batches), 0, cut))
                }
                None => Ok((Some(batches), 0, false)),
            }
        };
        let outcome = bounded(&self.guarding, work).await;
        match outcome {
            Err(e) => Err(self.fail(e)),
            Ok((None, rows, _)) => {
                self.finish();
                Ok(Output::Count {
                    op: dml.unwrap_or_default(),
                    rows,
                })
            }
            Ok((Some(batches), _, cut)) => {
                let cut = cut.then(|| {
                    format!(
                        "result cut to max_rows ({} rows); more rows matched",
                        limits.max_rows.unwrap_or_default()
                    )
                });
                Ok(Output::Rows(Rows {
                    batches: guard::guard(batches, self.guarding),
                    cut,
                    command: None,
                }))
            }
        }
    }

    /// Runs a write at its origin under the statement timeout and the cancel token
    /// (a cancelled write's origin statement is dropped, which cancels it there).
    async fn write(
        self,
        ctx: &SessionContext,
        node: crate::write::WriteNode,
    ) -> Result<Output, EngineError> {
        let config = Arc::clone(&self.engine.config);
        let pipeline = Arc::clone(&self.engine.pipeline);
        let engine = Arc::clone(&self.engine);
        let scope = crate::write::run::Scope {
            engine: &engine,
            config: &config,
            default_schema: pipeline.policy().default_schema(),
            origins: self.engine.origins.as_ref(),
            transaction: &self.transaction,
            in_block: self.in_block,
        };
        let outcome = bounded(&self.guarding, crate::write::run::run(&node, ctx, scope)).await;
        let op = node.op();
        match outcome {
            Err(e) => Err(self.fail(e)),
            Ok((rows, None)) => {
                self.finish_with_rows(rows);
                Ok(Output::Count {
                    op: op.to_string(),
                    rows,
                })
            }
            Ok((rows, Some(batches))) => Ok(Output::Rows(Rows {
                batches: guard::guard(batches, self.guarding),
                cut: None,
                command: Some((op, rows)),
            })),
        }
    }

    /// `plan` reading, in a block, the block's own writes at its origin. (The run
    /// itself is not shared across the await: only what the rewrite needs is.)
    fn own_writes(
        &self,
        plan: LogicalPlan,
    ) -> impl std::future::Future<Output = Result<LogicalPlan, EngineError>> + Send + 'static {
        let in_block = self.in_block;
        let engine = Arc::clone(&self.engine);
        let transaction = Arc::clone(&self.transaction);
        async move {
            if !in_block {
                return Ok(plan);
            }
            crate::write::run::reading_own_writes(
                plan,
                &engine.config,
                engine.pipeline.policy().default_schema(),
                &transaction,
            )
            .await
        }
    }

    /// Runs `plan`, a query, and streams its rows (no read-ahead: an open cursor).
    pub async fn stream(
        self,
        ctx: &SessionContext,
        plan: LogicalPlan,
    ) -> Result<SendableRecordBatchStream, EngineError> {
        let plan = match self.own_writes(plan).await {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e)),
        };
        let planned = async { ctx.execute_logical_plan(plan).await?.execute_stream().await };
        match planned.await {
            Ok(batches) => Ok(guard::guard(batches, self.guarding)),
            Err(e) => Err(self.fail(e.into())),
        }
    }
}

/// A front door of a few lines: statements run through [`Session`] without pgwire,
/// over a real files origin, with the audit log read back.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::QueryText;
    use futures::StreamExt;

    struct Door {
        engine: Arc<Engine>,
        ctx: SessionContext,
        audit: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn door() -> Door {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = dir.path().join("lake");
        std::fs::create_dir_all(&lake).expect("lake");
        let mut csv = String::from("id,page\n");
        for i in 1..=20 {
            csv.push_str(&format!("{i},/p/{}\n", i % 3));
        }
        std::fs::write(lake.join("visits.csv"), csv).expect("csv");
        std::fs::write(lake.join("secrets.csv"), "id\n1\n").expect("csv");
        let audit = dir.path().join("audit.jsonl");
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
users:
  - {{ name: analyst, password: pw, roles: [reader] }}
  - {{ name: capped, password: pw, roles: [capped] }}
roles:
  reader: {{ allow: ["lake.*"], deny: [lake.secrets] }}
  capped: {{ allow: [lake.visits], guardrails: {{ max_rows: 3 }} }}
origins:
  lake: {{ kind: files, path: {lake} }}
datasets:
  lake: {{ origin: lake, tables: [visits, secrets] }}
audit: {{ path: {audit} }}
"#,
            lake = lake.display(),
            audit = audit.display(),
        );
        let config =
            switchyard_config::parse_str(&yaml, std::path::Path::new("test.yaml"), &|_| None)
                .expect("config");
        let ctx = SessionContext::new_with_state(switchyard_planner::session_state());
        switchyard_connectors::install(&ctx, &config).expect("origins");
        let policy = switchyard_safety::Policy::new(&config, switchyard_planner::DEFAULT_SCHEMA);
        let log = AuditLog::open(&config.audit.path, config.audit.fsync).expect("audit log");
        let engine = Engine::new(
            Arc::new(config),
            Arc::new(Pipeline::new(policy)),
            Arc::new(log),
        );
        Door {
            engine,
            ctx,
            audit,
            _dir: dir,
        }
    }

    fn parse(sql: &str) -> Statement {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("sql")
            .remove(0)
    }

    /// Runs `sql` as `user`: the rows, the cut notice, or the error's code.
    async fn run(door: &Door, user: &str, sql: &str) -> Result<(u64, Option<String>), String> {
        let session = door.engine.login(user, Client::default());
        let text = QueryText::from_sql(sql).take();
        let allowed = match session
            .check(&parse(sql), &door.ctx.state(), text, Protocol::Direct)
            .await
        {
            Verdict::Allowed(a) => a,
            Verdict::Refused(e) => return Err(e.sqlstate().code().to_string()),
            Verdict::PassThrough => return Ok((0, None)),
        };
        let running = session
            .begin(allowed.approval, Instant::now(), RunOptions::default())
            .map_err(|e| e.sqlstate().code().to_string())?;
        match running.execute(&door.ctx, allowed.plan).await {
            Ok(Output::Rows(mut rows)) => {
                let mut n = 0;
                while let Some(b) = rows.batches.next().await {
                    n += b
                        .map_err(|e| crate::classify(&e).0.code().to_string())?
                        .num_rows() as u64;
                }
                Ok((n, rows.cut))
            }
            Ok(Output::Count { rows, .. }) => Ok((rows, None)),
            Err(e) => Err(e.sqlstate().code().to_string()),
        }
    }

    fn audit_records(door: &Door) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&door.audit)
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record"))
            .collect()
    }

    #[tokio::test]
    async fn a_statement_runs_checked_guarded_and_audited_without_pgwire() {
        let door = door();
        assert_eq!(
            run(
                &door,
                "analyst",
                "SELECT id, page FROM lake.visits WHERE id > 5"
            )
            .await,
            Ok((15, None))
        );
        assert_eq!(
            run(&door, "analyst", "SELECT id FROM lake.secrets").await,
            Err("42501".into())
        );
        let capped = run(&door, "capped", "SELECT id FROM lake.visits").await;
        assert_eq!(
            capped,
            Ok((
                3,
                Some("result cut to max_rows (3 rows); more rows matched".into())
            ))
        );
        assert_eq!(
            run(&door, "analyst", "SELECT nope FROM lake.visits").await,
            Err("42703".into())
        );
        let records = audit_records(&door);
        let outcomes: Vec<(&str, u64)> = records
            .iter()
            .map(|r| {
                (
                    r["outcome"].as_str().unwrap_or_default(),
                    r["rows"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [("ok", 15), ("denied", 0), ("ok", 3), ("error", 0)]
        );
        assert_eq!(records[0]["protocol"], "direct");
        assert_eq!(records[0]["user"], "analyst");
        assert_eq!(records[1]["error"]["code"], "42501");
        assert!(records[0]["bytes"].as_u64().unwrap_or_default() > 0);
        assert_eq!(
            switchyard_safety::verify(&door.audit).expect("the chain verifies"),
            4
        );
    }

    #[tokio::test]
    async fn settings_pass_through_and_a_full_slot_refuses() {
        let door = door();
        assert_eq!(run(&door, "analyst", "SET x = 1").await, Ok((0, None)));
        let session = door.engine.login("analyst", Client::default());
        let mut approval = session.approval(&parse("SELECT 1"), Protocol::Direct);
        approval.limits.max_concurrent_statements = Some(1);
        let first = session
            .begin(approval.clone(), Instant::now(), RunOptions::default())
            .expect("a slot");
        let e = session
            .begin(approval.clone(), Instant::now(), RunOptions::default())
            .err()
            .expect("no second slot");
        assert_eq!(e.sqlstate().code(), "53400");
        first.finish();
        assert!(session
            .begin(approval, Instant::now(), RunOptions::default())
            .is_ok());
    }
}
