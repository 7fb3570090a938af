//! A column's PostgreSQL type as the catalog describes it (pg_attribute,
//! information_schema.columns): the wire type of [`crate::pgwire::protocol::encode::pg_type`], the
//! origin's type modifier (`numeric(12,3)`, `varchar(20)`) and the names
//! information_schema uses.

use std::sync::Arc;

use datafusion::arrow::datatypes::Field;
use pgwire::api::Type;
use postgres_types::Kind;
use switchyard_connectors::PG_TYPMOD_KEY;

/// A column's type in pg_attribute's terms.
#[derive(Debug, Clone)]
pub struct ColumnType {
    /// The type (its oid is `atttypid`).
    pub ty: Type,
    /// `atttypmod`: -1 when the type has none.
    pub typmod: i32,
    /// `attlen`: the fixed size, or -1.
    pub len: i16,
    /// `attndims`: 1 for arrays.
    pub ndims: i32,
}

/// The PostgreSQL type of a column held as `field`.
pub fn of(field: &Arc<Field>) -> ColumnType {
    let ty = crate::pgwire::protocol::encode::pg_type(field).unwrap_or(Type::TEXT);
    let typmod = field
        .metadata()
        .get(PG_TYPMOD_KEY)
        .and_then(|m| m.parse().ok())
        .unwrap_or(-1);
    let len = match ty {
        Type::BOOL | Type::CHAR => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE | Type::OID => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ => 8,
        Type::UUID | Type::INTERVAL => 16,
        Type::NAME => 64,
        _ => -1,
    };
    let ndims = i32::from(matches!(ty.kind(), Kind::Array(_)));
    ColumnType {
        ty,
        typmod,
        len,
        ndims,
    }
}

impl ColumnType {
    /// information_schema's `data_type`: the SQL name, `ARRAY` for arrays.
    pub fn sql_name(&self) -> String {
        if matches!(self.ty.kind(), Kind::Array(_)) {
            return "ARRAY".into();
        }
        match self.ty {
            Type::BOOL => "boolean",
            Type::INT2 => "smallint",
            Type::INT4 => "integer",
            Type::INT8 => "bigint",
            Type::FLOAT4 => "real",
            Type::FLOAT8 => "double precision",
            Type::NUMERIC => "numeric",
            Type::VARCHAR => "character varying",
            Type::BPCHAR => "character",
            Type::TIME => "time without time zone",
            Type::TIMESTAMP => "timestamp without time zone",
            Type::TIMESTAMPTZ => "timestamp with time zone",
            _ => return self.ty.name().to_string(),
        }
        .into()
    }

    /// information_schema's `udt_name`: the type's own name (`int4`, `_text`).
    pub fn udt_name(&self) -> String {
        match self.ty.kind() {
            Kind::Array(element) => format!("_{}", element.name()),
            _ => self.ty.name().to_string(),
        }
    }

    /// `character_maximum_length` of varchar(n) / char(n).
    pub fn max_length(&self) -> Option<i32> {
        matches!(self.ty, Type::VARCHAR | Type::BPCHAR)
            .then_some(self.typmod - 4)
            .filter(|n| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, IntervalUnit};

    #[test]
    fn columns_read_as_their_postgresql_types() {
        let plain = |t: DataType| of(&Arc::new(Field::new("c", t, true)));
        assert_eq!(plain(DataType::Int32).sql_name(), "integer");
        assert_eq!(plain(DataType::Int32).len, 4);
        let iv = plain(DataType::Interval(IntervalUnit::MonthDayNano));
        assert_eq!((iv.ty.clone(), iv.len), (Type::INTERVAL, 16));
        let list = plain(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Int64,
            true,
        ))));
        assert_eq!(
            (
                list.sql_name().as_str(),
                list.udt_name().as_str(),
                list.ndims
            ),
            ("ARRAY", "_int8", 1)
        );
        let vc = of(&Arc::new(
            Field::new("c", DataType::Utf8, true).with_metadata(
                [
                    (
                        switchyard_connectors::PG_TYPE_KEY.to_string(),
                        "varchar".to_string(),
                    ),
                    (PG_TYPMOD_KEY.to_string(), "24".to_string()),
                ]
                .into_iter()
                .collect(),
            ),
        ));
        assert_eq!(
            (vc.sql_name().as_str(), vc.max_length()),
            ("character varying", Some(20))
        );
    }
}
