//! `like_escape`: `LIKE ... ESCAPE 'c'` for any escape character (SQLAlchemy writes
//! `ESCAPE '/'`), which DataFusion can only run with the backslash.
//!
//! The pattern is rewritten to backslash escapes at run time, so parameters work too:
//! literal backslashes are doubled, `cc` (an escaped escape character) becomes `\c`,
//! and every other `c` becomes `\`.

use datafusion::common::tree_node::Transformed;
use datafusion::common::Result;
use datafusion::functions::string::expr_fn::replace;
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::{lit, Expr, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct LikeEscape;

/// A character that cannot occur in SQL text, to hold escaped escape characters.
const HOLD: &str = "\u{0}";

impl OptimizerRule for LikeEscape {
    fn name(&self) -> &str {
        "like_escape"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(|node| {
            crate::rewrite::map_node_expressions(node, |e, _| match e {
                Expr::Like(like) if like.escape_char.is_some_and(|c| c != '\\') => {
                    Ok(Transformed::yes(Expr::Like(backslash_escaped(like))))
                }
                other => Ok(Transformed::no(other)),
            })
        })
    }
}

fn backslash_escaped(like: Like) -> Like {
    let c = like.escape_char.expect("checked").to_string();
    let pattern = replace(*like.pattern, lit("\\"), lit("\\\\"));
    let pattern = replace(pattern, lit(format!("{c}{c}")), lit(HOLD));
    let pattern = replace(pattern, lit(c.clone()), lit("\\"));
    let pattern = replace(pattern, lit(HOLD), lit(format!("\\{c}")));
    Like {
        pattern: Box::new(pattern),
        escape_char: None,
        ..like
    }
}
