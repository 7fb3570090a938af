//! Writes to a MongoDB collection inside a MongoDB transaction: INSERT as
//! `insertMany`, UPDATE as `updateMany` with `$set`, DELETE as `deleteMany`, their
//! filters translated as reads' are (SQL's three-valued logic kept; a filter
//! without an exact translation is refused, never approximated).
//!
//! Values are written as the collection's types: numeric as Decimal128, timestamps
//! and dates as BSON dates, JSON columns as documents, arrays as arrays, and text
//! in `_id` that is an ObjectId's hex as the ObjectId. A SET value must be a
//! constant (MongoDB's `$set` takes values, not SQL expressions). The row filter's
//! check is evaluated before anything is written: on the inserted rows here, and
//! for an UPDATE by counting the matched documents whose new state would fail it.
//! MongoDB transactions have no savepoints, and reads inside a block do not see its
//! MongoDB writes yet.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::ClientSession;
use switchyard_config::{Dataset, DatasetSource};

use super::decode::{self, Target};
use super::filter::{FieldKind, Fields, Filters};
use super::schema::JSON_METADATA;
use super::MongoConnector;
use crate::write::{
    Claim, ConflictAction, ConflictTarget, OnConflict, Savepoint, Write, WriteRequest,
    WriteTransaction, Writes, Written,
};
use crate::{ConnectorError, Result};

/// Writes to one MongoDB origin.
#[derive(Debug)]
pub struct MongoWrites {
    connector: MongoConnector,
    /// Sync replays' own client: its sessions are only theirs, so a transaction
    /// on one of them is a replay (how the change feed knows them).
    replays: tokio::sync::OnceCell<mongodb::Client>,
    /// [`APPLIED`] exists (made once per process, outside any transaction).
    applied_ready: std::sync::atomic::AtomicBool,
}

impl MongoWrites {
    /// Writes through `connector`'s client.
    pub fn new(connector: MongoConnector) -> Self {
        MongoWrites {
            connector,
            replays: Default::default(),
            applied_ready: Default::default(),
        }
    }

    async fn applied_collection(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.applied_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let origin = &self.connector.origin;
        let client = self.connector.client().await?;
        let database = client.database(&self.connector.settings.database);
        match database.create_collection(APPLIED).await {
            Ok(()) => {}
            // NamespaceExists: made by an earlier run.
            Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 48) =>
                {}
            Err(e) => return Err(super::error(origin, e)),
        }
        self.applied_ready.store(true, Ordering::Release);
        Ok(())
    }
}

impl MongoWrites {
    async fn begin_on(&self, client: mongodb::Client) -> Result<Box<MongoTransaction>> {
        let origin = self.connector.origin.clone();
        let mut session = client
            .start_session()
            .await
            .map_err(|e| super::error(&origin, e))?;
        session
            .start_transaction()
            .await
            .map_err(|e| super::error(&origin, e))?;
        Ok(Box::new(MongoTransaction {
            connector: self.connector.clone(),
            session,
        }))
    }
}

#[async_trait]
impl Writes for MongoWrites {
    async fn begin(&self) -> Result<Box<dyn WriteTransaction>> {
        Ok(self.begin_on(self.connector.client().await?).await?)
    }

    async fn begin_claimed(&self, entry: &str) -> Result<(Box<dyn WriteTransaction>, Claim)> {
        // A collection made inside a transaction is not everywhere allowed.
        self.applied_collection().await?;
        let client = self
            .replays
            .get_or_try_init(|| self.connector.new_client())
            .await?
            .clone();
        crate::write::claimed(self.begin_on(client).await?, entry).await
    }
}

/// A MongoDB transaction; dropped while open, the driver aborts it.
struct MongoTransaction {
    connector: MongoConnector,
    session: ClientSession,
}

/// A dataset's columns at their document paths, for filters.
struct Columns<'a> {
    schema: &'a SchemaRef,
    dataset: &'a Dataset,
}

impl Columns<'_> {
    fn path(&self, name: &str) -> String {
        self.dataset
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.path.clone())
            .unwrap_or_else(|| name.to_string())
    }

    fn targets(&self) -> Vec<Target> {
        self.schema
            .fields()
            .iter()
            .map(|f| Target {
                path: self.path(f.name()),
                json: f.metadata().contains_key(JSON_METADATA),
            })
            .collect()
    }
}

