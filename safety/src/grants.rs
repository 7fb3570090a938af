//! Table patterns in role grants: `schema.table`, `schema.*`, `*.table`, `*`.

/// One parsed grant pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: Option<String>,
    table: Option<String>,
}

impl TablePattern {
    /// Parses a pattern; `*` stands for any schema or table name.
    pub fn parse(text: &str) -> Self {
        let part = |s: &str| (s != "*").then(|| s.to_string());
        match text.split_once('.') {
            Some((schema, table)) => TablePattern {
                schema: part(schema),
                table: part(table),
            },
            None => TablePattern {
                schema: None,
                table: part(text),
            },
        }
    }

    /// Whether the pattern covers `schema.table`.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.as_deref().is_none_or(|s| s == schema)
            && self.table.as_deref().is_none_or(|t| t == table)
    }
}

#[cfg(test)]
mod tests {
    use super::TablePattern;

    #[test]
    fn wildcards_cover_their_part_only() {
        assert!(TablePattern::parse("*").matches("a", "b"));
        assert!(TablePattern::parse("sales.*").matches("sales", "orders"));
        assert!(!TablePattern::parse("sales.*").matches("crm", "orders"));
        assert!(TablePattern::parse("*.orders").matches("x", "orders"));
        assert!(TablePattern::parse("sales.orders").matches("sales", "orders"));
        assert!(!TablePattern::parse("sales.orders").matches("sales", "orders2"));
    }
}
