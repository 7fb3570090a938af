//! The config's roles, compiled: who may touch which table, column and row.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Expr as SqlExpr, VisitMut, VisitorMut};
use switchyard_config::{
    Config, FilterValue, Guardrails, Injection, Mask, Privilege, RowCapAction,
};

use crate::grants::TablePattern;

#[derive(Debug, Clone)]
struct CompiledRole {
    deny: Vec<TablePattern>,
    grants: Vec<(TablePattern, Vec<Privilege>)>,
    columns: Vec<(TablePattern, switchyard_config::ColumnRule)>,
    row_filters: Vec<(TablePattern, SqlExpr)>,
    guardrails: Guardrails,
}

/// Functions never planned, whatever the config says: they read the server's files,
/// reach other servers, change settings, signal backends or only probe timing.
const DENIED_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "lo_import",
    "lo_export",
    "lo_get",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_send_query",
    "set_config",
    "pg_reload_conf",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_advisory_lock",
    "pg_logical_emit_message",
    "query_to_xml",
    "copy_to",
];

/// Functions that only make sense as timing probes.
pub(crate) const TIMING_FUNCTIONS: &[&str] = &[
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "sleep",
    "benchmark",
    "waitfor",
];

/// Everything the pipeline needs from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    roles: BTreeMap<String, CompiledRole>,
    users: HashMap<String, (Vec<String>, BTreeMap<String, FilterValue>)>,
    pub(crate) guardrails: Guardrails,
    pub(crate) injection: Injection,
    denied_functions: HashSet<String>,
    origins: HashMap<(String, String), String>,
    pub(crate) default_schema: String,
}

impl Policy {
    /// The schema unqualified table names resolve in.
    pub fn default_schema(&self) -> &str {
        &self.default_schema
    }

    /// Compiles the config's roles (their row filters were parsed when the config was checked).
    pub fn new(config: &Config, default_schema: &str) -> Policy {
        let mut roles = BTreeMap::new();
        for (name, role) in &config.roles {
            let mut grants: Vec<(TablePattern, Vec<Privilege>)> = role
                .allow
                .iter()
                .map(|p| (TablePattern::parse(p), vec![Privilege::Select]))
                .collect();
            grants.extend(
                role.grants
                    .iter()
                    .map(|g| (TablePattern::parse(&g.table), g.privileges.clone())),
            );
            let row_filters = role
                .row_filters
                .iter()
                .map(|f| (TablePattern::parse(&f.table), f.expr.clone()))
                .collect();
            roles.insert(
                name.clone(),
                CompiledRole {
                    deny: role.deny.iter().map(|p| TablePattern::parse(p)).collect(),
                    grants,
                    columns: role
                        .columns
                        .iter()
                        .map(|c| (TablePattern::parse(&c.table), c.clone()))
                        .collect(),
                    row_filters,
                    guardrails: role.guardrails.clone(),
                },
            );
        }
        let mut denied_functions: HashSet<String> =
            DENIED_FUNCTIONS.iter().map(|s| s.to_string()).collect();
        denied_functions.extend(config.safety.deny_functions.iter().cloned());
        Policy {
            roles,
            users: config
                .users
                .iter()
                .map(|u| (u.name.clone(), (u.roles.clone(), u.attributes.clone())))
                .collect(),
            guardrails: config.guardrails.clone(),
            injection: config.safety.injection.clone(),
            denied_functions,
            // A materialized dataset is read from the local store, not its origin.
            origins: config
                .datasets
                .iter()
                .map(|d| {
                    let origin = match d.mode {
                        switchyard_config::Mode::Materialize { .. } => "local".to_string(),
                        switchyard_config::Mode::Federate => d.origin.clone(),
                    };
                    ((d.schema.clone(), d.name.clone()), origin)
                })
                .collect(),
            default_schema: default_schema.to_string(),
        }
    }

    /// The principal for a logged-in user (unknown users get no roles).
    pub fn principal(&self, user: &str) -> Principal {
        let (roles, attributes) = self.users.get(user).cloned().unwrap_or_default();
        Principal {
            user: user.to_string(),
            roles,
            attributes,
        }
    }

    /// Whether `name` (lower case) may never be called.
    pub fn function_denied(&self, name: &str) -> bool {
        self.denied_functions.contains(&name.to_ascii_lowercase())
    }

    /// The origin a dataset lives at.
    pub fn origin_of(&self, schema: &str, table: &str) -> Option<&str> {
        self.origins
            .get(&(schema.to_string(), table.to_string()))
            .map(String::as_str)
    }

