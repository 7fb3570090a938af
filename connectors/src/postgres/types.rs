//! PostgreSQL types as Arrow types: the schema side of [`super::rows`], which
//! decodes the values.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use tokio_postgres::types::Type;

use crate::columns::{PG_TYPE_KEY, PG_TYPMOD_KEY};

/// The field for a column of PostgreSQL type `t` with type modifier `typmod`.
pub fn field(name: &str, t: &Type, typmod: i32, data_type: DataType) -> Field {
    let mut metadata = std::collections::HashMap::new();
    if matches!(
        *t,
        Type::UUID | Type::JSON | Type::JSONB | Type::VARCHAR | Type::BPCHAR | Type::NAME
    ) {
        metadata.insert(PG_TYPE_KEY.to_string(), t.name().to_string());
    }
    if typmod >= 0 {
        metadata.insert(PG_TYPMOD_KEY.to_string(), typmod.to_string());
    }
    Field::new(name, data_type, true).with_metadata(metadata)
}

/// The Arrow type Switchyard uses for a PostgreSQL type (None: not supported yet).
/// Kept in step with [`super::rows`], which decodes the values.
pub fn arrow_type(t: &Type, type_modifier: i32) -> Option<DataType> {
    let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::OID => DataType::UInt32,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UUID
        | Type::JSON
        | Type::JSONB => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Nanosecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Nanosecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        Type::NUMERIC => numeric_type(type_modifier),
        Type::INT2_ARRAY => list(DataType::Int16),
        Type::INT4_ARRAY => list(DataType::Int32),
        Type::INT8_ARRAY => list(DataType::Int64),
        Type::FLOAT4_ARRAY => list(DataType::Float32),
        Type::FLOAT8_ARRAY => list(DataType::Float64),
        Type::TEXT_ARRAY
        | Type::VARCHAR_ARRAY
        | Type::BPCHAR_ARRAY
        | Type::NAME_ARRAY
        | Type::UUID_ARRAY
        | Type::JSON_ARRAY
        | Type::JSONB_ARRAY => list(DataType::Utf8),
        Type::BOOL_ARRAY => list(DataType::Boolean),
        Type::BYTEA_ARRAY => list(DataType::Binary),
        Type::DATE_ARRAY => list(DataType::Date32),
        Type::TIMESTAMP_ARRAY => list(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        Type::TIMESTAMPTZ_ARRAY => list(DataType::Timestamp(
            TimeUnit::Nanosecond,
            Some("UTC".into()),
        )),
        Type::INTERVAL_ARRAY => list(DataType::Interval(IntervalUnit::MonthDayNano)),
        Type::NUMERIC_ARRAY => list(numeric_type(type_modifier)),
        _ => return None,
    })
}

/// numeric(p, s) keeps its precision and scale; unconstrained numeric gets Decimal128(38, 10).
fn numeric_type(type_modifier: i32) -> DataType {
    if type_modifier >= 4 {
        let m = type_modifier - 4;
        let precision = ((m >> 16) & 0xffff) as u8;
        let scale = (m & 0xffff) as i8;
        if (1..=38).contains(&precision) {
            return DataType::Decimal128(precision, scale);
        }
    }
    DataType::Decimal128(38, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keeps_precision_and_scale() {
        assert_eq!(
            numeric_type((12 << 16 | 2) + 4),
            DataType::Decimal128(12, 2)
        );
        assert_eq!(numeric_type(-1), DataType::Decimal128(38, 10));
    }
}
