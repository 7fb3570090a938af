//! SELECT-list items named as PostgreSQL names them (its FigureColname): `count(*)`
//! is `count`, `1 + 1` is `?column?`, `x::int` keeps `x`, `'a'::text` is `text`,
//! `ARRAY[...]` is `array`, `CASE ...` is `case`.
//!
//! DataFusion names an unaliased expression by its text (`count(*)`,
//! `Int64(1) + Int64(1)`); clients that read rows by column name (psycopg's
//! `dict_row`, node-postgres rows, JDBC's `getLong("count")`) need PostgreSQL's
//! names. PostgreSQL lets a name occur twice in one SELECT list (`SELECT at,
//! at::date`); DataFusion's projections need unique names, so in the outermost
//! SELECT each repeat is aliased `name` + [`REPEAT_MARK`] + its position, and the
//! door shows the name without the mark. Statements reading pg_catalog or
//! information_schema are left alone: datafusion-postgres matches some of their
//! texts, and clients alias their items.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType, ExactNumberInfo, Expr, Ident, ObjectName, Query, SelectItem, SetExpr,
    Statement, TimezoneInfo, TrimWhereField, Visit, VisitMut, Visitor, VisitorMut,
};
/// Separates a repeated output name from the position that keeps it unique in
/// DataFusion; the door cuts the name at it ([`shown_name`]).
pub const REPEAT_MARK: char = '\u{1f}';

/// A column's name as the client sees it: without a repeat's mark.
pub fn shown_name(name: &str) -> &str {
    name.split(REPEAT_MARK).next().unwrap_or(name)
}

/// Names PostgreSQL gives these SELECT-list items; datafusion-postgres turns them
/// into `session_user()`, so `SELECT current_user, session_user` would otherwise
/// have two equal names.
const USER_FUNCTIONS: &[&str] = &["current_user", "session_user", "current_role", "user"];

/// Names the SELECT-list items of `statements` as PostgreSQL names them; true when
/// anything changed.
pub fn name(statements: &mut [Statement]) -> bool {
    let mut namer = Namer {
        changed: false,
        top_seen: false,
    };
    for statement in statements.iter_mut() {
        if reads_catalog(statement) {
            continue;
        }
        namer.top_seen = false;
        let _ = statement.visit(&mut namer);
    }
    namer.changed
}

/// Whether `statement` reads pg_catalog or information_schema.
pub(crate) fn reads_catalog(statement: &Statement) -> bool {
    struct Catalog(bool);
    impl Visitor for Catalog {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            self.0 |= crate::pgwire::pgcompat::guard::is_catalog_relation(
                &crate::pgwire::pgcompat::guard::relation_parts(relation),
            );
            ControlFlow::Continue(())
        }
    }
    let mut catalog = Catalog(false);
    let _ = statement.visit(&mut catalog);
    catalog.0
}

struct Namer {
    changed: bool,
    /// Whether the statement's outermost query was seen (it is visited first).
    top_seen: bool,
}

impl VisitorMut for Namer {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let top = !std::mem::replace(&mut self.top_seen, true);
        self.changed |= name_items(query.body.as_mut(), top);
        ControlFlow::Continue(())
    }
}

/// Names the unnamed items of each SELECT in `body` (both sides of a set
/// operation); true when any item got a name.
fn name_items(body: &mut SetExpr, top: bool) -> bool {
    let select = match body {
        SetExpr::Select(select) => select,
        SetExpr::SetOperation { left, right, .. } => {
            let l = name_items(left, top);
            let r = name_items(right, top);
            return l || r;
        }
        _ => return false,
    };
    // The name each item ends up with, and how many items share it.
    let names: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Some(item_name(e)),
            SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
            _ => None,
        })
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in names.iter().flatten() {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let mut changed = false;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let wildcard = select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    for (position, (item, n)) in select.projection.iter_mut().zip(&names).enumerate() {
        let Some(n) = n else { continue };
        let repeat = {
            let k = seen.entry(n.clone()).or_default();
            *k += 1;
            *k > 1
        };
        // A repeat in the outermost SELECT: unique for DataFusion, shown as PostgreSQL
        // shows it. (Next to `*` the expanded names are unknown here: left alone.)
        if top && repeat && !wildcard {
            let expr = match &*item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                _ => continue,
            };
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: Ident::with_quote('"', format!("{n}{REPEAT_MARK}{}", position + 1)),
            };
            changed = true;
            continue;
        }
        let SelectItem::UnnamedExpr(expr) = &*item else {
            continue;
        };
        let named_by_datafusion = match expr {
            Expr::Identifier(i) => !USER_FUNCTIONS.contains(&ident_name(i).as_str()),
            Expr::CompoundIdentifier(_) => true,
            _ => false,
        };
        // Outside the outermost SELECT (or next to `*`) a shared name stays DataFusion's.
        let unique_here = top && !wildcard;
        if named_by_datafusion || (!unique_here && counts.get(n.as_str()) != Some(&1)) {
            continue;
        }
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', n.clone()),
        };
        changed = true;
    }
    changed
}

/// An identifier as PostgreSQL folds it.
fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The name PostgreSQL gives a SELECT-list expression.
fn item_name(expr: &Expr) -> String {
    figure(expr).0.unwrap_or_else(|| "?column?".into())
}

