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

/// The routes.
pub fn router(state: Arc<HttpState>, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/query", post(query))
        .route("/v1/results/{request_id}", get(results))
        .route("/v1/databases", get(databases))
        .route("/v1/databases/{db}/tables", get(tables))
        .route("/v1/databases/{db}/tables/{table}", get(describe))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves `router` on `listener` in the background.
pub fn serve(listener: TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP door stopped");
        }
    })
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
    let config = state.graph.engine().config();
    let list: Vec<_> = state
        .graph
        .databases(session.principal())
        .into_iter()
        .filter_map(|name| {
            let origin = config.origin(&name)?;
            let language = match origin.kind {
                switchyard_config::OriginKind::Mongodb(_) => "mql",
                _ => "sql",
            };
            Some(json!({"name": name, "kind": origin.kind.name(), "language": language}))
        })
        .collect();
    Json(json!({"databases": list})).into_response()
}

fn unknown_database(db: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "3D000",
        format!("unknown database: '{db}'"),
    )
}

async fn tables(
    State(state): State<Arc<HttpState>>,
    Authed(session): Authed,
    Path(db): Path<String>,
) -> Response {
    if !state.graph.databases(session.principal()).contains(&db) {
        return unknown_database(&db);
    }
    let config = state.graph.engine().config();
    let policy = state.graph.engine().pipeline().policy();
    let list: Vec<_> = config
        .datasets
        .iter()
        .filter(|d| d.origin == db && policy.visible(session.principal(), &d.schema, &d.name))
        .map(|d| json!({"name": d.name, "dataset": d.qualified_name()}))
        .collect();
    Json(json!({"database": db, "tables": list})).into_response()
}

async fn describe(
    State(state): State<Arc<HttpState>>,
    Authed(session): Authed,
    Path((db, table)): Path<(String, String)>,
) -> Response {
    if !state.graph.databases(session.principal()).contains(&db) {
        return unknown_database(&db);
    }
    let parts: Vec<String> = table.split('.').map(str::to_string).collect();
    let dataset = {
        let tables = state.graph.tables(session.principal(), &db);
        match tables.resolve(&parts) {
            Ok(d) if tables.is_visible(d) => d.clone(),
            Ok(_) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "42P01",
                    format!("relation \"{table}\" does not exist in database '{db}'"),
                )
            }
            Err(e) => return error(StatusCode::NOT_FOUND, e.code.code(), e.message),
        }
    };
    let reference =
        datafusion::common::TableReference::partial(dataset.schema.as_str(), dataset.name.as_str());
    let provider = match state.graph.base().table_provider(reference).await {
        Ok(p) => p,
        Err(e) => {
            let e = switchyard_stepgraph::StepError::from(e);
            return error(status(e.kind), e.code.code(), e.message);
        }
    };
    let policy = state.graph.engine().pipeline().policy();
    let schema = policy.visible_columns(
        session.principal(),
        &dataset.schema,
        &dataset.name,
        &provider.schema(),
    );
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": column_type::of(f).sql_name(),
                "nullable": f.is_nullable(),
            })
        })
        .collect();
    Json(json!({
        "database": db,
        "table": dataset.name,
        "dataset": dataset.qualified_name(),
        "columns": columns,
    }))
    .into_response()
}
