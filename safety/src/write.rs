//! The rules a write follows besides its privilege (which AST_CHECKER judges): the
//! columns it may read and write, and the row filter as a *check* on the rows it
//! leaves behind, as PostgreSQL's row security `WITH CHECK` — a user cannot insert
//! or update a row into a state their filter would not show them.

use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use switchyard_config::Privilege;

use crate::policy::{ColumnAccess, Policy, Principal, TableAccess};
use crate::rbac;
use crate::SafetyError;

/// What a write to one table must respect, for one user.
#[derive(Debug, Clone)]
pub struct WriteRules {
    table: String,
    access: TableAccess,
    /// The row filter over the table's columns; every written row's final state
    /// must meet it.
    pub check: Option<Expr>,
}

impl WriteRules {
    /// The rules for `who` writing `schema.table`, whose columns are `columns`.
    pub fn new(
        policy: &Policy,
        who: &Principal,
        (schema, table): (&str, &str),
        columns: &DFSchema,
        state: &SessionState,
    ) -> Result<Self, SafetyError> {
        let access = policy.access(who, schema, table);
        let qualified = format!("{schema}.{table}");
        let check = rbac::row_filter(&access, &qualified, columns, state)?;
        Ok(WriteRules {
            table: qualified,
            access,
            check,
        })
    }

    /// Refuses reading `column` (in WHERE, SET values, RETURNING): it needs SELECT
    /// on the table and a column the user may see.
    pub fn may_read(&self, column: &str) -> Result<(), SafetyError> {
        if !self.access.privileges.contains(&Privilege::Select) {
            return Err(SafetyError::TableDenied {
                table: self.table.clone(),
                privilege: "select".into(),
            });
        }
        self.visible(column)
    }

    /// Refuses writing `column` when it is denied to the user.
    pub fn may_write(&self, column: &str) -> Result<(), SafetyError> {
        // Without SELECT no column rule of a reading role applies: a write-only
        // grant writes every column.
        if !self.access.privileges.contains(&Privilege::Select) {
            return Ok(());
        }
        self.visible(column)
    }

    fn visible(&self, column: &str) -> Result<(), SafetyError> {
        match self.access.column(column) {
            ColumnAccess::Denied => Err(SafetyError::ColumnDenied {
                column: column.to_string(),
                table: self.table.clone(),
            }),
            _ => Ok(()),
        }
    }
}
