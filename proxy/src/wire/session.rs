//! One client connection: its handlers, its own DataFusion session, the safety hook
//! every statement passes, and cancellation of running statements.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::encode::encode_dataframe;
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, Projection, ScalarUDF, Volatility};
use datafusion::prelude::{create_udf, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::portal::Format;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::Type;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireServerHandlers, PidSecretKeyGenerator, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;
use switchyard_config::{Config, RowCapAction};
use switchyard_safety::{
    fingerprint, statement_hash, AuditLog, AuditRecord, Decision, Denied, Limits, Pipeline,
    Principal, StatementInput,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auth::{Users, SCRAM_ITERATIONS};
use super::cancel::{cancellable, CancelRegistry, Registration};
use super::errors::SqlStateErrors;
use super::running::{self, error_record, user_error, Audit, Slots};
use super::tls::RequireTls;

/// What every connection shares.
pub struct Shared {
    /// The session every connection's own session is cloned from (catalogs are shared).
    pub base: SessionContext,
    /// The checked config.
    pub config: Arc<Config>,
    /// SCRAM secrets.
    pub users: Arc<Users>,
    /// The safety pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Running statements per user.
    pub slots: Arc<Slots>,
    /// pg_catalog's built-in tables, shared by every session's own pg_catalog.
    pub pg_static:
        Arc<datafusion_postgres::datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables>,
    /// Running statements, for CancelRequest.
    pub cancels: Arc<CancelRegistry>,
    /// Unique backend pids and secret keys.
    pub pids: Arc<dyn PidSecretKeyGenerator>,
    /// Whether plaintext clients are refused.
    pub tls_required: bool,
    /// Parameters reported to clients at startup.
    pub params: Arc<DefaultServerParameterProvider>,
}

/// The handlers of one connection (pgwire asks for each once per connection).
pub struct Connection {
    shared: Arc<Shared>,
    service: Arc<QueryService>,
}

impl Connection {
    /// Handlers for a new connection, with its own DataFusion session.
    pub fn new(shared: Arc<Shared>) -> Self {
        let user = Arc::new(OnceLock::new());
        let definitions = Arc::new(super::catalog_facts::Definitions::default());
        let state = super::catalog::session_state(
            &shared.base.state(),
            switchyard_planner::CATALOG,
            Arc::clone(&shared.pipeline),
            Arc::clone(&user),
            Arc::clone(&shared.pg_static),
            Arc::clone(&definitions),
        );
        let ctx = SessionContext::new_with_state(state);
        // current_user / session_user: rewritten by datafusion-postgres to session_user().
        ctx.register_udf(session_user_udf(Arc::clone(&user)));
        super::functions::register(&ctx);
        super::catalog_facts::register(&ctx, &definitions);
        let ctx = Arc::new(ctx);
        let texts = Arc::new(Mutex::new(QueryTexts::default()));
        let prepared = Arc::new(Mutex::new(HashMap::new()));
        let safety = Arc::new(SafetyHook {
            shared: Arc::clone(&shared),
            user: Arc::clone(&user),
            texts: Arc::clone(&texts),
            prepared: Arc::clone(&prepared),
        });
        let transactions = Arc::new(super::transactions::TransactionHook::default());
        // Transactions first: a failed block refuses statements before they are checked.
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::clone(&transactions) as Arc<dyn QueryHook>,
            safety,
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let inner = DfSessionService::new_with_hooks(Arc::clone(&ctx), hooks.clone());
        let service = Arc::new(QueryService {
            inner,
            ctx,
            hooks,
            transactions,
            cancels: Arc::clone(&shared.cancels),
            shared: Arc::clone(&shared),
            texts,
            prepared,
        });
        Connection { shared, service }
    }
}

fn session_user_udf(user: Arc<OnceLock<String>>) -> ScalarUDF {
    create_udf(
        "session_user",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            let name = user.get().cloned().unwrap_or_default();
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
        }),
    )
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(self.shared.users.clone());
        scram.set_iterations(SCRAM_ITERATIONS);
        let sasl = SASLAuthStartupHandler::new(Arc::clone(&self.shared.params))
            .with_scram(scram)
            .with_pid_secret_key_generator(Arc::clone(&self.shared.pids));
        Arc::new(RequireTls::new(sasl, self.shared.tls_required))
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(SqlStateErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.shared.cancels)
    }
}