impl Fields for Columns<'_> {
    fn field(&self, column: &Column) -> Option<(String, FieldKind)> {
        let field = self.schema.field_with_name(&column.name).ok()?;
        let kind = match field.data_type() {
            _ if field.metadata().contains_key(JSON_METADATA) => FieldKind::Opaque,
            DataType::List(_) | DataType::LargeList(_) => FieldKind::Opaque,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldKind::Text,
            _ => FieldKind::Scalar,
        };
        Some((self.path(&column.name), kind))
    }
}

fn unsupported(origin: &str, dataset: &Dataset, why: impl Into<String>) -> ConnectorError {
    ConnectorError::NotWritable {
        origin: origin.to_string(),
        dataset: dataset.qualified_name(),
        why: why.into(),
    }
}

/// `e` with its columns unqualified (a write has one collection).
fn unqualified(e: &Expr) -> Expr {
    e.clone()
        .transform(|e| match e {
            Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
                Column::new_unqualified(c.name),
            ))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| e.clone())
}

/// The constant an assigned expression is, cast to `to`.
fn constant(e: &Expr, to: &DataType) -> Option<ScalarValue> {
    let value = match e {
        Expr::Literal(v, _) => v.clone(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.cast_to(c.field.data_type()).ok()?,
            _ => return None,
        },
        _ => return None,
    };
    if value.is_null() {
        return ScalarValue::try_from(to).ok();
    }
    value.cast_to(to).ok()
}

/// One Arrow value as the BSON the collection stores; `None` for NULL.
fn bson(array: &ArrayRef, row: usize, json: bool, object_id: bool) -> Result<Option<Bson>> {
    if array.is_null(row) {
        return Ok(None);
    }
    let value = ScalarValue::try_from_array(array.as_ref(), row)?;
    Ok(Some(scalar_bson(&value, json, object_id)?))
}

fn scalar_bson(value: &ScalarValue, json: bool, object_id: bool) -> Result<Bson> {
    let bad = |why: &str| {
        ConnectorError::DataFusion(datafusion::error::DataFusionError::Plan(format!(
            "cannot write {value} to MongoDB: {why}"
        )))
    };
    Ok(match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
            if json =>
        {
            let parsed: serde_json::Value =
                serde_json::from_str(s).map_err(|e| bad(&format!("not JSON: {e}")))?;
            Bson::try_from(parsed).map_err(|e| bad(&e.to_string()))?
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
            if object_id =>
        {
            match ObjectId::parse_str(s) {
                Ok(o) => Bson::ObjectId(o),
                Err(_) => Bson::String(s.clone()),
            }
        }
        ScalarValue::TimestampMicrosecond(Some(t), _) => {
            Bson::DateTime(DateTime::from_millis(t.div_euclid(1000)))
        }
        ScalarValue::TimestampNanosecond(Some(t), _) => {
            Bson::DateTime(DateTime::from_millis(t.div_euclid(1_000_000)))
        }
        ScalarValue::List(list) => {
            let values = list.value(0);
            let mut items = Vec::with_capacity(values.len());
            for i in 0..values.len() {
                items.push(bson(&values, i, false, false)?.unwrap_or(Bson::Null));
            }
            Bson::Array(items)
        }
        other => super::filter::literal(other).ok_or_else(|| bad("no BSON type for it"))?,
    })
}

/// `rows` as documents, each column at its path (NULLs left out, as a missing
/// field reads as NULL).
fn documents(rows: &RecordBatch, columns: &Columns<'_>) -> Result<Vec<Document>> {
    let mut docs = vec![Document::new(); rows.num_rows()];
    for (i, field) in rows.schema().fields().iter().enumerate() {
        let target = columns
            .schema
            .field_with_name(field.name())
            .map_err(|e| ConnectorError::DataFusion(e.into()))?;
        let array = rows.column(i);
        // Text sent for another type (a quoted literal) is cast to it here.
        let array = if array.data_type() != target.data_type() {
            arrow::compute::cast(array, target.data_type())
                .map_err(|e| ConnectorError::DataFusion(e.into()))?
        } else {
            Arc::clone(array)
        };
        let json = target.metadata().contains_key(JSON_METADATA);
        let path = columns.path(field.name());
        for (row, doc) in docs.iter_mut().enumerate() {
            if let Some(v) = bson(&array, row, json, path == "_id")? {
                set_path(doc, &path, v);
            }
        }
    }
    Ok(docs)
}

fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            if let Some(Bson::Document(inner)) = doc.get_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

/// How many rows of `rows` (target columns, others NULL) fail `check`.
fn violations(rows: &RecordBatch, schema: &SchemaRef, check: &Expr) -> Result<u64> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(match rows.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => Arc::clone(c),
            Some(c) => arrow::compute::cast(c, field.data_type())
                .map_err(|e| ConnectorError::DataFusion(e.into()))?,
            None => arrow::array::new_null_array(field.data_type(), rows.num_rows()),
        });
    }
    let full = RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        )),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.num_rows())),
    )
    .map_err(|e| ConnectorError::DataFusion(e.into()))?;
    let df_schema = DFSchema::try_from(full.schema().as_ref().clone())?;
    let physical = datafusion::physical_expr::create_physical_expr(
        &unqualified(check),
        &df_schema,
        &datafusion::execution::context::ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?;
    let passed = physical.evaluate(&full)?.into_array(full.num_rows())?;
    let passed = passed.as_boolean();
    Ok((0..passed.len())
        .filter(|&i| passed.is_null(i) || !passed.value(i))
        .count() as u64)
}

/// The origin-side record of replayed sync entries: one document per entry
/// (`_id` the entry's claim), written in the entry's own transaction.
pub const APPLIED: &str = "switchyard_sync_applied";

impl MongoTransaction {
    fn origin(&self) -> &str {
        &self.connector.origin
    }

    /// The collection `name` through the session's client (a session works only
    /// with its own client's handles).
    fn handle(&self, name: &str) -> mongodb::Collection<Document> {
        self.session
            .client()
            .database(&self.connector.settings.database)
            .collection(name)
    }

    /// The collection a dataset writes: only a whole collection takes writes.
    fn collection_of(&self, dataset: &Dataset) -> Result<mongodb::Collection<Document>> {
        match &dataset.source {
            DatasetSource::Table { table, filters } if filters.is_empty() => Ok(self.handle(table)),
            _ => Err(unsupported(
                self.origin(),
                dataset,
                "only datasets that are a whole collection take writes (this one has \
                 filters: or a pipeline:)",
            )),
        }
    }

    async fn find(
        &mut self,
        collection: &mongodb::Collection<Document>,
        filter: Document,
    ) -> Result<Vec<Document>> {
        let origin = self.origin().to_string();
        let mut cursor = collection
            .find(filter)
            .session(&mut self.session)
            .await
            .map_err(|e| super::error(&origin, e))?;
        let mut docs = Vec::new();
        while let Some(d) = cursor
            .next(&mut self.session)
            .await
            .transpose()
            .map_err(|e| super::error(&origin, e))?
        {
            docs.push(d);
        }
        Ok(docs)
    }
}

#[async_trait]
impl WriteTransaction for MongoTransaction {
    fn origin(&self) -> &str {
        &self.connector.origin
    }

