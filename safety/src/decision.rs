//! What the pipeline decided about one statement, stage by stage.

use serde::Serialize;

/// A pipeline stage (names as in faz; the HTTP API adds PROMPT_GUARD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stage {
    /// Instruction-like text in what an agent sends (step graphs only).
    #[serde(rename = "PROMPT_GUARD")]
    PromptGuard,
    /// Tables, privileges, columns; row filters and masks.
    #[serde(rename = "RBAC_GATE")]
    RbacGate,
    /// Statement kinds and functions.
    #[serde(rename = "AST_CHECKER")]
    AstChecker,
    /// Injection patterns.
    #[serde(rename = "INJECTION_ANALYSER")]
    InjectionAnalyser,
    /// Limits.
    #[serde(rename = "GUARDRAILS")]
    Guardrails,
}

impl Stage {
    /// The stage's name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::PromptGuard => "PROMPT_GUARD",
            Stage::RbacGate => "RBAC_GATE",
            Stage::AstChecker => "AST_CHECKER",
            Stage::InjectionAnalyser => "INJECTION_ANALYSER",
            Stage::Guardrails => "GUARDRAILS",
        }
    }
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing to object to.
    Passed,
    /// Passed with warnings.
    Warned,
    /// Refused the statement.
    Denied,
}

/// One stage's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageResult {
    /// The stage.
    pub stage: Stage,
    /// Its outcome.
    pub outcome: Outcome,
    /// What it found or did (e.g. "row filter on sales.orders").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The decision on one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Stages that ran, in order; a denial is the last entry.
    pub stages: Vec<StageResult>,
    /// Warnings for the client (sent as NOTICEs) and the audit log.
    pub warnings: Vec<String>,
    /// `schema.table` of every user table the statement reads or writes.
    pub tables: Vec<String>,
    /// Origins those tables live at.
    pub origins: Vec<String>,
}

impl Decision {
    pub(crate) fn record(&mut self, stage: Stage, outcome: Outcome, notes: Vec<String>) {
        if outcome == Outcome::Warned {
            self.warnings.extend(notes.iter().cloned());
        }
        self.stages.push(StageResult {
            stage,
            outcome,
            notes,
        });
    }
}
