//! The query service of a connection: datafusion-postgres's service with the
//! engine around every statement. The simple protocol is in [`super::simple`], the
//! extended one in [`super::extended`], the checks in [`super::statements`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use pgwire::api::portal::Portal;
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;
use switchyard_engine::{Approval, Output, QueryText, Running, SqlState};
use tokio_util::sync::CancellationToken;

use crate::pgwire::protocol::cancel::{cancellable, CancelRegistry, Registration};
use crate::pgwire::protocol::connection::Login;
use crate::pgwire::protocol::encode::{encode_dataframe, encode_stream, format_options};
use crate::pgwire::protocol::errors::{df_error, engine_error, pg_error, user_error};
use crate::pgwire::protocol::transactions::TransactionHook;

/// datafusion-postgres's statement as pgwire stores it.
pub type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// Statements remembered per connection between Parse and Execute.
pub const PREPARED_MEMO: usize = 4096;

/// datafusion-postgres's query service, with the engine around every statement.
pub struct QueryService {
    pub(crate) inner: DfSessionService,
    /// The session datafusion-postgres runs statements in (queries' Execute is ours).
    pub(crate) ctx: Arc<SessionContext>,
    /// The statement hooks, in the order datafusion-postgres calls them.
    pub(crate) hooks: Vec<Arc<dyn QueryHook>>,
    /// Savepoints of the open block (the hook among `hooks`).
    pub(crate) transactions: Arc<TransactionHook>,
    pub(crate) cancels: Arc<CancelRegistry>,
    pub(crate) login: Arc<Login>,
    /// The text of the query being run, read before any rewrite.
    pub(crate) texts: Arc<Mutex<QueryText>>,
    /// What each Parse decided, by statement text, for its Executes.
    pub(crate) prepared: Arc<Mutex<HashMap<String, Approval>>>,
}

impl QueryService {
    /// The cancel token for the statement about to run, registering the session on first use.
    pub(crate) fn begin<C: ClientInfo>(&self, client: &C) -> CancellationToken {
        let registration = client.session_extensions().get_or_insert_with(|| {
            let (pid, secret) = client.pid_and_secret_key();
            self.cancels.register(pid, secret.to_bytes().to_vec())
        });
        let registration: &Registration = &registration;
        registration.session.begin()
    }

    /// A portal's Execute, ended early by a CancelRequest. `running` is the engine's
    /// run of a governed statement (finished or failed here).
    pub(crate) async fn execute<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
        token: &CancellationToken,
        running: Option<Running>,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let running = match (&portal.statement.statement.1, running) {
            (
                Some((
                    statement @ (Statement::Query(_)
                    | Statement::Insert(_)
                    | Statement::Update(_)
                    | Statement::Delete(_)),
                    plan,
                )),
                Some(running),
            ) => {
                // The engine watches the token itself while it plans and streams.
                return self
                    .run_query(client, portal, statement, plan, Some(running))
                    .await;
            }
            (_, running) => running,
        };
        let run = async {
            match &portal.statement.statement.1 {
                Some((statement @ Statement::Query(_), plan)) => {
                    self.run_query(client, portal, statement, plan, None).await
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
        let response = tokio::select! {
            r = run => r,
            _ = token.cancelled() => Err(PgWireError::QueryCanceled),
        };
        if let Some(running) = running {
            match &response {
                Ok(_) => running.finish(),
                Err(e) => {
                    running.fail(engine_error(e));
                }
            }
        }
        response
    }
}

impl QueryService {
    /// A query's Execute: datafusion-postgres's steps (parameters, hooks, run), with
    /// our parameter decoding ([`super::params`]), the engine's run of the plan and
    /// our row encoding ([`super::encode`]).
    pub(crate) async fn run_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        statement: &Statement,
        plan: &LogicalPlan,
        running: Option<Running>,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fail = |running: Option<Running>, e: PgWireError| {
            if let Some(running) = running {
                running.fail(engine_error(&e));
            }
            e
        };
        let params = match super::params::values(portal, plan) {
            Ok(p) => p,
            Err(e) => return Err(fail(running, e)),
        };
        for hook in &self.hooks {
            if let Some(response) = hook
                .handle_extended_query(statement, plan, &params, &self.ctx, client)
                .await
            {
                return match response {
                    Ok(r) => {
                        if let Some(running) = running {
                            running.finish();
                        }
                        Ok(r)
                    }
                    Err(e) => Err(fail(running, e)),
                };
            }
        }
        let plan = match plan.clone().replace_params_with_values(&params) {
            Ok(p) => p,
            Err(e) => return Err(fail(running, df_error(e))),
        };
        let options = Arc::new(format_options(client.metadata()));
        let Some(running) = running else {
            let df = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(df_error)?;
            let response =
                encode_dataframe(df, &portal.result_column_format, Some(options)).await?;
            return Ok(Response::Query(response));
        };
        let output = running.execute(&self.ctx, plan).await;
        let (cut, response) = respond(output, &portal.result_column_format, options)?;
        if let Some(cut) = cut {
            use futures::SinkExt;
            client.send(notice(&cut)).await?;
        }
        Ok(response)
    }
}

/// A run's output as pgwire's response: rows or a command tag, and the notice of a
/// cut to send before the rows.
pub(crate) fn respond(
    output: Result<Output, switchyard_engine::EngineError>,
    format: &pgwire::api::portal::Format,
    options: Arc<pgwire::types::format::FormatOptions>,
) -> PgWireResult<(Option<String>, Response)> {
    match output.map_err(pg_error)? {
        Output::Rows(rows) => {
            let mut response = encode_stream(rows.batches, format, Some(options))?;
            if let Some((op, _)) = rows.command {
                // RETURNING rows end with the write's tag (`INSERT 0 3`); pgwire adds the count.
                response.set_command_tag(if op == "INSERT" { "INSERT 0" } else { op });
            }
            Ok((rows.cut, Response::Query(response)))
        }
        Output::Count { op, rows } => Ok((None, Response::Execution(command_tag(&op, rows)))),
    }
}

/// A command's tag as PostgreSQL sends it (`INSERT 0 3`, `UPDATE 2`).
pub(crate) fn command_tag(op: &str, rows: u64) -> Tag {
    let rows = usize::try_from(rows).unwrap_or(usize::MAX);
    if op == "INSERT" {
        Tag::new(op).with_oid(0).with_rows(rows)
    } else {
        Tag::new(op).with_rows(rows)
    }
}

/// Wraps a response's rows so that a CancelRequest ends them (statements the
/// engine runs watch the token themselves; this covers the rest).
pub(crate) fn wrap(response: Response, token: &CancellationToken) -> Response {
    match response {
        Response::Query(q) => Response::Query(cancellable(q, token.clone())),
        other => other,
    }
}

/// A WARNING notice.
pub(crate) fn notice(message: &str) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(NoticeResponse::from(ErrorInfo::new(
        "WARNING".into(),
        SqlState::WARNING.code().into(),
        message.to_string(),
    )))
}

/// The session's own `SET statement_timeout` (stored by datafusion-postgres's SET
/// hook as `statement_timeout_ms`).
pub(crate) fn session_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// Whether the session is in a transaction block (open or failed).
pub(crate) fn in_block<C: ClientInfo + ?Sized>(client: &C) -> bool {
    client.transaction_status() != pgwire::messages::response::TransactionStatus::Idle
}

/// A statement the client may not run again: it has to prepare it anew.
pub(crate) fn forgotten(what: &str) -> PgWireError {
    user_error(
        SqlState::INVALID_SQL_STATEMENT_NAME,
        format!("prepared {what} is no longer known; prepare it again"),
    )
}