    async fn write(&mut self, request: WriteRequest<'_>) -> Result<Written> {
        let origin = self.connector.origin.clone();
        let dataset = request.dataset;
        let collection = self.collection_of(dataset)?;
        let columns = Columns {
            schema: request.schema,
            dataset,
        };
        let decode =
            |docs: &[Document]| decode::batch(&origin, docs, request.schema, &columns.targets());
        let filter_of = |e: &Option<Expr>| -> Result<Document> {
            match e {
                None => Ok(Document::new()),
                Some(e) => Filters(&columns).when_true(&unqualified(e)).ok_or_else(|| {
                    unsupported(
                        &origin,
                        dataset,
                        format!("the condition {e} has no exact MongoDB filter"),
                    )
                }),
            }
        };
        let mut written = Written::default();
        match request.write {
            Write::Insert { rows, on_conflict } => {
                // `DO NOTHING` on the key alone: the documents whose `_id` exists
                // are left out (read in the transaction, so a concurrent insert of
                // one is a write conflict, not a duplicate).
                let skip_existing = match on_conflict {
                    None => false,
                    Some(OnConflict {
                        target: ConflictTarget::Columns(c),
                        action: ConflictAction::DoNothing,
                    }) if c.len() == 1 && columns.path(&c[0]) == "_id" => true,
                    Some(_) => {
                        return Err(unsupported(
                            &origin,
                            dataset,
                            "ON CONFLICT on a MongoDB collection other than (_id) DO NOTHING",
                        ))
                    }
                };
                if let Some(check) = request.check {
                    written.violations = violations(rows, request.schema, check)?;
                    if written.violations > 0 {
                        return Ok(written);
                    }
                }
                let mut docs = documents(rows, &columns)?;
                if skip_existing {
                    let ids: Vec<Bson> =
                        docs.iter().filter_map(|d| d.get("_id").cloned()).collect();
                    // By their debug text: equal exactly when the values are
                    // (type included), and hashable where `Bson` is not.
                    let existing: std::collections::HashSet<String> = self
                        .find(&collection, doc! {"_id": {"$in": ids}})
                        .await?
                        .iter()
                        .filter_map(|d| d.get("_id").map(|id| format!("{id:?}")))
                        .collect();
                    docs.retain(|d| {
                        d.get("_id")
                            .is_none_or(|id| !existing.contains(&format!("{id:?}")))
                    });
                }
                if docs.is_empty() {
                    if request.returning {
                        written.returned.push(decode(&docs)?);
                    }
                    return Ok(written);
                }
                let inserted = collection
                    .insert_many(docs.clone())
                    .session(&mut self.session)
                    .await
                    .map_err(|e| super::error(&origin, e))?;
                written.rows = inserted.inserted_ids.len() as u64;
                if request.returning {
                    for (i, id) in inserted.inserted_ids {
                        if let Some(d) = docs.get_mut(i) {
                            d.insert("_id", id);
                        }
                    }
                    written.returned.push(decode(&docs)?);
                }
            }
            Write::Update {
                assignments,
                filter,
            } => {
                let filter = filter_of(filter)?;
                let mut set = Document::new();
                let mut substitute = std::collections::HashMap::new();
                for (column, value) in assignments {
                    let field = request
                        .schema
                        .field_with_name(column)
                        .map_err(|e| ConnectorError::DataFusion(e.into()))?;
                    let Some(v) = constant(value, field.data_type()) else {
                        return Err(unsupported(
                            &origin,
                            dataset,
                            format!("SET {column} = {value}: MongoDB sets constants, not SQL expressions"),
                        ));
                    };
                    let json = field.metadata().contains_key(JSON_METADATA);
                    let path = columns.path(column);
                    set.insert(
                        path.clone(),
                        if v.is_null() {
                            Bson::Null
                        } else {
                            scalar_bson(&v, json, path == "_id")?
                        },
                    );
                    substitute.insert(column.clone(), Expr::Literal(v, None));
                }
                if let Some(check) = request.check {
                    // Rows the update matches whose new state fails the check.
                    let after = unqualified(check)
                        .transform(|e| match e {
                            Expr::Column(c) => match substitute.get(&c.name) {
                                Some(v) => Ok(Transformed::yes(v.clone())),
                                None => Ok(Transformed::no(Expr::Column(c))),
                            },
                            other => Ok(Transformed::no(other)),
                        })?
                        .data;
                    // Folded: a check on the assigned columns alone is a constant.
                    let schema = Arc::new(DFSchema::try_from(request.schema.as_ref().clone())?);
                    let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
                        .with_schema(schema)
                        .build();
                    let after =
                        datafusion::optimizer::simplify_expressions::ExprSimplifier::new(context)
                            .simplify(after)?;
                    let all = collection
                        .count_documents(filter.clone())
                        .session(&mut self.session)
                        .await
                        .map_err(|e| super::error(&origin, e))?;
                    let kept = match &after {
                        Expr::Literal(ScalarValue::Boolean(Some(true)), _) => all,
                        Expr::Literal(..) => 0,
                        _ => {
                            let passing = filter_of(&Some(after))?;
                            collection
                                .count_documents(doc! {"$and": [filter.clone(), passing]})
                                .session(&mut self.session)
                                .await
                                .map_err(|e| super::error(&origin, e))?
                        }
                    };
                    written.violations = all.saturating_sub(kept);
                    if written.violations > 0 {
                        return Ok(written);
                    }
                }
                let ids: Option<Vec<Bson>> = if request.returning {
                    let docs = self.find(&collection, filter.clone()).await?;
                    Some(
                        docs.into_iter()
                            .filter_map(|d| d.get("_id").cloned())
                            .collect(),
                    )
                } else {
                    None
                };
                let updated = collection
                    .update_many(filter, doc! {"$set": set})
                    .session(&mut self.session)
                    .await
                    .map_err(|e| super::error(&origin, e))?;
                written.rows = updated.matched_count;
                if let Some(ids) = ids {
                    let docs = self.find(&collection, doc! {"_id": {"$in": ids}}).await?;
                    written.returned.push(decode(&docs)?);
                }
            }
            Write::Delete { filter } => {
                let filter = filter_of(filter)?;
                if request.returning {
                    let docs = self.find(&collection, filter.clone()).await?;
                    written.returned.push(decode(&docs)?);
                }
                let deleted = collection
                    .delete_many(filter)
                    .session(&mut self.session)
                    .await
                    .map_err(|e| super::error(&origin, e))?;
                written.rows = deleted.deleted_count;
            }
        }
        Ok(written)
    }

