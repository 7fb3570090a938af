//! Switchyard's configuration: one YAML file read into checked, typed values.
//!
//! Parsing keeps line numbers on every value a later check may reject, so that
//! every error names the file, the line and the fix.

mod check;
mod column_type;
mod env;
mod policy;
pub mod raw;
pub mod row_filter;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use check::parse_str;
pub use column_type::ColumnType;
pub use policy::{
    Action, Audit, ColumnRule, DenyPolicy, Fsync, Grant, Guardrails, Injection, Mask, Privilege,
    PromptGuard, Role, RowCapAction, RowFilter, Safety,
};
pub use raw::FilterValue;

/// Result alias for config loading.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// A config file that cannot be used, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// What is wrong.
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.reason)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; relative paths in it are resolved against its folder.
    pub file: PathBuf,
    /// `host:port` the pgwire front door listens on.
    pub listen: String,
    /// TLS on the front door.
    pub tls: Tls,
    /// Users who may log in.
    pub users: Vec<User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// Origins by name, in file order.
    pub origins: Vec<Origin>,
    /// Every table the proxy exposes, in file order.
    pub datasets: Vec<Dataset>,
    /// The embedded local store.
    pub local: LocalStore,
    /// Folder for Switchyard's own files.
    pub data_dir: PathBuf,
    /// Limits for every statement (roles may override them).
    pub guardrails: Guardrails,
    /// The audit log.
    pub audit: Audit,
    /// Injection analysis and function policy.
    pub safety: Safety,
    /// The step-graph REST and MCP door, when enabled.
    pub http: Option<Http>,
}

/// `http:`: the step-graph REST API and MCP server, on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    /// `host:port` it listens on.
    pub listen: String,
    /// How long a paginated result is kept.
    pub results_ttl: std::time::Duration,
    /// Bytes of a kept result held in memory before it is spilled to disk.
    pub results_memory: u64,
    /// The largest request body accepted, in bytes.
    pub max_body: u64,
}

/// Front-door TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Whether TLS is off, offered, or demanded.
    pub mode: TlsMode,
    /// PEM certificate chain (set unless mode is `disable`).
    pub cert: Option<PathBuf>,
    /// PEM private key (set unless mode is `disable`).
    pub key: Option<PathBuf>,
}

/// `tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext only.
    Disable,
    /// TLS when the client asks, plaintext otherwise.
    Allow,
    /// Plaintext clients are refused.
    Require,
}

/// A login.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Clear-text password (from the environment, ideally); SCRAM verifiers are derived at start.
    pub password: String,
    /// Role names, each defined under `roles:`.
    pub roles: Vec<String>,
    /// Values row filters read as `user.<name>`.
    pub attributes: BTreeMap<String, FilterValue>,
    /// Bearer tokens that log this user in on the HTTP door.
    pub tokens: Vec<String>,
}

/// A named origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Name used by datasets.
    pub name: String,
    /// What it is and how to reach it.
    pub kind: OriginKind,
}

/// The kinds of origin Switchyard can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginKind {
    /// A PostgreSQL database.
    Postgres(PostgresOrigin),
    /// A SQLite database file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A folder of CSV / Parquet / NDJSON files.
    Files {
        /// The folder.
        path: PathBuf,
    },
    /// A MongoDB database.
    Mongodb(MongoOrigin),
}

impl OriginKind {
    /// Short name, as written in `kind:`.
    pub fn name(&self) -> &'static str {
        match self {
            OriginKind::Postgres(_) => "postgres",
            OriginKind::Sqlite { .. } => "sqlite",
            OriginKind::Files { .. } => "files",
            OriginKind::Mongodb(_) => "mongodb",
        }
    }
}

/// Connection settings parsed from a `postgres://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOrigin {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Login user.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// libpq `sslmode`.
    pub sslmode: SslMode,
    /// Connections kept per origin.
    pub pool_size: u32,
    /// PostgreSQL's own `statement_timeout` on Switchyard's connections (57014 from the origin).
    pub statement_timeout: Option<std::time::Duration>,
}

impl fmt::Debug for PostgresOrigin {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOrigin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sslmode", &self.sslmode)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// libpq's `sslmode` for a PostgreSQL origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS if offered; Switchyard connects in plaintext (as libpq does with a server
    /// that has no TLS).
    #[default]
    Prefer,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate checked against the trusted roots, not the host name.
    VerifyCa,
    /// TLS, the certificate and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// Every mode, as libpq spells it.
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The mode as libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode libpq spells `s`.
    pub fn parse(s: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether connections use TLS.
    pub fn uses_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Connection settings of a MongoDB origin.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoOrigin {
    /// `mongodb://` connection string (may hold a password).
    pub url: String,
    /// The database holding the collections.
    pub database: String,
    /// Documents sampled to infer a collection's columns.
    pub sample_size: u32,
    /// Whether filters, sorts, aggregates and joins run at the origin (default true).
    pub pushdown: bool,
}

impl fmt::Debug for MongoOrigin {
    // Never print the password inside the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match url::Url::parse(&self.url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.url.clone(),
        };
        f.debug_struct("MongoOrigin")
            .field("url", &url)
            .field("database", &self.database)
            .field("sample_size", &self.sample_size)
            .field("pushdown", &self.pushdown)
            .finish()
    }
}

