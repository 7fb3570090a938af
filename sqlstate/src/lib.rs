//! The SQLSTATE vocabulary: every code Switchyard reports, named once as
//! PostgreSQL's condition names it (Appendix A of its manual), so that crates raise
//! `SqlState::UNDEFINED_TABLE`, not a `"42P01"` literal, and the front doors map one
//! type. An origin's own code (a PostgreSQL origin's error) is carried as it came.

use std::fmt;

/// A five-character SQLSTATE.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

macro_rules! states {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        impl SqlState {
            $($(#[$doc])* pub const $name: SqlState = SqlState(*$code);)*

            /// Every named state, for tests and documentation.
            pub const ALL: &'static [(&'static str, SqlState)] = &[$((stringify!($name), SqlState(*$code))),*];
        }
    };
}

states! {
    /// 01000 warning (NOTICE/WARNING messages).
    WARNING = b"01000";
    /// 08001 sqlclient_unable_to_establish_sqlconnection: an origin cannot be reached.
    UNABLE_TO_CONNECT = b"08001";
    /// 08006 connection_failure: an origin connection broke mid-statement.
    CONNECTION_FAILURE = b"08006";
    /// 08P01 protocol_violation: an origin's stream said something unexpected.
    PROTOCOL_VIOLATION = b"08P01";
    /// 0A000 feature_not_supported.
    FEATURE_NOT_SUPPORTED = b"0A000";
    /// 21000 cardinality_violation (also an unfiltered UPDATE/DELETE, as pg-safeupdate).
    CARDINALITY_VIOLATION = b"21000";
    /// 22003 numeric_value_out_of_range.
    NUMERIC_VALUE_OUT_OF_RANGE = b"22003";
    /// 22012 division_by_zero.
    DIVISION_BY_ZERO = b"22012";
    /// 22023 invalid_parameter_value.
    INVALID_PARAMETER_VALUE = b"22023";
    /// 22P02 invalid_text_representation.
    INVALID_TEXT_REPRESENTATION = b"22P02";
    /// 22P03 invalid_binary_representation.
    INVALID_BINARY_REPRESENTATION = b"22P03";
    /// 25006 read_only_sql_transaction.
    READ_ONLY_SQL_TRANSACTION = b"25006";
    /// 25P01 no_active_sql_transaction.
    NO_ACTIVE_SQL_TRANSACTION = b"25P01";
    /// 25P02 in_failed_sql_transaction.
    IN_FAILED_SQL_TRANSACTION = b"25P02";
    /// 26000 invalid_sql_statement_name.
    INVALID_SQL_STATEMENT_NAME = b"26000";
    /// 28000 invalid_authorization_specification.
    INVALID_AUTHORIZATION = b"28000";
    /// 3B001 invalid_savepoint_specification.
    INVALID_SAVEPOINT = b"3B001";
    /// 42000 syntax_error_or_access_rule_violation (a planning mistake without a finer code).
    SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION = b"42000";
    /// 23505 unique_violation: e.g. a MongoDB duplicate key.
    UNIQUE_VIOLATION = b"23505";
    /// 22P04 bad_copy_file_format: a COPY FROM row that does not parse.
    BAD_COPY_FILE_FORMAT = b"22P04";
    /// 42501 insufficient_privilege.
    INSUFFICIENT_PRIVILEGE = b"42501";
    /// 42601 syntax_error.
    SYNTAX_ERROR = b"42601";
    /// 42701 duplicate_column.
    DUPLICATE_COLUMN = b"42701";
    /// 42702 ambiguous_column.
    AMBIGUOUS_COLUMN = b"42702";
    /// 42703 undefined_column.
    UNDEFINED_COLUMN = b"42703";
    /// 42704 undefined_object.
    UNDEFINED_OBJECT = b"42704";
    /// 42710 duplicate_object.
    DUPLICATE_OBJECT = b"42710";
    /// 42804 datatype_mismatch.
    DATATYPE_MISMATCH = b"42804";
    /// 42809 wrong_object_type: e.g. REFRESH MATERIALIZED VIEW of a dataset that is not materialized.
    WRONG_OBJECT_TYPE = b"42809";
    /// 42883 undefined_function.
    UNDEFINED_FUNCTION = b"42883";
    /// 42P01 undefined_table.
    UNDEFINED_TABLE = b"42P01";
    /// 42P10 invalid_column_reference.
    INVALID_COLUMN_REFERENCE = b"42P10";
    /// 42P18 indeterminate_datatype.
    INDETERMINATE_DATATYPE = b"42P18";
    /// 53100 disk_full.
    DISK_FULL = b"53100";
    /// 53200 out_of_memory.
    OUT_OF_MEMORY = b"53200";
    /// 53400 configuration_limit_exceeded.
    CONFIGURATION_LIMIT_EXCEEDED = b"53400";
    /// 54000 program_limit_exceeded (guardrails: row cap, result bytes, cartesian products).
    PROGRAM_LIMIT_EXCEEDED = b"54000";
    /// 55000 object_not_in_prerequisite_state: a materialized dataset has no local copy yet.
    OBJECT_NOT_IN_PREREQUISITE_STATE = b"55000";
    /// 55006 object_in_use: e.g. a replication slot another session holds.
    OBJECT_IN_USE = b"55006";
    /// 57014 query_canceled (cancel request or statement timeout).
    QUERY_CANCELED = b"57014";
    /// 57P01 admin_shutdown (a statement abandoned before its end).
    ADMIN_SHUTDOWN = b"57P01";
    /// 58030 io_error.
    IO_ERROR = b"58030";
    /// F0000 config_file_error (a configured rule that does not apply).
    CONFIG_FILE_ERROR = b"F0000";
    /// XX000 internal_error.
    INTERNAL_ERROR = b"XX000";
}

impl SqlState {
    /// A code received from elsewhere (an origin's error); `None` unless it is five
    /// ASCII digits or upper-case letters.
    pub fn parse(code: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(SqlState(bytes))
    }

    /// The code as text, e.g. `"42P01"`.
    pub fn code(&self) -> &str {
        // Constructed only from ASCII (constants and `parse`).
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }

    /// The class (first two characters), e.g. `"42"`.
    pub fn class(&self) -> &str {
        &self.code()[..2]
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.code())
    }
}

/// An error that already knows its SQLSTATE: raised inside DataFusion (a function,
/// a table provider) as `DataFusionError::External`, and found again by the error
/// classification however deeply it is wrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    /// The SQLSTATE.
    pub state: SqlState,
    /// The message, as the client sees it.
    pub message: String,
}

impl CodedError {
    /// An error with `state` and `message`.
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        CodedError {
            state,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_well_formed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for (name, state) in SqlState::ALL {
            assert_eq!(SqlState::parse(state.code()), Some(*state), "{name}");
            assert!(seen.insert(*state), "{name} duplicates a code");
        }
        assert_eq!(SqlState::UNDEFINED_TABLE.code(), "42P01");
        assert_eq!(SqlState::UNDEFINED_TABLE.class(), "42");
        assert_eq!(SqlState::parse("4201"), None);
        assert_eq!(SqlState::parse("42p01"), None);
    }
}
