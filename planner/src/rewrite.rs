//! What the expression rules share: rewriting a node's expressions bottom-up while
//! each SELECT-list item keeps its name.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// `node` with each of its expressions rewritten bottom-up by `f`, which gets the
/// schema they are typed against (the node's inputs', merged). A rewritten item
/// keeps its name: the plan's schema must not change (it does not matter when
/// federation unparses the plan, but a projection run in DataFusion is checked).
pub(crate) fn map_node_expressions(
    node: LogicalPlan,
    mut f: impl FnMut(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    let mut schema = DFSchema::empty();
    for input in node.inputs() {
        schema.merge(input.schema());
    }
    let names = NamePreserver::new(&node);
    node.map_expressions(|e| {
        let saved = names.save(&e);
        let rewritten = e.transform_up(|e| f(e, &schema))?;
        Ok(if rewritten.transformed {
            rewritten.update_data(|e| saved.restore(e))
        } else {
            rewritten
        })
    })
}
