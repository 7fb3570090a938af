//! CancelRequest: stops a session's running statement, also while its rows stream.
//!
//! pgwire's built-in cancel covers only planning; DataFusion does its work while
//! rows are pulled, so each statement gets a token that both the planning future
//! and the row stream watch. Dropping the stream stops DataFusion and closes the
//! origin streams, which cancel their backend queries.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::results::QueryResponse;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use tokio_util::sync::CancellationToken;

type Key = (i32, Vec<u8>);

/// Running statements by (backend pid, secret key).
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<Key, Arc<SessionCancel>>>,
}

/// One session's current statement token.
#[derive(Debug, Default)]
pub struct SessionCancel {
    current: Mutex<CancellationToken>,
}

impl SessionCancel {
    /// A fresh token for the statement about to run.
    pub fn begin(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.current.lock().expect("cancel lock") = token.clone();
        token
    }

    /// The running (or last) statement's token.
    pub fn current(&self) -> CancellationToken {
        self.current.lock().expect("cancel lock").clone()
    }

    fn cancel(&self) {
        self.current.lock().expect("cancel lock").cancel();
    }
}

/// Keeps a session registered while the connection lives; lives in the session's extensions.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: Key,
    /// The session's token holder.
    pub session: Arc<SessionCancel>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .expect("cancel lock")
            .remove(&self.key);
    }
}

impl CancelRegistry {
    /// Registers a session under its pid and secret key.
    pub fn register(self: &Arc<Self>, pid: i32, secret: Vec<u8>) -> Registration {
        let session = Arc::new(SessionCancel::default());
        let key = (pid, secret);
        self.sessions
            .lock()
            .expect("cancel lock")
            .insert(key.clone(), Arc::clone(&session));
        Registration {
            registry: Arc::clone(self),
            key,
            session,
        }
    }
}

#[async_trait]
impl CancelHandler for CancelRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let session = self
            .sessions
            .lock()
            .expect("cancel lock")
            .get(&key)
            .cloned();
        match session {
            Some(session) => {
                tracing::info!(pid = request.pid, "cancel request");
                session.cancel();
            }
            // A wrong key must not reveal anything; PostgreSQL ignores it silently too.
            None => tracing::debug!(pid = request.pid, "cancel request for unknown session"),
        }
    }
}

/// Ends `response`'s row stream with 57014 once `token` is cancelled.
pub fn cancellable(mut response: QueryResponse, token: CancellationToken) -> QueryResponse {
    let fields = response.row_schema();
    let tag = response.command_tag().to_owned();
    let rows: Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>> =
        std::mem::replace(response.data_rows(), Box::pin(futures::stream::empty()));
    let stream = futures::stream::unfold((Some(rows), token), move |(rows, token)| async move {
        let mut rows = rows?;
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                // Dropping the row stream stops DataFusion and the origin reads.
                drop(rows);
                Some((Err(PgWireError::QueryCanceled), (None, token)))
            }
            row = rows.next() => row.map(|r| (r, (Some(rows), token))),
        }
    });
    let mut out = QueryResponse::new(fields, stream);
    out.set_command_tag(&tag);
    out
}
