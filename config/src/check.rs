//! Turns the raw YAML into a checked [`Config`], or the first error with its line and fix.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::env::{expand, ExpandError};
use crate::policy::{parse_bytes, parse_duration};
use crate::raw::{self, OriginKindName, RawConfig, Str, TlsModeName};
use crate::{
    Audit, ColumnRule, ColumnType, Config, ConfigError, Dataset, DatasetSource, DeclaredColumn,
    Fsync, Grant, Guardrails, Injection, LocalStore, MongoOrigin, Origin, OriginKind,
    PostgresOrigin, Result, Role, RowFilter, Safety, Tls, TlsMode, User,
};

/// Schemas Switchyard itself owns; datasets may not use them.
const RESERVED_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "local"];

/// Parses and checks config text as if read from `file`, with `env` giving `${VAR}` values.
pub fn parse_str(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        let inner = e.without_snippet();
        let reason = inner.to_string();
        // The plain message sometimes ends with its own " at line X column Y"; drop it, we print the line.
        let reason = match reason.find(" at line ") {
            Some(i) => reason[..i].to_string(),
            None => reason,
        };
        ConfigError {
            file: file.to_path_buf(),
            line: e.location().map(|l| l.line()).filter(|l| *l > 0),
            fix: yaml_fix(&reason),
            reason,
        }
    })?;
    Checker {
        file,
        env,
        base: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
    }
    .check(raw)
}

fn yaml_fix(reason: &str) -> String {
    if reason.contains("unknown field") {
        "remove the key or correct its spelling; the expected keys are listed above".into()
    } else if reason.contains("unknown variant") {
        "use one of the values listed".into()
    } else {
        "correct the YAML at this line".into()
    }
}

struct Checker<'a> {
    file: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    base: PathBuf,
}

