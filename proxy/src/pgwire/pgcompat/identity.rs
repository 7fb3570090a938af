//! Which PostgreSQL Switchyard answers as: the one version every reader reports
//! (the startup ParameterStatus, `SHOW`, `current_setting`, `version()`), so a
//! client that picks SQL by server version sees one server.

/// `server_version`: clients read the leading `N.N` (pgjdbc, SQLAlchemy, DBeaver).
pub const SERVER_VERSION: &str = "15.0 (Switchyard)";
/// `server_version_num`, as PostgreSQL encodes 15.0.
pub const SERVER_VERSION_NUM: &str = "150000";
/// The version in `version()`'s leading `PostgreSQL N.N`.
pub const VERSION: &str = "15.0";
