//! Arrow columns as origins hand them up: the field metadata that keeps what Arrow
//! cannot say (the PostgreSQL type of a text column, a type modifier), and the cast
//! to the planned type.

/// Field metadata naming the PostgreSQL type of a column Arrow holds as text
/// (`uuid`, `json`, `jsonb`, `varchar`, `bpchar`, `name`), so that the front door
/// describes it as that type.
pub const PG_TYPE_KEY: &str = "switchyard.pg_type";

/// Field metadata holding a PostgreSQL column's type modifier (`numeric(12,3)`,
/// `varchar(20)`), for the catalog's `atttypmod`.
pub const PG_TYPMOD_KEY: &str = "switchyard.pg_typmod";

/// `array` as the plan's `data_type` (origins answer in their own types: SQLite's
/// storage classes, PostgreSQL's int8 counts).
pub(crate) fn as_planned(
    array: datafusion::arrow::array::ArrayRef,
    data_type: &datafusion::arrow::datatypes::DataType,
) -> datafusion::error::Result<datafusion::arrow::array::ArrayRef> {
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(datafusion::arrow::compute::cast(&array, data_type)?)
    }
}
