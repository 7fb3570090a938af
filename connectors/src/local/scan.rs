//! Reading a materialized copy: [`CopyTable`] plans a scan of the dataset's
//! current copy with the columns, filters and limit SQLite can apply exactly, and
//! [`CopyExec`] streams it on a blocking thread. Aggregates and joins run in
//! DataFusion over the streamed batches, as for any local table.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use super::codec::{Codec, Decoder, Encoded};
use super::copies::copy_info;
use crate::sql::quote_ident;
use crate::sqlite::exec::read_on_blocking_thread;

/// Rows per batch read from a copy.
const BATCH_ROWS: usize = 4096;

/// The table a materialized dataset is read from: its current local copy.
#[derive(Debug)]
pub struct CopyTable {
    dataset: String,
    path: PathBuf,
    schema: SchemaRef,
}

impl CopyTable {
    /// The copy of `dataset` in the store at `path`, whose rows have `schema`.
    pub fn new(dataset: &str, path: PathBuf, schema: SchemaRef) -> Self {
        CopyTable {
            dataset: dataset.to_string(),
            path,
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for CopyTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match condition(f, &self.schema) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        // Only filters this table said it applies reach here as pushed; any other
        // is kept above the scan by DataFusion, so each one here must translate.
        let conditions = filters
            .iter()
            .map(|f| {
                condition(f, &self.schema).ok_or_else(|| {
                    DataFusionError::Internal(format!("filter {f} cannot run in the local store"))
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(CopyExec::new(
            self.dataset.clone(),
            self.path.clone(),
            schema,
            conditions,
            limit,
        )))
    }
}

/// Streams rows of a dataset's current copy.
#[derive(Debug, Clone)]
pub struct CopyExec {
    dataset: String,
    path: PathBuf,
    schema: SchemaRef,
    conditions: Vec<String>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl CopyExec {
    fn new(
        dataset: String,
        path: PathBuf,
        schema: SchemaRef,
        conditions: Vec<String>,
        limit: Option<usize>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        CopyExec {
            dataset,
            path,
            schema,
            conditions,
            limit,
            properties,
        }
    }

    /// The SQL run on the copy's table `table`.
    fn sql(&self, table: &str) -> String {
        let columns = if self.schema.fields().is_empty() {
            "1".to_string()
        } else {
            self.schema
                .fields()
                .iter()
                .map(|f| quote_ident(f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {columns} FROM {}", quote_ident(table));
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        if let Some(n) = self.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql
    }
}

impl DisplayAs for CopyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LocalCopyExec: dataset={} (materialized, read from the local store) sql={}",
            self.dataset,
            self.sql("<copy>")
        )
    }
}

impl ExecutionPlan for CopyExec {
    fn name(&self) -> &str {
        "LocalCopyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "LocalCopyExec has no children".into(),
            ))
        }
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let conn = super::open_readonly_store(&self.path).map_err(DataFusionError::from)?;
        let this = self.clone();
        let what = format!("the local copy of {}: the reader", self.dataset);
        Ok(read_on_blocking_thread(
            conn,
            Arc::clone(&self.schema),
            what,
            move |conn, tx| read_copy(&this, conn, tx),
        ))
    }
}

/// Reads the copy inside one read transaction: the catalog row naming the copy's
/// table and its rows are of the same commit, whatever a refresh does meanwhile.
fn read_copy(
    exec: &CopyExec,
    mut conn: rusqlite::Connection,
    tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
) -> DfResult<()> {
    let fail = |e: crate::ConnectorError| DataFusionError::from(e);
    let store = |e: rusqlite::Error| fail(super::copies::store_error(e));
    let read = conn.transaction().map_err(store)?;
    let Some(info) = copy_info(&read, &exec.dataset).map_err(fail)? else {
        return Err(fail(crate::ConnectorError::NotMaterialized {
            dataset: exec.dataset.clone(),
            why: "its local copy was dropped".into(),
        }));
    };
    for field in exec.schema.fields() {
        let now = info.schema.field_with_name(field.name()).ok();
        if now.map(|f| f.data_type()) != Some(field.data_type()) {
            return Err(DataFusionError::Execution(format!(
                "the copy of {} changed while the statement was planned (column {}): run it again",
                exec.dataset,
                field.name()
            )));
        }
    }
    let sql = exec.sql(&info.table);
    tracing::debug!(dataset = %exec.dataset, %sql, "local copy query");
    let mut stmt = read.prepare(&sql).map_err(store)?;
    let mut rows = stmt.query([]).map_err(store)?;
    let types: Vec<DataType> = exec
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let mut columns: Vec<Decoder> = types.iter().map(|t| Decoder::new(t, BATCH_ROWS)).collect();
    let mut count = 0;
    loop {
        let Some(row) = rows.next().map_err(store)? else {
            break;
        };
        for (i, column) in columns.iter_mut().enumerate() {
            let v = row.get_ref(i).map_err(store)?;
            column.push(v, &types[i]).map_err(|d| {
                DataFusionError::Execution(format!(
                    "the local copy of {} is damaged: column {}: {}",
                    exec.dataset,
                    exec.schema.field(i).name(),
                    d.0
                ))
            })?;
        }
        count += 1;
        if count == BATCH_ROWS {
            if tx
                .blocking_send(finish(&mut columns, &types, &exec.schema, count))
                .is_err()
            {
                return Ok(());
            }
            count = 0;
        }
    }
    if count > 0 {
        let _ = tx.blocking_send(finish(&mut columns, &types, &exec.schema, count));
    }
    Ok(())
}

fn finish(
    columns: &mut [Decoder],
    types: &[DataType],
    schema: &SchemaRef,
    rows: usize,
) -> DfResult<RecordBatch> {
    let arrays = columns
        .iter_mut()
        .zip(types)
        .map(|(c, t)| c.finish(t))
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// The filter as SQLite SQL over the copy, when SQLite gives exactly the answer
/// DataFusion would: comparisons of a natively stored column with a literal of
/// the column's own type, IS [NOT] NULL, IN lists, BETWEEN, and AND/OR/NOT of those.
pub(crate) fn condition(expr: &Expr, schema: &Schema) -> Option<String> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => Some(format!(
                "({} {} {})",
                condition(left, schema)?,
                if *op == Operator::And { "AND" } else { "OR" },
                condition(right, schema)?
            )),
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => {
                let sql_op = match op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    _ => ">=",
                };
                if let (Some((col, t)), Expr::Literal(v, _)) =
                    (column(left, schema), right.as_ref())
                {
                    return Some(format!("{col} {sql_op} {}", literal(v, &t)?));
                }
                if let (Expr::Literal(v, _), Some((col, t))) =
                    (left.as_ref(), column(right, schema))
                {
                    let flipped = match op {
                        Operator::Lt => ">",
                        Operator::LtEq => ">=",
                        Operator::Gt => "<",
                        Operator::GtEq => "<=",
                        _ => sql_op,
                    };
                    return Some(format!("{col} {flipped} {}", literal(v, &t)?));
                }
                None
            }
            _ => None,
        },
        Expr::Not(inner) => Some(format!("(NOT {})", condition(inner, schema)?)),
        // A boolean column on its own (`WHERE b`; DataFusion writes `b = false` as `NOT b`).
        Expr::Column(_) => match column(expr, schema)? {
            (col, DataType::Boolean) => Some(format!("{col} = 1")),
            _ => None,
        },
        Expr::IsNull(inner) => Some(format!("{} IS NULL", any_column(inner, schema)?)),
        Expr::IsNotNull(inner) => Some(format!("{} IS NOT NULL", any_column(inner, schema)?)),
        Expr::InList(list) => {
            let (col, t) = column(&list.expr, schema)?;
            if list.list.is_empty() {
                return None;
            }
            let items = list
                .list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => literal(v, &t),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(format!(
                "{col} {}IN ({})",
                if list.negated { "NOT " } else { "" },
                items.join(", ")
            ))
        }
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            let (col, t) = column(expr, schema)?;
            let (Expr::Literal(lo, _), Expr::Literal(hi, _)) = (low.as_ref(), high.as_ref()) else {
                return None;
            };
            Some(format!(
                "{col} {}BETWEEN {} AND {}",
                if *negated { "NOT " } else { "" },
                literal(lo, &t)?,
                literal(hi, &t)?
            ))
        }
        _ => None,
    }
}

