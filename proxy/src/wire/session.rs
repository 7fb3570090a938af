//! One client connection: its handlers, its own DataFusion session, the safety hook
//! every statement passes, and cancellation of running statements.

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, ScalarUDF, Volatility};
use datafusion::prelude::{create_udf, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::portal::Format;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::Type;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireServerHandlers, PidSecretKeyGenerator, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use switchyard_config::Config;
use switchyard_safety::{Gate, Principal};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auth::{Users, SCRAM_ITERATIONS};
use super::cancel::{cancellable, CancelRegistry, Registration};
use super::errors::SqlStateErrors;
use super::tls::RequireTls;

/// What every connection shares.
pub struct Shared {
    /// The session every connection's own session is cloned from (catalogs are shared).
    pub base: SessionContext,
    /// The checked config.
    pub config: Arc<Config>,
    /// SCRAM secrets.
    pub users: Arc<Users>,
    /// The safety gate.
    pub gate: Gate,
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
        let ctx = SessionContext::new_with_state(shared.base.state());
        // current_user / session_user: rewritten by datafusion-postgres to session_user().
        ctx.register_udf(session_user_udf(Arc::clone(&user)));
        let ctx = Arc::new(ctx);
        let safety = Arc::new(SafetyHook {
            shared: Arc::clone(&shared),
            user: Arc::clone(&user),
        });
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            safety,
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let inner = DfSessionService::new_with_hooks(ctx, hooks);
        let service = Arc::new(QueryService {
            inner,
            cancels: Arc::clone(&shared.cancels),
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
    cancels: Arc<CancelRegistry>,
}

impl QueryService {
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
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::guard::check(query)?;
        let rewritten = super::guard::rewrite(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let token = self.begin(client);
        let run = <DfSessionService as SimpleQueryHandler>::do_query(&self.inner, client, query);
        let responses = tokio::select! {
            r = run => r?,
            _ = token.cancelled() => return Err(PgWireError::QueryCanceled),
        };
        Ok(responses.into_iter().map(|r| wrap(r, &token)).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = GuardedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(GuardedParser(self.inner.query_parser()))
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
        let token = self.begin(client);
        let run = <DfSessionService as ExtendedQueryHandler>::do_query(
            &self.inner,
            client,
            portal,
            max_rows,
        );
        let response = tokio::select! {
            r = run => r?,
            _ = token.cancelled() => return Err(PgWireError::QueryCanceled),
        };
        Ok(wrap(response, &token))
    }
}

/// datafusion-postgres's parser behind [`super::guard::check`].
pub struct GuardedParser(Arc<<DfSessionService as ExtendedQueryHandler>::QueryParser>);

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
        super::guard::check(sql)?;
        let rewritten = super::guard::rewrite(sql);
        self.0
            .parse_sql(client, rewritten.as_deref().unwrap_or(sql), types)
            .await
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        self.0.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &DfStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.0.get_result_schema(stmt, column_format)
    }
}

/// Runs the safety gate on every statement's logical plan before anything executes.
struct SafetyHook {
    shared: Arc<Shared>,
    user: Arc<OnceLock<String>>,
}

impl SafetyHook {
    fn principal(&self, client: &(dyn ClientInfo + Send + Sync)) -> Principal {
        let name = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let _ = self.user.set(name.clone());
        let roles = self
            .shared
            .config
            .user(&name)
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        Principal::new(&name, &roles, &self.shared.config.roles)
    }

    /// Plans `statement` and checks it; `None` when the statement is not ours to judge
    /// (SET/SHOW/transaction control, handled by later hooks) or does not plan (the
    /// default path reports that error).
    async fn check(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let principal = self.principal(client);
        let statement = match statement {
            Statement::Declare { stmts } => {
                // A cursor's query is checked like any other query.
                let query = stmts.first().and_then(|d| d.for_query.clone())?;
                Statement::Query(query)
            }
            Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. } => return None,
            other => other.clone(),
        };
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                statement,
            )))
            .await;
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                let (code, message) = super::errors::classify(&e);
                return Some(Err(user_error(&code, message)));
            }
        };
        match self.shared.gate.check(&plan, &principal) {
            Ok(()) => Some(Ok(plan)),
            Err(e) => Some(Err(user_error(e.sqlstate(), e.to_string()))),
        }
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl QueryHook for SafetyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let checked = self
            .check(statement, session_context, &*client)
            .instrument(tracing::info_span!("statement", protocol = "simple"))
            .await?;
        match checked {
            // Allowed: the default path plans and runs it.
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let checked = self.check(statement, session_context, client).await?;
        match (statement, checked) {
            // A cursor's plan is made by the cursor hook; we only vetted its query.
            (Statement::Declare { .. }, Ok(_)) => None,
            (_, checked) => Some(checked),
        }
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &datafusion::common::ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // The plan was checked at Parse; parameter values are inlined as literals later,
        // so they can change no table or statement kind.
        None
    }
}
