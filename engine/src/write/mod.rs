//! Writes through the engine: `INSERT` (with `ON CONFLICT`), `UPDATE` and `DELETE`,
//! each with `RETURNING`, checked by the safety pipeline and run at the dataset's
//! origin as statements rendered from the checked plan ([`plan`] → [`WriteNode`] →
//! [`run`]).

mod copy;
mod node;
pub(crate) mod plan;
pub(crate) mod run;

pub use copy::CopyIn;
pub use node::{write_node, Conflict, ConflictOn, WriteKind, WriteNode};

/// `node` as a plan.
pub(crate) fn node_plan(node: WriteNode) -> datafusion::logical_expr::LogicalPlan {
    node::into_plan(node)
}
