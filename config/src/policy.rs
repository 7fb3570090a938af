//! The safety parts of the config: role rules (grants, columns, row filters),
//! guardrails, the audit log and the injection policy.

use std::path::PathBuf;
use std::time::Duration;

use crate::raw::{ActionName, FilterValue, FsyncName, MaskName, PrivilegeName, RowCapName};

/// What a role may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// Patterns the role may read (shorthand for a `select` grant).
    pub allow: Vec<String>,
    /// Patterns the role may not touch at all, overriding every grant.
    pub deny: Vec<String>,
    /// Grants with explicit privileges.
    pub grants: Vec<Grant>,
    /// Column rules per table pattern.
    pub columns: Vec<ColumnRule>,
    /// Row filters per table pattern.
    pub row_filters: Vec<RowFilter>,
    /// Guardrails overriding the global ones for this role's users.
    pub guardrails: Guardrails,
}

/// Privileges on the tables a pattern covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `schema.table` pattern.
    pub table: String,
    /// What the grant allows.
    pub privileges: Vec<Privilege>,
}

/// One privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// Read.
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

impl Privilege {
    /// Lower-case name, as in the config.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Select => "select",
            Privilege::Insert => "insert",
            Privilege::Update => "update",
            Privilege::Delete => "delete",
        }
    }
}

/// Which columns of the tables a pattern covers the role sees, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    /// `schema.table` pattern.
    pub table: String,
    /// When set, only these columns are readable (plus masked ones).
    pub allow: Option<Vec<String>>,
    /// Columns that are never readable.
    pub deny: Vec<String>,
    /// Columns readable only masked.
    pub masks: Vec<(String, Mask)>,
}

/// How a masked column reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// A constant: `'***'` for text, NULL for other types.
    Redact,
    /// The hex MD5 of the value's text (NULL stays NULL): joinable, not readable.
    Hash,
}

/// Rows of the tables a pattern covers that the role sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    /// `schema.table` pattern.
    pub table: String,
    /// SQL predicate over the table's columns; may use `current_user` and `user.<attribute>`.
    pub predicate: String,
    /// The predicate, parsed ([`crate::row_filter::parse_predicate`]).
    pub expr: sqlparser::ast::Expr,
    /// Where it was written, for errors found when it is compiled.
    pub line: Option<u64>,
}

/// Limits on statements; unset fields fall back to the global value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// Most rows a statement returns.
    pub max_rows: Option<u64>,
    /// What happens beyond `max_rows`.
    pub on_max_rows: Option<RowCapAction>,
    /// Longest a statement may run, streaming included.
    pub statement_timeout: Option<Duration>,
    /// Most bytes a result may carry.
    pub max_result_bytes: Option<u64>,
    /// Statements a user may run at once (over all their sessions).
    pub max_concurrent_statements: Option<u32>,
    /// Largest cartesian product (rows) a statement may form.
    pub max_cartesian_rows: Option<u64>,
}

impl Guardrails {
    /// `self`, with unset fields taken from `base`.
    pub fn or(&self, base: &Guardrails) -> Guardrails {
        Guardrails {
            max_rows: self.max_rows.or(base.max_rows),
            on_max_rows: self.on_max_rows.or(base.on_max_rows),
            statement_timeout: self.statement_timeout.or(base.statement_timeout),
            max_result_bytes: self.max_result_bytes.or(base.max_result_bytes),
            max_concurrent_statements: self
                .max_concurrent_statements
                .or(base.max_concurrent_statements),
            max_cartesian_rows: self.max_cartesian_rows.or(base.max_cartesian_rows),
        }
    }
}

/// `on_max_rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCapAction {
    /// Return the first `max_rows` rows and a NOTICE.
    Truncate,
    /// Fail the statement (54000).
    Error,
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// JSON-lines file, appended to.
    pub path: PathBuf,
    /// When records are forced to disk.
    pub fsync: Fsync,
}

/// `audit.fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every record.
    Always,
    /// At most once a second, and at shutdown.
    Interval,
    /// Left to the operating system (records are still written at once).
    Never,
}

