//! PostgreSQL functions that clients call on connect or while reflecting a schema and
//! that DataFusion and datafusion-pg-catalog lack (or word differently).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{create_udf, SessionContext};
use switchyard_engine::{CodedError, SqlState};

/// Registers every function of this module in a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(version_udf());
    ctx.register_udf(to_regtype_udf());
    ctx.register_udf(no_serial_sequence_udf());
    ctx.register_udf(ScalarUDF::from(JsonBuildObject::new()));
    ctx.register_udf(current_setting_udf());
    ctx.register_udf(format_type_udf());
    ctx.register_udf(encoding_udf());
    for name in [
        "pg_collation_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
    ] {
        ctx.register_udf(ScalarUDF::from(Visible::new(name)));
    }
}

/// Argument `i` as int8 values (one per row; a scalar gives one).
fn int64_argument(
    args: &[ColumnarValue],
    i: usize,
) -> Result<datafusion::arrow::array::Int64Array> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let cast = datafusion::arrow::compute::cast(&arrays[i], &DataType::Int64)?;
    cast.as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .cloned()
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("int8 argument".into()))
}

/// `result` as a scalar when every argument was one, else as the array.
fn like_arguments(args: &[ColumnarValue], result: ArrayRef) -> Result<ColumnarValue> {
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
        } else {
            ColumnarValue::Array(result)
        },
    )
}

/// `pg_encoding_to_char(n)`: the name of an encoding number (datafusion-pg-catalog's
/// takes only int4, so `pg_encoding_to_char(6)` with an int8 literal failed).
fn encoding_udf() -> ScalarUDF {
    create_udf(
        "pg_encoding_to_char",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let name = |n: i64| match n {
                0 => "SQL_ASCII",
                6 => "UTF8",
                8 => "LATIN1",
                _ => "",
            };
            let numbers = int64_argument(args, 0)?;
            let out: datafusion::arrow::array::StringArray =
                numbers.iter().map(|n| n.map(name)).collect();
            like_arguments(args, Arc::new(out))
        }),
    )
}

/// `format_type(oid, typmod)` as PostgreSQL writes it, arrays and type modifiers
/// included (`numeric(6,2)[]`, `character varying(20)`, `interval[]`): psql's `\d`
/// and SQLAlchemy's reflection show it.
fn format_type_udf() -> ScalarUDF {
    create_udf(
        "format_type",
        vec![DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let (oids, mods) = (int64_argument(args, 0)?, int64_argument(args, 1)?);
            let mut out = StringBuilder::new();
            for i in 0..oids.len() {
                if oids.is_null(i) {
                    out.append_null();
                    continue;
                }
                let typmod = if mods.is_null(i) {
                    -1
                } else {
                    mods.value(i) as i32
                };
                out.append_value(format_type(oids.value(i) as u32, typmod));
            }
            like_arguments(args, Arc::new(out.finish()))
        }),
    )
}

/// PostgreSQL's format_type for built-in types (format_type.c).
fn format_type(oid: u32, typmod: i32) -> String {
    use pgwire::api::Type;
    use postgres_types::Kind;
    let Some(t) = Type::from_oid(oid) else {
        return "???".into();
    };
    if let Kind::Array(element) = t.kind() {
        return format!("{}[]", format_type(element.oid(), typmod));
    }
    let precision = |base: &str, zone: &str| {
        if typmod >= 0 {
            format!("{base}({typmod}){zone}")
        } else {
            format!("{base}{zone}")
        }
    };
    match t {
        Type::BOOL => "boolean".into(),
        Type::INT2 => "smallint".into(),
        Type::INT4 => "integer".into(),
        Type::INT8 => "bigint".into(),
        Type::FLOAT4 => "real".into(),
        Type::FLOAT8 => "double precision".into(),
        Type::CHAR => "\"char\"".into(),
        Type::BPCHAR if typmod > 4 => format!("character({})", typmod - 4),
        Type::BPCHAR => "character".into(),
        Type::VARCHAR if typmod > 4 => format!("character varying({})", typmod - 4),
        Type::VARCHAR => "character varying".into(),
        Type::NUMERIC if typmod >= 4 => {
            let m = typmod - 4;
            format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
        }
        Type::TIME => precision("time", " without time zone"),
        Type::TIMETZ => precision("time", " with time zone"),
        Type::TIMESTAMP => precision("timestamp", " without time zone"),
        Type::TIMESTAMPTZ => precision("timestamp", " with time zone"),
        Type::BIT if typmod > 0 => format!("bit({typmod})"),
        Type::VARBIT if typmod > 0 => format!("bit varying({typmod})"),
        Type::VARBIT => "bit varying".into(),
        _ => t.name().to_string(),
    }
}

/// `version()` as PostgreSQL words it: clients (SQLAlchemy, pgjdbc, DBeaver) read the
/// server version from the leading `PostgreSQL N.N`, matching `server_version`.
fn version_udf() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {} (Switchyard {}, Apache DataFusion {}) on {}-linux",
        super::identity::VERSION,
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))
        }),
    )
}

