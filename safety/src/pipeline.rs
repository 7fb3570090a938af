//! The pipeline: RBAC_GATE → AST_CHECKER → INJECTION_ANALYSER → GUARDRAILS.

use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast;
use switchyard_config::{Action, Privilege};

use crate::decision::{Decision, Outcome, Stage};
use crate::guardrails::{self, Limits};
use crate::injection::{self, Context};
use crate::policy::{Policy, Principal};
use crate::rbac::{self, is_catalog, resolve, write_target};
use crate::statement;
use crate::SafetyError;

/// What the pipeline knows about a statement besides its plan.
#[derive(Debug, Clone, Copy)]
pub struct StatementInput<'a> {
    /// The parsed statement.
    pub ast: &'a ast::Statement,
    /// How many statements the query string held (1 for the extended protocol).
    pub stacked: usize,
    /// Whether a line comment ends the statement's text.
    pub trailing_comment: bool,
}

/// An allowed statement: the plan to run (with row filters, masks and the row cap
/// in it) and what the front door enforces while it runs.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The rewritten plan.
    pub plan: LogicalPlan,
    /// Stage by stage.
    pub decision: Decision,
    /// Runtime guardrails.
    pub limits: Limits,
}

/// A refused statement.
#[derive(Debug, Clone)]
pub struct Denied {
    /// Stage by stage, ending with the denying one.
    pub decision: Decision,
    /// Why, with its SQLSTATE.
    pub error: SafetyError,
}

/// The safety pipeline over a compiled [`Policy`].
#[derive(Debug, Clone)]
pub struct Pipeline {
    policy: Policy,
}