/// Injection analysis and function policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Safety {
    /// What each injection finding leads to.
    pub injection: Injection,
    /// Functions never planned (added to the built-in list).
    pub deny_functions: Vec<String>,
    /// Step graphs: what a denied step does to its request.
    pub deny_policy: DenyPolicy,
    /// Instruction-like text in what agents send and receive.
    pub prompt_guard: PromptGuard,
}

/// `safety.deny_policy`: what a step the pipeline refuses does to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyPolicy {
    /// The denied steps are stripped (named in the warnings) and the rest runs.
    #[default]
    Partial,
    /// The whole request is refused.
    Block,
}

/// `safety.prompt_guard`: text addressed to a model, in requests and results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptGuard {
    /// What instruction-like text in a request leads to (default warn).
    pub request: Action,
    /// Whether result values are scanned and flagged in warnings (default true).
    pub results: bool,
    /// Phrases matched case-insensitively, in addition to the built-in ones.
    pub patterns: Vec<String>,
}

impl Default for PromptGuard {
    fn default() -> Self {
        PromptGuard {
            request: Action::Warn,
            results: true,
            patterns: Vec::new(),
        }
    }
}

/// Per finding: allow, warn (audit + NOTICE) or deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// `OR 1=1`, `OR 'a'='a'`, `OR x=x`.
    pub tautology: Action,
    /// A UNION mixing user tables with pg_catalog/information_schema.
    pub union_catalog: Action,
    /// Several statements in one simple query.
    pub stacked: Action,
    /// A line comment ending the statement (`... --`), the classic truncation.
    pub comment: Action,
    /// Sleep-like calls used as timing probes.
    pub timing: Action,
}

impl Default for Injection {
    fn default() -> Self {
        Injection {
            tautology: Action::Deny,
            union_catalog: Action::Deny,
            stacked: Action::Warn,
            comment: Action::Warn,
            timing: Action::Deny,
        }
    }
}

/// What a finding leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Allow,
    /// Recorded in the audit log and sent to the client as a NOTICE.
    Warn,
    /// The statement is refused.
    Deny,
}

/// Reads `30s`, `500ms`, `2m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Reads a byte count: a number, or `512kB`, `10MB`, `1GB` (powers of 1024, as PostgreSQL).
pub(crate) fn parse_bytes(value: &FilterValue) -> Option<u64> {
    match value {
        FilterValue::Int(n) => u64::try_from(*n).ok(),
        FilterValue::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (n, unit) = t.split_at(split);
            let n: u64 = n.parse().ok()?;
            let mul = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" => 1 << 10,
                "mb" => 1 << 20,
                "gb" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mul)
        }
        _ => None,
    }
}

impl From<PrivilegeName> for Privilege {
    fn from(p: PrivilegeName) -> Self {
        match p {
            PrivilegeName::Select => Privilege::Select,
            PrivilegeName::Insert => Privilege::Insert,
            PrivilegeName::Update => Privilege::Update,
            PrivilegeName::Delete => Privilege::Delete,
        }
    }
}

impl From<MaskName> for Mask {
    fn from(m: MaskName) -> Self {
        match m {
            MaskName::Redact => Mask::Redact,
            MaskName::Hash => Mask::Hash,
        }
    }
}

impl From<ActionName> for Action {
    fn from(a: ActionName) -> Self {
        match a {
            ActionName::Allow => Action::Allow,
            ActionName::Warn => Action::Warn,
            ActionName::Deny => Action::Deny,
        }
    }
}

impl From<FsyncName> for Fsync {
    fn from(f: FsyncName) -> Self {
        match f {
            FsyncName::Always => Fsync::Always,
            FsyncName::Interval => Fsync::Interval,
            FsyncName::Never => Fsync::Never,
        }
    }
}

impl From<RowCapName> for RowCapAction {
    fn from(r: RowCapName) -> Self {
        match r {
            RowCapName::Truncate => RowCapAction::Truncate,
            RowCapName::Error => RowCapAction::Error,
        }
    }
}
