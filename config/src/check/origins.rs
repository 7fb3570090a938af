//! `origins:`: PostgreSQL URLs, SQLite files, folders of files, MongoDB databases.

use super::{is_identifier, kind_name, line, Checker};
use crate::policy::parse_duration;
use crate::raw::{self, OriginKindName, Str};
use crate::{MongoOrigin, Origin, OriginKind, PostgresOrigin, Result, SslMode};

impl Checker<'_> {
    pub(super) fn origins(
        &self,
        raw: &indexmap::IndexMap<String, raw::RawOrigin>,
    ) -> Result<Vec<Origin>> {
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

    pub(super) fn postgres_url(&self, s: &Str, origin: &str) -> Result<PostgresOrigin> {
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
        let mut sslmode = SslMode::default();
        let mut pool_size = 8;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    sslmode = SslMode::parse(&v).ok_or_else(|| {
                        bad(format!(
                            "sslmode={v} is not one of {}",
                            SslMode::ALL.map(SslMode::as_str).join(", ")
                        ))
                    })?
                }
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
}
