//! Starting Switchyard: config → catalog → listener → one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::RandomPidSecretKeyGenerator;
use switchyard_config::{Config, TlsMode};
use switchyard_connectors::Origins;
use switchyard_engine::Engine;
use switchyard_materialize::{Materializer, StatusSchema, STATUS_SCHEMA};
use switchyard_safety::{AuditLog, Pipeline, Policy};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::pgwire::protocol::auth::{Users, SCRAM_ITERATIONS};
use crate::pgwire::protocol::cancel::CancelRegistry;
use crate::pgwire::protocol::connection::{Connection, Shared};
use crate::pgwire::protocol::tls;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Origins or the local store could not be set up.
    #[error(transparent)]
    Connectors(#[from] switchyard_connectors::ConnectorError),
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listen address is taken or invalid.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The audit log cannot be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The local store's copies could not be read.
    #[error(transparent)]
    Materialize(#[from] switchyard_materialize::MaterializeError),
    /// pg_catalog emulation failed to install.
    #[error("cannot set up pg_catalog: {0}")]
    Catalog(String),
}

/// A running server.
pub struct Server {
    /// The address actually bound (port 0 in the config picks a free one).
    pub addr: SocketAddr,
    /// The origins, for inspection.
    pub origins: Origins,
    /// The audit log (synced to disk by [`Server::stop`]).
    pub audit: Arc<AuditLog>,
    /// The engine every session runs in.
    pub engine: Arc<Engine>,
    /// The address the HTTP door bound, when `http:` is configured.
    pub http_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
    http: Option<tokio::task::JoinHandle<()>>,
    syncer: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops accepting connections (open sessions end with the process).
    pub fn stop(&self) {
        self.task.abort();
        if let Some(http) = &self.http {
            http.abort();
        }
        if let Some(syncer) = &self.syncer {
            syncer.abort();
        }
        if let Err(e) = self.audit.sync() {
            tracing::error!(error = %e, "cannot sync the audit log");
        }
    }

    /// Waits until the accept loop ends.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// The shared DataFusion session with every dataset registered, pg_catalog
/// emulated and `switchyard.datasets` showing the materializer (not started yet).
pub fn base_context(
    config: &Config,
) -> Result<(SessionContext, Origins, Arc<Materializer>), StartError> {
    let ctx = SessionContext::new_with_state(switchyard_planner::session_state());
    let origins = switchyard_connectors::install(&ctx, config)?;
    let materializer = Materializer::new(config, &origins)?;
    let catalog = ctx
        .catalog(switchyard_planner::CATALOG)
        .ok_or_else(|| StartError::Catalog("no default catalog".into()))?;
    catalog
        .register_schema(STATUS_SCHEMA, Arc::new(StatusSchema::new(&materializer)))
        .map_err(|e| StartError::Catalog(e.to_string()))?;
    setup_pg_catalog(&ctx, switchyard_planner::CATALOG, EmptyContextProvider)
        .map_err(|e| StartError::Catalog(e.to_string()))?;
    Ok((ctx, origins, materializer))
}

/// The step-graph service over `config` without any listener (for `switchyard mcp`
/// on stdio). Materialized datasets are read from the local store as a running
/// `serve` keeps them; no worker of their own is started here, so two processes
/// never follow one replication slot.
pub async fn step_graph(
    config: Config,
) -> Result<Arc<switchyard_stepgraph::StepGraph>, StartError> {
    let policy = Policy::new(&config, switchyard_planner::DEFAULT_SCHEMA);
    let audit = open_audit(&config)?;
    let (base, origins, materializer) = base_context(&config)?;
    let engine = Engine::with_materializer(
        Arc::new(config),
        Arc::new(Pipeline::new(policy)),
        Arc::new(audit),
        materializer,
        origins,
    );
    Ok(Arc::new(switchyard_stepgraph::StepGraph::new(engine, base)))
}

/// The config's audit log, opened (or created) to continue its chain.
fn open_audit(config: &Config) -> Result<AuditLog, StartError> {
    AuditLog::open(&config.audit.path, config.audit.fsync).map_err(|source| StartError::Audit {
        path: config.audit.path.display().to_string(),
        source,
    })
}

/// Binds the listener and serves connections in the background.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let policy = Policy::new(&config, switchyard_planner::DEFAULT_SCHEMA);
    let audit = open_audit(&config)?;
    let (base, origins, materializer) = base_context(&config)?;
    let acceptor = match config.tls.mode {
        TlsMode::Disable => None,
        TlsMode::Allow | TlsMode::Require => {
            let cert = config.tls.cert.as_deref().expect("config checked tls.cert");
            let key = config.tls.key.as_deref().expect("config checked tls.key");
            Some(tls::acceptor(cert, key)?)
        }
    };
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let mut params = DefaultServerParameterProvider::default();
    params.scram_iterations = SCRAM_ITERATIONS;
    params.server_version = crate::pgwire::pgcompat::identity::SERVER_VERSION.into();
    let users = Arc::new(Users::new(&config.users));
    let tls_required = config.tls.mode == TlsMode::Require;
    let engine = Engine::with_materializer(
        Arc::new(config),
        Arc::new(Pipeline::new(policy)),
        Arc::new(audit),
        Arc::clone(&materializer),
        origins.clone(),
    );
    materializer.start();
    let http_tls = match engine.config().tls.mode {
        TlsMode::Disable => None,
        TlsMode::Allow | TlsMode::Require => {
            let tls = &engine.config().tls;
            let cert = tls.cert.as_deref().expect("config checked tls.cert");
            let key = tls.key.as_deref().expect("config checked tls.key");
            Some(tls::acceptor_for(cert, key, &[b"http/1.1"])?)
        }
    };
    let tls_required_http = engine.config().tls.mode == TlsMode::Require;
    let (http_addr, http) = match &engine.config().http {
        None => (None, None),
        Some(settings) => {
            let listener = TcpListener::bind(&settings.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: settings.listen.clone(),
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| StartError::Listen {
                addr: settings.listen.clone(),
                source,
            })?;
            let graph = Arc::new(switchyard_stepgraph::StepGraph::new(
                Arc::clone(&engine),
                base.clone(),
            ));
            // Ends with the server: the reaper holds the scratchpads weakly.
            let _reaper = graph.scratchpads().spawn_reaper();
            let state = Arc::new(crate::http::HttpState {
                graph,
                credentials: crate::http::Credentials::new(&engine.config().users),
            });
            let max_body = usize::try_from(settings.max_body).unwrap_or(usize::MAX);
            tracing::info!(%addr, "HTTP door listening");
            (
                Some(addr),
                Some(crate::http::serve(
                    listener,
                    crate::http::router(state, max_body, &settings.listen),
                    http_tls,
                    tls_required_http,
                )),
            )
        }
    };
    let shared = Arc::new(Shared {
        engine,
        base,
        users,
        pg_static: Arc::new(
            datafusion_postgres::datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables::try_new(
            )
            .map_err(|e| StartError::Catalog(e.to_string()))?,
        ),
        cancels: Arc::new(CancelRegistry::default()),
        pids: Arc::new(RandomPidSecretKeyGenerator::default()),
        tls_required,
        params: Arc::new(params),
    });
    let config = shared.engine.config();
    tracing::info!(%addr, tls = ?config.tls.mode, audit = %config.audit.path.display(), "listening");
    let audit = Arc::clone(shared.engine.audit());
    let engine = Arc::clone(&shared.engine);
    let syncer = (audit.fsync() == switchyard_config::Fsync::Interval).then(|| {
        // `interval`: records reach the disk within about a second, also when idle.
        let log = Arc::clone(&audit);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let log = Arc::clone(&log);
                let synced = tokio::task::spawn_blocking(move || log.sync()).await;
                if let Ok(Err(e)) = synced {
                    tracing::error!(error = %e, "cannot sync the audit log");
                }
            }
        })
    });
    let task = tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let handlers = Arc::new(Connection::new(Arc::clone(&shared)));
            let acceptor = acceptor.clone();
            tokio::spawn(
                async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await
                    {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                .instrument(tracing::info_span!("session", %peer)),
            );
        }
    });
    Ok(Server {
        engine,
        addr,
        http_addr,
        origins,
        audit,
        task,
        http,
        syncer,
    })
}
