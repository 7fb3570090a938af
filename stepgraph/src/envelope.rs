//! The response envelope, as faz defines it, and Arrow values as JSON.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The answer to a request, successful or not.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    /// The request's id (the scratchpad key for pagination).
    pub request_id: String,
    /// `ok` or `error`.
    pub status: &'static str,
    /// The rows, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    /// What went wrong, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// The safety pipeline's verdict.
    pub safety: SafetyReport,
    /// Timings and per-step figures.
    pub metadata: Metadata,
}

/// A result's rows.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// One object per row, keys in column order.
    pub rows: Rows,
    /// How many rows the result has in all.
    pub row_count: u64,
    /// Whether more rows than `rows` holds wait in the scratchpad
    /// (`GET /v1/results/{request_id}`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub has_more: bool,
}

/// `GET /v1/results/{request_id}`: one page of a kept result.
#[derive(Debug, Clone, Serialize)]
pub struct PageBody {
    /// The request whose result it is.
    pub request_id: String,
    /// The page (1-based; page 1 is the inline answer's rows).
    pub page: u64,
    /// Rows per page.
    pub size: u64,
    /// Column names.
    pub columns: Vec<String>,
    /// The page's rows.
    pub rows: Rows,
    /// Whether another page follows.
    pub has_more: bool,
}

/// A failure in the envelope.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// SQLSTATE.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// `safety` of the envelope.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SafetyReport {
    /// Stages every step that ran passed, in pipeline order.
    pub stages_passed: Vec<&'static str>,
    /// Warnings: stripped steps, injection findings, prompt-guard flags.
    pub warnings: Vec<String>,
}

/// `metadata` of the envelope.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metadata {
    /// From the request's arrival to the response.
    pub execution_time_ms: f64,
    /// Which door: `rest/local`, `mcp/http`, `mcp/stdio`.
    pub transport: String,
    /// Each step that ran.
    pub steps: Vec<StepMeta>,
    /// The merge's time, when there was one.
    pub merge_latency_ms: Option<f64>,
}

/// One step's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StepMeta {
    /// The step.
    pub step_id: String,
    /// Its origin.
    pub database: String,
    /// Rows it returned.
    pub rows_returned: u64,
    /// From its start to its last row.
    pub latency_ms: f64,
}

/// Rows as JSON values, serialized as objects keyed by column.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Column names (shared with [`Data::columns`]).
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub values: Vec<Vec<Value>>,
}

impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Row<'a>(&'a [String], &'a [Value]);
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0.iter().zip(self.1) {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.values.len()))?;
        for row in &self.values {
            seq.serialize_element(&Row(&self.columns, row))?;
        }
        seq.end()
    }
}

/// Milliseconds with one decimal, as the seed shows them.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Column names of a schema.
pub fn columns(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// Rows `skip..skip+take` of `batches` as JSON values.
pub fn json_rows(batches: &[RecordBatch], skip: usize, take: usize) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    for batch in batches {
        let n = batch.num_rows();
        if offset + n <= skip {
            offset += n;
            continue;
        }
        let start = skip.saturating_sub(offset);
        let options = FormatOptions::default();
        let formatters: Vec<Option<ArrayFormatter>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in start..n {
            if out.len() >= take {
                return out;
            }
            let values = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| json_value(c.as_ref(), f.as_ref(), row))
                .collect();
            out.push(values);
        }
        offset += n;
    }
    out
}

/// One value: JSON numbers for integers and finite floats, booleans, strings;
/// decimals as strings (exact); everything else as its text form.
pub fn json_value(array: &dyn Array, formatter: Option<&ArrayFormatter>, row: usize) -> Value {
    use datafusion::arrow::datatypes as t;
    if array.is_null(row) {
        return Value::Null;
    }
    let float = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| {
                Value::String(if f.is_nan() {
                    "NaN".into()
                } else if f > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                })
            })
    };
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<t::Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<t::Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<t::Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<t::Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<t::UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<t::UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<t::UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<t::UInt64Type>().value(row).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<t::Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<t::Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Binary => Value::String(bytea(array.as_binary::<i32>().value(row))),
        DataType::LargeBinary => Value::String(bytea(array.as_binary::<i64>().value(row))),
        DataType::BinaryView => Value::String(bytea(array.as_binary_view().value(row))),
        _ => Value::String(
            formatter
                .map(|f| f.value(row).to_string())
                .unwrap_or_default(),
        ),
    }
}

/// PostgreSQL's hex text form of bytea.
fn bytea(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}
