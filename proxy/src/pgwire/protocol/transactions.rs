//! Transaction statements datafusion-postgres's hooks leave out.
//!
//! `SHOW TRANSACTION ISOLATION LEVEL` answers as PostgreSQL does (`read committed`;
//! pgjdbc and DBeaver ask on connect).
//!
//! `SAVEPOINT`, `RELEASE SAVEPOINT` and `ROLLBACK TO SAVEPOINT` inside a transaction
//! block (psycopg 3 nests `conn.transaction()` as savepoints; SQLAlchemy does so when it
//! first connects), answered from the engine's transaction state
//! ([`switchyard_engine::transaction`]).
//!
//! Once the block has written an origin, savepoint commands, COMMIT and ROLLBACK
//! are forwarded to the origin's transaction before they are answered (COMMIT of a
//! failed block rolls back, as PostgreSQL's does).
//!
//! `ROLLBACK TO SAVEPOINT` after an error in the block makes the block usable again,
//! as in PostgreSQL (pgjdbc's `autosave`, psycopg's nested `transaction()`): pgwire
//! fixes a statement's transaction state before hooks run, so the front door asks
//! [`TransactionHook::recovers`] first and leaves the failed state itself.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use pgwire::api::results::{Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::response::TransactionStatus;

use switchyard_engine::transaction::{Block, SavepointOp, Transaction};

use crate::pgwire::protocol::connection::Login;
use crate::pgwire::protocol::errors::{df_error, pg_error};

/// The per-session hook over the engine's transaction state; see the module documentation.
pub struct TransactionHook {
    login: Arc<Login>,
}

fn block(status: TransactionStatus) -> Block {
    match status {
        TransactionStatus::Idle => Block::Idle,
        TransactionStatus::Transaction => Block::Open,
        TransactionStatus::Error => Block::Failed,
    }
}

impl TransactionHook {
    /// The hook of a connection's session.
    pub fn new(login: Arc<Login>) -> Self {
        TransactionHook { login }
    }

    fn state<C: ClientInfo + ?Sized>(&self, client: &C) -> &Arc<Transaction> {
        self.login.session(client).transaction()
    }

    /// Whether `sql`, arriving in a failed block, starts by rolling back to a savepoint
    /// set before the failure: the block is usable again from that statement on.
    pub fn recovers<C: ClientInfo + ?Sized>(&self, client: &C, sql: &str) -> bool {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
            return false;
        };
        let Some(Statement::Rollback {
            savepoint: Some(name),
            ..
        }) = statements.first()
        else {
            return false;
        };
        self.state(client).recovers(&name.value)
    }

    async fn answer(
        &self,
        statement: &Statement,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<Response>> {
        let status = client.transaction_status();
        let state = self.state(client);
        if is_show_isolation(statement) {
            return Some(super::settings::show(
                "transaction_isolation",
                "read committed",
            ));
        }
        let (name, op) = match statement {
            Statement::Savepoint { name } => (name, SavepointOp::Set),
            Statement::ReleaseSavepoint { name } => (name, SavepointOp::Release),
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => (name, SavepointOp::RollbackTo),
            // The block ends: its origin transaction with it (a failed block's
            // COMMIT rolls back). No savepoints survive it.
            Statement::Commit { .. } | Statement::Rollback { .. } => {
                let commit = matches!(statement, Statement::Commit { .. })
                    && status != TransactionStatus::Error;
                if let Err(e) = state.end(commit).await {
                    return Some(Err(pg_error(e)));
                }
                return None;
            }
            Statement::StartTransaction { .. } => {
                state.begin();
                return None;
            }
            // Anything else in a failed block is refused until it ends or rolls back
            // to a savepoint, as PostgreSQL does.
            _ if status == TransactionStatus::Error => {
                return Some(Err(pg_error(Transaction::aborted())))
            }
            _ => return None,
        };
        // Our own record of BEGIN counts too: pgwire's status lags behind the
        // statements of one multi-statement query.
        let block = match block(status) {
            Block::Idle if state.is_open() => Block::Open,
            b => b,
        };
        let answer = match state.savepoint(op, &name.value, block)? {
            Ok(()) => state.forward(op, &name.value).await,
            Err(e) => Err(e),
        };
        Some(
            answer
                .map(|()| Response::Execution(Tag::new(op.tag())))
                .map_err(pg_error),
        )
    }
}

fn is_show_isolation(statement: &Statement) -> bool {
    match statement {
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect();
            words == ["transaction", "isolation", "level"] || words == ["transaction_isolation"]
        }
        _ => false,
    }
}

fn is_savepoint_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Rollback {
                savepoint: Some(_),
                ..
            }
    )
}

#[async_trait]
impl QueryHook for TransactionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, &*client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // A plan of the answer's columns (Describe reads them); Execute answers (below).
        let schema = if is_show_isolation(statement) {
            super::settings::show_schema("transaction_isolation")
        } else if is_savepoint_statement(statement) {
            Arc::new(datafusion::arrow::datatypes::Schema::empty())
        } else {
            return None;
        };
        Some(
            DFSchema::try_from(schema)
                .map(|schema| {
                    LogicalPlan::EmptyRelation(EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(df_error),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, &*client).await
    }
}