    fn roles_of<'a>(&'a self, who: &'a Principal) -> impl Iterator<Item = &'a CompiledRole> + 'a {
        who.roles.iter().filter_map(|r| self.roles.get(r))
    }

    /// What `who` may do with `schema.table`.
    pub fn access(&self, who: &Principal, schema: &str, table: &str) -> TableAccess {
        let denied = self
            .roles_of(who)
            .any(|r| r.deny.iter().any(|p| p.matches(schema, table)));
        let mut access = TableAccess::default();
        if denied {
            return access;
        }
        let mut readers = Vec::new();
        for role in self.roles_of(who) {
            let mut reads = false;
            for (pattern, privileges) in &role.grants {
                if pattern.matches(schema, table) {
                    access.privileges.extend(privileges.iter().copied());
                    reads |= privileges.contains(&Privilege::Select);
                }
            }
            if reads {
                readers.push(role);
            }
        }
        // Row filters: a reading role without a filter sees every row; otherwise
        // the user sees the rows any of their roles' filters admit (roles add up).
        let mut filters = Vec::new();
        let mut unrestricted = false;
        for role in &readers {
            let mine: Vec<&SqlExpr> = role
                .row_filters
                .iter()
                .filter(|(p, _)| p.matches(schema, table))
                .map(|(_, e)| e)
                .collect();
            if mine.is_empty() {
                unrestricted = true;
            } else {
                filters.extend(mine.into_iter().map(|e| who.bind(e)));
            }
        }
        access.row_filter = (!unrestricted && !filters.is_empty()).then_some(filters);
        access.column_rules = readers
            .iter()
            .map(|role| {
                role.columns
                    .iter()
                    .filter(|(p, _)| p.matches(schema, table))
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .collect();
        access
    }

    /// Whether `who` sees `schema.table` in catalog listings (psql `\dt`,
    /// information_schema, pg_catalog): when they may read it.
    pub fn visible(&self, who: &Principal, schema: &str, table: &str) -> bool {
        crate::rbac::is_catalog(schema)
            || self
                .access(who, schema, table)
                .privileges
                .contains(&Privilege::Select)
    }

    /// The columns of `schema.table` as `who` reads them: denied columns left out,
    /// hash-masked columns as text (what a query returns for them).
    pub fn visible_columns(
        &self,
        who: &Principal,
        schema: &str,
        table: &str,
        columns: &datafusion::arrow::datatypes::SchemaRef,
    ) -> datafusion::arrow::datatypes::SchemaRef {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        if crate::rbac::is_catalog(schema) {
            return std::sync::Arc::clone(columns);
        }
        let access = self.access(who, schema, table);
        if !access.has_column_rules() {
            return std::sync::Arc::clone(columns);
        }
        let fields: Vec<Field> = columns
            .fields()
            .iter()
            .filter_map(|f| match access.column(f.name()) {
                ColumnAccess::Plain | ColumnAccess::Masked(Mask::Redact) => {
                    Some(f.as_ref().clone())
                }
                ColumnAccess::Masked(Mask::Hash) => {
                    Some(Field::new(f.name(), DataType::Utf8, f.is_nullable()))
                }
                ColumnAccess::Denied => None,
            })
            .collect();
        std::sync::Arc::new(Schema::new_with_metadata(
            fields,
            columns.metadata().clone(),
        ))
    }

    /// Whether any role of `who` grants one of `privileges` on anything.
    pub fn any_privilege(&self, who: &Principal, privileges: &[Privilege]) -> bool {
        self.roles_of(who).any(|r| {
            r.grants
                .iter()
                .any(|(_, ps)| ps.iter().any(|p| privileges.contains(p)))
        })
    }

    /// The guardrails for `who`: each role's own values over the global ones; with
    /// several roles, the most generous value wins (roles add up, as grants do).
    pub fn guardrails(&self, who: &Principal) -> Guardrails {
        let mut out: Option<Guardrails> = None;
        for role in self.roles_of(who) {
            let g = role.guardrails.or(&self.guardrails);
            out = Some(match out {
                None => g,
                Some(o) => Guardrails {
                    max_rows: generous(o.max_rows, g.max_rows),
                    on_max_rows: match (o.on_max_rows, g.on_max_rows) {
                        (Some(RowCapAction::Truncate), _) | (_, Some(RowCapAction::Truncate)) => {
                            Some(RowCapAction::Truncate)
                        }
                        (a, b) => a.or(b),
                    },
                    statement_timeout: generous(o.statement_timeout, g.statement_timeout),
                    max_result_bytes: generous(o.max_result_bytes, g.max_result_bytes),
                    max_concurrent_statements: generous(
                        o.max_concurrent_statements,
                        g.max_concurrent_statements,
                    ),
                    max_cartesian_rows: generous(o.max_cartesian_rows, g.max_cartesian_rows),
                },
            });
        }
        out.unwrap_or_else(|| self.guardrails.clone())
    }
}

/// `None` is "no limit", the most generous.
fn generous<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Login name.
    pub user: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Attributes for row filters.
    pub attributes: BTreeMap<String, FilterValue>,
}

