//! A collection's columns: declared in the config or inferred from sampled documents,
//! and their Arrow types.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use mongodb::bson::{Bson, Document};
use switchyard_config::{ColumnType, DeclaredColumn};

/// Field metadata key marking a column whose text is a JSON rendering of the value.
pub const JSON_METADATA: &str = "switchyard.json";

/// One column of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoColumn {
    /// SQL name.
    pub name: String,
    /// Dotted path into the document.
    pub path: String,
    /// SQL type.
    pub sql_type: ColumnType,
}

impl From<&DeclaredColumn> for MongoColumn {
    fn from(c: &DeclaredColumn) -> Self {
        MongoColumn {
            name: c.name.clone(),
            path: c.path.clone(),
            sql_type: c.sql_type.clone(),
        }
    }
}

/// The Arrow type a SQL type is read as (timestamps as PostgreSQL origins give them).
pub fn arrow_type(t: &ColumnType) -> DataType {
    match t {
        ColumnType::Int2 => DataType::Int16,
        ColumnType::Int4 => DataType::Int32,
        ColumnType::Int8 => DataType::Int64,
        ColumnType::Float4 => DataType::Float32,
        ColumnType::Float8 => DataType::Float64,
        ColumnType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
        ColumnType::Text | ColumnType::Jsonb => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
        ColumnType::Timestamptz => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        ColumnType::Array(inner) => {
            DataType::List(Arc::new(Field::new("item", arrow_type(inner), true)))
        }
    }
}

/// The Arrow schema of `columns` (every column nullable: any document may lack a field).
pub fn arrow_schema(columns: &[MongoColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let field = Field::new(&c.name, arrow_type(&c.sql_type), true);
                if c.sql_type == ColumnType::Jsonb {
                    // Described to clients as jsonb (see the front door's encoder).
                    field.with_metadata(HashMap::from([
                        (JSON_METADATA.into(), "true".into()),
                        (crate::columns::PG_TYPE_KEY.into(), "jsonb".into()),
                    ]))
                } else {
                    field
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// Infers top-level columns from sampled documents, in first-seen order (`_id` first).
///
/// Each field's type is the one all its non-null values share; integers widen to
/// `int8`, integers with doubles to `float8`, integers with decimals to `numeric`;
/// any other mix, nested documents and mixed arrays become `jsonb`.
pub fn infer(docs: &[Document]) -> Vec<MongoColumn> {
    let mut order: Vec<String> = Vec::new();
    let mut types: HashMap<String, Option<ColumnType>> = HashMap::new();
    for doc in docs {
        for (key, value) in doc {
            if !types.contains_key(key) {
                order.push(key.clone());
                types.insert(key.clone(), None);
            }
            let Some(t) = value_type(value) else { continue };
            let slot = types.get_mut(key).expect("inserted above");
            *slot = Some(match slot.take() {
                None => t,
                Some(prev) => merge(prev, t),
            });
        }
    }
    order.sort_by_key(|k| k != "_id");
    order
        .into_iter()
        .map(|name| {
            // A field only ever null in the sample: text is the least surprising guess.
            let sql_type = types.remove(&name).flatten().unwrap_or(ColumnType::Text);
            MongoColumn {
                path: name.clone(),
                name,
                sql_type,
            }
        })
        .collect()
}

fn value_type(v: &Bson) -> Option<ColumnType> {
    Some(match v {
        Bson::Null | Bson::Undefined => return None,
        Bson::Int32(_) => ColumnType::Int4,
        Bson::Int64(_) => ColumnType::Int8,
        Bson::Double(_) => ColumnType::Float8,
        Bson::Decimal128(d) => ColumnType::Numeric {
            precision: 38,
            scale: decimal_scale(&d.to_string()).clamp(0, 18) as i8,
        },
        Bson::String(_) | Bson::ObjectId(_) | Bson::Symbol(_) => ColumnType::Text,
        Bson::Boolean(_) => ColumnType::Bool,
        Bson::DateTime(_) => ColumnType::Timestamptz,
        Bson::Array(items) => {
            let mut t: Option<ColumnType> = None;
            for item in items {
                match (value_type(item), t.take()) {
                    (None, prev) => t = prev,
                    (Some(ColumnType::Jsonb | ColumnType::Array(_)), _) => {
                        return Some(ColumnType::Jsonb)
                    }
                    (Some(x), None) => t = Some(x),
                    (Some(x), Some(prev)) => match merge(prev, x) {
                        ColumnType::Jsonb => return Some(ColumnType::Jsonb),
                        m => t = Some(m),
                    },
                }
            }
            // An empty array says nothing about its element type.
            ColumnType::Array(Box::new(t?))
        }
        _ => ColumnType::Jsonb,
    })
}

fn merge(a: ColumnType, b: ColumnType) -> ColumnType {
    use ColumnType::*;
    match (a, b) {
        (a, b) if a == b => a,
        (Int4, Int8) | (Int8, Int4) => Int8,
        (Int4 | Int8 | Float8, Int4 | Int8 | Float8) => Float8,
        (Numeric { scale: s1, .. }, Numeric { scale: s2, .. }) => Numeric {
            precision: 38,
            scale: s1.max(s2),
        },
        (Numeric { precision, scale }, Int4 | Int8)
        | (Int4 | Int8, Numeric { precision, scale }) => Numeric { precision, scale },
        (Array(x), Array(y)) => match merge(*x, *y) {
            Jsonb => Jsonb,
            m => Array(Box::new(m)),
        },
        _ => Jsonb,
    }
}

/// Digits after the decimal point in a Decimal128's text form (`1.50` → 2, `1E+3` → 0).
pub fn decimal_scale(text: &str) -> i32 {
    let (mantissa, exp) = match text.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let frac = mantissa
        .split_once('.')
        .map(|(_, f)| f.len() as i32)
        .unwrap_or(0);
    (frac - exp).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, DateTime, Decimal128};
    use std::str::FromStr;

    #[test]
    fn infers_widened_types_in_first_seen_order() {
        let docs = vec![
            doc! {"name": "a", "_id": ObjectId::new(), "n": 1_i32, "price": Decimal128::from_str("1.5").unwrap()},
            doc! {"_id": ObjectId::new(), "n": 5_000_000_000_i64, "x": 1.5, "tags": ["a", "b"], "price": Decimal128::from_str("2.25").unwrap()},
            doc! {"_id": ObjectId::new(), "x": 2_i32, "when": DateTime::now(), "mixed": [1_i32, "b"], "sub": {"a": 1_i32}, "n": Bson::Null},
        ];
        let cols = infer(&docs);
        let got: Vec<(String, String)> = cols
            .iter()
            .map(|c| (c.name.clone(), c.sql_type.to_string()))
            .collect();
        let want = [
            ("_id", "text"),
            ("name", "text"),
            ("n", "int8"),
            ("price", "numeric(38,2)"),
            ("x", "float8"),
            ("tags", "text[]"),
            ("when", "timestamptz"),
            ("mixed", "jsonb"),
            ("sub", "jsonb"),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn decimal_scale_reads_exponents() {
        assert_eq!(decimal_scale("1.50"), 2);
        assert_eq!(decimal_scale("-12"), 0);
        assert_eq!(decimal_scale("1.5E+3"), 0);
        assert_eq!(decimal_scale("15E-3"), 3);
    }
}