    async fn lock_rows(
        &mut self,
        dataset: &Dataset,
        schema: &SchemaRef,
        filter: &Expr,
    ) -> Result<Vec<RecordBatch>> {
        // No row locks in MongoDB: read in the transaction's snapshot, a change
        // by another writer before the commit fails the commit (a write
        // conflict, retried).
        let collection = self.collection_of(dataset)?;
        let columns = Columns { schema, dataset };
        let filter = Filters(&columns)
            .when_true(&unqualified(filter))
            .ok_or_else(|| {
                unsupported(
                    self.origin(),
                    dataset,
                    format!("the condition {filter} has no exact MongoDB filter"),
                )
            })?;
        let docs = self.find(&collection, filter).await?;
        Ok(vec![decode::batch(
            self.origin(),
            &docs,
            schema,
            &columns.targets(),
        )?])
    }

    async fn claim(&mut self, entry: &str) -> Result<Claim> {
        let origin = self.origin().to_string();
        let applied = self.handle(APPLIED);
        if let Some(done) = self.find(&applied, doc! {"_id": entry}).await?.pop() {
            return Ok(Claim::Done {
                transaction: done.get_str("session").ok().map(str::to_string),
            });
        }
        // Named by the session (the change feed's lsid); the driver does not
        // show the txnNumber, and needs not: a replay's session is only replays'.
        let session = super::session_name(self.session.id());
        let mut record = doc! {"_id": entry, "applied_at": DateTime::now()};
        if let Some(s) = &session {
            record.insert("session", s);
        }
        applied
            .insert_one(record)
            .session(&mut self.session)
            .await
            .map_err(|e| super::error(&origin, e))?;
        Ok(Claim::Fresh {
            transaction: session,
        })
    }

    async fn savepoint(&mut self, _op: Savepoint, _name: &str) -> Result<()> {
        Err(ConnectorError::NotWritable {
            origin: self.connector.origin.clone(),
            dataset: "(transaction)".into(),
            why: "MongoDB transactions have no savepoints".into(),
        })
    }

    fn table(
        &self,
        _dataset: &Dataset,
        _schema: SchemaRef,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        Ok(None)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let origin = self.connector.origin.clone();
        self.session
            .commit_transaction()
            .await
            .map_err(|e| super::error(&origin, e))
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        let origin = self.connector.origin.clone();
        self.session
            .abort_transaction()
            .await
            .map_err(|e| super::error(&origin, e))
    }
}
