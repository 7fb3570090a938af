//! Bind parameters: the types a prepared statement reports in ParameterDescription,
//! and the values an Execute binds.
//!
//! arrow-pg decodes the values; two things are ours. A parameter compared with a
//! uuid, json or jsonb column is described as that type (the column's
//! [`switchyard_connectors::PG_TYPE_KEY`]), so drivers bind e.g. a Java `UUID`. And
//! a uuid, json or jsonb value, which arrow-pg cannot decode, is handed to it as the
//! text PostgreSQL would read: the plan holds these columns as text, and the
//! origin reads the literal back as its own type.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::into_pg_type;
use pgwire::api::portal::Portal;
use pgwire::api::stmt::StoredStatement;
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::extendedquery::Bind;

use crate::pgwire::protocol::errors::user_error;
use switchyard_engine::SqlState;

/// One parameter as the plan sees it: its Arrow type and its wire type.
struct Param {
    data_type: Option<DataType>,
    wire: Type,
}

/// The plan's parameters in `$1, $2, …` order.
fn params(plan: &LogicalPlan) -> PgWireResult<Vec<Param>> {
    let inferred = plan
        .get_parameter_types()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    // `$1::int4` leaves the placeholder untyped; the cast names its type. A
    // placeholder compared with a column carries that column's field.
    let mut cast_types: HashMap<String, DataType> = HashMap::new();
    let mut wire_types: HashMap<String, Type> = HashMap::new();
    let _ = plan.apply(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                match e {
                    Expr::Cast(c) => {
                        if let Expr::Placeholder(p) = c.expr.as_ref() {
                            cast_types.insert(p.id.clone(), c.field.data_type().clone());
                        }
                    }
                    Expr::Placeholder(p) => {
                        if let Some(field) = &p.field {
                            if let Ok(t) = crate::pgwire::protocol::encode::pg_type(field) {
                                wire_types.insert(p.id.clone(), t);
                            }
                        }
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut ids: Vec<(&String, &Option<DataType>)> = inferred.iter().collect();
    ids.sort_by_key(|(id, _)| {
        id.trim_start_matches('$')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    ids.into_iter()
        .map(|(id, data_type)| {
            let data_type = data_type.clone().or_else(|| cast_types.get(id).cloned());
            let wire = match (wire_types.get(id), &data_type) {
                (Some(t), _) => t.clone(),
                (None, Some(d)) => into_pg_type(d)?,
                (None, None) => Type::UNKNOWN,
            };
            Ok(Param { data_type, wire })
        })
        .collect()
}

/// The parameter types reported for a prepared statement.
pub fn wire_types(plan: &LogicalPlan) -> PgWireResult<Vec<Type>> {
    Ok(params(plan)?.into_iter().map(|p| p.wire).collect())
}

/// The values bound to `portal`'s parameters.
pub fn values<S: Clone>(portal: &Portal<S>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
    let mut values = decoded(portal, plan)?;
    // pgwire reads the text `{}` as an array of one empty string; it is the empty array
    // (`x = ANY('{}')` must match nothing, not rows whose x is '').
    if let ParamValues::List(list) = &mut values {
        for (i, v) in list.iter_mut().enumerate() {
            let empty = !portal.parameter_format.is_binary(i)
                && portal.parameters.get(i).and_then(|p| p.as_deref()) == Some(&b"{}"[..]);
            if let (true, ScalarValue::List(array)) = (empty, &v.value) {
                let element = match array.data_type() {
                    DataType::List(f) => f.data_type().clone(),
                    other => other.clone(),
                };
                v.value = ScalarValue::List(ScalarValue::new_list_nullable(&[], &element));
            }
        }
    }
    Ok(values)
}

fn decoded<S: Clone>(portal: &Portal<S>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
    let params = params(plan)?;
    let declared = |i: usize| {
        portal
            .statement
            .parameter_types
            .get(i)
            .cloned()
            .flatten()
            .or_else(|| params.get(i).map(|p| p.wire.clone()))
    };
    let textual = |i: usize| {
        matches!(
            declared(i),
            Some(
                Type::UUID
                    | Type::JSON
                    | Type::JSONB
                    | Type::UUID_ARRAY
                    | Type::JSON_ARRAY
                    | Type::JSONB_ARRAY
            )
        )
    };
    let inferred: Vec<Option<&DataType>> = params.iter().map(|p| p.data_type.as_ref()).collect();
    // A number bound where the plan wants a decimal (psycopg binds a Python int
    // as int8 for a numeric column): arrow-pg reads it as NUMERIC text.
    let number_as_numeric = |i: usize| {
        matches!(
            inferred.get(i).copied().flatten(),
            Some(DataType::Decimal128(_, _) | DataType::Decimal256(_, _))
        ) && matches!(
            declared(i),
            Some(Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8)
        )
    };
    let mut wire: Vec<Option<&Type>> = params.iter().map(|p| Some(&p.wire)).collect();
    if !(0..portal.parameter_len()).any(|i| textual(i) || number_as_numeric(i)) {
        return deserialize_parameters_with_server_types(portal, &inferred, &wire);
    }
    let mut formats = Vec::with_capacity(portal.parameter_len());
    let mut values = Vec::with_capacity(portal.parameter_len());
    let mut types = Vec::with_capacity(portal.parameter_len());
    for (i, value) in portal.parameters.iter().enumerate() {
        let binary = portal.parameter_format.is_binary(i);
        if number_as_numeric(i) {
            let text = match (value, binary) {
                (Some(v), true) => Some(number_text(declared(i).as_ref(), v)?),
                (v, _) => v.clone(),
            };
            formats.push(0);
            values.push(text);
            types.push(Some(Type::NUMERIC));
            continue;
        }
        if !textual(i) {
            formats.push(i16::from(binary));
            values.push(value.clone());
            types.push(declared(i));
            continue;
        }
        let text = match (value, binary) {
            (Some(v), true) => Some(text_of_binary(declared(i).as_ref(), v)?),
            (v, _) => v.clone(),
        };
        let as_text = match declared(i) {
            Some(Type::UUID_ARRAY | Type::JSON_ARRAY | Type::JSONB_ARRAY) => &Type::TEXT_ARRAY,
            _ => &Type::TEXT,
        };
        formats.push(0);
        values.push(text);
        types.push(Some(as_text.clone()));
        if let Some(w) = wire.get_mut(i) {
            *w = Some(as_text);
        }
    }
    let statement = Arc::new(StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        types,
    ));
    let bind = Bind::new(None, None, formats, values, vec![]);
    let as_text = Portal::try_new(&bind, statement)?;
    deserialize_parameters_with_server_types(&as_text, &inferred, &wire)
}

/// A one-dimensional array of uuid, json or jsonb in binary form as text[]'s text
/// (`{"a0ee...",NULL}`).
fn array_text_of_binary(element: &Type, value: &Bytes) -> PgWireResult<Bytes> {
    let bad = || {
        user_error(
            SqlState::INVALID_BINARY_REPRESENTATION,
            "incorrect binary data format in array bind parameter",
        )
    };
    let int = |at: usize| -> PgWireResult<i32> {
        Ok(i32::from_be_bytes(
            value
                .get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ))
    };
    let dims = int(0)?;
    if dims == 0 {
        return Ok(Bytes::from_static(b"{}"));
    }
    if dims != 1 {
        return Err(user_error(
            SqlState::FEATURE_NOT_SUPPORTED,
            "multidimensional uuid/json array parameters are not supported",
        ));
    }
    let count = int(12)?.max(0) as usize;
    let mut at = 20;
    let mut out = String::from("{");
    for n in 0..count {
        if n > 0 {
            out.push(',');
        }
        let len = int(at)?;
        at += 4;
        if len < 0 {
            out.push_str("NULL");
            continue;
        }
        if at + len as usize > value.len() {
            return Err(bad());
        }
        let raw = value.slice(at..at + len as usize);
        at += len as usize;
        let text = text_of_binary(Some(element), &raw)?;
        out.push('"');
        for c in String::from_utf8_lossy(&text).chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    Ok(Bytes::from(out))
}

/// A binary int2/int4/int8/float4/float8 parameter as its text.
fn number_text(t: Option<&Type>, value: &Bytes) -> PgWireResult<Bytes> {
    let bad = || {
        user_error(
            SqlState::INVALID_BINARY_REPRESENTATION,
            "incorrect binary data format in bind parameter (a number of the wrong size)",
        )
    };
    let v: &[u8] = value;
    let text = match t {
        Some(&Type::INT2) => i16::from_be_bytes(v.try_into().map_err(|_| bad())?).to_string(),
        Some(&Type::INT4) => i32::from_be_bytes(v.try_into().map_err(|_| bad())?).to_string(),
        Some(&Type::INT8) => i64::from_be_bytes(v.try_into().map_err(|_| bad())?).to_string(),
        Some(&Type::FLOAT4) => f32::from_be_bytes(v.try_into().map_err(|_| bad())?).to_string(),
        Some(&Type::FLOAT8) => f64::from_be_bytes(v.try_into().map_err(|_| bad())?).to_string(),
        _ => return Ok(value.clone()),
    };
    Ok(Bytes::from(text))
}

/// A uuid, json or jsonb parameter's binary form as text (arrays of them as text[]).
fn text_of_binary(t: Option<&Type>, value: &Bytes) -> PgWireResult<Bytes> {
    let bad = |what: &str| {
        user_error(
            SqlState::INVALID_BINARY_REPRESENTATION,
            format!("incorrect binary data format in bind parameter ({what})"),
        )
    };
    match t {
        Some(&Type::UUID) => switchyard_connectors::postgres::rows::uuid_text(value)
            .map(Bytes::from)
            .ok_or_else(|| bad("uuid is 16 bytes")),
        Some(&Type::UUID_ARRAY) => array_text_of_binary(&Type::UUID, value),
        Some(&Type::JSON_ARRAY) => array_text_of_binary(&Type::JSON, value),
        Some(&Type::JSONB_ARRAY) => array_text_of_binary(&Type::JSONB, value),
        Some(&Type::JSONB) => match value.first() {
            Some(1) => Ok(value.slice(1..)),
            _ => Err(bad("unsupported jsonb version")),
        },
        _ => Ok(value.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_uuid_and_jsonb_read_as_text() {
        let uuid = Bytes::from(vec![
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        assert_eq!(
            text_of_binary(Some(&Type::UUID), &uuid).unwrap(),
            Bytes::from("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert_eq!(
            text_of_binary(Some(&Type::JSONB), &Bytes::from(&b"\x01{\"a\":1}"[..])).unwrap(),
            Bytes::from("{\"a\":1}")
        );
        assert!(text_of_binary(Some(&Type::UUID), &Bytes::from("short")).is_err());
        // uuid[] {uuid, NULL}: dims 1, flags 1, element oid 2950, length 2, lower bound 1.
        let mut array = Vec::new();
        for word in [1i32, 1, 2950, 2, 1, 16] {
            array.extend_from_slice(&word.to_be_bytes());
        }
        array.extend_from_slice(&uuid);
        array.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            text_of_binary(Some(&Type::UUID_ARRAY), &Bytes::from(array)).unwrap(),
            Bytes::from("{\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\",NULL}")
        );
        assert!(text_of_binary(Some(&Type::UUID_ARRAY), &Bytes::from(vec![0, 0, 0, 1])).is_err());
    }
}