/// A column declared for a MongoDB dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredColumn {
    /// Column name in SQL.
    pub name: String,
    /// Its SQL type.
    pub sql_type: ColumnType,
    /// Dotted path into the document.
    pub path: String,
}

/// One table exposed by the proxy, as `schema.name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Schema the table appears under.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Origin name.
    pub origin: String,
    /// What the table reads at the origin.
    pub source: DatasetSource,
    /// Line of the dataset in the config, for errors found later (at connect time).
    pub line: Option<u64>,
    /// Declared columns (MongoDB datasets; empty means inferred).
    pub columns: Vec<DeclaredColumn>,
    /// How statements read it: at the origin, or from a local copy.
    pub mode: Mode,
}

/// How a dataset is answered (the FlashQL modes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every statement reads the origin.
    #[default]
    Federate,
    /// Copied into the local store and answered from the copy, also while the
    /// origin is down; copied again at start, on `REFRESH MATERIALIZED VIEW`, and
    /// every `refresh` interval when one is set.
    Materialize {
        /// Copy again this often.
        refresh: Option<std::time::Duration>,
        /// Kept fresh from the origin's change feed (`live: true`).
        live: Option<Live>,
        /// `mode: sync`: the live copy also takes writes, queued and replayed
        /// at the origin (always with `live`).
        sync: Option<SyncSettings>,
    },
}

impl Mode {
    /// The sync settings of a `mode: sync` dataset.
    pub fn sync(&self) -> Option<&SyncSettings> {
        match self {
            Mode::Materialize { sync, .. } => sync.as_ref(),
            Mode::Federate => None,
        }
    }
}

/// How a `mode: sync` dataset reconciles its queued writes with the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// What happens when a queued change meets an origin row that changed.
    pub conflict: ConflictPolicy,
    /// A column the origin's writers advance on every change (a timestamp or a
    /// counter): conflicts are detected by it instead of the whole row, and
    /// `last_write_wins` compares it.
    pub version_column: Option<String>,
}

/// `conflict:` of a sync dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// The local change is discarded; the local copy takes the origin's row.
    OriginWins,
    /// The local change is applied over the origin's row.
    LocalWins,
    /// The change with the greater `version_column` wins.
    LastWriteWins,
    /// The whole queued transaction is set aside (nothing of it reaches the
    /// origin); the local copy takes the origin's rows.
    Reject,
}

impl ConflictPolicy {
    /// Every policy, as written in the config.
    pub const ALL: [ConflictPolicy; 4] = [
        ConflictPolicy::OriginWins,
        ConflictPolicy::LocalWins,
        ConflictPolicy::LastWriteWins,
        ConflictPolicy::Reject,
    ];

    /// The name in the config (and in `switchyard.conflicts`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::OriginWins => "origin_wins",
            ConflictPolicy::LocalWins => "local_wins",
            ConflictPolicy::LastWriteWins => "last_write_wins",
            ConflictPolicy::Reject => "reject",
        }
    }
}

/// How a live dataset follows its origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Live {
    /// PostgreSQL: the replication slot's name (default `switchyard_<schema>_<name>`).
    pub slot: Option<String>,
    /// PostgreSQL: the publication's name (default as the slot's).
    pub publication: Option<String>,
}

impl Dataset {
    /// `schema.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// What a dataset reads at its origin.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSource {
    /// A table (optionally `schema.table`) or, for files, a file stem or sub-folder;
    /// `filters` are `column = literal` conditions always applied at the origin.
    Table {
        /// Origin-side name.
        table: String,
        /// Equality filters (column → literal), ANDed.
        filters: Vec<(String, FilterValue)>,
    },
    /// A SQL query run at the origin, in the origin's dialect.
    Query(String),
    /// A MongoDB aggregation pipeline run on a collection.
    Pipeline {
        /// The collection.
        collection: String,
        /// The pipeline stages, as a JSON array (Extended JSON).
        pipeline: String,
    },
}

/// The embedded local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStore {
    /// Its SQLite file.
    pub path: PathBuf,
    /// The most its file may grow to, in bytes (beyond it writes fail as a full disk would).
    pub max_size: Option<u64>,
}

impl Config {
    /// Reads and checks a config file; `${VAR}` is taken from the process environment.
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            reason: format!("cannot read the config file: {e}"),
            fix: "check the path given to --config".into(),
        })?;
        parse_str(&text, path, &|name| std::env::var(name).ok())
    }

    /// The user with this login name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The origin with this name.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.origins.iter().find(|o| o.name == name)
    }
}