/// A column whose stored values SQLite compares as Arrow does, quoted, with its type.
fn column(expr: &Expr, schema: &Schema) -> Option<(String, DataType)> {
    let Expr::Column(c) = expr else { return None };
    let field = schema.field_with_name(&c.name).ok()?;
    Codec::of(field.data_type())
        .comparable()
        .then(|| (quote_ident(&c.name), field.data_type().clone()))
}

/// Any column (for IS NULL, which every storage answers exactly).
fn any_column(expr: &Expr, schema: &Schema) -> Option<String> {
    let Expr::Column(c) = expr else { return None };
    schema.field_with_name(&c.name).ok()?;
    Some(quote_ident(&c.name))
}

/// A literal of exactly type `t` as SQLite SQL, stored the way the column is.
fn literal(v: &ScalarValue, t: &DataType) -> Option<String> {
    if v.is_null() || &v.data_type() != t {
        return None;
    }
    let array = v.to_array().ok()?;
    let encoded = Encoded::new(&array).ok()?;
    Some(match encoded {
        Encoded::Integer(a) => a.value(0).to_string(),
        Encoded::Real(a) => {
            let f = a.value(0);
            if !f.is_finite() {
                // NaN is stored as text and infinities have no SQL literal.
                return None;
            }
            format!("{f:?}")
        }
        Encoded::Text(a) => format!("'{}'", a.value(0).replace('\'', "''")),
        Encoded::Blob(a) => format!(
            "X'{}'",
            a.value(0)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        ),
        Encoded::WideDecimal(_) | Encoded::Ipc(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, TimeUnit};
    use datafusion::prelude::{col, lit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
            Field::new("big", DataType::Decimal128(38, 10), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
        ])
    }

    #[test]
    fn exact_filters_translate() {
        let s = schema();
        assert_eq!(
            condition(&col("id").gt(lit(5i32)), &s).as_deref(),
            Some("\"id\" > 5")
        );
        assert_eq!(
            condition(&lit(5i32).lt(col("id")), &s).as_deref(),
            Some("\"id\" > 5")
        );
        assert_eq!(
            condition(&col("name").eq(lit("o'brien")), &s).as_deref(),
            Some("\"name\" = 'o''brien'")
        );
        let price = Expr::Literal(ScalarValue::Decimal128(Some(1050), 12, 2), None);
        assert_eq!(
            condition(&col("price").gt_eq(price), &s).as_deref(),
            Some("\"price\" >= 1050")
        );
        assert_eq!(
            condition(
                &col("big")
                    .is_null()
                    .or(col("id").in_list(vec![lit(1i32), lit(2i32)], true)),
                &s
            )
            .as_deref(),
            Some("(\"big\" IS NULL OR \"id\" NOT IN (1, 2))")
        );
    }

    #[test]
    fn inexact_filters_stay_in_datafusion() {
        let s = schema();
        // A literal of another type: DataFusion's coercion decides, not SQLite's.
        assert_eq!(condition(&col("id").gt(lit(5i64)), &s), None);
        // Wide decimals are stored as text: no ordering in SQLite.
        let big = Expr::Literal(ScalarValue::Decimal128(Some(1), 38, 10), None);
        assert_eq!(condition(&col("big").gt(big), &s), None);
        // LIKE is case-insensitive in SQLite.
        assert_eq!(condition(&col("name").like(lit("a%")), &s), None);
        // A NULL literal, and half of an AND that cannot go, keep the whole filter.
        assert_eq!(
            condition(&col("id").gt(lit(1i32)).and(col("name").like(lit("x"))), &s),
            None
        );
    }
}
