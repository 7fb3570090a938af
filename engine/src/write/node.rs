//! [`WriteNode`]: a checked write as a plan node, so that both protocols keep it
//! like any plan (Parse stores it, Describe reads its columns, Bind puts parameter
//! values into its expressions) and the engine runs it at the origin.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::common::{DFSchemaRef, Result as DfResult, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

/// What the write does, with expressions over the target's columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub enum WriteKind {
    /// Rows from `WriteNode::input` (its columns are the target columns named).
    Insert {
        /// `ON CONFLICT`.
        on_conflict: Option<Conflict>,
    },
    /// `SET column = value`.
    Update {
        /// In the statement's order.
        assignments: Vec<(String, Expr)>,
    },
    /// Rows the filter keeps go.
    Delete,
}

/// `ON CONFLICT`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct Conflict {
    /// Key columns, `None` for any key; or a constraint (`Err`).
    pub target: ConflictOn,
    /// `DO UPDATE SET` assignments, `None` for `DO NOTHING`.
    pub update: Option<Vec<(String, Expr)>>,
    /// `DO UPDATE ... WHERE` (with the user's row filter on the existing row).
    pub filter: Option<Expr>,
}

/// What a conflict is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub enum ConflictOn {
    /// Any unique key.
    Any,
    /// These columns' unique index.
    Columns(Vec<String>),
    /// A named constraint.
    Constraint(String),
}

/// A checked INSERT, UPDATE or DELETE of one dataset at its origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteNode {
    /// The dataset written, as the client named it resolved (`schema.name`).
    pub table: TableReference,
    /// Its origin.
    pub origin: String,
    /// What is done.
    pub kind: WriteKind,
    /// Which rows (UPDATE, DELETE): the statement's WHERE and the user's row filter.
    pub filter: Option<Expr>,
    /// What every written row must meet in its final state (the row filter).
    pub check: Option<Expr>,
    /// INSERT: the rows to insert.
    pub input: Option<LogicalPlan>,
    /// RETURNING: a checked query over the target whose scan the written rows replace.
    pub returning: Option<LogicalPlan>,
    /// The returned columns (empty without RETURNING).
    pub schema: DFSchemaRef,
}

impl PartialOrd for WriteNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Plans are not ordered; only equality matters for a node.
        (self == other).then_some(Ordering::Equal)
    }
}

impl WriteNode {
    /// The statement kind, as in command tags.
    pub fn op(&self) -> &'static str {
        match self.kind {
            WriteKind::Insert { .. } => "INSERT",
            WriteKind::Update { .. } => "UPDATE",
            WriteKind::Delete => "DELETE",
        }
    }

    /// The node's expressions in a fixed order ([`Self::with_exprs`] reads them back).
    fn exprs(&self) -> Vec<Expr> {
        let mut out = Vec::new();
        out.extend(self.filter.iter().cloned());
        out.extend(self.check.iter().cloned());
        match &self.kind {
            WriteKind::Update { assignments } => {
                out.extend(assignments.iter().map(|(_, e)| e.clone()));
            }
            WriteKind::Insert {
                on_conflict: Some(c),
            } => {
                if let Some(update) = &c.update {
                    out.extend(update.iter().map(|(_, e)| e.clone()));
                }
                out.extend(c.filter.iter().cloned());
            }
            _ => {}
        }
        out
    }

    fn with_exprs(&self, exprs: Vec<Expr>) -> Self {
        let mut exprs = exprs.into_iter();
        let mut next = || exprs.next().expect("as many expressions as exprs() gave");
        let mut node = self.clone();
        if node.filter.is_some() {
            node.filter = Some(next());
        }
        if node.check.is_some() {
            node.check = Some(next());
        }
        match &mut node.kind {
            WriteKind::Update { assignments } => {
                for (_, e) in assignments.iter_mut() {
                    *e = next();
                }
            }
            WriteKind::Insert {
                on_conflict: Some(c),
            } => {
                if let Some(update) = &mut c.update {
                    for (_, e) in update.iter_mut() {
                        *e = next();
                    }
                }
                if c.filter.is_some() {
                    c.filter = Some(next());
                }
            }
            _ => {}
        }
        node
    }
}

impl UserDefinedLogicalNodeCore for WriteNode {
    fn name(&self) -> &str {
        "Write"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        self.input.iter().chain(self.returning.iter()).collect()
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.exprs()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Write: {} {} at {}", self.op(), self.table, self.origin)?;
        if let Some(filter) = &self.filter {
            write!(f, " where {filter}")?;
        }
        if let Some(check) = &self.check {
            write!(f, " check {check}")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let mut node = self.with_exprs(exprs);
        let mut inputs = inputs.into_iter();
        if node.input.is_some() {
            node.input = inputs.next();
        }
        if node.returning.is_some() {
            node.returning = inputs.next();
        }
        Ok(node)
    }
}

/// The write node in `plan`, if it is one.
pub fn write_node(plan: &LogicalPlan) -> Option<&WriteNode> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<WriteNode>(),
        _ => None,
    }
}

/// `node` as a plan.
pub fn into_plan(node: WriteNode) -> LogicalPlan {
    LogicalPlan::Extension(datafusion::logical_expr::Extension {
        node: Arc::new(node),
    })
}
