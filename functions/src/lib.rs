//! PostgreSQL's functions as PostgreSQL computes them, for every door: where
//! DataFusion has a function of the same name with other semantics, ours replaces
//! it (see each module); the planner registers them in every session.

mod instant;
mod to_char;

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::logical_expr::ScalarUDF;
use switchyard_sqlstate::{CodedError, SqlState};

pub use instant::instant;
pub use to_char::ToChar;

/// The scalar functions to register, replacing DataFusion's of the same names.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(ToChar::new()))]
}

/// An error that reaches the client with `state`.
pub(crate) fn coded(state: SqlState, message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(CodedError::new(state, message)))
}