/// `to_regtype(name)`: the OID of a built-in type, NULL for any other name (psycopg 3
/// and SQLAlchemy probe for extension types such as hstore this way).
fn to_regtype_udf() -> ScalarUDF {
    fn oid(name: &str) -> Option<i32> {
        let name = name
            .trim()
            .trim_start_matches("pg_catalog.")
            .to_ascii_lowercase();
        let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(match name.as_str() {
            "bool" | "boolean" => 16,
            "bytea" => 17,
            "char" | "\"char\"" => 18,
            "name" => 19,
            "int8" | "bigint" => 20,
            "int2" | "smallint" => 21,
            "int4" | "integer" | "int" => 23,
            "text" => 25,
            "oid" => 26,
            "json" => 114,
            "float4" | "real" => 700,
            "float8" | "double precision" => 701,
            "varchar" | "character varying" => 1043,
            "date" => 1082,
            "time" | "time without time zone" => 1083,
            "timestamp" | "timestamp without time zone" => 1114,
            "timestamptz" | "timestamp with time zone" => 1184,
            "interval" => 1186,
            "numeric" | "decimal" => 1700,
            "uuid" => 2950,
            "jsonb" => 3802,
            _ => return None,
        })
    }
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::common::cast::as_string_array(&arrays[0])?;
            let oids: datafusion::arrow::array::Int32Array =
                names.iter().map(|n| n.and_then(oid)).collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

/// `pg_get_serial_sequence(table, column)`: always NULL — no column behind Switchyard
/// draws from a sequence it could name (SQLAlchemy reflection asks).
fn no_serial_sequence_udf() -> ScalarUDF {
    create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = ColumnarValue::values_to_arrays(args)?[0].len();
            Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(&DataType::Utf8, rows),
            ))
        }),
    )
}

/// `current_setting(name)`: the server settings clients read on connect (Grafana asks for
/// `server_version_num`); an unknown name is 42704 as in PostgreSQL.
fn current_setting_udf() -> ScalarUDF {
    ScalarUDF::from(CurrentSetting {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
    })
}

/// `current_setting(name)`; the session's TimeZone from its DataFusion config (set
/// by `SET TimeZone` and the startup parameter), the rest fixed.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn setting(name: &str) -> Option<&'static str> {
        Some(match name.to_ascii_lowercase().as_str() {
            "server_version_num" => super::identity::SERVER_VERSION_NUM,
            "server_version" => super::identity::SERVER_VERSION,
            "server_encoding" | "client_encoding" => "UTF8",
            "standard_conforming_strings" | "integer_datetimes" => "on",
            "is_superuser" => "off",
            "datestyle" => "ISO, MDY",
            "intervalstyle" => "postgres",
            "max_identifier_length" => "63",
            "search_path" => "\"$user\", public",
            "transaction_isolation" | "default_transaction_isolation" => "read committed",
            "transaction_read_only" => "off",
            _ => return None,
        })
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let zone = args
            .config_options
            .execution
            .time_zone
            .clone()
            .unwrap_or_else(|| "UTC".into());
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = datafusion::common::cast::as_string_array(&arrays[0])?;
        let mut out = StringBuilder::with_capacity(names.len(), names.len() * 8);
        for name in names.iter() {
            match name {
                None => out.append_null(),
                Some(n) if n.eq_ignore_ascii_case("timezone") => out.append_value(&zone),
                Some(n) => match Self::setting(n) {
                    Some(v) => out.append_value(v),
                    None => {
                        return Err(datafusion::error::DataFusionError::External(Box::new(
                            CodedError::new(
                                SqlState::UNDEFINED_OBJECT,
                                format!("unrecognized configuration parameter \"{n}\""),
                            ),
                        )))
                    }
                },
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `json_build_object(k1, v1, ...)`: a JSON object as text (SQLAlchemy's column
/// reflection builds identity options with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return datafusion::common::plan_err!(
                "json_build_object needs an even number of arguments"
            );
        }
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let mut out = StringBuilder::with_capacity(rows, rows * 32);
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return datafusion::common::exec_err!("json_build_object: a key is NULL");
                }
                let key = match key {
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::LargeUtf8(Some(k))
                    | ScalarValue::Utf8View(Some(k)) => k,
                    other => other.to_string(),
                };
                object.insert(key, json_value(&pair[1], row)?);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn json_value(array: &ArrayRef, row: usize) -> Result<serde_json::Value> {
    use serde_json::Value;
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match ScalarValue::try_from_array(array, row)? {
        ScalarValue::Boolean(Some(b)) => Value::Bool(b),
        ScalarValue::Int8(Some(n)) => n.into(),
        ScalarValue::Int16(Some(n)) => n.into(),
        ScalarValue::Int32(Some(n)) => n.into(),
        ScalarValue::Int64(Some(n)) => n.into(),
        ScalarValue::UInt32(Some(n)) => n.into(),
        ScalarValue::UInt64(Some(n)) => n.into(),
        ScalarValue::Float64(Some(f)) => {
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Value::String(s),
        other => Value::String(other.to_string()),
    })
}

/// `pg_<object>_is_visible(oid)`: true — every object Switchyard lists is on the
/// search path clients use.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Visible {
    name: &'static str,
    signature: Signature,
}

impl Visible {
    fn new(name: &'static str) -> Self {
        Visible {
            name,
            signature: Signature::any(1, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for Visible {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let out: datafusion::arrow::array::BooleanArray = (0..args.number_rows)
            .map(|row| (!input.is_null(row)).then_some(true))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::format_type;

    #[test]
    fn types_are_formatted_as_postgres_formats_them() {
        assert_eq!(format_type(23, -1), "integer");
        assert_eq!(format_type(1700, (12 << 16 | 3) + 4), "numeric(12,3)");
        assert_eq!(format_type(1231, (6 << 16 | 2) + 4), "numeric(6,2)[]");
        assert_eq!(format_type(1043, 24), "character varying(20)");
        assert_eq!(format_type(1187, -1), "interval[]");
        assert_eq!(format_type(1184, 3), "timestamp(3) with time zone");
        assert_eq!(format_type(2950, -1), "uuid");
    }
}
