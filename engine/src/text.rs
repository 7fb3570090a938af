//! What the text of a query says about its statements before any parse: how many
//! there are and which end with a line comment (the injection analyser's `stacked`
//! and `comment` findings read the text as sent, since rewrites drop comments).

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// The statements of one query text, handed out in order.
#[derive(Debug, Default, Clone)]
pub struct QueryText {
    stacked: usize,
    trailing_comment: Vec<bool>,
    next: usize,
}

/// One statement's facts from its query's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextFacts {
    /// Statements in the query text.
    pub stacked: usize,
    /// Whether this statement ends with a line comment.
    pub trailing_comment: bool,
}

impl QueryText {
    /// Reads `sql` as the client sent it.
    pub fn from_sql(sql: &str) -> Self {
        let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
            return QueryText {
                stacked: 1,
                ..Default::default()
            };
        };
        let mut trailing = Vec::new();
        for segment in tokens.split(|t| *t == Token::SemiColon) {
            let mut meaningful = segment.iter().filter(|t| {
                !matches!(
                    t,
                    Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
                )
            });
            let last = meaningful.clone().next_back();
            let has_code = meaningful.any(|t| !matches!(t, Token::Whitespace(_)));
            if has_code {
                trailing.push(matches!(
                    last,
                    Some(Token::Whitespace(Whitespace::SingleLineComment { .. }))
                ));
            }
        }
        QueryText {
            stacked: trailing.len().max(1),
            trailing_comment: trailing,
            next: 0,
        }
    }

    /// Statements in the text.
    pub fn stacked(&self) -> usize {
        self.stacked.max(1)
    }

    /// Whether any statement was handed out yet (the text reached the checks).
    pub fn started(&self) -> bool {
        self.next > 0
    }

    /// The next statement's facts (statements are checked in order).
    pub fn take(&mut self) -> TextFacts {
        let i = self.next;
        self.next += 1;
        TextFacts {
            stacked: self.stacked(),
            trailing_comment: self.trailing_comment.get(i).copied().unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_statements_and_trailing_comments() {
        let mut t = QueryText::from_sql("SELECT 1; SELECT 2 -- x\n");
        assert_eq!(t.stacked(), 2);
        assert!(!t.take().trailing_comment);
        assert!(t.take().trailing_comment);
        assert_eq!(QueryText::from_sql("SELECT 1;").stacked(), 1);
    }
}