/// FigureColnameInternal: a name and its strength (2 a column or function name, 1 a
/// fallback such as a type name or `case`, 0 none).
fn figure(expr: &Expr) -> (Option<String>, u8) {
    let named = |s: &str, strength: u8| (Some(s.to_string()), strength);
    match expr {
        Expr::Identifier(i) => (Some(ident_name(i)), 2),
        Expr::CompoundIdentifier(parts) => (parts.last().map(ident_name), 2),
        Expr::Function(f) => {
            let last = f.name.0.last().and_then(|p| p.as_ident()).map(ident_name);
            (last, 2)
        }
        Expr::Nested(e) | Expr::Collate { expr: e, .. } => figure(e),
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            (Some(n), 2) => (Some(n), 2),
            _ => (Some(type_name(data_type)), 1),
        },
        Expr::TypedString(t) => (Some(type_name(&t.data_type)), 1),
        Expr::Interval(_) => named("interval", 1),
        Expr::Case { .. } => named("case", 1),
        Expr::Array(_) => named("array", 1),
        Expr::Exists { .. } => named("exists", 2),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) if s.projection.len() == 1 => match &s.projection[0] {
                SelectItem::UnnamedExpr(e) => match figure(e) {
                    (Some(n), _) => (Some(n), 2),
                    none => none,
                },
                SelectItem::ExprWithAlias { alias, .. } => (Some(ident_name(alias)), 2),
                _ => (None, 0),
            },
            _ => (None, 0),
        },
        Expr::Trim { trim_where, .. } => match trim_where {
            Some(TrimWhereField::Leading) => named("ltrim", 2),
            Some(TrimWhereField::Trailing) => named("rtrim", 2),
            _ => named("btrim", 2),
        },
        Expr::Substring { .. } => named("substring", 2),
        Expr::Position { .. } => named("position", 2),
        Expr::Overlay { .. } => named("overlay", 2),
        Expr::Extract { .. } => named("extract", 2),
        Expr::Ceil { .. } => named("ceil", 2),
        Expr::Floor { .. } => named("floor", 2),
        Expr::AtTimeZone { .. } => named("timezone", 2),
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(i))) => (Some(ident_name(i)), 2),
            Some(AccessExpr::Subscript(_)) => figure(root),
            _ => (None, 0),
        },
        _ => (None, 0),
    }
}

/// The type name PostgreSQL uses for a cast's column name (its internal name).
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::SmallInt(_) | DataType::Int2(_) => "int2".into(),
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4".into(),
        DataType::BigInt(_) | DataType::Int8(_) => "int8".into(),
        DataType::Real | DataType::Float4 => "float4".into(),
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 => "float8".into(),
        DataType::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => "float4".into(),
        DataType::Float(_) => "float8".into(),
        DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => "numeric".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) | DataType::CharVarying(_) => {
            "varchar".into()
        }
        DataType::Char(_) | DataType::Character(_) => "bpchar".into(),
        DataType::Boolean | DataType::Bool => "bool".into(),
        DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            "timestamptz".into()
        }
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Time(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timetz".into(),
        DataType::Time(..) => "time".into(),
        DataType::JSON => "json".into(),
        DataType::JSONB => "jsonb".into(),
        DataType::Interval { .. } => "interval".into(),
        other => {
            let text = other.to_string().to_lowercase();
            text.rsplit('.').next().unwrap_or(&text).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewrite(sql: &str) -> Option<String> {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        super::name(&mut statements).then(|| crate::pgwire::pgcompat::text(&statements))
    }

    fn named(sql: &str) -> String {
        rewrite(sql).unwrap_or_else(|| sql.to_string())
    }

    #[test]
    fn items_get_postgres_names() {
        let sql = named("SELECT count(*), 1 + 1, x::int, '7'::int, ARRAY[1], CASE WHEN true THEN 1 END, lower(name) FROM t");
        for alias in [
            "AS \"count\"",
            "AS \"?column?\"",
            "AS \"x\"",
            "AS \"int4\"",
            "AS \"array\"",
            "AS \"case\"",
            "AS \"lower\"",
        ] {
            assert!(sql.contains(alias), "{alias} in {sql}");
        }
    }

    #[test]
    fn names_stay_unique_and_catalog_queries_untouched() {
        // Outermost: both are `count` for the client, unique for DataFusion.
        let sql = named("SELECT count(*), count(id), sum(x) FROM t");
        assert!(
            sql.contains("count(*) AS \"count\"")
                && sql.contains("count(id) AS \"count\u{1f}2\"")
                && sql.contains("AS \"sum\""),
            "{sql}"
        );
        assert_eq!(super::shown_name("count\u{1f}2"), "count");
        let sql = named("SELECT at, at::date FROM t");
        assert!(sql.contains("AS \"at\u{1f}2\""), "{sql}");
        // In a subquery a repeated name stays DataFusion's (PostgreSQL would find it
        // ambiguous there).
        let sql = named("SELECT * FROM (SELECT count(*), count(id) FROM t) s");
        assert!(!sql.contains("AS \"count"), "{sql}");
        assert_eq!(rewrite("SELECT a, b AS c FROM t"), None);
        assert_eq!(
            rewrite("SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute"),
            None
        );
        let sql = named("SELECT current_user, session_user");
        assert!(
            sql.contains("AS \"current_user\"") && sql.contains("AS \"session_user\""),
            "{sql}"
        );
    }

    #[test]
    fn subqueries_and_unions_are_named_too() {
        let sql = named(
            "SELECT s.count FROM (SELECT count(*) FROM t) AS s UNION ALL SELECT max(id) FROM u",
        );
        assert!(sql.contains("count(*) AS \"count\""), "{sql}");
    }
}
