//! A statement's rows while they stream: the guardrails (statement timeout, result
//! bytes, row cap) enforced on Arrow batches, cancellation, the user's concurrency
//! slot held until the last batch, and the audit record completed when the stream
//! ends — or when it is dropped.
//!
//! Result bytes are the size of the values as Arrow holds them (fixed-width values
//! at their width, text and binary at their length, plus offsets and null bitmaps),
//! the same for every front door and wire format.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{Stream, StreamExt};
use switchyard_config::RowCapAction;
use switchyard_safety::Limits;
use tokio_util::sync::CancellationToken;

use crate::audit::StatementAudit;
use crate::slots::Slot;
use crate::EngineError;

/// The bytes a batch's values take (see the module documentation).
pub fn result_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| array_bytes(c.as_ref()))
        .sum()
}

fn array_bytes(array: &dyn Array) -> u64 {
    let views = match array.data_type() {
        DataType::Utf8View => Some(array.as_string_view().lengths().map(u64::from).sum::<u64>()),
        DataType::BinaryView => Some(array.as_binary_view().lengths().map(u64::from).sum::<u64>()),
        _ => None,
    };
    let nulls = array
        .logical_nulls()
        .map(|n| n.len().div_ceil(8) as u64)
        .unwrap_or(0);
    match views {
        Some(values) => values + nulls,
        None => array
            .to_data()
            .get_slice_memory_size()
            .map(|n| n as u64)
            .unwrap_or_else(|_| array.get_array_memory_size() as u64),
    }
}

/// Rows in flight, guarded; a `SendableRecordBatchStream` for the front door.
pub struct Guarded {
    inner: Pin<Box<dyn Stream<Item = Result<RecordBatch, DataFusionError>> + Send>>,
    schema: SchemaRef,
}

impl Stream for Guarded {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

struct State {
    batches: SendableRecordBatchStream,
    limits: Limits,
    deadline: Option<tokio::time::Instant>,
    cancel: CancellationToken,
    sent_rows: u64,
    sent_bytes: u64,
    audit: Option<StatementAudit>,
    _slot: Option<Slot>,
    _running: Option<Box<dyn std::any::Any + Send>>,
    /// Rows of a batch cut at the row cap, shown to the cap on the next poll.
    pending: Option<RecordBatch>,
    done: bool,
}

impl State {
    fn end(&mut self, error: Option<&EngineError>) {
        self.done = true;
        if let Some(mut audit) = self.audit.take() {
            let r = audit.record_mut();
            r.rows = self.sent_rows;
            r.bytes = self.sent_bytes;
            audit.finish(error.map(EngineError::record));
        }
    }

    fn fail(&mut self, e: EngineError) -> DataFusionError {
        self.end(Some(&e));
        DataFusionError::External(Box::new(e))
    }

    /// `batch` as far as the row cap and result bytes let it through.
    fn admit(&mut self, batch: RecordBatch) -> Option<Result<RecordBatch, DataFusionError>> {
        let mut batch = batch;
        if let Some(max) = self.limits.max_rows {
            let room = max.saturating_sub(self.sent_rows);
            if room == 0 && batch.num_rows() > 0 {
                // The plan yields max_rows + 1 rows when there were more.
                return match self.limits.on_max_rows {
                    Some(RowCapAction::Error) => Some(Err(self.fail(EngineError::RowCap { max }))),
                    _ => {
                        if let Some(audit) = &mut self.audit {
                            audit
                                .record_mut()
                                .warnings
                                .push(format!("result cut to max_rows ({max} rows)"));
                        }
                        self.end(None);
                        None
                    }
                };
            }
            if (batch.num_rows() as u64) > room {
                // The rest of this batch is for the next poll, which ends the result.
                let keep = usize::try_from(room).unwrap_or(usize::MAX);
                let rest = batch.slice(keep, batch.num_rows() - keep);
                batch = batch.slice(0, keep);
                self.pending = Some(rest);
            }
        }
        let bytes = self.sent_bytes + result_bytes(&batch);
        if let Some(max) = self.limits.max_result_bytes {
            if bytes > max {
                return Some(Err(self.fail(EngineError::ResultBytes { max })));
            }
        }
        self.sent_rows += batch.num_rows() as u64;
        self.sent_bytes = bytes;
        Some(Ok(batch))
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Dropped early (client gone): the audit record, written on drop, says how far it got.
        if let Some(audit) = &mut self.audit {
            let r = audit.record_mut();
            r.rows = self.sent_rows;
            r.bytes = self.sent_bytes;
        }
    }
}

/// What a guarded stream holds besides its rows.
pub struct Guarding {
    /// The guardrails.
    pub limits: Limits,
    /// When the statement arrived (the timeout counts from there).
    pub started: Instant,
    /// Cancels the statement (CancelRequest).
    pub cancel: CancellationToken,
    /// The audit record, completed when the stream ends.
    pub audit: Option<StatementAudit>,
    /// The user's concurrency slot, freed when the stream ends.
    pub slot: Option<Slot>,
    /// Held while the statement runs (the engine's count of running statements).
    pub running: Option<Box<dyn std::any::Any + Send>>,
}

/// Wraps `batches` with the guardrails, cancellation and the audit record.
pub fn guard(batches: SendableRecordBatchStream, guarding: Guarding) -> SendableRecordBatchStream {
    let schema = batches.schema();
    let Guarding {
        limits,
        started,
        cancel,
        audit,
        slot,
        running,
    } = guarding;
    let deadline = limits
        .statement_timeout
        .map(|t| tokio::time::Instant::from_std(started + t));
    let state = State {
        batches,
        limits,
        deadline,
        cancel,
        sent_rows: 0,
        sent_bytes: 0,
        audit,
        _slot: slot,
        _running: running,
        pending: None,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let next = match s.pending.take() {
            Some(rest) => Some(Ok(rest)),
            None => {
                let deadline = s.deadline;
                let timeout = async move {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = s.cancel.cancelled() => {
                        // Dropping the batches stops DataFusion and the origin reads.
                        let e = s.fail(EngineError::Canceled);
                        return Some((Err(e), s));
                    }
                    _ = timeout => {
                        let e = s.fail(EngineError::Timeout);
                        return Some((Err(e), s));
                    }
                    batch = s.batches.next() => batch,
                }
            }
        };
        match next {
            None => {
                s.end(None);
                None
            }
            Some(Err(e)) => {
                let e = EngineError::from(e);
                let e = s.fail(e);
                Some((Err(e), s))
            }
            Some(Ok(batch)) => s.admit(batch).map(|r| (r, s)),
        }
    });
    Box::pin(Guarded {
        inner: Box::pin(stream),
        schema,
    })
}