impl Pipeline {
    /// A pipeline enforcing `policy`.
    pub fn new(policy: Policy) -> Self {
        Pipeline { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The principal for a login name.
    pub fn principal(&self, user: &str) -> Principal {
        self.policy.principal(user)
    }

    /// The runtime limits for `who`.
    pub fn limits(&self, who: &Principal) -> Limits {
        Limits::from(&self.policy.guardrails(who))
    }

    /// For a statement DataFusion cannot plan: the stages that need no plan, so that
    /// a denied function is refused as such and not as "unknown function".
    pub fn check_unplanned(&self, input: &StatementInput) -> Option<Denied> {
        let mut decision = Decision::default();
        let functions = statement::ast_functions(input.ast);
        if let Some(name) = statement::denied_function(&self.policy, &functions) {
            decision.record(
                Stage::AstChecker,
                Outcome::Denied,
                vec![format!("function {name}")],
            );
            return Some(Denied {
                decision,
                error: SafetyError::FunctionDenied { name },
            });
        }
        let cx = Context {
            stacked: input.stacked,
            trailing_comment: input.trailing_comment,
            functions: &functions,
        };
        let findings = injection::analyse(&self.policy, None, &cx);
        deny_on(&findings, &mut decision).err().map(|d| *d)
    }

    /// Runs every stage; on success the plan to execute.
    pub fn check(
        &self,
        input: &StatementInput,
        plan: LogicalPlan,
        who: &Principal,
        state: &SessionState,
    ) -> Result<Checked, Box<Denied>> {
        let p = &self.policy;
        let mut decision = Decision::default();
        let target = write_target(&plan).map(|(t, privilege)| (resolve(p, &t), privilege));
        let scans = rbac::user_scans(p, &plan);
        for (s, t) in scans
            .iter()
            .cloned()
            .chain(target.iter().map(|(st, _)| st.clone()))
        {
            let name = format!("{s}.{t}");
            if !is_catalog(&s) && !decision.tables.contains(&name) {
                if let Some(o) = p.origin_of(&s, &t) {
                    if !decision.origins.iter().any(|x| x == o) {
                        decision.origins.push(o.to_string());
                    }
                }
                decision.tables.push(name);
            }
        }
        let deny = |mut decision: Decision, stage: Stage, error: SafetyError| {
            decision.record(stage, Outcome::Denied, vec![error.to_string()]);
            Box::new(Denied { decision, error })
        };

        // Functions the statement itself calls (before RBAC adds its masks and filters).
        let mut functions = statement::ast_functions(input.ast);
        functions.extend(statement::plan_functions(&plan));

        // RBAC_GATE
        let mut notes = Vec::new();
        let plan = match rbac::gate(
            p,
            who,
            plan,
            &scans,
            target.as_ref().map(|(st, _)| st),
            state,
            &mut notes,
        ) {
            Ok(plan) => plan,
            Err(e) => return Err(deny(decision, Stage::RbacGate, e)),
        };
        decision.record(Stage::RbacGate, Outcome::Passed, notes);

        // AST_CHECKER
        let mut notes = Vec::new();
        match statement::check_kind(&plan) {
            Err(e) => return Err(deny(decision, Stage::AstChecker, e)),
            Ok(Some(write)) => notes.push(write),
            Ok(None) => {}
        }
        if let Some(((s, t), privilege)) = &target {
            let access = p.access(who, s, t);
            if !access.privileges.contains(privilege) {
                let e = if self.may_write_somewhere(who) {
                    SafetyError::TableDenied {
                        table: format!("{s}.{t}"),
                        privilege: privilege.name().into(),
                    }
                } else {
                    SafetyError::ReadOnly {
                        kind: privilege.name().to_uppercase(),
                    }
                };
                return Err(deny(decision, Stage::AstChecker, e));
            }
        }
        if let Some(name) = statement::denied_function(p, &functions) {
            return Err(deny(
                decision,
                Stage::AstChecker,
                SafetyError::FunctionDenied { name },
            ));
        }
        decision.record(Stage::AstChecker, Outcome::Passed, notes);

        // INJECTION_ANALYSER
        let cx = Context {
            stacked: input.stacked,
            trailing_comment: input.trailing_comment,
            functions: &functions,
        };
        let findings = injection::analyse(p, Some(&plan), &cx);
        deny_on(&findings, &mut decision)?;

        // GUARDRAILS
        let guardrails = p.guardrails(who);
        if let Err(e) = guardrails::check(p, &guardrails, &plan) {
            return Err(deny(decision, Stage::Guardrails, e));
        }
        let limits = Limits::from(&guardrails);
        let plan = guardrails::cap_rows(plan, &limits);
        let mut notes = Vec::new();
        if let Some(n) = limits.max_rows {
            notes.push(format!("row cap {n}"));
        }
        decision.record(Stage::Guardrails, Outcome::Passed, notes);
        Ok(Checked {
            plan,
            decision,
            limits,
        })
    }

    fn may_write_somewhere(&self, who: &Principal) -> bool {
        // Any write privilege on any dataset the config names.
        self.policy.any_privilege(
            who,
            &[Privilege::Insert, Privilege::Update, Privilege::Delete],
        )
    }
}

/// Records the analyser's findings; the first denying one refuses the statement.
fn deny_on(findings: &[injection::Finding], decision: &mut Decision) -> Result<(), Box<Denied>> {
    if let Some(f) = findings.iter().find(|f| f.action == Action::Deny) {
        decision.record(
            Stage::InjectionAnalyser,
            Outcome::Denied,
            vec![f.detail.clone()],
        );
        return Err(Box::new(Denied {
            decision: decision.clone(),
            error: SafetyError::Injection {
                finding: f.name.to_string(),
                detail: f.detail.clone(),
            },
        }));
    }
    if findings.is_empty() {
        decision.record(Stage::InjectionAnalyser, Outcome::Passed, vec![]);
    } else {
        decision.record(
            Stage::InjectionAnalyser,
            Outcome::Warned,
            findings
                .iter()
                .map(|f| format!("{}: {}", f.name, f.detail))
                .collect(),
        );
    }
    Ok(())
}
