//! The YAML file as written: every field the user may type, with source
//! locations kept on the values later checks need to point at.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A string with the line it was written on.
pub type Str = Spanned<String>;

/// The top level of a Switchyard config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<Str>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub roles: IndexMap<String, RawRole>,
    #[serde(default)]
    pub origins: IndexMap<String, RawOrigin>,
    #[serde(default)]
    pub datasets: IndexMap<String, RawDataset>,
    pub local: Option<RawLocal>,
    pub data_dir: Option<Str>,
    pub guardrails: Option<RawGuardrails>,
    pub audit: Option<RawAudit>,
    pub safety: Option<RawSafety>,
    pub http: Option<RawHttp>,
}

/// `http:`, the step-graph REST and MCP door.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<Str>,
    pub results_ttl: Option<Str>,
    pub results_memory: Option<Spanned<FilterValue>>,
    pub max_body: Option<Spanned<FilterValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub mode: Spanned<TlsModeName>,
    pub cert: Option<Str>,
    pub key: Option<Str>,
}

/// `tls.mode` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsModeName {
    Disable,
    Allow,
    Require,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Str,
    pub password: Str,
    #[serde(default)]
    pub roles: Vec<Str>,
    /// Per-user values row filters may use as `user.<name>`.
    #[serde(default)]
    pub attributes: IndexMap<String, Spanned<FilterValue>>,
    /// Bearer tokens for the HTTP door (from the environment, ideally).
    #[serde(default)]
    pub tokens: Vec<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    #[serde(default)]
    pub allow: Vec<Str>,
    #[serde(default)]
    pub deny: Vec<Str>,
    #[serde(default)]
    pub grants: Vec<RawGrant>,
    /// Table pattern → column rules.
    #[serde(default)]
    pub columns: IndexMap<String, RawColumns>,
    /// Table pattern → SQL predicate.
    #[serde(default)]
    pub row_filters: IndexMap<String, Str>,
    pub guardrails: Option<RawGuardrails>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    pub tables: Vec<Str>,
    pub privileges: Vec<Spanned<PrivilegeName>>,
}

/// `privileges:` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PrivilegeName {
    Select,
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawColumns {
    pub allow: Option<Vec<Str>>,
    #[serde(default)]
    pub deny: Vec<Str>,
    #[serde(default)]
    pub mask: IndexMap<String, Spanned<MaskName>>,
}

/// Column mask kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MaskName {
    Redact,
    Hash,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrails {
    pub max_rows: Option<u64>,
    pub on_max_rows: Option<Spanned<RowCapName>>,
    pub statement_timeout: Option<Str>,
    pub max_result_bytes: Option<Spanned<FilterValue>>,
    pub max_concurrent_statements: Option<u32>,
    pub max_cartesian_rows: Option<u64>,
}

/// `on_max_rows` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RowCapName {
    Truncate,
    Error,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<Str>,
    pub fsync: Option<Spanned<FsyncName>>,
}

/// `audit.fsync` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncName {
    Always,
    Interval,
    Never,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSafety {
    #[serde(default)]
    pub injection: IndexMap<String, Spanned<ActionName>>,
    #[serde(default)]
    pub deny_functions: Vec<Str>,
    /// Step graphs: strip denied steps (`partial`) or refuse the request (`block`).
    pub deny_policy: Option<Spanned<DenyPolicyName>>,
    pub prompt_guard: Option<RawPromptGuard>,
}

/// `safety.deny_policy` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DenyPolicyName {
    Partial,
    Block,
}

/// `safety.prompt_guard`: instruction-like text in what agents send and receive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptGuard {
    /// What instruction-like text in a request leads to.
    pub request: Option<Spanned<ActionName>>,
    /// Whether result values are scanned (warnings only).
    pub results: Option<bool>,
    /// Extra phrases (case-insensitive), added to the built-in list.
    #[serde(default)]
    pub patterns: Vec<Str>,
}

/// What a finding of the injection analyser leads to.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Warn,
    Deny,
    Allow,
}

/// One origin; which fields apply depends on `kind`, checked after parsing so
/// that errors keep their line numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrigin {
    pub kind: Spanned<OriginKindName>,
    pub url: Option<Str>,
    pub path: Option<Str>,
    pub pool_size: Option<u32>,
    /// Longest a query may run at this origin (the origin cancels it).
    pub statement_timeout: Option<Str>,
    /// MongoDB: the database holding the collections.
    pub database: Option<Str>,
    /// MongoDB: documents sampled to infer a collection's columns.
    pub sample_size: Option<u32>,
    /// MongoDB: `false` runs everything but the collection scan in Switchyard
    /// (for measuring what pushdown saves).
    pub pushdown: Option<bool>,
}

/// `origins.*.kind` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OriginKindName {
    Postgres,
    Sqlite,
    Files,
    Mongodb,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    pub origin: Str,
    pub tables: Option<Vec<Str>>,
    pub table: Option<Str>,
    pub query: Option<Str>,
    pub filters: Option<IndexMap<String, FilterValue>>,
    /// MongoDB: an aggregation pipeline (a JSON string or a YAML list) run on `table`.
    pub pipeline: Option<Spanned<serde_json::Value>>,
    /// MongoDB: declared columns (otherwise inferred by sampling).
    pub columns: Option<Vec<RawColumn>>,
    /// `federate` (the default), `materialize` or `sync`.
    pub mode: Option<Str>,
    /// Materialized: keep the copy fresh from the origin's change feed.
    pub live: Option<Spanned<bool>>,
    /// Materialized: copy the dataset again at this interval (`10m`, `1h`).
    pub refresh: Option<Str>,
    /// Live PostgreSQL datasets: the replication slot's name.
    pub slot: Option<Str>,
    /// Live PostgreSQL datasets: the publication's name.
    pub publication: Option<Str>,
    /// Sync datasets: the conflict policy.
    pub conflict: Option<Str>,
    /// Sync datasets: the column conflicts are detected (and last writes found) by.
    pub version_column: Option<Str>,
}

/// One declared column of a MongoDB dataset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawColumn {
    pub name: Str,
    #[serde(rename = "type")]
    pub sql_type: Str,
    /// Dotted path into the document; the column name when absent.
    pub path: Option<Str>,
}

/// A literal in a dataset's `filters:` map.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FilterValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    pub path: Option<Str>,
    /// The most the store's file may grow to (`512MB`, `10GB`).
    pub max_size: Option<Spanned<FilterValue>>,
}
