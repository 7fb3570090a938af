//! How a copied column is stored in SQLite and read back as the same Arrow values.
//!
//! A copy keeps the origin's Arrow schema (with its field metadata: PostgreSQL type
//! names and modifiers), so a value read from the copy equals the value read
//! through federation. Scalars SQLite can compare exactly are stored natively, so
//! filters on them run in SQLite; the rest is stored losslessly as text or Arrow IPC.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{
    make_array, new_null_array, Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray,
    Decimal128Array, Float64Array, Int64Array, StringBuilder,
};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Float64Type, Int64Type, Schema, SchemaRef,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};

/// Storage of one column in the copy's SQLite table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// INTEGER: booleans, integers, dates, times, timestamps, durations, and
    /// decimals of up to 18 digits as their unscaled integer.
    Integer,
    /// REAL; NaN is stored as the text `NaN` (SQLite would store a NULL), which
    /// SQLite orders above every number, as PostgreSQL orders NaN.
    Real,
    /// TEXT (compared bytewise, as Arrow compares strings).
    Text,
    /// BLOB.
    Blob,
    /// TEXT holding a wider decimal's unscaled integer.
    WideDecimal,
    /// BLOB holding the value as a one-row Arrow IPC stream (arrays, intervals...).
    Ipc,
}

impl Codec {
    /// The codec for a column of type `t`.
    pub fn of(t: &DataType) -> Codec {
        use DataType::*;
        match t {
            Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Duration(_) => Codec::Integer,
            Decimal128(p, _) if *p <= 18 => Codec::Integer,
            Decimal128(_, _) => Codec::WideDecimal,
            Float32 | Float64 => Codec::Real,
            Utf8 | LargeUtf8 | Utf8View => Codec::Text,
            Binary | LargeBinary | BinaryView => Codec::Blob,
            _ => Codec::Ipc,
        }
    }

    /// The SQLite column type.
    pub fn sql_type(self) -> &'static str {
        match self {
            Codec::Integer => "INTEGER",
            Codec::Real => "REAL",
            Codec::Text | Codec::WideDecimal => "TEXT",
            Codec::Blob | Codec::Ipc => "BLOB",
        }
    }

    /// Whether SQLite compares stored values as Arrow compares the column's values,
    /// so `column <op> literal` may run in SQLite.
    pub fn comparable(self) -> bool {
        matches!(
            self,
            Codec::Integer | Codec::Real | Codec::Text | Codec::Blob
        )
    }
}

/// An Arrow column prepared for writing, row by row, as SQLite values.
pub enum Encoded {
    /// Integer-coded values.
    Integer(Int64Array),
    /// Floats.
    Real(Float64Array),
    /// Strings.
    Text(datafusion::arrow::array::StringArray),
    /// Binary strings.
    Blob(datafusion::arrow::array::BinaryArray),
    /// Wide decimals.
    WideDecimal(Decimal128Array),
    /// Anything else, one IPC stream per value.
    Ipc(ArrayRef),
}

impl Encoded {
    /// Prepares `array` for writing.
    pub fn new(array: &ArrayRef) -> Result<Encoded, ArrowError> {
        Ok(match Codec::of(array.data_type()) {
            Codec::Integer => Encoded::Integer(to_i64(array)?),
            Codec::Real => Encoded::Real(
                cast(array, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            Codec::Text => Encoded::Text(cast(array, &DataType::Utf8)?.as_string::<i32>().clone()),
            Codec::Blob => {
                Encoded::Blob(cast(array, &DataType::Binary)?.as_binary::<i32>().clone())
            }
            Codec::WideDecimal => {
                Encoded::WideDecimal(array.as_primitive::<Decimal128Type>().clone())
            }
            Codec::Ipc => Encoded::Ipc(Arc::clone(array)),
        })
    }

    /// The SQLite value of row `i`.
    pub fn value(&self, i: usize) -> Result<ToSqlOutput<'_>, ArrowError> {
        let null = ToSqlOutput::Borrowed(ValueRef::Null);
        Ok(match self {
            Encoded::Integer(a) => match a.is_null(i) {
                true => null,
                false => ToSqlOutput::Owned(Value::Integer(a.value(i))),
            },
            Encoded::Real(a) => match a.is_null(i) {
                true => null,
                false if a.value(i).is_nan() => ToSqlOutput::Borrowed(ValueRef::Text(b"NaN")),
                false => ToSqlOutput::Owned(Value::Real(a.value(i))),
            },
            Encoded::Text(a) => match a.is_null(i) {
                true => null,
                false => ToSqlOutput::Borrowed(ValueRef::Text(a.value(i).as_bytes())),
            },
            Encoded::Blob(a) => match a.is_null(i) {
                true => null,
                false => ToSqlOutput::Borrowed(ValueRef::Blob(a.value(i))),
            },
            Encoded::WideDecimal(a) => match a.is_null(i) {
                true => null,
                false => ToSqlOutput::Owned(Value::Text(a.value(i).to_string())),
            },
            Encoded::Ipc(a) => match a.is_null(i) {
                true => null,
                false => ToSqlOutput::Owned(Value::Blob(ipc_value(&a.slice(i, 1))?)),
            },
        })
    }
}

/// Integer-coded values as i64 (booleans 0/1, temporal values in their unit,
/// decimals unscaled).
fn to_i64(array: &ArrayRef) -> Result<Int64Array, ArrowError> {
    use DataType::*;
    let t = array.data_type();
    Ok(match t {
        Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map(i64::from))
            .collect(),
        Decimal128(_, _) => array
            .as_primitive::<Decimal128Type>()
            .unary::<_, Int64Type>(|v| v as i64),
        Date32 | Time32(_) => cast(&reinterpret(array, Int32)?, &Int64)?
            .as_primitive::<Int64Type>()
            .clone(),
        Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => reinterpret(array, Int64)?
            .as_primitive::<Int64Type>()
            .clone(),
        _ => cast(array, &Int64)?.as_primitive::<Int64Type>().clone(),
    })
}

