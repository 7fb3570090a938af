//! MongoDB's change feed: a change stream on the dataset's collection
//! (`fullDocument: updateLookup`), resumed from the resume token stored with the
//! copy.
//!
//! The snapshot opens the stream first and reads the collection after, so every
//! change from the stream's start on is seen; changes the snapshot already holds
//! are applied again harmlessly, because every insert, update and replace is
//! applied as "this `_id` now holds this document" and a delete of a missing row
//! is no change. Events of one MongoDB transaction (one `lsid` + `txnNumber`) are
//! applied as one local transaction.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use mongodb::bson::{Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream as DriverStream;
use mongodb::options::FullDocumentType;
use switchyard_config::{Dataset, DatasetSource, FilterValue};
use switchyard_sqlstate::SqlState;

use super::decode::{self, Target};
use super::{error, MongoCollection, MongoConnector};
use crate::changes::{
    Change, ChangeBatch, ChangeFeed, ChangeStream, FeedEvent, Position, Snapshot,
};
use crate::{ConnectorError, Result};

/// Documents per snapshot batch and per batch of changes.
const BATCH: usize = 4096;

/// The change feed of one MongoDB origin.
#[derive(Debug)]
pub struct MongoFeed {
    connector: MongoConnector,
}

impl MongoFeed {
    /// The feed of `connector`'s origin.
    pub fn new(connector: MongoConnector) -> Self {
        MongoFeed { connector }
    }

    fn origin(&self) -> &str {
        &self.connector.origin
    }

    /// The dataset's collection, filters, schema and how each column is read.
    async fn describe(&self, dataset: &Dataset) -> Result<Described> {
        let filters = match &dataset.source {
            DatasetSource::Table { filters, .. } => filters.clone(),
            _ => {
                return Err(ConnectorError::NotLive {
                    origin: self.origin().to_string(),
                    code: SqlState::FEATURE_NOT_SUPPORTED,
                    message: format!(
                        "dataset {} runs a pipeline, which cannot be maintained incrementally",
                        dataset.qualified_name()
                    ),
                    fix: "use refresh: <interval> instead of live: true".into(),
                })
            }
        };
        let (collection, base, columns) = self
            .connector
            .resolve(&dataset.qualified_name(), &dataset.source, &dataset.columns)
            .await?;
        if !columns.iter().any(|c| c.name == "_id" && c.path == "_id") {
            return Err(ConnectorError::NotLive {
                origin: self.origin().to_string(),
                code: SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                message: format!(
                    "dataset {} has no _id column, by which changes find their rows",
                    dataset.qualified_name()
                ),
                fix: "declare the _id column (columns: - { name: _id, type: text })".into(),
            });
        }
        let targets = columns
            .iter()
            .map(|c| Target {
                path: c.path.clone(),
                json: c.sql_type == switchyard_config::ColumnType::Jsonb,
            })
            .collect();
        Ok(Described {
            schema: super::schema::arrow_schema(&columns),
            collection,
            base,
            targets,
            filters,
        })
    }

    async fn open(
        &self,
        d: &Described,
        after: Option<ResumeToken>,
    ) -> Result<DriverStream<ChangeStreamEvent<Document>>> {
        d.collection
            .handle()
            .watch()
            .full_document(FullDocumentType::UpdateLookup)
            .batch_size(BATCH as u32)
            .max_await_time(std::time::Duration::from_millis(500))
            .resume_after(after)
            .await
            .map_err(|e| error(self.origin(), e))
    }
}

/// A dataset as its feed reads it.
struct Described {
    schema: SchemaRef,
    collection: Arc<MongoCollection>,
    base: Vec<Document>,
    targets: Vec<Target>,
    filters: Vec<(String, FilterValue)>,
}

fn token_text(token: &ResumeToken) -> Result<String> {
    serde_json::to_string(token).map_err(|e| ConnectorError::Origin {
        origin: String::new(),
        code: SqlState::INTERNAL_ERROR,
        message: format!("resume token: {e}"),
    })
}

