//! The hook every statement passes first (after the transaction hook): the engine
//! checks it on its logical plan, and in the simple protocol runs the checked plan;
//! in the extended protocol the checked plan is what Parse stores and every Execute
//! runs. The plan that executes is the checked one (row filters, masks, row cap),
//! never a re-reading of the client's text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::logical_expr::{LogicalPlan, Projection};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::QueryHook;
use pgwire::api::results::Response;
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;
use switchyard_engine::{Approval, Protocol, QueryText, RunOptions, Verdict};
use tracing::Instrument;

use crate::pgwire::protocol::cancel::Registration;
use crate::pgwire::protocol::connection::Login;
use crate::pgwire::protocol::errors::{df_error, pg_error};
use crate::pgwire::protocol::query::{
    forgotten, in_block, notice, respond, session_timeout, PREPARED_MEMO,
};
use crate::pgwire::protocol::{copy, copy_in, cursor, encode};

/// See the module documentation.
pub struct SafetyHook {
    login: Arc<Login>,
    texts: Arc<Mutex<QueryText>>,
    prepared: Arc<Mutex<HashMap<String, Approval>>>,
    copies: Arc<copy_in::CopyIns>,
}

impl SafetyHook {
    /// The hook of one connection.
    pub fn new(
        login: Arc<Login>,
        texts: Arc<Mutex<QueryText>>,
        prepared: Arc<Mutex<HashMap<String, Approval>>>,
        copies: Arc<copy_in::CopyIns>,
    ) -> Self {
        SafetyHook {
            login,
            texts,
            prepared,
            copies,
        }
    }

    /// `COPY table FROM STDIN`: checked as the insert it amounts to, then the
    /// connection's copy handler takes the rows.
    async fn copy_from(
        &self,
        from: copy_in::CopyFrom,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        protocol: Protocol,
    ) -> PgWireResult<Response> {
        let started = Instant::now();
        let table = from.table.to_string();
        let columns = if from.columns.is_empty() {
            let reference = datafusion::common::TableReference::from(table.as_str());
            ctx.table_provider(reference)
                .await
                .map_err(df_error)?
                .schema()
                .fields()
                .iter()
                .map(|f| switchyard_connectors::sql::quote_ident(f.name()))
                .collect()
        } else {
            from.columns.clone()
        };
        let nulls = vec!["NULL"; columns.len()].join(", ");
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({nulls})",
            columns.join(", ")
        );
        let insert = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            &sql,
        )
        .map_err(|e| {
            crate::pgwire::protocol::errors::user_error(
                switchyard_engine::SqlState::SYNTAX_ERROR,
                e.to_string(),
            )
        })?
        .remove(0);
        let allowed = match self.check(&insert, ctx, client, protocol).await {
            Verdict::Allowed(a) => a,
            Verdict::Refused(e) => return Err(pg_error(e)),
            Verdict::PassThrough => {
                return Err(pg_error(switchyard_engine::EngineError::coded(
                    switchyard_engine::SqlState::INTERNAL_ERROR,
                    "COPY FROM was not checked",
                )))
            }
        };
        let session = self.login.session(client);
        let running = session
            .begin(allowed.approval, started, Self::options(client))
            .map_err(pg_error)?;
        let copy = running
            .copy_in(ctx, &allowed.plan)
            .await
            .map_err(pg_error)?;
        let columns = copy.columns().len();
        self.copies.start(copy, from.format.clone()).await;
        Ok(Response::CopyIn(pgwire::api::results::CopyResponse::new(
            0,
            columns,
            futures::stream::empty(),
        )))
    }

    async fn check(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        protocol: Protocol,
    ) -> Verdict {
        let text = self.texts.lock().unwrap_or_else(|p| p.into_inner()).take();
        let session = self.login.session(client);
        session
            .check(statement, &ctx.state(), text, protocol)
            .instrument(tracing::info_span!("statement", protocol = protocol.name()))
            .await
    }

    fn options(client: &(dyn ClientInfo + Send + Sync)) -> RunOptions {
        // The query service registered the session and began this statement's token.
        let cancel = client
            .session_extensions()
            .get::<Registration>()
            .map(|r| r.session.current())
            .unwrap_or_default();
        RunOptions {
            session_timeout: session_timeout(client),
            cancel,
            in_block: in_block(client),
            unaudited: false,
        }
    }
}

