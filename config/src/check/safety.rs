//! `guardrails:` (global and per role) and `safety:`.

use super::{line, Checker};
use crate::policy::{parse_bytes, parse_duration};
use crate::raw::{self};
use crate::{DenyPolicy, Guardrails, Injection, PromptGuard, Result, Safety};

impl Checker<'_> {
    pub(super) fn guardrails(&self, raw: &raw::RawGuardrails, what: &str) -> Result<Guardrails> {
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

    pub(super) fn safety(&self, raw: Option<&raw::RawSafety>) -> Result<Safety> {
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
        let deny_policy = match raw.and_then(|r| r.deny_policy.as_ref()).map(|d| d.value) {
            Some(raw::DenyPolicyName::Block) => DenyPolicy::Block,
            Some(raw::DenyPolicyName::Partial) | None => DenyPolicy::Partial,
        };
        let mut prompt_guard = PromptGuard::default();
        if let Some(g) = raw.and_then(|r| r.prompt_guard.as_ref()) {
            if let Some(a) = &g.request {
                prompt_guard.request = a.value.into();
            }
            if let Some(r) = g.results {
                prompt_guard.results = r;
            }
            for p in &g.patterns {
                let p = p.value.trim().to_lowercase();
                if p.is_empty() {
                    continue;
                }
                prompt_guard.patterns.push(p);
            }
        }
        Ok(Safety {
            injection,
            deny_functions,
            deny_policy,
            prompt_guard,
        })
    }
}
