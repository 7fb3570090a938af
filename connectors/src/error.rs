//! Connector errors, each with the SQLSTATE a client should see.

use datafusion::error::DataFusionError;
use switchyard_sqlstate::SqlState;

/// Result alias for connector operations.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// What went wrong talking to an origin.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// No connection could be made (SQLSTATE 08001).
    #[error("origin {origin} is unreachable: {message}")]
    Unreachable {
        /// Origin name.
        origin: String,
        /// Why, as the driver says it.
        message: String,
    },
    /// An open connection broke (SQLSTATE 08006).
    #[error("connection to origin {origin} was lost: {message}")]
    ConnectionLost {
        /// Origin name.
        origin: String,
        /// Why, as the driver says it.
        message: String,
    },
    /// The origin refused the statement; its own SQLSTATE is passed on.
    #[error("origin {origin}: {message}")]
    Origin {
        /// Origin name.
        origin: String,
        /// The origin's SQLSTATE.
        code: SqlState,
        /// The origin's message.
        message: String,
    },
    /// A configured table or file is missing at the origin (SQLSTATE 42P01).
    #[error("origin {origin} has no {object}")]
    NotFound {
        /// Origin name.
        origin: String,
        /// What was looked for.
        object: String,
    },
    /// A value from the origin has no Arrow equivalent yet (SQLSTATE 0A000).
    #[error(
        "origin {origin}: column {column} has type {type_name}, which Switchyard cannot read yet"
    )]
    UnsupportedType {
        /// Origin name.
        origin: String,
        /// Column name.
        column: String,
        /// The origin's type name.
        type_name: String,
    },
    /// A value at the origin does not have its column's type (SQLSTATE 42804).
    #[error("origin {origin}: column {column}: {message}")]
    WrongType {
        /// Origin name.
        origin: String,
        /// Column name.
        column: String,
        /// What was expected and found, and where.
        message: String,
    },
    /// A collection's columns cannot be inferred (SQLSTATE 42P18).
    #[error("origin {origin}: {message}")]
    NoSchema {
        /// Origin name.
        origin: String,
        /// Why, and what to do.
        message: String,
    },
    /// A materialized dataset has no local copy to read yet (SQLSTATE 55000).
    #[error("dataset {dataset} has no local copy yet: {why}")]
    NotMaterialized {
        /// `schema.name`.
        dataset: String,
        /// Its state (snapshotting, origin down...).
        why: String,
    },
    /// The local store failed: full (SQLSTATE 53100) or otherwise unusable (58030).
    #[error("local store: {message}")]
    LocalStore {
        /// The size limit or the disk is reached.
        full: bool,
        /// What SQLite said.
        message: String,
    },
    /// A change feed cannot go on from where the copy stands (slot dropped or
    /// invalidated, a schema change the copy cannot follow): only a new snapshot
    /// can (SQLSTATE 55000).
    #[error("dataset {dataset}: {why}")]
    Resnapshot {
        /// `schema.name`.
        dataset: String,
        /// What happened.
        why: String,
    },
    /// The origin cannot keep a dataset live as it is set up (wal_level, the
    /// REPLICATION privilege, a table without a key).
    #[error("origin {origin}: {message}; {fix}")]
    NotLive {
        /// Origin name.
        origin: String,
        /// 55000, or 42501 for a missing privilege.
        code: SqlState,
        /// What is missing.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A dataset that cannot take the write asked of it (SQLSTATE 0A000).
    #[error("dataset {dataset} (origin {origin}) cannot be written: {why}")]
    NotWritable {
        /// Origin name.
        origin: String,
        /// `schema.name`.
        dataset: String,
        /// Why, and what can be written instead.
        why: String,
    },
    /// An error from DataFusion while building a table.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl ConnectorError {
    /// The SQLSTATE for this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ConnectorError::Unreachable { .. } => SqlState::UNABLE_TO_CONNECT,
            ConnectorError::ConnectionLost { .. } => SqlState::CONNECTION_FAILURE,
            ConnectorError::Origin { code, .. } => *code,
            ConnectorError::NotFound { .. } => SqlState::UNDEFINED_TABLE,
            ConnectorError::UnsupportedType { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            ConnectorError::WrongType { .. } => SqlState::DATATYPE_MISMATCH,
            ConnectorError::NoSchema { .. } => SqlState::INDETERMINATE_DATATYPE,
            ConnectorError::NotMaterialized { .. } => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ConnectorError::LocalStore { full: true, .. } => SqlState::DISK_FULL,
            ConnectorError::LocalStore { full: false, .. } => SqlState::IO_ERROR,
            ConnectorError::Resnapshot { .. } => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ConnectorError::NotLive { code, .. } => *code,
            ConnectorError::NotWritable { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            ConnectorError::DataFusion(_) => SqlState::INTERNAL_ERROR,
        }
    }
}

impl From<ConnectorError> for DataFusionError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
