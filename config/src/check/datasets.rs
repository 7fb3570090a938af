//! `datasets:`: what each origin exposes, under which schema and name, and declared columns.

use std::collections::HashMap;

use super::{is_identifier, known, line, Checker, RESERVED_SCHEMAS};
use crate::policy::parse_duration;
use crate::raw::{self};
use crate::{
    ColumnType, ConflictPolicy, Dataset, DatasetSource, DeclaredColumn, Live, Mode, Origin,
    OriginKind, Result, SyncSettings,
};

impl Checker<'_> {
    pub(super) fn datasets(
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
            let mode = self.mode(key, d, origin)?;
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
                    mode: mode.clone(),
                });
            }
        }
        Ok(out)
    }

    /// `mode:`, `live:` and `refresh:` of a dataset.
    pub(super) fn mode(&self, key: &str, d: &raw::RawDataset, origin: &Origin) -> Result<Mode> {
        let at = line(&d.origin);
        let mode = d
            .mode
            .as_ref()
            .map(|m| m.value.as_str())
            .unwrap_or("federate");
        let mode_at = d.mode.as_ref().map(line).unwrap_or(at);
        if mode != "sync" {
            if let Some(s) = d.conflict.as_ref().or(d.version_column.as_ref()) {
                return Err(self.err(
                    line(s),
                    format!("dataset {key}: conflict: and version_column: need mode: sync"),
                    "add mode: sync, or remove them",
                ));
            }
        }
        match mode {
            "federate" => {
                if let Some(refresh) = &d.refresh {
                    return Err(self.err(
                        line(refresh),
                        format!("dataset {key}: refresh: needs mode: materialize"),
                        "add mode: materialize, or remove refresh: (federated datasets are read at the origin every time)",
                    ));
                }
                if let Some(live) = &d.live {
                    return Err(self.err(
                        line(live),
                        format!("dataset {key}: live: needs mode: materialize"),
                        "add mode: materialize, or remove live:",
                    ));
                }
                if let Some(name) = d.slot.as_ref().or(d.publication.as_ref()) {
                    return Err(self.err(
                        line(name),
                        format!("dataset {key}: slot: and publication: need mode: materialize and live: true"),
                        "add mode: materialize and live: true, or remove them",
                    ));
                }
                Ok(Mode::Federate)
            }
            "materialize" => {
                if matches!(origin.kind, OriginKind::Files { .. }) {
                    return Err(self.err(
                        mode_at,
                        format!(
                            "dataset {key}: origin {} holds local files, which need no local copy",
                            origin.name
                        ),
                        "remove mode: materialize (files are read where they lie)",
                    ));
                }
                let live = match d.live.as_ref().filter(|l| l.value) {
                    Some(flag) => Some(self.live(key, d, origin, line(flag))?),
                    None => {
                        if let Some(name) = d.slot.as_ref().or(d.publication.as_ref()) {
                            return Err(self.err(
                                line(name),
                                format!("dataset {key}: slot: and publication: need live: true"),
                                "add live: true, or remove them",
                            ));
                        }
                        None
                    }
                };
                let refresh = match &d.refresh {
                    Some(r) => {
                        let every = parse_duration(&r.value)
                            .filter(|d| !d.is_zero())
                            .ok_or_else(|| {
                                self.err(
                                    line(r),
                                    format!(
                                        "dataset {key}: refresh: {:?} is not an interval",
                                        r.value
                                    ),
                                    "write it as 30s, 10m or 1h",
                                )
                            })?;
                        Some(every)
                    }
                    None => None,
                };
                if let (Some(_), Some(r)) = (&live, &d.refresh) {
                    return Err(self.err(
                        line(r),
                        format!("dataset {key}: refresh: and live: true exclude each other"),
                        "keep live: true (the copy follows every change) or refresh: (copied again periodically)",
                    ));
                }
                Ok(Mode::Materialize {
                    refresh,
                    live,
                    sync: None,
                })
            }
            "sync" => {
                if !matches!(
                    origin.kind,
                    OriginKind::Postgres(_) | OriginKind::Mongodb(_)
                ) {
                    return Err(self.err(
                        mode_at,
                        format!(
                            "dataset {key}: mode: sync needs a postgres or mongodb origin, and {} is not one",
                            origin.name
                        ),
                        "use mode: materialize for a read-only local copy",
                    ));
                }
                if let Some(r) = &d.refresh {
                    return Err(self.err(
                        line(r),
                        format!("dataset {key}: refresh: does not go with mode: sync"),
                        "remove refresh: (a sync dataset follows the origin's changes as they happen)",
                    ));
                }
                if let Some(l) = d.live.as_ref().filter(|l| !l.value) {
                    return Err(self.err(
                        line(l),
                        format!("dataset {key}: a sync dataset is always live"),
                        "remove live: false",
                    ));
                }
                if d.filters.is_some() {
                    return Err(self.err(
                        mode_at,
                        format!("dataset {key}: a sync dataset is a whole table, and this one has filters:"),
                        "remove filters: (a write could move a row out of the filter, and the origin would not know)",
                    ));
                }
                let live = self.live(key, d, origin, mode_at)?;
                let conflict = d.conflict.as_ref().ok_or_else(|| {
                    self.err(
                        mode_at,
                        format!("dataset {key}: mode: sync needs conflict: (what happens when a queued write meets an origin row that changed)"),
                        format!(
                            "add conflict: with one of {}",
                            ConflictPolicy::ALL.map(ConflictPolicy::as_str).join(", ")
                        ),
                    )
                })?;
                let conflict = ConflictPolicy::ALL
                    .into_iter()
                    .find(|p| p.as_str() == conflict.value)
                    .ok_or_else(|| {
                        self.err(
                            line(conflict),
                            format!(
                                "dataset {key}: unknown conflict policy {:?}",
                                conflict.value
                            ),
                            format!(
                                "use one of {}",
                                ConflictPolicy::ALL.map(ConflictPolicy::as_str).join(", ")
                            ),
                        )
                    })?;
                let version_column = d.version_column.as_ref().map(|v| v.value.clone());
                if conflict == ConflictPolicy::LastWriteWins && version_column.is_none() {
                    return Err(self.err(
                        mode_at,
                        format!("dataset {key}: conflict: last_write_wins needs version_column:"),
                        "name the column every writer advances on each change (a timestamp or a counter)",
                    ));
                }
                Ok(Mode::Materialize {
                    refresh: None,
                    live: Some(live),
                    sync: Some(SyncSettings {
                        conflict,
                        version_column,
                    }),
                })
            }
            other => Err(self.err(
                mode_at,
                format!("dataset {key}: unknown mode {other:?}"),
                "use federate, materialize or sync",
            )),
        }
    }

    /// `live: true` of a materialized dataset: origins with a change feed, and
    /// datasets it can maintain row by row (a table, with equality filters).
    fn live(
        &self,
        key: &str,
        d: &raw::RawDataset,
        origin: &Origin,
        at: Option<u64>,
    ) -> Result<Live> {
        let feed = matches!(
            origin.kind,
            OriginKind::Postgres(_) | OriginKind::Mongodb(_)
        );
        if !feed {
            return Err(self.err(
                at,
                format!(
                    "dataset {key}: origin {} has no change feed for live: true",
                    origin.name
                ),
                "live: true needs a postgres or mongodb origin; use refresh: <interval> instead",
            ));
        }
        if d.query.is_some() || d.pipeline.is_some() {
            return Err(self.err(
                at,
                format!("dataset {key}: a query or pipeline dataset cannot be maintained incrementally"),
                "use refresh: <interval> to run it again periodically, or materialize the table itself live",
            ));
        }
        let name = |n: &Option<raw::Str>, what: &str| -> Result<Option<String>> {
            let Some(n) = n else { return Ok(None) };
            if !matches!(origin.kind, OriginKind::Postgres(_)) {
                return Err(self.err(
                    line(n),
                    format!("dataset {key}: {what}: is for postgres origins"),
                    format!("remove {what}:"),
                ));
            }
            if d.tables.is_some() {
                return Err(self.err(
                    line(n),
                    format!("dataset {key}: {what}: names one table's feed, and this entry lists several"),
                    "give the table its own entry (schema.table: { table: ... }) to name its feed",
                ));
            }
            let ok = !n.value.is_empty()
                && n.value.len() <= 63
                && n.value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(self.err(
                    line(n),
                    format!("dataset {key}: {what}: {:?} is not a valid name", n.value),
                    "use at most 63 lower-case letters, digits and _",
                ));
            }
            Ok(Some(n.value.clone()))
        };
        Ok(Live {
            slot: name(&d.slot, "slot")?,
            publication: name(&d.publication, "publication")?,
        })
    }

    /// The declared columns of a dataset (MongoDB only; one-table datasets).
    pub(super) fn columns(
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
