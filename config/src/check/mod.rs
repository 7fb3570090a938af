//! Turns the raw YAML into a checked [`Config`], or the first error with its line and fix.

mod datasets;
mod origins;
mod roles;
mod safety;
mod tls;

use std::path::{Path, PathBuf};

use crate::env::{expand, ExpandError};
use crate::policy::parse_bytes;
use crate::raw::{OriginKindName, RawConfig, Str};
use crate::{Audit, Config, ConfigError, Fsync, Guardrails, LocalStore, Result};

/// Schemas Switchyard itself owns; datasets may not use them.
const RESERVED_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "local", "switchyard"];

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
            Some(s) => self.address(s, "listen", "127.0.0.1:6432")?,
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
                path: match &l.path {
                    Some(p) => self.path(p, "local.path")?,
                    None => data_dir.join("local.db"),
                },
                max_size: match &l.max_size {
                    Some(v) => Some(parse_bytes(&v.value).ok_or_else(|| {
                        self.err(
                            line(v),
                            "local.max_size is not a size".to_string(),
                            "write it as 512MB or 10GB",
                        )
                    })?),
                    None => None,
                },
            },
            None => LocalStore {
                path: data_dir.join("local.db"),
                max_size: None,
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
        let http = match &raw.http {
            Some(h) => Some(self.http(h)?),
            None => None,
        };
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
            http,
        })
    }

    fn http(&self, raw: &crate::raw::RawHttp) -> Result<crate::Http> {
        let listen = match &raw.listen {
            Some(s) => self.address(s, "http.listen", "127.0.0.1:8787")?,
            None => "127.0.0.1:8787".to_string(),
        };
        let results_ttl = match &raw.results_ttl {
            Some(t) => crate::policy::parse_duration(&t.value)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    self.err(
                        line(t),
                        format!("http.results_ttl: {:?} is not a duration", t.value),
                        "write e.g. 5m, 30s, 1h",
                    )
                })?,
            None => std::time::Duration::from_secs(300),
        };
        let max_body = match &raw.max_body {
            Some(v) => parse_bytes(&v.value).filter(|b| *b > 0).ok_or_else(|| {
                self.err(
                    line(v),
                    "http.max_body is not a size".to_string(),
                    "write it as 1MB or 4MB",
                )
            })?,
            None => 4 * 1024 * 1024,
        };
        let results_memory = match &raw.results_memory {
            Some(v) => parse_bytes(&v.value).ok_or_else(|| {
                self.err(
                    line(v),
                    "http.results_memory is not a size".to_string(),
                    "write it as 16MB or 256kB",
                )
            })?,
            None => 16 * 1024 * 1024,
        };
        Ok(crate::Http {
            listen,
            results_ttl,
            results_memory,
            max_body,
        })
    }

    fn address(&self, s: &Str, what: &str, example: &str) -> Result<String> {
        let v = self.expand(s, what)?;
        let ok = v
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(self.err(
                line(s),
                format!("{what} address {v:?} is not host:port"),
                format!("write e.g. {what}: {example}"),
            ));
        }
        Ok(v)
    }
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