/// datafusion-postgres's query service with cancellation around every statement.
pub struct QueryService {
    inner: DfSessionService,
    /// The session datafusion-postgres runs statements in (queries' Execute is ours).
    ctx: Arc<SessionContext>,
    /// The statement hooks, in the order datafusion-postgres calls them.
    hooks: Vec<Arc<dyn QueryHook>>,
    /// Savepoints of the open block (the hook among `hooks`).
    transactions: Arc<super::transactions::TransactionHook>,
    cancels: Arc<CancelRegistry>,
    shared: Arc<Shared>,
    texts: Arc<Mutex<QueryTexts>>,
    prepared: Arc<Mutex<HashMap<String, Prepared>>>,
}

/// What the text of the query being run says about its statements: how many there
/// are and which end with a line comment (the analyser's `stacked` and `comment`).
#[derive(Debug, Default)]
struct QueryTexts {
    stacked: usize,
    trailing_comment: Vec<bool>,
    next: usize,
}

impl QueryTexts {
    fn from_sql(sql: &str) -> Self {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
        let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
            return QueryTexts {
                stacked: 1,
                ..Default::default()
            };
        };
        let mut trailing = Vec::new();
        for segment in tokens.split(|t| *t == Token::SemiColon) {
            let mut meaningful = segment.iter().filter(|t| {
                !matches!(
                    t,
                    Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
                )
            });
            let last = meaningful.clone().next_back();
            let has_code = meaningful.any(|t| !matches!(t, Token::Whitespace(_)));
            if has_code {
                trailing.push(matches!(
                    last,
                    Some(Token::Whitespace(Whitespace::SingleLineComment { .. }))
                ));
            }
        }
        QueryTexts {
            stacked: trailing.len().max(1),
            trailing_comment: trailing,
            next: 0,
        }
    }

    /// The next statement's facts (statements reach the hook in order).
    fn take(&mut self) -> (usize, bool) {
        let i = self.next;
        self.next += 1;
        (
            self.stacked.max(1),
            self.trailing_comment.get(i).copied().unwrap_or(false),
        )
    }
}

/// Statements remembered per connection between Parse and Execute.
const PREPARED_MEMO: usize = 4096;

/// A statement checked at Parse (extended protocol), run at each Execute.
#[derive(Debug, Clone)]
struct Prepared {
    record: AuditRecord,
    limits: Limits,
    warnings: Vec<String>,
}

impl QueryService {
    /// datafusion-postgres's Execute, ended early by a CancelRequest.
    async fn execute<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
        token: &CancellationToken,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let run = async {
            match &portal.statement.statement.1 {
                Some((statement @ Statement::Query(_), plan)) => {
                    self.run_query(client, portal, statement, plan).await
                }
                _ => {
                    <DfSessionService as ExtendedQueryHandler>::do_query(
                        &self.inner,
                        client,
                        portal,
                        max_rows,
                    )
                    .await
                }
            }
        };
        tokio::select! {
            r = run => r,
            _ = token.cancelled() => Err(PgWireError::QueryCanceled),
        }
    }

    /// A query's Execute: datafusion-postgres's steps (parameters, hooks, run), with
    /// our parameter decoding ([`super::params`]) and row encoding ([`super::encode`]).
    async fn run_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        statement: &Statement,
        plan: &LogicalPlan,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = super::params::values(portal, plan)?;
        for hook in &self.hooks {
            if let Some(response) = hook
                .handle_extended_query(statement, plan, &params, &self.ctx, client)
                .await
            {
                return response;
            }
        }
        let plan = plan
            .clone()
            .replace_params_with_values(&params)
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let options = Arc::new(super::encode::format_options(client.metadata()));
        let response = encode_dataframe(df, &portal.result_column_format, Some(options)).await?;
        Ok(Response::Query(response))
    }

    /// The cancel token for the statement about to run, registering the session on first use.
    fn begin<C: ClientInfo>(&self, client: &C) -> CancellationToken {
        let registration = client.session_extensions().get_or_insert_with(|| {
            let (pid, secret) = client.pid_and_secret_key();
            self.cancels.register(pid, secret.to_bytes().to_vec())
        });
        let registration: &Registration = &registration;
        registration.session.begin()
    }
}

