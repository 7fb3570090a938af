//! Origins: how Switchyard reaches PostgreSQL databases, MongoDB databases, SQLite
//! files, folders of files and its own local store, and how their tables appear in the planner's catalog.
//!
//! Tables are resolved lazily ([`catalog::OriginSchema`]): an origin that is down
//! fails only the statements that read it, and the next statement tries again.

pub mod catalog;
pub mod derived_names;
mod error;
pub mod facts;
pub mod files;
pub mod local;
pub mod mongo;
pub mod pg_rows;
pub mod postgres;
mod query_table;
pub mod sqlite;
mod text_casts;

pub use catalog::{install, Origins};
pub use error::{ConnectorError, Result};
pub use postgres::{PG_TYPE_KEY, PG_TYPMOD_KEY};

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
