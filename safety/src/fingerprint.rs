//! Statement fingerprints for the audit log: the statement with every literal
//! replaced by `?`, so that the same query shape groups together and no value
//! (a password, an ID) is written to the log.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Statement, Value, ValueWithSpan, VisitMut, VisitorMut,
};
use sha2::{Digest, Sha256};

struct StripLiterals;

impl VisitorMut for StripLiterals {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = expr {
            if !matches!(v.value, Value::Placeholder(_)) {
                *v = ValueWithSpan::from(Value::Placeholder("?".into()));
            }
        }
        ControlFlow::Continue(())
    }
}

/// The statement's text with literals replaced by `?`.
pub fn fingerprint(statement: &Statement) -> String {
    let mut s = statement.clone();
    let _ = s.visit(&mut StripLiterals);
    s.to_string()
}

/// SHA-256 (hex) of the statement text as the client sent it.
pub fn statement_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