fn wrap(response: Response, token: &CancellationToken) -> Response {
    match response {
        Response::Query(q) => Response::Query(cancellable(q, token.clone())),
        other => other,
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryService {
    /// A failed block is usable again from a `ROLLBACK TO SAVEPOINT` of a savepoint set
    /// before the failure (pgwire would keep it failed; see [`super::transactions`]).
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::response::TransactionStatus;
        if client.transaction_status() == TransactionStatus::Error
            && self.transactions.recovers(&query.query)
        {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let rewritten = super::guard::check_and_name(query)?;
        let rewritten =
            super::catalog_sql::rewrite(rewritten.as_deref().unwrap_or(query)).or(rewritten);
        // The analyser reads the text as sent: a rewrite drops comments.
        *self.texts.lock().unwrap_or_else(|p| p.into_inner()) = QueryTexts::from_sql(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let token = self.begin(client);
        let started = Instant::now();
        let run = <DfSessionService as SimpleQueryHandler>::do_query(&self.inner, client, query);
        let responses = tokio::select! {
            r = run => r,
            _ = token.cancelled() => return Err(PgWireError::QueryCanceled),
        };
        let responses = match responses {
            Ok(r) => r,
            Err(e) => {
                let reached_hook = self.texts.lock().unwrap_or_else(|p| p.into_inner()).next > 0;
                if !reached_hook {
                    audit_unparsed(&self.shared, &*client, query, "simple", &e, started);
                }
                return Err(e);
            }
        };
        Ok(responses.into_iter().map(|r| wrap(r, &token)).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = GuardedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(GuardedParser {
            inner: self.inner.query_parser(),
            texts: Arc::clone(&self.texts),
            shared: Arc::clone(&self.shared),
        })
    }

    /// An Execute without a row limit on a query streams its rows as they come.
    /// pgwire 0.41's default path gathers every row of such an Execute in memory
    /// before sending the first (`Portal::fetch(0)`), so a 5 M-row result held the
    /// whole result in the proxy; everything else takes the default path.
    async fn on_execute<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::portal::PortalExecutionState;
        use pgwire::api::store::Entry;
        use pgwire::api::PgWireConnectionState;
        let name = message
            .name
            .as_deref()
            .unwrap_or(pgwire::api::DEFAULT_NAME)
            .to_string();
        let portal = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(portal)) => Some(portal),
            _ => None,
        };
        if let Some(portal) = &portal {
            use pgwire::messages::response::TransactionStatus;
            if client.transaction_status() == TransactionStatus::Error
                && self.transactions.recovers(&portal.statement.statement.0)
            {
                client.set_transaction_status(TransactionStatus::Transaction);
            }
        }
        let streamable = match &portal {
            Some(portal) => {
                message.max_rows == 0
                    && matches!(client.state(), PgWireConnectionState::ReadyForQuery)
                    && matches!(portal.statement.statement.1, Some((Statement::Query(_), _)))
                    && matches!(*portal.state().lock().await, PortalExecutionState::Initial)
            }
            None => false,
        };
        let (Some(portal), true) = (portal, streamable) else {
            return self._on_execute(client, message).await;
        };
        let status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await? {
            Response::Query(mut results) => {
                let tag = results.command_tag().to_owned();
                let rows = results.data_rows();
                let mut sent = 0;
                while let Some(row) = futures::StreamExt::next(rows).await {
                    client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                    sent += 1;
                }
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new(&tag).with_rows(sent).into(),
                    ))
                    .await?;
                *portal.state().lock().await = PortalExecutionState::Finished;
            }
            Response::Error(e) => {
                return Err(PgWireError::UserError(e));
            }
            _ => {
                // A SELECT answers rows or an error; nothing else reaches here.
                return Err(user_error("XX000", "unexpected response to a query".into()));
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let statement = portal.statement.statement.1.as_ref().map(|(s, _)| s);
        let prepared = statement.and_then(|statement| {
            let known = self
                .prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&statement.to_string())
                .cloned();
            // Checked at Parse but forgotten since (the memo is bounded): the plan in the
            // portal is the checked one; audit and limit it with the user's guardrails.
            if matches!(statement, Statement::Declare { .. }) {
                // The hook opens the cursor and audits it.
                return None;
            }
            known.or_else(|| {
                (!passes_through(statement)).then(|| {
                    let who = self.shared.pipeline.principal(
                        client
                            .metadata()
                            .get(METADATA_USER)
                            .map(String::as_str)
                            .unwrap_or_default(),
                    );
                    Prepared {
                        record: AuditRecord {
                            session: client.pid_and_secret_key().0,
                            user: who.user.clone(),
                            roles: who.roles.clone(),
                            client: client.socket_addr().to_string(),
                            protocol: "extended".into(),
                            fingerprint: fingerprint(statement),
                            statement_hash: statement_hash(&statement.to_string()),
                            ..Default::default()
                        },
                        limits: self.shared.pipeline.limits(&who),
                        warnings: vec![],
                    }
                })
            })
        });
        let token = self.begin(client);
        let Some(prepared) = prepared else {
            // SET, SHOW, transaction control: nothing to guard.
            let response = self.execute(client, portal, max_rows, &token).await?;
            return Ok(wrap(response, &token));
        };
        let mut prepared = prepared;
        prepared.limits = with_session_timeout(prepared.limits, &*client);
        let mut record = prepared.record.clone();
        record.time = now();
        let audit = Audit::new(Arc::clone(&self.shared.audit), record, started);
        let slot = match self.shared.slots.acquire(
            &prepared.record.user,
            prepared.limits.max_concurrent_statements,
        ) {
            Ok(slot) => slot,
            Err(e) => {
                audit.finish(Some(error_record(&e)));
                return Err(e);
            }
        };
        for warning in &prepared.warnings {
            client.send(notice(warning)).await?;
        }
        let response = match self.execute(client, portal, max_rows, &token).await {
            Ok(r) => r,
            Err(e) => {
                audit.finish(Some(error_record(&e)));
                return Err(e);
            }
        };
        let response = match response {
            Response::Query(q) => {
                let (q, cut) = match truncation(&prepared.limits) {
                    Some(max) => match running::read_ahead(q, max).await {
                        Ok(r) => r,
                        Err(e) => {
                            audit.finish(Some(error_record(&e)));
                            return Err(e);
                        }
                    },
                    None => (q, false),
                };
                if cut {
                    client.send(notice(&cut_message(&prepared.limits))).await?;
                }
                Response::Query(running::guard(
                    q,
                    prepared.limits.clone(),
                    started,
                    Some(audit),
                    slot,
                ))
            }
            other => {
                audit.finish(None);
                other
            }
        };
        Ok(wrap(response, &token))
    }
}