#[async_trait]
impl QueryHook for SafetyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(copy) = copy::copy_to_stdout(statement) {
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
                Response::Query(q) => Response::CopyOut(copy::copy_out(q, format)),
                other => other,
            }));
        }
        if let Some(from) = copy_in::copy_from_stdin(statement) {
            let from = match from {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            return Some(
                self.copy_from(from, session_context, &*client, Protocol::Simple)
                    .await,
            );
        }
        let started = Instant::now();
        let allowed = match self
            .check(statement, session_context, &*client, Protocol::Simple)
            .await
        {
            Verdict::PassThrough => return None,
            Verdict::Refused(e) => return Some(Err(pg_error(e))),
            Verdict::Allowed(a) => a,
        };
        let session = self.login.session(&*client);
        let options = Self::options(&*client);
        if let Statement::Declare { stmts } = statement {
            // Our own DECLARE, so the cursor reads the checked plan (datafusion-postgres's
            // cursor hook would plan the query again from its text).
            let running = match session.begin(allowed.approval.for_cursor(), started, options) {
                Ok(r) => r,
                Err(e) => return Some(Err(pg_error(e))),
            };
            return Some(
                cursor::declare(stmts, allowed.plan, running, session_context, client).await,
            );
        }
        let running = match session.begin(allowed.approval, started, options) {
            Ok(r) => r,
            Err(e) => return Some(Err(pg_error(e))),
        };
        for warning in running.warnings() {
            if let Err(e) = client.send_message(notice(warning)).await {
                return Some(Err(e));
            }
        }
        let output = running.execute(session_context, allowed.plan).await;
        let format_options = Arc::new(encode::format_options(client.metadata()));
        let (cut, response) = match respond(
            output,
            &pgwire::api::portal::Format::UnifiedText,
            format_options,
        ) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        if let Some(cut) = cut {
            if let Err(e) = client.send_message(notice(&cut)).await {
                return Some(Err(e));
            }
        }
        Some(Ok(response))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(from) = copy_in::copy_from_stdin(statement) {
            // Checked and started at Execute; it returns no rows.
            return Some(from.map(|_| {
                LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(datafusion::common::DFSchema::empty()),
                })
            }));
        }
        let allowed = match self
            .check(statement, session_context, client, Protocol::Extended)
            .await
        {
            Verdict::PassThrough => return None,
            Verdict::Refused(e) => return Some(Err(pg_error(e))),
            Verdict::Allowed(a) => *a,
        };
        // DECLARE: the statement returns no rows, so its plan has no columns; the
        // checked query under it keeps the parameters, and Execute opens the
        // cursor on it (see handle_extended_query).
        let plan = if let Statement::Declare { .. } = statement {
            match Projection::try_new(vec![], Arc::new(allowed.plan)) {
                Ok(p) => LogicalPlan::Projection(p),
                Err(e) => return Some(Err(df_error(e))),
            }
        } else {
            allowed.plan
        };
        // Executions are audited one by one, with what this Parse decided.
        let mut memo = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= PREPARED_MEMO {
            memo.clear();
        }
        memo.insert(statement.to_string(), allowed.approval);
        Some(Ok(plan))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        params: &datafusion::common::ParamValues,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(from) = copy_in::copy_from_stdin(statement) {
            let from = match from {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            return Some(
                self.copy_from(from, session_context, &*client, Protocol::Extended)
                    .await,
            );
        }
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
        let approval = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&statement.to_string())
            .cloned();
        let Some(approval) = approval else {
            return Some(Err(forgotten("DECLARE")));
        };
        let session = self.login.session(&*client);
        let running = match session.begin(approval.for_cursor(), started, Self::options(&*client)) {
            Ok(r) => r,
            Err(e) => return Some(Err(pg_error(e))),
        };
        let query = match p.input.as_ref().clone().with_param_values(params.clone()) {
            Ok(q) => q,
            Err(e) => {
                return Some(Err(pg_error(running.fail(e.into()))));
            }
        };
        Some(cursor::declare(stmts, query, running, session_context, client).await)
    }
}
