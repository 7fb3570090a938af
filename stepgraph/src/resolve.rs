//! A step's SQL names the origin's own tables; the engine knows datasets
//! (`schema.name`). Each table name is resolved to the dataset of the step's
//! origin that exposes it, and the statement rewritten to name that dataset, so
//! that the step is planned and checked exactly like a pgwire statement and can
//! reach nothing but its own origin's datasets.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_relations_mut, Ident, ObjectName, ObjectNamePart, Query, Statement, Visit, Visitor,
};
use switchyard_config::{Config, Dataset, DatasetSource};
use switchyard_engine::SqlState;

use crate::error::{Kind, Result, StepError};

/// The datasets of one origin, for name resolution. Every dataset resolves (so
/// that a denied one is refused by the pipeline, 42501, as on pgwire); messages
/// list only those the user may read.
pub struct OriginTables<'a> {
    /// The origin's name.
    pub database: &'a str,
    datasets: Vec<&'a Dataset>,
    visible: Vec<&'a Dataset>,
}

impl<'a> OriginTables<'a> {
    /// The datasets of `database`; `visible` tells those the user may read.
    pub fn new(
        config: &'a Config,
        database: &'a str,
        visible: impl Fn(&Dataset) -> bool,
    ) -> OriginTables<'a> {
        let datasets: Vec<&Dataset> = config
            .datasets
            .iter()
            .filter(|d| d.origin == database)
            .collect();
        OriginTables {
            database,
            visible: datasets.iter().copied().filter(|d| visible(d)).collect(),
            datasets,
        }
    }

    /// Whether the user may read `dataset`.
    pub fn is_visible(&self, dataset: &Dataset) -> bool {
        self.visible
            .iter()
            .any(|d| d.qualified_name() == dataset.qualified_name())
    }

    /// The dataset `name` (as written in a step: a dataset's `schema.name`, its
    /// name, or the origin-side table it reads) stands for.
    pub fn resolve(&self, parts: &[String]) -> Result<&'a Dataset> {
        let written = parts.join(".");
        let by = |f: &dyn Fn(&Dataset) -> bool| -> Vec<&'a Dataset> {
            self.datasets.iter().copied().filter(|d| f(d)).collect()
        };
        let candidates = match parts {
            [schema, name] => {
                let exact = by(&|d| &d.schema == schema && &d.name == name);
                if exact.is_empty() {
                    by(&|d| source_table(d) == Some(written.as_str()))
                } else {
                    exact
                }
            }
            [name] => {
                let named = by(&|d| &d.name == name);
                if named.is_empty() {
                    by(&|d| {
                        source_table(d).is_some_and(|t| {
                            t == name || t.rsplit_once('.').is_some_and(|(_, t)| t == name)
                        })
                    })
                } else {
                    named
                }
            }
            _ => vec![],
        };
        // A step is a native query for its origin: a name that also names local
        // copies (materialized, live, sync) means the dataset read at the origin.
        let candidates = if candidates.len() > 1 {
            let federated: Vec<&Dataset> = candidates
                .iter()
                .copied()
                .filter(|d| d.mode == switchyard_config::Mode::Federate)
                .collect();
            if federated.len() == 1 {
                federated
            } else {
                candidates
            }
        } else {
            candidates
        };
        match candidates.as_slice() {
            [one] => Ok(one),
            [] => Err(StepError::new(
                Kind::Invalid,
                SqlState::UNDEFINED_TABLE,
                format!(
                    "relation \"{written}\" does not exist in database '{}' (its tables: {})",
                    self.database,
                    self.names()
                ),
            )),
            many => Err(StepError::new(
                Kind::Invalid,
                SqlState::UNDEFINED_TABLE,
                format!(
                    "table name \"{written}\" is ambiguous in database '{}': write one of {}",
                    self.database,
                    many.iter()
                        .map(|d| d.qualified_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The tables, as a list for messages.
    pub fn names(&self) -> String {
        if self.visible.is_empty() {
            return "none you may read".into();
        }
        self.visible
            .iter()
            .map(|d| d.qualified_name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rewrites every table reference of `statement` to the dataset it stands for
    /// (CTE names are left alone); returns the datasets named.
    pub fn rewrite(&self, statement: &mut Statement) -> Result<Vec<&'a Dataset>> {
        let ctes = cte_names(statement);
        let mut failure = None;
        let mut named = Vec::new();
        let _ = visit_relations_mut(statement, |name: &mut ObjectName| {
            let Some(parts) = plain_parts(name) else {
                failure = Some(StepError::invalid(format!(
                    "table name {name} is not a plain name"
                )));
                return ControlFlow::Break(());
            };
            if parts.len() == 1 && ctes.contains(&parts[0]) {
                return ControlFlow::Continue(());
            }
            match self.resolve(&parts) {
                Ok(d) => {
                    *name = ObjectName(vec![
                        ObjectNamePart::Identifier(Ident::with_quote('"', d.schema.clone())),
                        ObjectNamePart::Identifier(Ident::with_quote('"', d.name.clone())),
                    ]);
                    if !named
                        .iter()
                        .any(|n: &&Dataset| n.qualified_name() == d.qualified_name())
                    {
                        named.push(d);
                    }
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(named),
        }
    }
}

/// The origin-side table a dataset reads, when it reads one.
fn source_table(d: &Dataset) -> Option<&str> {
    match &d.source {
        DatasetSource::Table { table, .. } => Some(table),
        DatasetSource::Pipeline { collection, .. } => Some(collection),
        DatasetSource::Query(_) => None,
    }
}

/// A name's parts as SQL reads them: unquoted folded to lower case.
pub fn plain_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(ident_value(i)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

fn ident_value(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Names the statement's WITH clauses define.
fn cte_names(statement: &Statement) -> HashSet<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(ident_value(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(HashSet::new());
    let _ = statement.visit(&mut v);
    v.0
}