/// The same buffers read as another type of the same width.
fn reinterpret(array: &ArrayRef, as_type: DataType) -> Result<ArrayRef, ArrowError> {
    Ok(make_array(
        array.to_data().into_builder().data_type(as_type).build()?,
    ))
}

/// One value as a one-row IPC stream.
fn ipc_value(one: &ArrayRef) -> Result<Vec<u8>, ArrowError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        one.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(one)])?;
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &schema)?;
    w.write(&batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// A schema as bytes (an IPC stream with no batches), metadata included.
pub fn schema_bytes(schema: &Schema) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, schema)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// The schema [`schema_bytes`] wrote.
pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    Ok(StreamReader::try_new(Cursor::new(bytes), None)?.schema())
}

/// Values of one column read from SQLite, turned into the column's Arrow type at
/// the end of a batch.
pub enum Decoder {
    /// Integer-coded.
    Integer(Vec<Option<i64>>),
    /// Floats.
    Real(Vec<Option<f64>>),
    /// Strings.
    Text(StringBuilder),
    /// Binary strings.
    Blob(BinaryBuilder),
    /// Wide decimals.
    WideDecimal(Vec<Option<i128>>),
    /// IPC values.
    Ipc(Vec<ArrayRef>),
}

/// A stored value that does not have its column's storage: the file was changed
/// by something other than Switchyard.
#[derive(Debug)]
pub struct Damaged(pub String);