#[async_trait]
impl ChangeFeed for MongoFeed {
    async fn snapshot(&self, dataset: &Dataset) -> Result<Snapshot> {
        let d = self.describe(dataset).await?;
        // The stream starts before the read: nothing committed after this is missed.
        let stream = self.open(&d, None).await?;
        let token = stream
            .resume_token()
            .ok_or_else(|| ConnectorError::Origin {
                origin: self.origin().to_string(),
                code: SqlState::PROTOCOL_VIOLATION,
                message: "the change stream gave no starting resume token".into(),
            })?;
        let position = token_text(&token)?;
        let cursor = d
            .collection
            .handle()
            .aggregate(d.base.clone())
            .batch_size(BATCH as u32)
            .await
            .map_err(|e| error(self.origin(), e))?;
        let origin = self.origin().to_string();
        let schema = Arc::clone(&d.schema);
        let targets = d.targets.clone();
        let rows = futures::stream::try_unfold(
            (cursor, origin, Arc::clone(&schema), targets, false),
            |(mut cursor, origin, schema, targets, done)| async move {
                if done {
                    return Ok(None);
                }
                let mut docs = Vec::with_capacity(BATCH);
                let mut ended = false;
                while docs.len() < BATCH {
                    match cursor.next().await {
                        Some(Ok(doc)) => docs.push(doc),
                        Some(Err(e)) => {
                            return Err(datafusion::error::DataFusionError::from(error(&origin, e)))
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if docs.is_empty() {
                    return Ok(None);
                }
                let batch = decode::batch(&origin, &docs, &schema, &targets)
                    .map_err(datafusion::error::DataFusionError::from)?;
                Ok(Some((batch, (cursor, origin, schema, targets, ended))))
            },
        );
        Ok(Snapshot {
            rows: Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), rows)),
            position,
            key: vec!["_id".into()],
            stream: Box::new(MongoStream::new(self.origin(), dataset, d, stream)),
        })
    }

    async fn resume(
        &self,
        dataset: &Dataset,
        schema: SchemaRef,
        _key: &[String],
        position: &Position,
    ) -> Result<Box<dyn ChangeStream>> {
        let mut d = self.describe(dataset).await?;
        if d.schema.fields() != schema.fields() {
            return Err(ConnectorError::Resnapshot {
                dataset: dataset.qualified_name(),
                why: "the collection's columns changed".into(),
            });
        }
        d.schema = schema;
        let token: ResumeToken =
            serde_json::from_str(position).map_err(|e| ConnectorError::Resnapshot {
                dataset: dataset.qualified_name(),
                why: format!("the stored resume token cannot be read: {e}"),
            })?;
        let stream = match self.open(&d, Some(token)).await {
            Ok(s) => s,
            // The token is older than the oplog holds (ChangeStreamHistoryLost) or
            // otherwise unusable: only a new snapshot can go on.
            Err(ConnectorError::Origin { message, .. }) => {
                return Err(ConnectorError::Resnapshot {
                    dataset: dataset.qualified_name(),
                    why: format!("the change stream cannot resume: {message}"),
                })
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(MongoStream::new(
            self.origin(),
            dataset,
            d,
            stream,
        )))
    }

    async fn drop_feed(&self, _dataset: &Dataset) -> Result<()> {
        // A change stream keeps nothing at the origin.
        Ok(())
    }
}

/// One dataset's change stream as feed events.
struct MongoStream {
    origin: String,
    dataset: String,
    d: Described,
    stream: DriverStream<ChangeStreamEvent<Document>>,
    out: std::collections::VecDeque<FeedEvent>,
    /// The open transaction's documents (full, or key-only for deletes) and changes.
    docs: Vec<Document>,
    changes: Vec<Change>,
    /// The MongoDB transaction the open local one belongs to (`None`: a single write).
    txn: Option<(Document, i64)>,
    open: bool,
    last: Option<ResumeToken>,
    /// When the last event was written at the origin.
    written_at: chrono::DateTime<Utc>,
}

impl MongoStream {
    fn new(
        origin: &str,
        dataset: &Dataset,
        d: Described,
        stream: DriverStream<ChangeStreamEvent<Document>>,
    ) -> Self {
        MongoStream {
            origin: origin.to_string(),
            dataset: dataset.qualified_name(),
            d,
            stream,
            out: Default::default(),
            docs: Vec::new(),
            changes: Vec::new(),
            txn: None,
            open: false,
            last: None,
            written_at: Utc::now(),
        }
    }

    /// Whether `doc` is in the dataset's filters.
    fn matches(&self, doc: &Document) -> bool {
        self.d.filters.iter().all(|(field, want)| {
            let got = decode::lookup(doc, field);
            match (got, want) {
                (Some(Bson::String(s)), FilterValue::Text(t)) => s == t,
                (Some(Bson::Boolean(b)), FilterValue::Bool(w)) => b == w,
                (Some(v), FilterValue::Int(n)) => number(v) == Some(*n as f64),
                (Some(v), FilterValue::Float(f)) => number(v) == Some(*f),
                _ => false,
            }
        })
    }