impl Principal {
    /// A row filter with `current_user`/`session_user` and `user.<attr>` replaced by literals.
    fn bind(&self, expr: &SqlExpr) -> SqlExpr {
        struct Bind<'a>(&'a Principal);
        impl VisitorMut for Bind<'_> {
            type Break = ();
            fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
                let who = self.0;
                let literal = |v: ast::Value| SqlExpr::value(v);
                let replacement = match &*expr {
                    SqlExpr::Identifier(i)
                        if i.quote_style.is_none()
                            && matches!(
                                i.value.to_ascii_lowercase().as_str(),
                                "current_user" | "session_user"
                            ) =>
                    {
                        Some(literal(ast::Value::SingleQuotedString(who.user.clone())))
                    }
                    SqlExpr::Function(f)
                        if matches!(
                            f.name.to_string().to_ascii_lowercase().as_str(),
                            "current_user" | "session_user"
                        ) =>
                    {
                        Some(literal(ast::Value::SingleQuotedString(who.user.clone())))
                    }
                    other => switchyard_config::row_filter::user_attribute(other)
                        .map(|attr| who.attribute(attr)),
                };
                if let Some(r) = replacement {
                    *expr = r;
                }
                ControlFlow::Continue(())
            }
        }
        let mut e = expr.clone();
        let _ = e.visit(&mut Bind(self));
        e
    }
}

impl Principal {
    /// `user.<name>` as a SQL literal; NULL (the filter admits nothing) when unset.
    fn attribute(&self, name: &str) -> SqlExpr {
        let v = match self.attributes.get(name) {
            Some(FilterValue::Text(t)) => ast::Value::SingleQuotedString(t.clone()),
            Some(FilterValue::Int(n)) => ast::Value::Number(n.to_string(), false),
            Some(FilterValue::Float(f)) => ast::Value::Number(f.to_string(), false),
            Some(FilterValue::Bool(b)) => ast::Value::Boolean(*b),
            None => ast::Value::Null,
        };
        SqlExpr::value(v)
    }
}

/// A user's access to one table.
#[derive(Debug, Clone, Default)]
pub struct TableAccess {
    /// Granted privileges.
    pub privileges: BTreeSet<Privilege>,
    /// Predicates (already bound to the user), ORed; `None` means every row.
    pub row_filter: Option<Vec<SqlExpr>>,
    /// Column rules of each role that may read the table.
    column_rules: Vec<Vec<switchyard_config::ColumnRule>>,
}

/// How one column reads for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnAccess {
    /// As stored.
    Plain,
    /// Masked.
    Masked(Mask),
    /// Not at all.
    Denied,
}

impl TableAccess {
    /// Whether any column rule applies (otherwise every column reads plain).
    pub fn has_column_rules(&self) -> bool {
        self.column_rules.iter().any(|r| !r.is_empty())
    }

    /// How `column` reads: the most open access any reading role gives.
    pub fn column(&self, column: &str) -> ColumnAccess {
        let mut best = ColumnAccess::Denied;
        for rules in &self.column_rules {
            let mut mine = ColumnAccess::Plain;
            for rule in rules {
                let masked = rule
                    .masks
                    .iter()
                    .find(|(c, _)| c == column)
                    .map(|(_, m)| *m);
                if rule.deny.iter().any(|c| c == column) {
                    mine = ColumnAccess::Denied;
                } else if let Some(m) = masked {
                    if mine == ColumnAccess::Plain {
                        mine = ColumnAccess::Masked(m);
                    }
                } else if rule
                    .allow
                    .as_ref()
                    .is_some_and(|list| !list.iter().any(|c| c == column))
                {
                    mine = ColumnAccess::Denied;
                }
            }
            best = match (best, mine) {
                (_, ColumnAccess::Plain) | (ColumnAccess::Plain, _) => ColumnAccess::Plain,
                (ColumnAccess::Masked(m), _) | (_, ColumnAccess::Masked(m)) => {
                    ColumnAccess::Masked(m)
                }
                _ => ColumnAccess::Denied,
            };
        }
        if self.column_rules.is_empty() {
            ColumnAccess::Plain
        } else {
            best
        }
    }
}
