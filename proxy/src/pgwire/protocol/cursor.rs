//! `DECLARE name CURSOR FOR <checked plan>`: the rows stream into a cursor portal
//! that FETCH reads. The row cap, result bytes and the audit record apply as for any
//! statement; the timeout and concurrency slot do not (see
//! [`switchyard_engine::Approval::for_cursor`]).

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Declare, DeclareType, Statement};
use datafusion_postgres::hooks::HookClient;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{Response, Tag};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::PortalStore;
use pgwire::error::PgWireResult;
use switchyard_engine::{EngineError, Running, SqlState};

use crate::pgwire::protocol::encode::{encode_stream, format_options};
use crate::pgwire::protocol::errors::pg_error;

/// Opens the cursor `stmts` declares on `plan`, run by `running`.
pub async fn declare(
    stmts: &[Declare],
    plan: LogicalPlan,
    running: Running,
    ctx: &SessionContext,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    let refuse = |running: Running, message: &str| {
        Err(pg_error(
            running.fail(EngineError::coded(SqlState::SYNTAX_ERROR, message)),
        ))
    };
    let Some(declare) = stmts.first() else {
        return refuse(running, "DECLARE without a cursor");
    };
    if declare.declare_type != Some(DeclareType::Cursor) {
        return refuse(running, "only DECLARE ... CURSOR FOR is supported");
    }
    let Some(name) = declare.names.first().map(|n| n.value.clone()) else {
        return refuse(running, "cursor name is required");
    };
    let text = declare
        .for_query
        .as_ref()
        .map(|q| q.to_string())
        .unwrap_or_default();
    // Kept with the portal so that Describe Portal <cursor> reports the cursor's
    // columns (psycopg 3 reads rows with the types it describes).
    let described = declare
        .for_query
        .as_ref()
        .map(|q| (Statement::Query(q.clone()), plan.clone()));
    let batches = running.stream(ctx, plan).await.map_err(pg_error)?;
    let options = Arc::new(format_options(client.metadata()));
    let rows = encode_stream(batches, &Format::UnifiedText, Some(options))?;
    let stored = Arc::new(StoredStatement::new(
        name.clone(),
        (text, described),
        vec![],
    ));
    let portal = Portal::new_cursor(name, stored);
    portal.start(rows).await;
    client.portal_store().put_portal(Arc::new(portal));
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}