    /// Hands out the open transaction's changes and its commit.
    fn close(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.flush()?;
        let position = match &self.last {
            Some(t) => token_text(t)?,
            None => return Ok(()),
        };
        self.out.push_back(FeedEvent::Commit {
            position,
            committed_at: self.written_at,
        });
        self.open = false;
        self.txn = None;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let rows = decode::batch(&self.origin, &self.docs, &self.d.schema, &self.d.targets)?;
        self.docs.clear();
        self.out.push_back(FeedEvent::Changes(ChangeBatch {
            rows,
            changes: std::mem::take(&mut self.changes),
        }));
        Ok(())
    }

    fn event(&mut self, e: ChangeStreamEvent<Document>) -> Result<()> {
        let txn = match (&e.lsid, e.txn_number) {
            (Some(l), Some(n)) => Some((l.clone(), n)),
            _ => None,
        };
        // A new MongoDB transaction, or a write outside one, ends the open one.
        if self.open && (txn.is_none() || txn != self.txn) {
            self.close()?;
        }
        match e.operation_type {
            OperationType::Insert | OperationType::Update | OperationType::Replace => {
                let key = e.document_key.clone().unwrap_or_default();
                match e.full_document {
                    Some(doc) if self.matches(&doc) => {
                        self.docs.push(doc);
                        self.changes.push(Change::Update {
                            old: None,
                            new: self.docs.len() - 1,
                            unchanged: vec![],
                            upsert: true,
                        });
                    }
                    // Deleted since, or out of the filter now.
                    _ => {
                        self.docs.push(key);
                        self.changes.push(Change::Delete {
                            old: self.docs.len() - 1,
                        });
                    }
                }
            }
            OperationType::Delete => {
                self.docs.push(e.document_key.clone().unwrap_or_default());
                self.changes.push(Change::Delete {
                    old: self.docs.len() - 1,
                });
            }
            OperationType::Drop
            | OperationType::Rename
            | OperationType::DropDatabase
            | OperationType::Invalidate => {
                return Err(ConnectorError::Resnapshot {
                    dataset: self.dataset.clone(),
                    why: format!("the collection saw {:?}", e.operation_type),
                })
            }
            OperationType::Other(_) => {}
            _ => {}
        }
        if !self.open {
            self.open = true;
            let transaction = txn.as_ref().and_then(|(lsid, _)| super::session_name(lsid));
            self.txn = txn;
            // Named by its session: sync replays run on sessions of their own
            // client, so a replay coming back is known by it.
            self.out.push_back(FeedEvent::Begin { transaction });
        }
        self.last = Some(e.id);
        self.written_at = e
            .wall_time
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
            .or_else(|| {
                e.cluster_time
                    .and_then(|t| chrono::DateTime::from_timestamp(t.time as i64, 0))
            })
            .unwrap_or_else(Utc::now);
        if self.changes.len() >= BATCH {
            self.flush()?;
        }
        // A write outside a transaction is one on its own.
        if self.txn.is_none() {
            self.close()?;
        }
        Ok(())
    }
}

fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(n) => Some(*n as f64),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(f) => Some(*f),
        _ => None,
    }
}

#[async_trait]
impl ChangeStream for MongoStream {
    async fn next(&mut self) -> Result<FeedEvent> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Ok(e);
            }
            match self
                .stream
                .next_if_any()
                .await
                .map_err(|e| error(&self.origin, e))?
            {
                Some(event) => self.event(event)?,
                None => {
                    // The batch ended: a transaction's events come together, so
                    // the open one is whole.
                    self.close()?;
                    if self.out.is_empty() {
                        match self.stream.resume_token() {
                            Some(token) if Some(&token) != self.last.as_ref() => {
                                self.last = Some(token.clone());
                                self.out.push_back(FeedEvent::Idle {
                                    position: token_text(&token)?,
                                });
                            }
                            // A server that answers empty batches at once is not
                            // asked again in a tight loop.
                            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                        }
                    }
                }
            }
        }
    }

    fn durable(&mut self, _position: &Position) {
        // The origin keeps its oplog regardless: nothing to acknowledge.
    }
}