/// datafusion-postgres's parser behind [`super::guard::check_and_name`]; one statement per Parse.
pub struct GuardedParser {
    inner: Arc<<DfSessionService as ExtendedQueryHandler>::QueryParser>,
    texts: Arc<Mutex<QueryTexts>>,
    shared: Arc<Shared>,
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

#[async_trait]
impl QueryParser for GuardedParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let started = Instant::now();
        let rewritten = super::guard::check_and_name(sql)?;
        let texts = QueryTexts::from_sql(sql);
        if texts.stacked > 1 {
            let e = user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            );
            audit_unparsed(&self.shared, client, sql, "extended", &e, started);
            return Err(e);
        }
        *self.texts.lock().unwrap_or_else(|p| p.into_inner()) = texts;
        let rewritten =
            super::catalog_sql::rewrite(rewritten.as_deref().unwrap_or(sql)).or(rewritten);
        let parsed = self
            .inner
            .parse_sql(client, rewritten.as_deref().unwrap_or(sql), types)
            .await;
        if let Err(e) = &parsed {
            if self.texts.lock().unwrap_or_else(|p| p.into_inner()).next == 0 {
                audit_unparsed(&self.shared, client, sql, "extended", e, started);
            }
        }
        parsed
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        match stmt {
            (_, Some((_, plan))) => super::params::wire_types(plan),
            _ => Ok(vec![]),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &DfStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // As datafusion-postgres does, with our column types (uuid, json, jsonb).
        match stmt {
            (_, Some((_, plan))) if !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_)) => {
                super::encode::pg_fields(
                    plan.schema().as_arrow(),
                    column_format.unwrap_or(&Format::UnifiedText),
                    None,
                )
            }
            _ => Ok(vec![]),
        }
    }
}

