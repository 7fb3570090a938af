//! The HTTP front door: faz's REST API (`/v1/...`) over the step-graph service,
//! thin handlers that authenticate, hand the body to [`StepGraph`] and encode
//! its envelope with the HTTP status its failure kind calls for.

mod auth;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use switchyard_engine::{Client, Protocol, Session};
use switchyard_stepgraph::{Door, Kind, StepGraph};
use tokio::net::TcpListener;

use crate::pgwire::pgcompat::column_type;

pub use auth::Credentials;

/// What every HTTP request shares.
pub struct HttpState {
    /// The step-graph service.
    pub graph: Arc<StepGraph>,
    /// Who may log in, and how.
    pub credentials: Credentials,
}

/// The HTTP status a failure kind answers with.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Denied => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Kind::OriginDown => StatusCode::BAD_GATEWAY,
        Kind::TooMany => StatusCode::TOO_MANY_REQUESTS,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The routes: REST, and MCP (streamable HTTP) at `/mcp`; `listen` is the
/// configured address (its host is accepted in `Host` besides loopback names).
pub fn router(state: Arc<HttpState>, max_body: usize, listen: &str) -> Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some((host, _)) = listen.rsplit_once(':') {
        let host = host.trim_matches(['[', ']']);
        if !hosts.iter().any(|h| h == host) && host != "0.0.0.0" && host != "::" {
            hosts.push(host.to_string());
        }
    }
    let graph = Arc::clone(&state.graph);
    let mcp = StreamableHttpService::new(
        move || Ok(crate::mcp::Tools::http(Arc::clone(&graph))),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(hosts)
            .with_max_request_body_bytes(max_body),
    );
    let mcp = Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            mcp_login,
        ));
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/query", post(query))
        .route("/v1/results/{request_id}", get(results))
        .route("/v1/databases", get(databases))
        .route("/v1/databases/{db}/tables", get(tables))
        .route("/v1/databases/{db}/tables/{table}", get(describe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .merge(mcp)
}

/// Authenticates an MCP request as the REST routes do (401 otherwise) and hands
/// its session to the tools through the request's extensions.
async fn mcp_login(
    State(state): State<Arc<HttpState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let session =
        match <Authed as axum::extract::FromRequestParts<Arc<HttpState>>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        {
            Ok(Authed(session)) => session,
            Err(rejection) => return rejection,
        };
    parts.extensions.insert(crate::mcp::McpUser(session));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Serves `router` on `listener` in the background. With `tls`, a connection whose
/// first byte opens a TLS handshake is served over TLS; a plaintext one is served
/// too unless `require_tls` (then it gets a 400 telling it to use https).
pub fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    require_tls: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let app = router.clone().layer(axum::Extension(ConnectInfo(peer)));
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                // TLS records of a handshake start with 0x16.
                let handshake = matches!(socket.peek(&mut first).await, Ok(1) if first[0] == 0x16);
                let result = match (tls, handshake) {
                    (Some(acceptor), true) => match acceptor.accept(socket).await {
                        Ok(stream) => connection(stream, app).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    (Some(_), false) if require_tls => {
                        let refuse = Router::new().fallback(|| async {
                            error(
                                StatusCode::BAD_REQUEST,
                                "28000",
                                "this server requires TLS: use https://",
                            )
                        });
                        connection(socket, refuse).await
                    }
                    _ => connection(socket, app).await,
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
        }
    })
}

/// One HTTP/1.1 connection over `io`, answered by `app`.
async fn connection<I>(io: I, app: Router) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades()
        .await
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        Json(json!({"status": "error", "error": {"code": code, "message": message.into()}})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"switchyard\", Bearer"),
        );
    }
    response
}

/// The session of an authenticated request (the extractor answers 401 otherwise).
pub struct Authed(pub Arc<Session>);

impl axum::extract::FromRequestParts<Arc<HttpState>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<HttpState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        match state.credentials.user(&parts.headers) {
            Some(user) => {
                let session = state.graph.engine().login(
                    &user,
                    Client {
                        session_id: 0,
                        address: peer,
                    },
                );
                Ok(Authed(Arc::new(session)))
            }
            None => {
                tracing::info!(%peer, "HTTP request without valid credentials");
                Err(error(
                    StatusCode::UNAUTHORIZED,
                    "28P01",
                    "authentication required: HTTP Basic with a user's password, or Authorization: Bearer <token>",
                ))
            }
        }
    }
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn query(
    State(state): State<Arc<HttpState>>,
    Authed(session): Authed,
    body: Bytes,
) -> Response {
    let door = Door {
        protocol: Protocol::Http,
        transport: "rest/local",
        explain: false,
    };
    let answer = state.graph.query(session, &body, door).await;
    let code = answer.failure.map(status).unwrap_or(StatusCode::OK);
    (code, Json(answer.response)).into_response()
}

/// `?page=N&size=M` of `GET /v1/results/{request_id}`.
#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<u64>,
    size: Option<u64>,
}

async fn results(
    State(state): State<Arc<HttpState>>,
    Authed(session): Authed,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    match state
        .graph
        .page(session.principal(), &id, q.page.unwrap_or(2), q.size)
    {
        Ok(page) => Json(page).into_response(),
        Err(e) => error(status(e.kind), e.code.code(), e.message),
    }
}

async fn databases(State(state): State<Arc<HttpState>>, Authed(session): Authed) -> Response {
    Json(state.graph.list_databases(session.principal())).into_response()
}

async fn tables(
    State(state): State<Arc<HttpState>>,
    Authed(session): Authed,
    Path(db): Path<String>,
) -> Response {
    match state.graph.list_tables(session.principal(), &db) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(status(e.kind), e.code.code(), e.message),
    }
}

async fn describe(
    State(state): State<Arc<HttpState>>,
    Authed(session): Authed,
    Path((db, table)): Path<(String, String)>,
) -> Response {
    match state
        .graph
        .describe_table(session.principal(), &db, &table, type_name)
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(status(e.kind), e.code.code(), e.message),
    }
}

/// A column's PostgreSQL type name, as information_schema gives it.
pub fn type_name(field: &datafusion::arrow::datatypes::FieldRef) -> String {
    column_type::of(field).sql_name()
}
