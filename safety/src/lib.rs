//! The safety gate: every planned statement passes [`Gate::check`] before it runs.
//!
//! It works on DataFusion's logical plan, never on SQL text, so quoting, comments
//! or statement stacking cannot hide a table from it. Today it enforces the
//! statement kinds a read-only proxy accepts and table-level allow/deny by role;
//! column, row and guardrail stages will join it here.

mod grants;

use std::collections::BTreeMap;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;

pub use grants::TablePattern;

/// Result alias for safety checks.
pub type Result<T, E = SafetyError> = std::result::Result<T, E>;

/// Why a statement may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    /// The user's roles do not grant the table (SQLSTATE 42501).
    #[error("permission denied for table {table}")]
    TableDenied {
        /// `schema.table`.
        table: String,
        /// The user asking.
        user: String,
    },
    /// The statement would change data or schema; Switchyard is read-only (SQLSTATE 25006).
    #[error("cannot execute {kind}: Switchyard serves read-only statements")]
    ReadOnly {
        /// What the statement is, e.g. `CREATE TABLE`.
        kind: String,
    },
}

impl SafetyError {
    /// The SQLSTATE a client should see.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SafetyError::TableDenied { .. } => "42501",
            SafetyError::ReadOnly { .. } => "25006",
        }
    }
}

/// Who is asking: the session's user and the grants of their roles.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Login name.
    pub user: String,
    allow: Vec<TablePattern>,
    deny: Vec<TablePattern>,
}

impl Principal {
    /// Collects the grants of `roles` (unknown role names grant nothing).
    pub fn new(
        user: &str,
        roles: &[String],
        defined: &BTreeMap<String, switchyard_config::Role>,
    ) -> Self {
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        for role in roles.iter().filter_map(|r| defined.get(r)) {
            allow.extend(role.allow.iter().map(|p| TablePattern::parse(p)));
            deny.extend(role.deny.iter().map(|p| TablePattern::parse(p)));
        }
        Principal {
            user: user.to_string(),
            allow,
            deny,
        }
    }

    /// Whether the user may read `schema.table`; deny wins over allow.
    pub fn may_read(&self, schema: &str, table: &str) -> bool {
        !self.deny.iter().any(|p| p.matches(schema, table))
            && self.allow.iter().any(|p| p.matches(schema, table))
    }
}

/// Schemas every session reads for catalog emulation (psql's `\dt`, drivers' metadata).
const CATALOG_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// The check every statement's logical plan passes before execution.
#[derive(Debug, Clone)]
pub struct Gate {
    default_schema: String,
}

impl Gate {
    /// A gate resolving unqualified table names against `default_schema`.
    pub fn new(default_schema: impl Into<String>) -> Self {
        Gate {
            default_schema: default_schema.into(),
        }
    }

    /// Checks a plan (before optimization, so every scan is still visible, also inside subqueries).
    pub fn check(&self, plan: &LogicalPlan, who: &Principal) -> Result<()> {
        if let Some(kind) = write_kind(plan) {
            tracing::info!(user = %who.user, %kind, "refused: write statement");
            return Err(SafetyError::ReadOnly { kind });
        }
        let mut denied = None;
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let (schema, table) = self.resolve(&scan.table_name);
                if !CATALOG_SCHEMAS.contains(&schema.as_str()) && !who.may_read(&schema, &table) {
                    denied = Some(format!("{schema}.{table}"));
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("the visitor never fails");
        match denied {
            Some(table) => {
                tracing::info!(user = %who.user, %table, "refused: table not granted");
                Err(SafetyError::TableDenied {
                    table,
                    user: who.user.clone(),
                })
            }
            None => Ok(()),
        }
    }

    fn resolve(&self, name: &TableReference) -> (String, String) {
        let schema = name.schema().unwrap_or(&self.default_schema).to_string();
        (schema, name.table().to_string())
    }
}

/// The kind of a statement that would change data or schema, if `plan` is one.
fn write_kind(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Dml(dml) => Some(dml.op.to_string()),
        LogicalPlan::Ddl(ddl) => Some(ddl.name().to_string()),
        LogicalPlan::Copy(_) => Some("COPY".to_string()),
        LogicalPlan::Explain(e) => write_kind(&e.plan),
        LogicalPlan::Analyze(a) => write_kind(&a.input),
        _ => None,
    }
}