/// Runs the safety pipeline on every statement's logical plan before anything
/// executes, and in the simple protocol runs the checked plan itself: the plan
/// that executes is the checked one (with its row filters, masks and row cap),
/// never a re-reading of the client's text.
struct SafetyHook {
    shared: Arc<Shared>,
    user: Arc<OnceLock<String>>,
    texts: Arc<Mutex<QueryTexts>>,
    prepared: Arc<Mutex<HashMap<String, Prepared>>>,
}

/// Audits a query string that never became a statement (it did not parse).
fn audit_unparsed<C: ClientInfo + ?Sized>(
    shared: &Shared,
    client: &C,
    sql: &str,
    protocol: &str,
    error: &PgWireError,
    started: Instant,
) {
    let user = client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_default();
    let who = shared.pipeline.principal(&user);
    let record = AuditRecord {
        time: now(),
        session: client.pid_and_secret_key().0,
        user: who.user,
        roles: who.roles,
        client: client.socket_addr().to_string(),
        protocol: protocol.into(),
        // Literals cannot be told apart in text that does not parse: keep only its hash.
        fingerprint: "(did not parse)".into(),
        statement_hash: statement_hash(sql),
        ..Default::default()
    };
    Audit::new(Arc::clone(&shared.audit), record, started).finish(Some(error_record(error)));
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn notice(message: &str) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(NoticeResponse::from(ErrorInfo::new(
        "WARNING".into(),
        "01000".into(),
        message.to_string(),
    )))
}

/// The limits with the session's own `SET statement_timeout` (stored by
/// datafusion-postgres's SET hook as `statement_timeout_ms`) when that is shorter.
fn with_session_timeout<C: ClientInfo + ?Sized>(mut limits: Limits, client: &C) -> Limits {
    let session = client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis);
    limits.statement_timeout = match (limits.statement_timeout, session) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    limits
}

/// The cap to read ahead for, when cut rows are announced by a NOTICE.
fn truncation(limits: &Limits) -> Option<u64> {
    match (limits.max_rows, limits.on_max_rows) {
        (Some(max), Some(RowCapAction::Truncate)) if max <= READ_AHEAD_ROWS => Some(max),
        _ => None,
    }
}

/// Caps up to this many rows are read ahead so the NOTICE can come first; larger
/// caps stream, and a cut is recorded in the audit log only.
const READ_AHEAD_ROWS: u64 = 10_000;

fn cut_message(limits: &Limits) -> String {
    format!(
        "result cut to max_rows ({} rows); more rows matched",
        limits.max_rows.unwrap_or_default()
    )
}

