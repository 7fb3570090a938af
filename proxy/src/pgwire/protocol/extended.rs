//! The extended query protocol: Parse checks the statement once (the checked plan
//! is what the portal keeps), each Execute runs it under the engine with what the
//! check decided, and an Execute without a row limit streams as rows come.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::Type;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use switchyard_engine::{passes_through, EngineError, Protocol, QueryText, RunOptions, SqlState};

use crate::pgwire::pgcompat;
use crate::pgwire::protocol::connection::Login;
use crate::pgwire::protocol::errors::{engine_error, pg_error, user_error};
use crate::pgwire::protocol::query::{
    in_block, notice, session_timeout, wrap, DfStatement, QueryService,
};

#[async_trait]
impl ExtendedQueryHandler for QueryService {
    type Statement = DfStatement;
    type QueryParser = GuardedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(GuardedParser {
            inner: self.inner.query_parser(),
            texts: Arc::clone(&self.texts),
            login: Arc::clone(&self.login),
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
                && self
                    .transactions
                    .recovers(&*client, &portal.statement.statement.0)
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
                return Err(user_error(
                    SqlState::INTERNAL_ERROR,
                    "unexpected response to a query",
                ));
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
        let session = self.login.session(&*client);
        if portal.statement.statement.1.is_none() {
            if let Some(Ok(refresh)) =
                switchyard_engine::refresh::parse(&portal.statement.statement.0)
            {
                session
                    .refresh(&refresh, Protocol::Extended)
                    .await
                    .map_err(pg_error)?;
                return Ok(Response::Execution(Tag::new(
                    switchyard_engine::refresh::TAG,
                )));
            }
        }
        let statement = portal.statement.statement.1.as_ref().map(|(s, _)| s);
        let approval = statement.and_then(|statement| {
            if matches!(statement, Statement::Declare { .. })
                || super::copy_in::copy_from_stdin(statement).is_some()
            {
                // The hook opens the cursor (or the COPY) and audits it.
                return None;
            }
            let known = self
                .prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&statement.to_string())
                .cloned();
            // Checked at Parse but forgotten since (the memo is bounded): the plan in the
            // portal is the checked one; audit and limit it with the user's guardrails.
            known.or_else(|| {
                (!passes_through(statement))
                    .then(|| session.approval(statement, Protocol::Extended))
            })
        });
        let token = self.begin(client);
        let Some(approval) = approval else {
            // SET, SHOW, transaction control: nothing to guard.
            let response = self.execute(client, portal, max_rows, &token, None).await?;
            return Ok(wrap(response, &token));
        };
        let options = RunOptions {
            session_timeout: session_timeout(&*client),
            cancel: token.clone(),
            in_block: in_block(&*client),
            unaudited: false,
        };
        let running = session
            .begin(approval, started, options)
            .map_err(pg_error)?;
        for warning in running.warnings() {
            client.send(notice(warning)).await?;
        }
        let response = self
            .execute(client, portal, max_rows, &token, Some(running))
            .await?;
        Ok(wrap(response, &token))
    }
}

/// datafusion-postgres's parser behind [`pgcompat::prepare`]; one
/// statement per Parse.
pub struct GuardedParser {
    inner: Arc<<DfSessionService as ExtendedQueryHandler>::QueryParser>,
    texts: Arc<Mutex<QueryText>>,
    login: Arc<Login>,
}

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
        if let Some(refresh) = switchyard_engine::refresh::parse(sql) {
            // Run at Execute; the statement has no plan and returns no rows.
            return match refresh {
                Ok(_) => Ok(Some((sql.to_string(), None))),
                Err(e) => {
                    self.login
                        .session(client)
                        .audit_unparsed(sql, Protocol::Extended, &e, started);
                    Err(pg_error(e))
                }
            };
        }
        let rewritten = pgcompat::prepare(sql)?;
        let texts = QueryText::from_sql(sql);
        if texts.stacked() > 1 {
            let e = EngineError::coded(
                SqlState::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            );
            self.login
                .session(client)
                .audit_unparsed(sql, Protocol::Extended, &e, started);
            return Err(pg_error(e));
        }
        *self.texts.lock().unwrap_or_else(|p| p.into_inner()) = texts;
        let parsed = self
            .inner
            .parse_sql(client, rewritten.as_deref().unwrap_or(sql), types)
            .await;
        if let Err(e) = &parsed {
            let reached_hook = self
                .texts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .started();
            if !reached_hook {
                self.login.session(client).audit_unparsed(
                    sql,
                    Protocol::Extended,
                    &engine_error(e),
                    started,
                );
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
