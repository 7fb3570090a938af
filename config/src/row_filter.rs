//! Row filters as SQL: each predicate is parsed once, here, when the config is
//! checked, and `user.<attribute>` has one reading ([`user_attribute`]) for both the
//! check that every user of a role has the attributes its filters use and the
//! binding of a filter to a logged-in user (in the safety crate).

use std::ops::ControlFlow;

use sqlparser::ast::{self, Expr, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// `text` as one SQL predicate (PostgreSQL dialect), nothing after it.
pub fn parse_predicate(text: &str) -> Result<Expr, ParserError> {
    let mut parser = Parser::new(&PostgreSqlDialect {}).try_with_sql(text)?;
    let expr = parser.parse_expr()?;
    parser.expect_token(&Token::EOF)?;
    Ok(expr)
}

/// The attribute `expr` reads when it is `user.<attribute>`.
pub fn user_attribute(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::CompoundIdentifier(parts)
            if parts.len() == 2 && parts[0].value.eq_ignore_ascii_case("user") =>
        {
            Some(&parts[1].value)
        }
        // `user` is a keyword (PostgreSQL's current_user), so `user.region` parses
        // as a field access on it.
        Expr::CompoundFieldAccess { root, access_chain }
            if is_user_keyword(root) && access_chain.len() == 1 =>
        {
            match &access_chain[0] {
                ast::AccessExpr::Dot(Expr::Identifier(attr)) => Some(&attr.value),
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_user_keyword(e: &Expr) -> bool {
    match e {
        Expr::Identifier(i) => i.quote_style.is_none() && i.value.eq_ignore_ascii_case("user"),
        Expr::Function(f) => f.name.to_string().eq_ignore_ascii_case("user"),
        _ => false,
    }
}

/// Every attribute `predicate` reads, in order.
pub fn attribute_refs(predicate: &Expr) -> Vec<String> {
    struct Refs(Vec<String>);
    impl Visitor for Refs {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Some(attr) = user_attribute(expr) {
                self.0.push(attr.to_string());
            }
            ControlFlow::Continue(())
        }
    }
    let mut refs = Refs(Vec::new());
    let _ = predicate.visit(&mut refs);
    refs.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Vec<String> {
        attribute_refs(&parse_predicate(text).unwrap())
    }

    #[test]
    fn attributes_are_read_from_the_predicate_not_its_strings() {
        assert_eq!(
            refs("region = user.region AND tenant = USER.tenant"),
            ["region", "tenant"]
        );
        assert_eq!(refs("note = 'user.secret' OR id = 1"), Vec::<String>::new());
        assert_eq!(refs("owner = current_user"), Vec::<String>::new());
        assert_eq!(refs("x IN (SELECT 1 WHERE user.a > 0)"), ["a"]);
    }

    #[test]
    fn a_predicate_is_one_expression() {
        assert!(parse_predicate("a = 1").is_ok());
        assert!(parse_predicate("a = 1; DROP TABLE t").is_err());
        assert!(parse_predicate("a =").is_err());
    }
}
