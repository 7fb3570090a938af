//! One client connection: what every connection shares, the handlers pgwire asks
//! for, the login that opens the engine session, and the connection's own
//! DataFusion session (catalog listings by grants, pg_catalog, functions).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::{create_udf, SessionContext};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator, METADATA_USER,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use switchyard_engine::{Client, Engine, QueryText, Session};

use crate::pgwire::pgcompat;
use crate::pgwire::protocol::auth::{Users, SCRAM_ITERATIONS};
use crate::pgwire::protocol::cancel::CancelRegistry;
use crate::pgwire::protocol::errors::SqlStateErrors;
use crate::pgwire::protocol::query::QueryService;
use crate::pgwire::protocol::statements::SafetyHook;
use crate::pgwire::protocol::tls::RequireTls;

/// What every connection shares.
pub struct Shared {
    /// The engine: config, safety pipeline, audit log, running statements.
    pub engine: Arc<Engine>,
    /// The session every connection's own session is cloned from (catalogs are shared).
    pub base: SessionContext,
    /// SCRAM secrets.
    pub users: Arc<Users>,
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

/// The engine session of a connection, opened once the client has authenticated.
pub struct Login {
    engine: Arc<Engine>,
    session: OnceLock<Session>,
    /// The user's name, for the catalog listings and `session_user`.
    user: Arc<OnceLock<String>>,
}

impl Login {
    /// The connection's engine session; opened at login (see [`LoginHandler`]), or
    /// here if a statement somehow came first.
    pub fn session<C: ClientInfo + ?Sized>(&self, client: &C) -> &Session {
        self.session.get_or_init(|| {
            let name = client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default();
            let _ = self.user.set(name.clone());
            self.engine.login(
                &name,
                Client {
                    session_id: client.pid_and_secret_key().0,
                    address: client.socket_addr().to_string(),
                },
            )
        })
    }
}

/// The handlers of one connection (pgwire asks for each once per connection).
pub struct Connection {
    shared: Arc<Shared>,
    login: Arc<Login>,
    service: Arc<QueryService>,
    copies: Arc<super::copy_in::CopyIns>,
    /// The database the client asked for (set at login).
    database: Arc<OnceLock<String>>,
}

impl Connection {
    /// Handlers for a new connection, with its own DataFusion session.
    pub fn new(shared: Arc<Shared>) -> Self {
        let user = Arc::new(OnceLock::new());
        let login = Arc::new(Login {
            engine: Arc::clone(&shared.engine),
            session: OnceLock::new(),
            user: Arc::clone(&user),
        });
        let definitions = Arc::new(pgcompat::catalog_facts::Definitions::default());
        let database = Arc::new(OnceLock::new());
        let state = pgcompat::catalog::session_state(
            &shared.base.state(),
            switchyard_planner::CATALOG,
            Arc::clone(shared.engine.pipeline()),
            Arc::clone(&user),
            Arc::clone(&shared.pg_static),
            Arc::clone(&definitions),
            Arc::clone(&database),
        );
        let ctx = SessionContext::new_with_state(state);
        // current_user / session_user: rewritten by datafusion-postgres to session_user().
        ctx.register_udf(session_user_udf(Arc::clone(&user)));
        pgcompat::functions::register(&ctx);
        pgcompat::catalog_facts::register(&ctx, &definitions);
        let ctx = Arc::new(ctx);
        let texts = Arc::new(Mutex::new(QueryText::default()));
        let prepared = Arc::new(Mutex::new(HashMap::new()));
        let copies = Arc::new(super::copy_in::CopyIns::default());
        let safety = Arc::new(SafetyHook::new(
            Arc::clone(&login),
            Arc::clone(&texts),
            Arc::clone(&prepared),
            Arc::clone(&copies),
        ));
        let transactions = Arc::new(super::transactions::TransactionHook::new(Arc::clone(
            &login,
        )));
        // Transactions first: a failed block refuses statements before they are checked.
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::clone(&transactions) as Arc<dyn QueryHook>,
            safety,
            Arc::new(CursorStatementHook),
            Arc::new(super::settings::SettingsHook),
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
            login: Arc::clone(&login),
            texts,
            prepared,
        });
        Connection {
            shared,
            login,
            service,
            copies,
            database,
        }
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

/// Opens the engine session as soon as authentication has succeeded, so the
/// principal is fixed at login.
pub struct LoginHandler<H> {
    inner: H,
    login: Arc<Login>,
    /// The connection's DataFusion session, which takes the startup TimeZone.
    ctx: Arc<SessionContext>,
    /// The database the client asked for, named by `current_database()` and `\l`.
    database: Arc<OnceLock<String>>,
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for LoginHandler<H> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            // An unknown startup TimeZone fails the connection, as PostgreSQL's does.
            for (name, value) in &startup.parameters {
                if name.eq_ignore_ascii_case("timezone") {
                    super::settings::zone_name(value)?;
                }
            }
        }
        self.inner.on_startup(client, message).await?;
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            super::settings::start_session_zone(&self.ctx, client.metadata_mut())?;
            // PostgreSQL's default database is the user's name.
            let metadata = client.metadata();
            let name = metadata
                .get(pgwire::api::METADATA_DATABASE)
                .or_else(|| metadata.get(pgwire::api::METADATA_USER))
                .cloned()
                .unwrap_or_else(|| switchyard_planner::CATALOG.to_string());
            self.ctx.register_udf(
                datafusion_postgres::datafusion_pg_catalog::pg_catalog::create_current_database_udf(
                    &name,
                ),
            );
            let _ = self.database.set(name);
            let session = self.login.session(&*client);
            tracing::info!(user = %session.principal().user, "logged in");
        }
        Ok(())
    }
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
        Arc::new(RequireTls::new(
            LoginHandler {
                inner: sasl,
                login: Arc::clone(&self.login),
                ctx: Arc::clone(&self.service.ctx),
                database: Arc::clone(&self.database),
            },
            self.shared.tls_required,
        ))
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::clone(&self.copies)
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(SqlStateErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.shared.cancels)
    }
}
