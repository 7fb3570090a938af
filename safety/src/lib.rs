//! The safety pipeline: every statement's logical plan passes [`Pipeline::check`]
//! before anything runs, and leaves a record in the hash-chained [`AuditLog`].
//!
//! It works on DataFusion's logical plan (and, for function names, the parsed
//! statement), never on SQL text, so quoting, comments or statement stacking cannot
//! hide a table or a write from it. Stages, in order (named as in faz):
//!
//! 1. `RBAC_GATE` ([`rbac`]): table privileges, column access, and the rewrite that
//!    puts row filters and column masks under every scan of a governed table.
//! 2. `AST_CHECKER` ([`statement`]): statement kinds (read-only unless granted; DDL
//!    never) and the function deny-list.
//! 3. `INJECTION_ANALYSER` ([`injection`]): tautologies, UNION reads of catalogs,
//!    stacked statements, truncating comments, timing probes; warn or deny.
//! 4. `GUARDRAILS` ([`guardrails`]): unfiltered UPDATE/DELETE, cartesian products,
//!    and the row cap put into the plan; runtime limits for the front door.
//!
//! Step graphs (the HTTP and MCP door) pass [`prompt_guard`] first: text addressed
//! to a model in what an agent sends, and result values that look like it.

mod audit;
mod decision;
mod fingerprint;
mod grants;
mod guardrails;
mod injection;
mod pipeline;
mod policy;
pub mod prompt_guard;
mod rbac;
mod statement;
mod write;

pub use audit::{
    verify, AuditLog, AuditRecord, ErrorRecord, RequestRecord, StepRecord, VerifyError,
};
pub use decision::{Decision, Outcome, Stage, StageResult};
pub use fingerprint::{fingerprint, statement_hash};
pub use grants::TablePattern;
pub use guardrails::Limits;
pub use pipeline::{Checked, Denied, Pipeline, StatementInput};
pub use policy::{ColumnAccess, Policy, Principal, TableAccess};
pub use write::WriteRules;

use switchyard_sqlstate::SqlState;

/// Result alias for safety checks.
pub type Result<T, E = SafetyError> = std::result::Result<T, E>;

/// Why a statement may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    /// The user's roles do not grant the table, or not this privilege on it (42501).
    #[error("permission denied for table {table}")]
    TableDenied {
        /// `schema.table`.
        table: String,
        /// What was asked: select, insert, update, delete.
        privilege: String,
    },
    /// A column the user may not read is used (42501).
    #[error("permission denied for column {column} of table {table}")]
    ColumnDenied {
        /// The column.
        column: String,
        /// `schema.table`.
        table: String,
    },
    /// The statement would change data or schema and the role may not (25006).
    #[error("cannot execute {kind}: Switchyard serves read-only statements for this role")]
    ReadOnly {
        /// What the statement is, e.g. `CREATE TABLE`.
        kind: String,
    },
    /// A function on the deny-list (42501).
    #[error("permission denied for function {name}")]
    FunctionDenied {
        /// The function.
        name: String,
    },
    /// The injection analyser refused the statement (42501).
    #[error("statement refused by the injection analyser: {detail}")]
    Injection {
        /// Which finding: tautology, union_catalog, stacked, comment, timing.
        finding: String,
        /// What was found.
        detail: String,
    },
    /// UPDATE or DELETE without WHERE (21000, as pg-safeupdate).
    #[error("{kind} requires a WHERE clause")]
    UnfilteredWrite {
        /// UPDATE or DELETE.
        kind: String,
    },
    /// A cartesian product larger than the guardrail (54000).
    #[error("cartesian product of {detail} exceeds max_cartesian_rows ({limit})")]
    Cartesian {
        /// The sizes involved.
        detail: String,
        /// The guardrail.
        limit: u64,
    },
    /// A configured row filter does not compile against its table (F0000).
    #[error("row filter for {table} cannot be applied: {reason}")]
    RowFilter {
        /// `schema.table`.
        table: String,
        /// Why.
        reason: String,
    },
}

impl SafetyError {
    /// The SQLSTATE a client should see.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            SafetyError::TableDenied { .. }
            | SafetyError::ColumnDenied { .. }
            | SafetyError::FunctionDenied { .. }
            | SafetyError::Injection { .. } => SqlState::INSUFFICIENT_PRIVILEGE,
            SafetyError::ReadOnly { .. } => SqlState::READ_ONLY_SQL_TRANSACTION,
            SafetyError::UnfilteredWrite { .. } => SqlState::CARDINALITY_VIOLATION,
            SafetyError::Cartesian { .. } => SqlState::PROGRAM_LIMIT_EXCEEDED,
            SafetyError::RowFilter { .. } => SqlState::CONFIG_FILE_ERROR,
        }
    }
}