/// For `on_max_rows: truncate`: reads up to `max + 1` rows ahead so the client can be
/// told that rows were cut before they arrive. The cap bounds what is held.
pub async fn read_ahead(
    mut batches: SendableRecordBatchStream,
    max: u64,
) -> Result<(SendableRecordBatchStream, bool), EngineError> {
    let schema = batches.schema();
    let mut held = Vec::new();
    let mut rows = 0u64;
    let mut cut = false;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let room = max - rows;
        if batch.num_rows() as u64 > room {
            cut = true;
            let keep = usize::try_from(room).unwrap_or(usize::MAX);
            if keep > 0 {
                held.push(Ok(batch.slice(0, keep)));
            }
            break;
        }
        rows += batch.num_rows() as u64;
        held.push(Ok(batch));
    }
    drop(batches);
    let stream = futures::stream::iter(held);
    Ok((
        Box::pin(Guarded {
            inner: Box::pin(stream),
            schema,
        }),
        cut,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use std::sync::Arc;

    fn batches(sizes: &[usize]) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let mut next = 0;
        let list: Vec<_> = sizes
            .iter()
            .map(|n| {
                let values: Vec<i32> = (next..next + *n as i32).collect();
                next += *n as i32;
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int32Array::from(values))],
                )
                .expect("batch"))
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(list),
        ))
    }

    fn limits(max_rows: Option<u64>, on: Option<RowCapAction>, bytes: Option<u64>) -> Limits {
        Limits {
            max_rows,
            on_max_rows: on,
            statement_timeout: None,
            max_result_bytes: bytes,
            max_concurrent_statements: None,
        }
    }

    async fn run(stream: SendableRecordBatchStream, limits: Limits) -> (u64, Option<String>) {
        let mut s = guard(
            stream,
            Guarding {
                limits,
                started: Instant::now(),
                cancel: CancellationToken::new(),
                audit: None,
                slot: None,
                running: None,
            },
        );
        let mut rows = 0;
        while let Some(b) = s.next().await {
            match b {
                Ok(b) => rows += b.num_rows() as u64,
                Err(e) => return (rows, Some(crate::classify(&e).0.code().to_string())),
            }
        }
        (rows, None)
    }

    #[tokio::test]
    async fn the_row_cap_cuts_or_fails_inside_a_batch() {
        let cut = limits(Some(5), Some(RowCapAction::Truncate), None);
        assert_eq!(run(batches(&[3, 3]), cut.clone()).await, (5, None));
        assert_eq!(run(batches(&[5]), cut.clone()).await, (5, None));
        let error = limits(Some(5), Some(RowCapAction::Error), None);
        assert_eq!(
            run(batches(&[4, 4]), error.clone()).await,
            (5, Some("54000".into()))
        );
        assert_eq!(run(batches(&[2, 3]), error).await, (5, None));
    }

    #[tokio::test]
    async fn result_bytes_stop_the_stream() {
        // 4 bytes per int4 value.
        let capped = limits(None, None, Some(40));
        assert_eq!(run(batches(&[10]), capped.clone()).await, (10, None));
        assert_eq!(
            run(batches(&[10, 1]), capped).await,
            (10, Some("54000".into()))
        );
    }

    #[tokio::test]
    async fn cancel_ends_the_stream_with_57014() {
        let token = CancellationToken::new();
        token.cancel();
        let mut s = guard(
            batches(&[1]),
            Guarding {
                limits: limits(None, None, None),
                started: Instant::now(),
                cancel: token,
                audit: None,
                slot: None,
                running: None,
            },
        );
        let e = s.next().await.expect("an item").expect_err("cancelled");
        assert_eq!(crate::classify(&e).0.code(), "57014");
    }

    #[tokio::test]
    async fn read_ahead_holds_at_most_the_cap() {
        let (mut s, cut) = read_ahead(batches(&[2, 2, 2]), 3).await.expect("rows");
        assert!(cut);
        let mut rows = 0;
        while let Some(b) = s.next().await {
            rows += b.expect("batch").num_rows();
        }
        assert_eq!(rows, 3);
        let (_, cut) = read_ahead(batches(&[2, 1]), 3).await.expect("rows");
        assert!(!cut);
    }

    #[test]
    fn text_counts_its_length() {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["abc", "de"]))])
                .expect("batch");
        // 5 bytes of text and 3 offsets.
        assert_eq!(result_bytes(&batch), 5 + 12);
    }
}