/// Statements later hooks handle and that touch no data.
fn passes_through(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
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

/// The outcome of checking one statement.
enum Verdict {
    /// Not ours to judge.
    PassThrough,
    /// Refused (already audited).
    Refused(PgWireError),
    /// Allowed: the plan to run and what to enforce.
    Allowed(Box<Allowed>),
}

struct Allowed {
    plan: LogicalPlan,
    decision: Decision,
    limits: Limits,
    record: AuditRecord,
}

impl SafetyHook {
    fn principal(&self, client: &(dyn ClientInfo + Send + Sync)) -> Principal {
        let name = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let _ = self.user.set(name.clone());
        self.shared.pipeline.principal(&name)
    }

    fn record(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        who: &Principal,
        statement: &Statement,
        protocol: &str,
    ) -> AuditRecord {
        AuditRecord {
            time: now(),
            session: client.pid_and_secret_key().0,
            user: who.user.clone(),
            roles: who.roles.clone(),
            client: client.socket_addr().to_string(),
            protocol: protocol.into(),
            fingerprint: fingerprint(statement),
            statement_hash: statement_hash(&statement.to_string()),
            ..Default::default()
        }
    }

    fn refuse(&self, mut record: AuditRecord, denied: Denied, started: Instant) -> PgWireError {
        let e = user_error(denied.error.sqlstate(), denied.error.to_string());
        record.stages = denied.decision.stages;
        record.tables = denied.decision.tables;
        record.origins = denied.decision.origins;
        record.warnings = denied.decision.warnings;
        record.outcome = "denied".into();
        tracing::info!(user = %record.user, error = %denied.error, "statement refused");
        Audit::new(Arc::clone(&self.shared.audit), record, started).finish(Some(error_record(&e)));
        e
    }

    /// Plans `statement` and runs the pipeline on it.
    async fn check(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        protocol: &str,
    ) -> Verdict {
        let started = Instant::now();
        let (stacked, trailing_comment) =
            self.texts.lock().unwrap_or_else(|p| p.into_inner()).take();
        let who = self.principal(client);
        let mut record = self.record(client, &who, statement, protocol);
        if let Err((kind, reason)) = self.shared.audit.health() {
            // Fail closed: a statement that cannot be audited does not run. Recording
            // this refusal is also the probe that clears the state once writes work.
            let code = if kind == std::io::ErrorKind::StorageFull {
                "53100"
            } else {
                "58030"
            };
            let e = user_error(
                code,
                format!("the audit log cannot be written ({reason}); statements are refused until it can"),
            );
            tracing::error!(%reason, "audit log unwritable: refusing statements");
            record.outcome = "denied".into();
            Audit::new(Arc::clone(&self.shared.audit), record, started)
                .finish(Some(error_record(&e)));
            return Verdict::Refused(e);
        }
        if passes_through(statement) {
            record.outcome = "utility".into();
            Audit::new(Arc::clone(&self.shared.audit), record, started).finish(None);
            return Verdict::PassThrough;
        }
        let query = match statement {
            // A cursor's query is checked like any other query.
            Statement::Declare { stmts } => match stmts.first().and_then(|d| d.for_query.clone()) {
                Some(q) => Statement::Query(q),
                None => return Verdict::PassThrough,
            },
            other => other.clone(),
        };
        let input = StatementInput {
            ast: &query,
            stacked,
            trailing_comment,
        };
        let state = ctx.state();
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                query.clone(),
            )))
            .await;
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                if let Some(denied) = self.shared.pipeline.check_unplanned(&input) {
                    return Verdict::Refused(self.refuse(record, denied, started));
                }
                let (code, message) = super::errors::classify(&e);
                let err = user_error(&code, message);
                record.outcome = "error".into();
                Audit::new(Arc::clone(&self.shared.audit), record, started)
                    .finish(Some(error_record(&err)));
                return Verdict::Refused(err);
            }
        };
        match self.shared.pipeline.check(&input, plan, &who, &state) {
            Err(denied) => Verdict::Refused(self.refuse(record, *denied, started)),
            Ok(checked) => {
                record.stages = checked.decision.stages.clone();
                record.tables = checked.decision.tables.clone();
                record.origins = checked.decision.origins.clone();
                record.warnings = checked.decision.warnings.clone();
                Verdict::Allowed(Box::new(Allowed {
                    plan: checked.plan,
                    decision: checked.decision,
                    limits: checked.limits,
                    record,
                }))
            }
        }
    }
}