impl Checker<'_> {
    fn err(
        &self,
        line: Option<u64>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// A value with `${VAR}` expanded.
    fn expand(&self, s: &Str, what: &str) -> Result<String> {
        expand(&s.value, self.env).map_err(|e| match e {
            ExpandError::Missing(var) => self.err(
                line(s),
                format!("environment variable {var} (used by {what}) is not set"),
                format!("export {var}=... before starting, or write ${{{var}:-default}}"),
            ),
            ExpandError::Unclosed => self.err(
                line(s),
                format!("{what}: `${{` without a closing `}}`"),
                "write ${NAME}",
            ),
        })
    }

    fn path(&self, s: &Str, what: &str) -> Result<PathBuf> {
        let p = PathBuf::from(self.expand(s, what)?);
        Ok(if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        })
    }

    fn check(&self, raw: RawConfig) -> Result<Config> {
        let listen = match &raw.listen {
            Some(s) => {
                let v = self.expand(s, "listen")?;
                let ok = v
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    return Err(self.err(
                        line(s),
                        format!("listen address {v:?} is not host:port"),
                        "write e.g. listen: 127.0.0.1:6432",
                    ));
                }
                v
            }
            None => "127.0.0.1:6432".to_string(),
        };
        let tls = self.tls(raw.tls.as_ref())?;
        let roles = self.roles(&raw.roles)?;
        let users = self.users(&raw.users, &roles)?;
        let origins = self.origins(&raw.origins)?;
        let datasets = self.datasets(&raw.datasets, &origins)?;
        let data_dir = match &raw.data_dir {
            Some(s) => self.path(s, "data_dir")?,
            None => self.base.join("data"),
        };
        let local = match &raw.local {
            Some(l) => LocalStore {
                path: self.path(&l.path, "local.path")?,
            },
            None => LocalStore {
                path: data_dir.join("local.db"),
            },
        };
        let guardrails = match &raw.guardrails {
            Some(g) => self.guardrails(g, "guardrails")?,
            None => Guardrails::default(),
        };
        let audit = Audit {
            path: match raw.audit.as_ref().and_then(|a| a.path.as_ref()) {
                Some(p) => self.path(p, "audit.path")?,
                None => data_dir.join("audit.jsonl"),
            },
            fsync: raw
                .audit
                .as_ref()
                .and_then(|a| a.fsync.as_ref())
                .map(|f| f.value.into())
                .unwrap_or(Fsync::Interval),
        };
        let safety = self.safety(raw.safety.as_ref())?;
        Ok(Config {
            file: self.file.to_path_buf(),
            listen,
            tls,
            users,
            roles,
            origins,
            datasets,
            local,
            data_dir,
            guardrails,
            audit,
            safety,
        })
    }

    fn tls(&self, raw: Option<&raw::RawTls>) -> Result<Tls> {
        let Some(raw) = raw else {
            return Ok(Tls {
                mode: TlsMode::Disable,
                cert: None,
                key: None,
            });
        };
        let mode = match raw.mode.value {
            TlsModeName::Disable => TlsMode::Disable,
            TlsModeName::Allow => TlsMode::Allow,
            TlsModeName::Require => TlsMode::Require,
        };
        if mode == TlsMode::Disable {
            return Ok(Tls {
                mode,
                cert: None,
                key: None,
            });
        }
        let mut files = Vec::new();
        for (field, value) in [("cert", &raw.cert), ("key", &raw.key)] {
            let Some(value) = value else {
                return Err(self.err(
                    line(&raw.mode),
                    format!("tls.{field} is required when tls.mode is not disable"),
                    format!("add tls.{field}: path/to/{field}.pem, or set mode: disable"),
                ));
            };
            let path = self.path(value, &format!("tls.{field}"))?;
            if !path.is_file() {
                return Err(self.err(
                    line(value),
                    format!("TLS {field} file {} does not exist", path.display()),
                    "give the path of a PEM file (relative paths are read from the config file's folder)",
                ));
            }
            files.push(path);
        }
        let key = files.pop();
        let cert = files.pop();
        Ok(Tls { mode, cert, key })
    }

    fn table_pattern(&self, role: &str, pattern: &str, at: Option<u64>) -> Result<String> {
        let p = pattern.trim();
        let parts: Vec<&str> = p.split('.').collect();
        let valid =
            (p == "*" || parts.len() == 2) && parts.iter().all(|s| *s == "*" || is_identifier(s));
        if !valid {
            return Err(self.err(
                at,
                format!("role {role}: {p:?} is not a table pattern"),
                "write schema.table, schema.*, or *",
            ));
        }
        Ok(p.to_string())
    }

    fn column_names(&self, role: &str, list: &[Str]) -> Result<Vec<String>> {
        list.iter()
            .map(|c| {
                if is_identifier(&c.value) {
                    Ok(c.value.clone())
                } else {
                    Err(self.err(
                        line(c),
                        format!("role {role}: {:?} is not a column name", c.value),
                        "write the column's lower-case name",
                    ))
                }
            })
            .collect()
    }

    fn roles(
        &self,
        raw: &indexmap::IndexMap<String, raw::RawRole>,
    ) -> Result<BTreeMap<String, Role>> {
        let mut roles = BTreeMap::new();
        for (name, role) in raw {
            let mut out = Role::default();
            for pattern in &role.allow {
                out.allow
                    .push(self.table_pattern(name, &pattern.value, line(pattern))?);
            }
            for pattern in &role.deny {
                out.deny
                    .push(self.table_pattern(name, &pattern.value, line(pattern))?);
            }
            for grant in &role.grants {
                let privileges: Vec<_> = grant.privileges.iter().map(|p| p.value.into()).collect();
                for pattern in &grant.tables {
                    out.grants.push(Grant {
                        table: self.table_pattern(name, &pattern.value, line(pattern))?,
                        privileges: privileges.clone(),
                    });
                }
            }
            for (pattern, rule) in &role.columns {
                let table = self.table_pattern(name, pattern, None)?;
                let allow = match &rule.allow {
                    Some(list) => Some(self.column_names(name, list)?),
                    None => None,
                };
                let deny = self.column_names(name, &rule.deny)?;
                let mut masks = Vec::new();
                for (column, mask) in &rule.mask {
                    if !is_identifier(column) {
                        return Err(self.err(
                            line(mask),
                            format!("role {name}: {column:?} is not a column name"),
                            "write the column's lower-case name",
                        ));
                    }
                    masks.push((column.clone(), mask.value.into()));
                }
                out.columns.push(ColumnRule {
                    table,
                    allow,
                    deny,
                    masks,
                });
            }
            for (pattern, predicate) in &role.row_filters {
                let text = self.expand(predicate, &format!("role {name}'s row filter"))?;
                if text.trim().is_empty() {
                    return Err(self.err(
                        line(predicate),
                        format!("role {name}: the row filter for {pattern} is empty"),
                        "write a SQL predicate, e.g. tenant_id = user.tenant",
                    ));
                }
                out.row_filters.push(RowFilter {
                    table: self.table_pattern(name, pattern, line(predicate))?,
                    predicate: text,
                    line: line(predicate),
                });
            }
            if let Some(g) = &role.guardrails {
                out.guardrails = self.guardrails(g, &format!("roles.{name}.guardrails"))?;
            }
            roles.insert(name.clone(), out);
        }
        Ok(roles)
    }

    fn guardrails(&self, raw: &raw::RawGuardrails, what: &str) -> Result<Guardrails> {
        let statement_timeout = match &raw.statement_timeout {
            Some(t) => Some(parse_duration(&t.value).ok_or_else(|| {
                self.err(
                    line(t),
                    format!("{what}.statement_timeout: {:?} is not a duration", t.value),
                    "write e.g. 30s, 500ms, 2m",
                )
            })?),
            None => None,
        };
        let max_result_bytes = match &raw.max_result_bytes {
            Some(b) => Some(parse_bytes(&b.value).ok_or_else(|| {
                self.err(
                    line(b),
                    format!("{what}.max_result_bytes is not a size"),
                    "write a number of bytes or e.g. 512kB, 10MB, 1GB",
                )
            })?),
            None => None,
        };
        Ok(Guardrails {
            max_rows: raw.max_rows,
            on_max_rows: raw.on_max_rows.as_ref().map(|r| r.value.into()),
            statement_timeout,
            max_result_bytes,
            max_concurrent_statements: raw.max_concurrent_statements,
            max_cartesian_rows: raw.max_cartesian_rows,
        })
    }

    fn safety(&self, raw: Option<&raw::RawSafety>) -> Result<Safety> {
        let mut injection = Injection::default();
        let mut deny_functions = Vec::new();
        if let Some(raw) = raw {
            for (finding, action) in &raw.injection {
                let slot = match finding.as_str() {
                    "tautology" => &mut injection.tautology,
                    "union_catalog" => &mut injection.union_catalog,
                    "stacked" => &mut injection.stacked,
                    "comment" => &mut injection.comment,
                    "timing" => &mut injection.timing,
                    other => {
                        return Err(self.err(
                            line(action),
                            format!("safety.injection: unknown finding {other:?}"),
                            "use tautology, union_catalog, stacked, comment or timing",
                        ))
                    }
                };
                *slot = action.value.into();
            }
            for f in &raw.deny_functions {
                deny_functions.push(f.value.trim().to_lowercase());
            }
        }
        Ok(Safety {
            injection,
            deny_functions,
        })
    }

    fn users(&self, raw: &[raw::RawUser], roles: &BTreeMap<String, Role>) -> Result<Vec<User>> {
        let mut users: Vec<User> = Vec::new();
        for u in raw {
            if users.iter().any(|x| x.name == u.name.value) {
                return Err(self.err(
                    line(&u.name),
                    format!("user {} is defined twice", u.name.value),
                    "keep one entry per user name",
                ));
            }
            let password = self.expand(
                &u.password,
                &format!("the password of user {}", u.name.value),
            )?;
            let mut user_roles = Vec::new();
            for r in &u.roles {
                if !roles.contains_key(&r.value) {
                    return Err(self.err(
                        line(r),
                        format!("user {} has unknown role {}", u.name.value, r.value),
                        format!("define it under roles: (known: {})", known(roles.keys())),
                    ));
                }
                user_roles.push(r.value.clone());
            }
            let mut attributes = BTreeMap::new();
            for (key, value) in &u.attributes {
                if !is_identifier(key) {
                    return Err(self.err(
                        line(value),
                        format!("user {}: attribute {key:?} is not a name", u.name.value),
                        "use lower-case letters, digits and _",
                    ));
                }
                let value = match &value.value {
                    raw::FilterValue::Text(t) => raw::FilterValue::Text(self.expand(
                        &serde_saphyr::Spanned {
                            value: t.clone(),
                            referenced: value.referenced,
                            defined: value.defined,
                        },
                        &format!("attribute {key} of user {}", u.name.value),
                    )?),
                    other => other.clone(),
                };
                attributes.insert(key.clone(), value);
            }
            // A row filter naming user.<attr> must find it on every user of the role.
            for r in &user_roles {
                for filter in &roles[r].row_filters {
                    for attr in attribute_refs(&filter.predicate) {
                        if !attributes.contains_key(&attr) {
                            return Err(self.err(
                                line(&u.name),
                                format!(
                                    "user {} has role {r}, whose row filter for {} uses user.{attr}, but no attribute {attr}",
                                    u.name.value, filter.table
                                ),
                                format!("add attributes: {{ {attr}: ... }} to the user"),
                            ));
                        }
                    }
                }
            }
            users.push(User {
                name: u.name.value.clone(),
                password,
                roles: user_roles,
                attributes,
            });
        }
        Ok(users)
    }

    fn origins(&self, raw: &indexmap::IndexMap<String, raw::RawOrigin>) -> Result<Vec<Origin>> {
        let mut origins = Vec::new();
        for (name, o) in raw {
            let at = line(&o.kind);
            if !is_identifier(name) {
                return Err(self.err(
                    at,
                    format!("origin name {name:?} is not a plain name"),
                    "use lower-case letters, digits and _",
                ));
            }
            if o.kind.value != OriginKindName::Mongodb
                && (o.database.is_some() || o.sample_size.is_some() || o.pushdown.is_some())
            {
                return Err(self.err(
                    at,
                    format!(
                        "origin {name}: database, sample_size and pushdown are for mongodb origins"
                    ),
                    "remove them (a postgres origin names its database in the url)",
                ));
            }
            let kind = match o.kind.value {
                OriginKindName::Postgres => {
                    let Some(url) = &o.url else {
                        return Err(self.err(
                            at,
                            format!("origin {name} (postgres) has no url"),
                            "add url: postgres://user:password@host:5432/database",
                        ));
                    };
                    if o.path.is_some() {
                        return Err(self.err(
                            at,
                            format!("origin {name}: `path` is for sqlite and files origins"),
                            "remove path; postgres origins take url",
                        ));
                    }
                    let mut pg = self.postgres_url(url, name)?;
                    if let Some(n) = o.pool_size {
                        pg.pool_size = n.max(1);
                    }
                    if let Some(t) = &o.statement_timeout {
                        pg.statement_timeout = Some(parse_duration(&t.value).ok_or_else(|| {
                            self.err(
                                line(t),
                                format!(
                                    "origin {name}: statement_timeout {:?} is not a duration",
                                    t.value
                                ),
                                "write e.g. 30s, 500ms, 2m",
                            )
                        })?);
                    }
                    OriginKind::Postgres(pg)
                }
                OriginKindName::Mongodb => {
                    let Some(url) = &o.url else {
                        return Err(self.err(
                            at,
                            format!("origin {name} (mongodb) has no url"),
                            "add url: mongodb://host:27017/ (and database:)",
                        ));
                    };
                    let Some(database) = &o.database else {
                        return Err(self.err(
                            at,
                            format!("origin {name} (mongodb) has no database"),
                            "add database: <name of the MongoDB database>",
                        ));
                    };
                    if o.path.is_some() || o.statement_timeout.is_some() || o.pool_size.is_some() {
                        return Err(self.err(
                            at,
                            format!("origin {name}: mongodb origins take url, database and sample_size only"),
                            "remove path, pool_size and statement_timeout",
                        ));
                    }
                    let text = self.expand(url, &format!("origins.{name}.url"))?;
                    let scheme_ok =
                        text.starts_with("mongodb://") || text.starts_with("mongodb+srv://");
                    if !scheme_ok || url::Url::parse(&text).is_err() {
                        return Err(self.err(
                            line(url),
                            format!("origin {name}: bad URL: not a mongodb:// connection string"),
                            "write mongodb://user:password@host:27017/?directConnection=true",
                        ));
                    }
                    OriginKind::Mongodb(MongoOrigin {
                        url: text,
                        database: database.value.clone(),
                        sample_size: o.sample_size.unwrap_or(1000).max(1),
                        pushdown: o.pushdown.unwrap_or(true),
                    })
                }
                OriginKindName::Sqlite | OriginKindName::Files => {
                    let Some(path) = &o.path else {
                        return Err(self.err(
                            at,
                            format!("origin {name} ({}) has no path", kind_name(o.kind.value)),
                            "add path: (a file for sqlite, a folder for files)",
                        ));
                    };
                    if o.url.is_some() {
                        return Err(self.err(
                            at,
                            format!("origin {name}: `url` is for postgres origins"),
                            "remove url; use path",
                        ));
                    }
                    let p = self.path(path, &format!("origins.{name}.path"))?;
                    if o.kind.value == OriginKindName::Sqlite {
                        if !p.is_file() {
                            return Err(self.err(line(path), format!("origin {name}: SQLite file {} does not exist", p.display()), "give the path of an existing SQLite database (relative to the config file)"));
                        }
                        OriginKind::Sqlite { path: p }
                    } else {
                        if !p.is_dir() {
                            return Err(self.err(line(path), format!("origin {name}: folder {} does not exist", p.display()), "give the folder holding the CSV/Parquet/NDJSON files (relative to the config file)"));
                        }
                        OriginKind::Files { path: p }
                    }
                }
            };
            origins.push(Origin {
                name: name.clone(),
                kind,
            });
        }
        Ok(origins)
    }

    fn postgres_url(&self, s: &Str, origin: &str) -> Result<PostgresOrigin> {
        let text = self.expand(s, &format!("origins.{origin}.url"))?;
        let bad = |why: String| {
            self.err(
                line(s),
                format!("origin {origin}: bad URL: {why}"),
                "write postgres://user:password@host:5432/database",
            )
        };
        let url = url::Url::parse(&text).map_err(|e| bad(e.to_string()))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(bad(format!("scheme {:?} is not postgres", url.scheme())));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let database = url.path().trim_start_matches('/');
        if database.is_empty() || database.contains('/') {
            return Err(bad("no database name after the host".into()));
        }
        let decode = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = if url.username().is_empty() {
            "postgres".to_string()
        } else {
            decode(url.username())
        };
        let password = url.password().map(decode);
        let mut sslmode = "prefer".to_string();
        let mut pool_size = 8;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = v.into_owned(),
                "pool_size" => {
                    pool_size = v
                        .parse()
                        .map_err(|_| bad(format!("pool_size={v} is not a number")))?
                }
                other => {
                    return Err(bad(format!(
                        "unknown URL parameter {other:?} (known: sslmode, pool_size)"
                    )))
                }
            }
        }
        if !["disable", "prefer", "require", "verify-ca", "verify-full"].contains(&sslmode.as_str())
        {
            return Err(bad(format!(
                "sslmode={sslmode} is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
        Ok(PostgresOrigin {
            host,
            port: url.port().unwrap_or(5432),
            database: decode(database),
            user,
            password,
            sslmode,
            pool_size,
            statement_timeout: None,
        })
    }

    fn datasets(
        &self,
        raw: &indexmap::IndexMap<String, raw::RawDataset>,
        origins: &[Origin],
    ) -> Result<Vec<Dataset>> {
        let mut out: Vec<Dataset> = Vec::new();
        let mut seen: HashMap<String, Option<u64>> = HashMap::new();
        for (key, d) in raw {
            let at = line(&d.origin);
            let Some(origin) = origins.iter().find(|o| o.name == d.origin.value) else {
                return Err(self.err(
                    at,
                    format!("dataset {key}: unknown origin {}", d.origin.value),
                    format!(
                        "define it under origins: (known: {})",
                        known(origins.iter().map(|o| &o.name))
                    ),
                ));
            };
            let (schema, single) = match key.split_once('.') {
                Some((s, t)) => (s, Some(t)),
                None => (key.as_str(), None),
            };
            for part in std::iter::once(schema).chain(single) {
                if !is_identifier(part) {
                    return Err(self.err(
                        at,
                        format!("dataset name {key:?} is not schema or schema.table"),
                        "use lower-case letters, digits and _ (one dot at most)",
                    ));
                }
            }
            if RESERVED_SCHEMAS.contains(&schema) {
                return Err(self.err(
                    at,
                    format!("dataset {key}: schema {schema} is reserved"),
                    "pick another schema name",
                ));
            }
            let filters: Vec<_> = d.filters.clone().unwrap_or_default().into_iter().collect();
            for (col, _) in &filters {
                if !is_identifier(col) {
                    return Err(self.err(
                        at,
                        format!("dataset {key}: filter column {col:?} is not a plain column name"),
                        "use the column's lower-case name",
                    ));
                }
            }
            let is_mongo = matches!(origin.kind, OriginKind::Mongodb(_));
            let columns = self.columns(key, d, is_mongo, single.is_some())?;
            let mut tables = Vec::new();
            if let Some(pipeline) = &d.pipeline {
                if !is_mongo {
                    return Err(self.err(
                        line(pipeline),
                        format!("dataset {key}: pipeline: is for mongodb origins"),
                        "use query: with SQL for this origin",
                    ));
                }
                let (Some(name), Some(collection), None, None) =
                    (single, &d.table, &d.tables, &d.query)
                else {
                    return Err(self.err(
                        line(pipeline),
                        format!(
                            "dataset {key}: a pipeline dataset names one table and its collection"
                        ),
                        format!("name it {schema}.<table> and add table: <collection>"),
                    ));
                };
                if !filters.is_empty() {
                    return Err(self.err(
                        at,
                        format!("dataset {key}: filters apply to tables, not pipelines"),
                        "put the condition in a $match stage",
                    ));
                }
                let text = match &pipeline.value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let stages: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    self.err(
                        line(pipeline),
                        format!("dataset {key}: pipeline is not JSON: {e}"),
                        "write the stages as a JSON array or a YAML list",
                    )
                })?;
                let ok = stages.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|s| s.as_object().is_some_and(|o| o.len() == 1))
                });
                if !ok {
                    return Err(self.err(
                        line(pipeline),
                        format!("dataset {key}: pipeline must be a list of stages, each one {{\"$stage\": ...}}"),
                        "e.g. [{\"$match\": {\"status\": \"A\"}}]",
                    ));
                }
                tables.push((
                    name.to_string(),
                    DatasetSource::Pipeline {
                        collection: collection.value.clone(),
                        pipeline: stages.to_string(),
                    },
                    line(pipeline),
                ));
            } else {
                if is_mongo && d.query.is_some() {
                    return Err(self.err(
                        at,
                        format!("dataset {key}: mongodb origins run pipelines, not SQL queries"),
                        "use table: <collection> with pipeline: [...]",
                    ));
                }
                match (single, &d.tables, &d.table, &d.query) {
                    (None, Some(list), None, None) => {
                        if list.is_empty() {
                            return Err(self.err(
                                at,
                                format!("dataset {key}: tables is empty"),
                                "list at least one table",
                            ));
                        }
                        for t in list {
                            let name = t.value.rsplit('.').next().unwrap_or(&t.value).to_string();
                            if !is_identifier(&name) {
                                return Err(self.err(
                                    line(t),
                                    format!("dataset {key}: table name {:?} is not plain", t.value),
                                    "use lower-case letters, digits and _",
                                ));
                            }
                            tables.push((
                                name,
                                DatasetSource::Table {
                                    table: t.value.clone(),
                                    filters: filters.clone(),
                                },
                                line(t),
                            ));
                        }
                    }
                    (Some(name), None, Some(table), None) => {
                        tables.push((
                            name.to_string(),
                            DatasetSource::Table {
                                table: table.value.clone(),
                                filters,
                            },
                            at,
                        ));
                    }
                    (Some(name), None, None, Some(query)) => {
                        if !filters.is_empty() {
                            return Err(self.err(
                                at,
                                format!("dataset {key}: filters apply to tables, not queries"),
                                "put the condition in the query's WHERE clause",
                            ));
                        }
                        if matches!(origin.kind, OriginKind::Files { .. }) {
                            return Err(self.err(
                                line(query),
                                format!(
                                    "dataset {key}: origin {} holds files and cannot run a query",
                                    origin.name
                                ),
                                "use table: <file name> instead",
                            ));
                        }
                        let sql = self.expand(query, &format!("datasets.{key}.query"))?;
                        tables.push((name.to_string(), DatasetSource::Query(sql), line(query)));
                    }
                    (None, _, _, _) => {
                        return Err(self.err(at, format!("dataset {key} names a schema, so it needs `tables: [...]`"), format!("add tables: [...], or name one table as {key}.<table> with table: or query:")));
                    }
                    (Some(_), _, _, _) => {
                        return Err(self.err(at, format!("dataset {key} names one table, so it needs exactly one of `table:` or `query:`"), format!("use table: <origin table> or query: <SQL>; for a list, name the dataset by its schema ({schema})")));
                    }
                }
            }
            for (name, source, at) in tables {
                let qualified = format!("{schema}.{name}");
                if let Some(first) = seen.get(&qualified) {
                    let first = first
                        .map(|l| format!(" (first defined at line {l})"))
                        .unwrap_or_default();
                    return Err(self.err(
                        at,
                        format!("dataset {qualified} is defined twice{first}"),
                        "remove one of them or give it another name",
                    ));
                }
                seen.insert(qualified, at);
                out.push(Dataset {
                    schema: schema.to_string(),
                    name,
                    origin: origin.name.clone(),
                    source,
                    line: at,
                    columns: columns.clone(),
                });
            }
        }
        Ok(out)
    }
}

