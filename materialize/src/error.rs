//! Materialization errors, each with its SQLSTATE.

use datafusion::error::DataFusionError;
use switchyard_connectors::ConnectorError;
use switchyard_sqlstate::SqlState;

/// Result alias for materialization.
pub type Result<T, E = MaterializeError> = std::result::Result<T, E>;

/// What went wrong keeping a copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MaterializeError {
    /// The origin or the local store failed.
    #[error("{message}")]
    Copy {
        /// The SQLSTATE of the underlying error.
        code: SqlState,
        /// Its message.
        message: String,
        /// The origin could not be reached (the copy is retried with backoff).
        origin_down: bool,
    },
    /// A live copy's feed cannot go on from where the copy stands; a new
    /// snapshot is taken (55000).
    #[error("{0}; taking a new snapshot")]
    Resnapshot(String),
    /// `REFRESH MATERIALIZED VIEW` of a dataset that is not materialized (42809).
    #[error("\"{0}\" is not a materialized dataset")]
    NotMaterialized(String),
    /// A name that is no dataset (42P01).
    #[error("dataset {0} does not exist")]
    UnknownDataset(String),
    /// The dataset's worker is gone (the server is stopping; 57P01).
    #[error("the worker keeping {0} has stopped")]
    Stopped(String),
    /// Set up without a local store (a bug in the caller; XX000).
    #[error("materialized datasets need the local store, which is not set up")]
    NoStore,
}

impl MaterializeError {
    /// The SQLSTATE a client sees.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            MaterializeError::Copy { code, .. } => *code,
            MaterializeError::Resnapshot(_) => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            MaterializeError::NotMaterialized(_) => SqlState::WRONG_OBJECT_TYPE,
            MaterializeError::UnknownDataset(_) => SqlState::UNDEFINED_TABLE,
            MaterializeError::Stopped(_) => SqlState::ADMIN_SHUTDOWN,
            MaterializeError::NoStore => SqlState::INTERNAL_ERROR,
        }
    }

    /// Whether the origin was unreachable (state `origin down`, not `error`).
    pub fn origin_down(&self) -> bool {
        matches!(
            self,
            MaterializeError::Copy {
                origin_down: true,
                ..
            }
        )
    }
}

impl From<ConnectorError> for MaterializeError {
    fn from(e: ConnectorError) -> Self {
        if let ConnectorError::Resnapshot { .. } = e {
            return MaterializeError::Resnapshot(e.to_string());
        }
        let origin_down = matches!(
            e,
            ConnectorError::Unreachable { .. } | ConnectorError::ConnectionLost { .. }
        );
        MaterializeError::Copy {
            code: e.sqlstate(),
            message: e.to_string(),
            origin_down,
        }
    }
}

impl From<DataFusionError> for MaterializeError {
    fn from(e: DataFusionError) -> Self {
        // A connector's error travels through DataFusion boxed: keep its SQLSTATE
        // and whether the origin was unreachable.
        match connector_cause(&e) {
            Some(c @ ConnectorError::Resnapshot { .. }) => {
                MaterializeError::Resnapshot(c.to_string())
            }
            Some(c) => MaterializeError::Copy {
                code: c.sqlstate(),
                message: c.to_string(),
                origin_down: matches!(
                    c,
                    ConnectorError::Unreachable { .. } | ConnectorError::ConnectionLost { .. }
                ),
            },
            None => MaterializeError::Copy {
                code: SqlState::INTERNAL_ERROR,
                message: e.to_string(),
                origin_down: false,
            },
        }
    }
}

/// The connector error inside `e`'s wrappers, if one caused it.
fn connector_cause(e: &DataFusionError) -> Option<&ConnectorError> {
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(c) = current.downcast_ref::<ConnectorError>() {
            return Some(c);
        }
        if let Some(df) = current.downcast_ref::<DataFusionError>() {
            current = match df {
                DataFusionError::External(inner) => inner.as_ref(),
                DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                    inner.as_ref()
                }
                DataFusionError::Shared(inner) => inner.as_ref(),
                DataFusionError::Collection(errors) => errors.first()?,
                _ => return None,
            };
            continue;
        }
        current = current.source()?;
    }
}
