//! Taking a copy: the dataset's rows are read through its origin's federated
//! table (the same read a federated statement makes) — or, for a live dataset,
//! through its change feed's consistent snapshot — and written to a new copy in
//! the local store on a blocking thread. Two batches are in flight at most, so
//! memory stays flat whatever the table size.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use switchyard_config::Dataset;
use switchyard_connectors::changes::{ChangeFeed, ChangeStream};
use switchyard_connectors::local::{source_key, CopyInfo, LocalStore};
use switchyard_connectors::Origin;

use crate::{MaterializeError, Result};

/// The table name the snapshot's own query reads.
const SOURCE: &str = "switchyard_snapshot_source";

/// Copies `dataset` from `origin` into `store`; `progress` counts rows written.
/// The new copy replaces the old one only once it is whole.
pub async fn take(
    origin: &Arc<dyn Origin>,
    store: &Arc<LocalStore>,
    dataset: &Dataset,
    progress: Arc<AtomicU64>,
) -> Result<CopyInfo> {
    let table = origin.table(dataset).await?;
    let schema = table.schema();
    let ctx = SessionContext::new_with_state(switchyard_planner::session_state());
    ctx.register_table(SOURCE, table)?;
    let rows = ctx
        .sql(&format!("SELECT * FROM {SOURCE}"))
        .await?
        .execute_stream()
        .await?;
    write(store, dataset, schema, rows, progress, None).await
}

/// Copies a live `dataset` through its origin's change `feed`: the copy stands
/// at the snapshot's position, and the returned stream goes on from there.
pub async fn take_live(
    feed: &Arc<dyn ChangeFeed>,
    store: &Arc<LocalStore>,
    dataset: &Dataset,
    progress: Arc<AtomicU64>,
) -> Result<(CopyInfo, Box<dyn ChangeStream>)> {
    let snapshot = feed.snapshot(dataset).await?;
    let schema = snapshot.rows.schema();
    let follow = (snapshot.position.clone(), snapshot.key.clone());
    let info = write(
        store,
        dataset,
        schema,
        snapshot.rows,
        progress,
        Some(follow),
    )
    .await?;
    Ok((info, snapshot.stream))
}

/// Writes `rows` as the new copy of `dataset`; a live copy records the feed's
/// position and key.
async fn write(
    store: &Arc<LocalStore>,
    dataset: &Dataset,
    schema: SchemaRef,
    mut rows: SendableRecordBatchStream,
    progress: Arc<AtomicU64>,
    follow: Option<(String, Vec<String>)>,
) -> Result<CopyInfo> {
    let name = dataset.qualified_name();

    // `None` says every row was read: without it the writer drops the copy.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<RecordBatch>>(2);
    let writer = {
        let store = Arc::clone(store);
        let schema = Arc::clone(&schema);
        let source = source_key(dataset);
        let name = name.clone();
        let sync = dataset.mode.sync().is_some();
        tokio::task::spawn_blocking(move || -> Result<CopyInfo> {
            let mut copy = store.begin_copy(&name, &source, schema, progress)?;
            if let Some((position, key)) = &follow {
                copy.follow(position, key);
                if sync {
                    copy.unique_key();
                }
            }
            while let Some(message) = rx.blocking_recv() {
                match message {
                    Some(batch) => copy.write(&batch)?,
                    None => return Ok(copy.commit()?),
                }
            }
            Err(MaterializeError::Copy {
                code: switchyard_sqlstate::SqlState::INTERNAL_ERROR,
                message: format!("the copy of {name} was cut short"),
                origin_down: false,
            })
        })
    };
    let mut read_error = None;
    while let Some(batch) = rows.next().await {
        let batch = match batch
            .map_err(MaterializeError::from)
            .and_then(|b| conform(b, &schema))
        {
            Ok(b) => b,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if tx.send(Some(batch)).await.is_err() {
            // The writer stopped: its error says why.
            break;
        }
    }
    if read_error.is_none() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let info = writer.await.map_err(|e| MaterializeError::Copy {
        code: switchyard_sqlstate::SqlState::INTERNAL_ERROR,
        message: format!("the writer of {name} failed: {e}"),
        origin_down: false,
    });
    // A read error is the cause; the writer then only says it was cut short.
    let info = match (read_error, info) {
        (Some(e), _) => return Err(e),
        (None, result) => result??,
    };
    tracing::info!(dataset = %name, rows = info.rows, "copy taken");
    Ok(info)
}

/// The batch in the copy's schema (the planner may hand out, e.g., string views
/// where the table declared strings).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields().len() != schema.fields().len() {
        return Err(MaterializeError::Copy {
            code: switchyard_sqlstate::SqlState::INTERNAL_ERROR,
            message: format!(
                "the origin returned {} columns for {}",
                batch.num_columns(),
                schema.fields().len()
            ),
            origin_down: false,
        });
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| MaterializeError::from(datafusion::error::DataFusionError::from(e)))?;
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| MaterializeError::from(datafusion::error::DataFusionError::from(e)))
}