impl Decoder {
    /// An empty decoder for a column of type `t`.
    pub fn new(t: &DataType, capacity: usize) -> Decoder {
        match Codec::of(t) {
            Codec::Integer => Decoder::Integer(Vec::with_capacity(capacity)),
            Codec::Real => Decoder::Real(Vec::with_capacity(capacity)),
            Codec::Text => Decoder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            Codec::Blob => Decoder::Blob(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Codec::WideDecimal => Decoder::WideDecimal(Vec::with_capacity(capacity)),
            Codec::Ipc => Decoder::Ipc(Vec::with_capacity(capacity)),
        }
    }

    /// Adds one stored value of a column of type `t`.
    pub fn push(&mut self, v: ValueRef<'_>, t: &DataType) -> Result<(), Damaged> {
        let bad = || Damaged(format!("a {} value stored as {:?}", t, v.data_type()));
        match (self, v) {
            (Decoder::Integer(out), ValueRef::Null) => out.push(None),
            (Decoder::Integer(out), ValueRef::Integer(n)) => out.push(Some(n)),
            (Decoder::Real(out), ValueRef::Null) => out.push(None),
            (Decoder::Real(out), ValueRef::Real(f)) => out.push(Some(f)),
            (Decoder::Real(out), ValueRef::Integer(n)) => out.push(Some(n as f64)),
            (Decoder::Real(out), ValueRef::Text(b"NaN")) => out.push(Some(f64::NAN)),
            (Decoder::Text(out), ValueRef::Null) => out.append_null(),
            (Decoder::Text(out), ValueRef::Text(s)) => {
                out.append_value(std::str::from_utf8(s).map_err(|_| bad())?)
            }
            (Decoder::Blob(out), ValueRef::Null) => out.append_null(),
            (Decoder::Blob(out), ValueRef::Blob(b)) => out.append_value(b),
            (Decoder::WideDecimal(out), ValueRef::Null) => out.push(None),
            (Decoder::WideDecimal(out), ValueRef::Text(s)) => out.push(Some(
                std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(bad)?,
            )),
            (Decoder::Ipc(out), ValueRef::Null) => out.push(new_null_array(t, 1)),
            (Decoder::Ipc(out), ValueRef::Blob(b)) => {
                let one = StreamReader::try_new(Cursor::new(b), None)
                    .ok()
                    .and_then(|mut r| r.next())
                    .and_then(|b| b.ok())
                    .filter(|b| b.num_rows() == 1 && b.column(0).data_type() == t)
                    .ok_or_else(bad)?;
                out.push(Arc::clone(one.column(0)));
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// The column as type `t`, leaving the decoder empty for the next batch.
    pub fn finish(&mut self, t: &DataType) -> Result<ArrayRef, ArrowError> {
        use DataType::*;
        Ok(match self {
            Decoder::Integer(v) => {
                let ints = Int64Array::from(std::mem::take(v));
                match t {
                    Boolean => Arc::new(
                        ints.iter()
                            .map(|v| v.map(|n| n != 0))
                            .collect::<BooleanArray>(),
                    ),
                    Decimal128(p, s) => Arc::new(
                        ints.iter()
                            .map(|v| v.map(i128::from))
                            .collect::<Decimal128Array>()
                            .with_precision_and_scale(*p, *s)?,
                    ),
                    Date32 | Time32(_) => {
                        reinterpret(&cast(&(Arc::new(ints) as ArrayRef), &Int32)?, t.clone())?
                    }
                    Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => {
                        reinterpret(&(Arc::new(ints) as ArrayRef), t.clone())?
                    }
                    _ => cast(&(Arc::new(ints) as ArrayRef), t)?,
                }
            }
            Decoder::Real(v) => cast(
                &(Arc::new(Float64Array::from(std::mem::take(v))) as ArrayRef),
                t,
            )?,
            Decoder::Text(b) => cast(&(Arc::new(b.finish()) as ArrayRef), t)?,
            Decoder::Blob(b) => cast(&(Arc::new(b.finish()) as ArrayRef), t)?,
            Decoder::WideDecimal(v) => {
                let (p, s) = match t {
                    Decimal128(p, s) => (*p, *s),
                    other => {
                        return Err(ArrowError::SchemaError(format!(
                            "a wide decimal column read as {other}"
                        )))
                    }
                };
                Arc::new(Decimal128Array::from(std::mem::take(v)).with_precision_and_scale(p, s)?)
            }
            Decoder::Ipc(parts) => {
                let parts = std::mem::take(parts);
                if parts.is_empty() {
                    new_null_array(t, 0)
                } else {
                    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                    concat(&refs)?
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, Int16Array, IntervalMonthDayNanoArray, ListArray, StringArray,
        TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::{Int32Type, IntervalMonthDayNano};

    /// Writes `array` through SQLite and reads it back.
    fn round_trip(array: ArrayRef) -> ArrayRef {
        let t = array.data_type().clone();
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("CREATE TABLE t (v {})", Codec::of(&t).sql_type()))
            .unwrap();
        let enc = Encoded::new(&array).unwrap();
        for i in 0..array.len() {
            conn.execute("INSERT INTO t VALUES (?1)", [enc.value(i).unwrap()])
                .unwrap();
        }
        let mut dec = Decoder::new(&t, array.len());
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            dec.push(r.get_ref(0).unwrap(), &t).unwrap();
        }
        dec.finish(&t).unwrap()
    }

    #[test]
    fn values_come_back_equal() {
        let utc: Option<Arc<str>> = Some("UTC".into());
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(Int16Array::from(vec![Some(-32768), None, Some(32767)])),
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(f64::INFINITY),
                Some(-0.5),
                None,
            ])),
            Arc::new(StringArray::from(vec![Some("é'\"x"), None, Some("")])),
            Arc::new(Date32Array::from(vec![Some(-719162), None, Some(20000)])),
            Arc::new(
                TimestampNanosecondArray::from(vec![Some(1_700_000_000_123_456_789), None])
                    .with_timezone_opt(utc),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(-123456), None])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(i128::MAX / 10), Some(-1), None])
                    .with_precision_and_scale(38, 10)
                    .unwrap(),
            ),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, 2, 3)),
                None,
            ])),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None, Some(3)]),
                None,
                Some(vec![]),
            ])),
        ];
        for a in arrays {
            let back = round_trip(Arc::clone(&a));
            assert_eq!(back.data_type(), a.data_type());
            assert_eq!(back.len(), a.len());
            // NaN != NaN under PartialEq: compare the debug text instead.
            assert_eq!(format!("{back:?}"), format!("{a:?}"), "{}", a.data_type());
        }
    }

    #[test]
    fn schema_survives_with_metadata() {
        let field = Field::new("j", DataType::Utf8, true)
            .with_metadata([("switchyard.pg_type".to_string(), "jsonb".to_string())].into());
        let schema = Schema::new(vec![field]);
        let back = schema_from_bytes(&schema_bytes(&schema).unwrap()).unwrap();
        assert_eq!(back.as_ref(), &schema);
    }
}