impl Checker<'_> {
    /// The declared columns of a dataset (MongoDB only; one-table datasets).
    fn columns(
        &self,
        key: &str,
        d: &raw::RawDataset,
        is_mongo: bool,
        single: bool,
    ) -> Result<Vec<DeclaredColumn>> {
        let Some(list) = &d.columns else {
            return Ok(vec![]);
        };
        let at = line(&d.origin);
        if !is_mongo {
            return Err(self.err(
                at,
                format!("dataset {key}: columns: is for mongodb origins"),
                "remove columns:; other origins report their own columns",
            ));
        }
        if !single {
            return Err(self.err(
                at,
                format!("dataset {key}: columns: needs a one-table dataset"),
                format!("declare the columns on {key}.<table> with table: <collection>"),
            ));
        }
        let mut out: Vec<DeclaredColumn> = Vec::new();
        for c in list {
            if !is_identifier(&c.name.value) {
                return Err(self.err(
                    line(&c.name),
                    format!("dataset {key}: column name {:?} is not plain", c.name.value),
                    "use lower-case letters, digits and _",
                ));
            }
            if out.iter().any(|o| o.name == c.name.value) {
                return Err(self.err(
                    line(&c.name),
                    format!("dataset {key}: column {} is declared twice", c.name.value),
                    "remove one of them",
                ));
            }
            let Some(sql_type) = ColumnType::parse(&c.sql_type.value) else {
                return Err(self.err(
                    line(&c.sql_type),
                    format!("dataset {key}: column {}: unknown type {:?}", c.name.value, c.sql_type.value),
                    "use int2, int4, int8, float4, float8, numeric(p,s), text, bool, date, timestamp, timestamptz, jsonb, or T[] of a scalar",
                ));
            };
            let path = c
                .path
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_else(|| c.name.value.clone());
            if path.is_empty() || path.split('.').any(|p| p.is_empty() || p.starts_with('$')) {
                return Err(self.err(
                    c.path.as_ref().map(line).unwrap_or(line(&c.name)),
                    format!("dataset {key}: column {}: bad path {path:?}", c.name.value),
                    "write a dotted field path such as address.city",
                ));
            }
            out.push(DeclaredColumn {
                name: c.name.value.clone(),
                sql_type,
                path,
            });
        }
        if out.is_empty() {
            return Err(self.err(
                at,
                format!("dataset {key}: columns: is empty"),
                "declare at least one column, or remove columns: to infer them",
            ));
        }
        Ok(out)
    }
}

/// The `user.<name>` references in a row filter (outside string literals).
pub(crate) fn attribute_refs(predicate: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_string = false;
    let bytes = predicate.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            in_string = !in_string;
        } else if !in_string
            && predicate[i..].starts_with("user.")
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let rest = &predicate[i + 5..];
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            if end > 0 {
                out.push(rest[..end].to_string());
            }
            i += 5 + end;
            continue;
        }
        i += 1;
    }
    out
}

fn line<T>(s: &serde_saphyr::Spanned<T>) -> Option<u64> {
    Some(s.referenced.line()).filter(|l| *l > 0)
}

fn kind_name(k: OriginKindName) -> &'static str {
    match k {
        OriginKindName::Postgres => "postgres",
        OriginKindName::Sqlite => "sqlite",
        OriginKindName::Files => "files",
        OriginKindName::Mongodb => "mongodb",
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none yet".into()
    } else {
        v.join(", ")
    }
}

/// Names that need no quoting in SQL: DataFusion folds unquoted names to lower case.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}