/// DECLARE name CURSOR FOR <checked plan>: the rows stream into a cursor portal that
/// FETCH reads. The row cap, result bytes and the audit record apply as for any
/// statement; the timeout and concurrency slot do not, since an open cursor waits
/// on the client, not on work.
async fn declare_cursor(
    stmts: &[datafusion::sql::sqlparser::ast::Declare],
    plan: LogicalPlan,
    limits: Limits,
    audit: Audit,
    ctx: &SessionContext,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    use datafusion::sql::sqlparser::ast::DeclareType;
    use pgwire::api::stmt::StoredStatement;
    let Some(declare) = stmts.first() else {
        return Err(user_error("42601", "DECLARE without a cursor".into()));
    };
    if declare.declare_type != Some(DeclareType::Cursor) {
        let e = user_error("42601", "only DECLARE ... CURSOR FOR is supported".into());
        audit.finish(Some(error_record(&e)));
        return Err(e);
    }
    let Some(name) = declare.names.first().map(|n| n.value.clone()) else {
        let e = user_error("42601", "cursor name is required".into());
        audit.finish(Some(error_record(&e)));
        return Err(e);
    };
    let text = declare
        .for_query
        .as_ref()
        .map(|q| q.to_string())
        .unwrap_or_default();
    // Kept with the portal so that Describe Portal <cursor> reports the cursor's
    // columns (psycopg 3 reads rows with the types it describes).
    let described = declare.for_query.as_ref().map(|q| {
        (
            datafusion::sql::sqlparser::ast::Statement::Query(q.clone()),
            plan.clone(),
        )
    });
    let df = match ctx.execute_logical_plan(plan).await {
        Ok(df) => df,
        Err(e) => {
            let e = PgWireError::ApiError(Box::new(e));
            audit.finish(Some(error_record(&e)));
            return Err(e);
        }
    };
    let options = Arc::new(super::encode::format_options(client.metadata()));
    let response = match encode_dataframe(df, &Format::UnifiedText, Some(options)).await {
        Ok(r) => r,
        Err(e) => {
            audit.finish(Some(error_record(&e)));
            return Err(e);
        }
    };
    let limits = Limits {
        statement_timeout: None,
        max_concurrent_statements: None,
        ..limits
    };
    let rows = running::guard(response, limits, Instant::now(), Some(audit), None);
    let stored = Arc::new(StoredStatement::new(
        name.clone(),
        (text, described),
        vec![],
    ));
    let portal = Portal::new_cursor(name, stored);
    portal.start(rows).await;
    client.portal_store().put_portal(Arc::new(portal));
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}

/// Runs a checked plan the way datafusion-postgres's default path would run its text.
async fn execute(
    ctx: &SessionContext,
    plan: LogicalPlan,
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<Response> {
    let dml = match &plan {
        LogicalPlan::Dml(d) => Some(d.op.name().to_uppercase()),
        _ => None,
    };
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    if let Some(op) = dml {
        let batches = df
            .collect()
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let rows = batches
            .first()
            .and_then(|b| b.column_by_name("count"))
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| a.value(0) as usize)
            })
            .unwrap_or(0);
        let tag = if op == "INSERT" {
            Tag::new(&op).with_oid(0).with_rows(rows)
        } else {
            Tag::new(&op).with_rows(rows)
        };
        return Ok(Response::Execution(tag));
    }
    let options = Arc::new(super::encode::format_options(client.metadata()));
    let response = encode_dataframe(df, &Format::UnifiedText, Some(options)).await?;
    Ok(Response::Query(response))
}

