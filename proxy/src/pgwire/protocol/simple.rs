//! The simple query protocol: the text as sent is read for the injection analyser,
//! then guarded and rewritten (pgcompat), then datafusion-postgres parses it and
//! hands each statement to the hooks ([`super::statements`] checks and runs it).

use std::fmt::Debug;
use std::time::Instant;

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use futures::Sink;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use switchyard_engine::{Protocol, QueryText};

use crate::pgwire::pgcompat;
use crate::pgwire::protocol::errors::{engine_error, pg_error};
use crate::pgwire::protocol::query::{wrap, QueryService};

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
            && self.transactions.recovers(&*client, &query.query)
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
        let started = Instant::now();
        if let Some(refresh) = switchyard_engine::refresh::parse(query) {
            let session = self.login.session(&*client);
            let refresh = refresh.inspect_err(|e| {
                session.audit_unparsed(query, Protocol::Simple, e, started);
            });
            let refresh = refresh.map_err(pg_error)?;
            session
                .refresh(&refresh, Protocol::Simple)
                .await
                .map_err(pg_error)?;
            return Ok(vec![Response::Execution(Tag::new(
                switchyard_engine::refresh::TAG,
            ))]);
        }
        let rewritten = pgcompat::prepare(query)?;
        // The analyser reads the text as sent: a rewrite drops comments.
        *self.texts.lock().unwrap_or_else(|p| p.into_inner()) = QueryText::from_sql(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let token = self.begin(client);
        let run = <DfSessionService as SimpleQueryHandler>::do_query(&self.inner, client, query);
        let responses = tokio::select! {
            r = run => r,
            _ = token.cancelled() => return Err(PgWireError::QueryCanceled),
        };
        let responses = match responses {
            Ok(r) => r,
            Err(e) => {
                let reached_hook = self
                    .texts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .started();
                if !reached_hook {
                    let session = self.login.session(&*client);
                    session.audit_unparsed(query, Protocol::Simple, &engine_error(&e), started);
                }
                return Err(e);
            }
        };
        Ok(responses.into_iter().map(|r| wrap(r, &token)).collect())
    }
}