#[async_trait]
impl QueryHook for SafetyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(copy) = super::copy::copy_to_stdout(statement) {
            // COPY ... TO STDOUT: the query goes through this very path, then its rows
            // are written in COPY format.
            let (query, format) = match copy {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            let response = self
                .handle_simple_query(&query, session_context, client)
                .await?;
            return Some(response.map(|r| match r {
                Response::Query(q) => Response::CopyOut(super::copy::copy_out(q, format)),
                other => other,
            }));
        }
        let started = Instant::now();
        let verdict = self
            .check(statement, session_context, &*client, "simple")
            .instrument(tracing::info_span!("statement", protocol = "simple"))
            .await;
        let (plan, decision, limits, record) = match verdict {
            Verdict::PassThrough => return None,
            Verdict::Refused(e) => return Some(Err(e)),
            Verdict::Allowed(a) => (a.plan, a.decision, a.limits, a.record),
        };
        let limits = with_session_timeout(limits, &*client);
        let audit = Audit::new(Arc::clone(&self.shared.audit), record, started);
        if let Statement::Declare { stmts } = statement {
            // Our own DECLARE, so the cursor reads the checked plan (datafusion-postgres's
            // cursor hook would plan the query again from its text).
            return Some(declare_cursor(stmts, plan, limits, audit, session_context, client).await);
        }
        let slot = match self
            .shared
            .slots
            .acquire(&audit.record().user, limits.max_concurrent_statements)
        {
            Ok(slot) => slot,
            Err(e) => {
                audit.finish(Some(error_record(&e)));
                return Some(Err(e));
            }
        };
        for warning in &decision.warnings {
            if let Err(e) = client.send_message(notice(warning)).await {
                return Some(Err(e));
            }
        }
        let run = async {
            let response = execute(session_context, plan, &*client).await?;
            match (response, truncation(&limits)) {
                (Response::Query(q), Some(max)) => {
                    let (q, cut) = running::read_ahead(q, max).await?;
                    Ok((Response::Query(q), cut))
                }
                (r, _) => Ok((r, false)),
            }
        };
        let outcome = match limits.statement_timeout {
            Some(t) => match tokio::time::timeout_at((started + t).into(), run).await {
                Ok(r) => r,
                Err(_) => Err(user_error(
                    "57014",
                    "canceling statement due to statement timeout".into(),
                )),
            },
            None => run.await,
        };
        match outcome {
            Err(e) => {
                audit.finish(Some(error_record(&e)));
                Some(Err(e))
            }
            Ok((Response::Query(q), cut)) => {
                if cut {
                    if let Err(e) = client.send_message(notice(&cut_message(&limits))).await {
                        return Some(Err(e));
                    }
                }
                Some(Ok(Response::Query(running::guard(
                    q,
                    limits,
                    started,
                    Some(audit),
                    slot,
                ))))
            }
            Ok((other, _)) => {
                audit.finish(None);
                Some(Ok(other))
            }
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let verdict = self
            .check(statement, session_context, client, "extended")
            .instrument(tracing::info_span!("statement", protocol = "extended"))
            .await;
        match verdict {
            Verdict::PassThrough => None,
            Verdict::Refused(e) => Some(Err(e)),
            Verdict::Allowed(a) => {
                let Allowed {
                    plan,
                    decision,
                    limits,
                    record,
                } = *a;
                // DECLARE: the statement returns no rows, so its plan has no columns; the
                // checked query under it keeps the parameters, and Execute opens the
                // cursor on it (see handle_extended_query).
                let plan = if let Statement::Declare { .. } = statement {
                    match Projection::try_new(vec![], Arc::new(plan)) {
                        Ok(p) => LogicalPlan::Projection(p),
                        Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
                    }
                } else {
                    plan
                };
                // Executions are audited one by one, with what this Parse decided.
                let mut memo = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
                if memo.len() >= PREPARED_MEMO {
                    memo.clear();
                }
                memo.insert(
                    statement.to_string(),
                    Prepared {
                        record,
                        limits,
                        warnings: decision.warnings,
                    },
                );
                Some(Ok(plan))
            }
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        params: &datafusion::common::ParamValues,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Plans were checked at Parse; parameter values are inlined as literals, so they
        // can change no table or statement kind. Only DECLARE needs us here: its
        // cursor is opened on the checked query kept under the column-less plan.
        let Statement::Declare { stmts } = statement else {
            return None;
        };
        let LogicalPlan::Projection(p) = logical_plan else {
            return None;
        };
        let started = Instant::now();
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&statement.to_string())
            .cloned();
        let Some(prepared) = prepared else {
            return Some(Err(user_error(
                "26000",
                "prepared DECLARE is no longer known; prepare it again".into(),
            )));
        };
        let mut record = prepared.record;
        record.time = now();
        let audit = Audit::new(Arc::clone(&self.shared.audit), record, started);
        let query = match p.input.as_ref().clone().with_param_values(params.clone()) {
            Ok(q) => q,
            Err(e) => {
                let e = PgWireError::ApiError(Box::new(e));
                audit.finish(Some(error_record(&e)));
                return Some(Err(e));
            }
        };
        Some(
            declare_cursor(
                stmts,
                query,
                prepared.limits,
                audit,
                session_context,
                client,
            )
            .await,
        )
    }
}
