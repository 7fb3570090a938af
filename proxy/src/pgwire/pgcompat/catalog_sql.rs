//! Small rewrites of catalog-only queries (every table read is in pg_catalog or
//! information_schema) that clients send and DataFusion cannot plan as written.
//! Applied to the statements [`super::prepare`] parsed; statements reading any other
//! table are never changed.
//!
//! - `(information_schema._pg_expandarray(a)).x` → `unnest(a)`, `.n` →
//!   `unnest(generate_series(1, array_length(a)))` (pgjdbc's key and index
//!   metadata); a bare `_pg_expandarray(a)` → `unnest(a)` and `(alias.keys).x` →
//!   `alias.keys` to match.
//! - `generate_subscripts(a, d)` → `unnest(generate_series(1, array_length(a, d)))`
//!   (SQLAlchemy's key and index reflection).
//! - `indoption[i]` → the i-th (from 0) number of its text form "0 0" (int2vector).
//! - `proc.oid = typ.typreceive` (any of pg_type's function columns) →
//!   `proc.proname = typ.typreceive` (npgsql's type loading).
//! - `'pg_catalog.array_in'::regproc` → `'array_in'`: the catalog holds function
//!   names as text (pgjdbc's `getTypeInfo`).
//! - `conrelid::regclass` (and `confrelid`) → the relation's (qualified) name by a
//!   subquery on pg_class (psql's "Referenced by").
//! - `CAST($n AS regclass)` → NULL (keeping `$n`): a relation named by a parameter
//!   cannot be resolved at planning time.
//! - A scalar subquery whose single item is not an aggregate gets it wrapped in
//!   `max()`: DataFusion plans a correlated scalar subquery only when aggregated
//!   (psql's and SQLAlchemy's column defaults); conditions on the outer row alone
//!   move into a `CASE WHEN ... THEN (subquery) END`; one correlated other than by
//!   `inner column = outer column` becomes NULL (DataFusion cannot plan it). One in
//!   a SELECT list is also parenthesised, since datafusion-postgres replaces a
//!   correlated subquery there by NULL. A catalog subquery returning more than one
//!   row (an error in PostgreSQL) gives its largest value instead.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    ObjectName, Query, SelectItem, SetExpr, Statement, Subscript, TableFactor, Visit, VisitMut,
    Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Functions that already aggregate (a subquery over one of them is left alone).
const AGGREGATES: &[&str] = &[
    "max",
    "min",
    "count",
    "sum",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "first_value",
    "last_value",
];

/// Rewrites `statements` (parsed from `sql`) as above when every one is catalog-only;
/// true when anything changed.
pub fn rewrite(sql: &str, statements: &mut [Statement]) -> bool {
    let lower = sql.to_ascii_lowercase();
    // Catalog tables may be named without their schema (`pg_type`, as npgsql does).
    if !lower.contains("pg_") && !lower.contains("information_schema") {
        return false;
    }
    if !statements.iter().all(catalog_only) {
        return false;
    }
    let mut visitor = Rewriter { changed: false };
    for statement in statements.iter_mut() {
        let _ = statement.visit(&mut visitor);
    }
    visitor.changed
}

fn catalog_only(statement: &Statement) -> bool {
    struct Tables {
        other: bool,
        any: bool,
    }
    impl Visitor for Tables {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let parts = crate::pgwire::pgcompat::guard::relation_parts(relation);
            self.any = true;
            let catalog = crate::pgwire::pgcompat::guard::is_catalog_relation(&parts)
                || parts == ["generate_series"];
            // CTE and derived-table names are not relations; an unqualified name that
            // is none of the above could be a user table, so the statement is left alone.
            if !catalog {
                self.other = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut tables = Tables {
        other: false,
        any: false,
    };
    let _ = statement.visit(&mut tables);
    matches!(statement, Statement::Query(_)) && tables.any && !tables.other
}

struct Rewriter {
    changed: bool,
}

/// pg_type's function columns (regproc in PostgreSQL) hold the function's name here.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
];

/// `proc.oid = typ.typreceive` → `proc.proname = typ.typreceive` (npgsql's type
/// loading joins pg_proc so); true when `expr` was changed.
fn proc_by_name(expr: &mut Expr) -> bool {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = expr
    else {
        return false;
    };
    let last = |e: &Expr| match e {
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.to_lowercase()),
        Expr::Identifier(i) => Some(i.value.to_lowercase()),
        _ => None,
    };
    let regproc = |e: &Expr| last(e).is_some_and(|n| REGPROC_COLUMNS.contains(&n.as_str()));
    let oid_side = if regproc(right) {
        left.as_mut()
    } else if regproc(left) {
        right.as_mut()
    } else {
        return false;
    };
    match oid_side {
        Expr::CompoundIdentifier(parts)
            if parts.len() == 2 && parts[1].value.eq_ignore_ascii_case("oid") =>
        {
            parts[1] = datafusion::sql::sqlparser::ast::Ident::new("proname");
            true
        }
        _ => false,
    }
}

/// Whether a cast's type is `name`, written bare or as `pg_catalog.name`.
fn type_is(data_type: &datafusion::sql::sqlparser::ast::DataType, name: &str) -> bool {
    let text = data_type.to_string().to_ascii_lowercase();
    text.strip_prefix("pg_catalog.").unwrap_or(&text) == name
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        _ => None,
    }
}

/// The plain arguments of a function call.
fn arguments(expr: &Expr) -> Vec<&Expr> {
    let Expr::Function(f) = expr else {
        return vec![];
    };
    let FunctionArguments::List(list) = &f.args else {
        return vec![];
    };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn strip_nested(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

fn positions(array: &str) -> Option<Expr> {
    parse_expr(&format!(
        "unnest(generate_series(1, array_length({array}, 1)))"
    ))
}

/// `indoption[i]` (pgjdbc's `I_INDOPTION[pos - 1]`): pg_index.indoption is an
/// int2vector, here in its text form "0 0", whose subscripts start at 0.
fn indoption_element(expr: &Expr) -> Option<Expr> {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return None;
    };
    let (AccessExpr::Subscript(Subscript::Index { index }), before) = access_chain.split_last()?
    else {
        return None;
    };
    // `a.indoption[i]` parses as `a` then `.indoption` then `[i]`, or as `a.indoption` then `[i]`.
    let (name, base) = match before {
        [] => {
            let name = match root.as_ref() {
                Expr::Identifier(i) => i.value.clone(),
                Expr::CompoundIdentifier(parts) => parts.last()?.value.clone(),
                _ => return None,
            };
            (name, root.to_string())
        }
        [.., AccessExpr::Dot(Expr::Identifier(i))] => {
            let base = Expr::CompoundFieldAccess {
                root: root.clone(),
                access_chain: before.to_vec(),
            };
            (i.value.clone(), base.to_string())
        }
        _ => return None,
    };
    let name = name.to_lowercase();
    if name != "indoption" && name != "i_indoption" {
        return None;
    }
    parse_expr(&format!(
        "CAST(NULLIF(split_part({base}, ' ', ({index}) + 1), '') AS SMALLINT)"
    ))
}

/// Names a column qualifier may use for the subquery's own tables.
fn local_names(select: &datafusion::sql::sqlparser::ast::Select) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut add = |factor: &TableFactor| match factor {
        TableFactor::Table { name, alias, .. } => match alias {
            Some(a) => {
                names.insert(a.name.value.to_lowercase());
            }
            None => {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident())
                    .map(|i| i.value.to_lowercase())
                    .collect();
                names.insert(parts.join("."));
                if let Some(last) = parts.last() {
                    names.insert(last.clone());
                }
            }
        },
        TableFactor::Derived { alias: Some(a), .. } => {
            names.insert(a.name.value.to_lowercase());
        }
        _ => {}
    };
    for table in &select.from {
        add(&table.relation);
        for join in &table.joins {
            add(&join.relation);
        }
    }
    names
}

/// Whether `expr` reads columns of the subquery's own tables and of the outer query.
fn references(expr: &Expr, local: &HashSet<String>) -> (bool, bool) {
    struct Refs<'a> {
        local: &'a HashSet<String>,
        inner: bool,
        outer: bool,
    }
    impl Visitor for Refs<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(_) => self.inner = true,
                Expr::CompoundIdentifier(parts) if parts.len() > 1 => {
                    let qualifier = parts[..parts.len() - 1]
                        .iter()
                        .map(|p| p.value.to_lowercase())
                        .collect::<Vec<_>>()
                        .join(".");
                    if self.local.contains(&qualifier) {
                        self.inner = true;
                    } else {
                        self.outer = true;
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut refs = Refs {
        local,
        inner: false,
        outer: false,
    };
    let _ = expr.visit(&mut refs);
    (refs.inner, refs.outer)
}

/// Whether a subquery reads columns of the outer query.
fn correlated(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let local = local_names(select);
    select
        .selection
        .as_ref()
        .is_some_and(|w| references(w, &local).1)
        || select.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                references(e, &local).1
            }
            _ => false,
        })
}

/// NULL, still naming the parameters `query` has (with their casts), so that the
/// statement's parameters keep their numbers and types.
fn null_keeping_parameters(query: &Query) -> Expr {
    struct Params(Vec<String>);
    impl Visitor for Params {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let placeholder = |e: &Expr| matches!(e, Expr::Value(v) if matches!(v.value, datafusion::sql::sqlparser::ast::Value::Placeholder(_)));
            match expr {
                Expr::Cast { expr: inner, .. } if placeholder(inner) => {
                    self.0.push(expr.to_string())
                }
                e if placeholder(e) && !self.0.iter().any(|p| p.contains(&e.to_string())) => {
                    self.0.push(e.to_string())
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut params = Params(vec![]);
    let _ = query.visit(&mut params);
    let null = Expr::value(datafusion::sql::sqlparser::ast::Value::Null);
    if params.0.is_empty() {
        return null;
    }
    let condition = params
        .0
        .iter()
        .map(|p| format!("{p} IS NULL"))
        .collect::<Vec<_>>()
        .join(" OR ");
    parse_expr(&format!("CASE WHEN {condition} THEN NULL END")).unwrap_or(null)
}

/// Finds outer references in a FROM clause (a lateral table function's arguments).
struct OuterIn<'a> {
    local: &'a HashSet<String>,
    outer: &'a mut bool,
}

impl Visitor for OuterIn<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if references(expr, self.local).1 {
            *self.outer = true;
        }
        ControlFlow::Continue(())
    }
}

fn conjuncts(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

fn is_column(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// A scalar subquery DataFusion can plan: its single item (not an aggregate; those
/// are left alone) wrapped in max(), conditions on the outer row alone moved into a CASE around it. A
/// correlation DataFusion cannot plan (other than `inner column = outer column`)
/// makes it NULL, as datafusion-postgres does in a SELECT list.
fn plannable(query: &Query) -> Option<Expr> {
    let null = null_keeping_parameters(query);
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if select.projection.len() != 1
        || !matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
    {
        return None;
    }
    let item = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) => e,
        SelectItem::ExprWithAlias { expr, .. } => expr,
        _ => return None,
    };
    if function_name(item).is_some_and(|n| AGGREGATES.contains(&n.as_str())) {
        // Left as sent: DataFusion plans these as well as it can, and
        // datafusion-postgres matches some whole texts containing them.
        return None;
    }
    let local = local_names(select);
    let lateral = select.from.iter().any(|t| {
        let mut outer = false;
        let _ = t.visit(&mut OuterIn {
            local: &local,
            outer: &mut outer,
        });
        outer
    });
    if lateral || references(item, &local).1 {
        return Some(null);
    }
    let mut lifted = Vec::new();
    let mut kept = Vec::new();
    let mut parts = Vec::new();
    if let Some(selection) = &select.selection {
        conjuncts(selection.clone(), &mut parts);
    }
    for part in parts {
        match references(&part, &local) {
            (_, false) => kept.push(part),
            (false, true) => lifted.push(part),
            (true, true) => {
                let equi = matches!(&part, Expr::BinaryOp { left, op: BinaryOperator::Eq, right }
                    if is_column(left) && is_column(right)
                        && references(left, &local).0 != references(right, &local).0);
                if !equi {
                    return Some(null);
                }
                kept.push(part);
            }
        }
    }
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let wrapped = parse_expr(&format!("max({item})"))?;
    match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) => *e = wrapped,
        SelectItem::ExprWithAlias { expr, .. } => *expr = wrapped,
        _ => return None,
    }
    select.selection = kept.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    let subquery = Expr::Subquery(Box::new(query));
    if lifted.is_empty() {
        return Some(subquery);
    }
    let condition = lifted
        .iter()
        .map(|c| format!("({c})"))
        .collect::<Vec<_>>()
        .join(" AND ");
    parse_expr(&format!("CASE WHEN {condition} THEN ({subquery}) END"))
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // A scalar subquery as a SELECT-list item: parenthesised so that
        // datafusion-postgres keeps it (see the module comment).
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in select.projection.iter_mut() {
                let expr = match item {
                    SelectItem::UnnamedExpr(e) => e,
                    SelectItem::ExprWithAlias { expr, .. } => expr,
                    _ => continue,
                };
                if let Expr::Subquery(q) = expr {
                    // Only a correlated one would be replaced; the others keep the
                    // text as sent (datafusion-postgres matches some whole texts).
                    if correlated(q) {
                        self.changed = true;
                    }
                    let q = q.clone();
                    *expr = Expr::Nested(Box::new(Expr::Subquery(q)));
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if proc_by_name(expr) {
            self.changed = true;
            return ControlFlow::Continue(());
        }
        if let Some(e) = indoption_element(expr) {
            *expr = e;
            self.changed = true;
            return ControlFlow::Continue(());
        }
        if let Expr::CompoundFieldAccess { root, access_chain } = expr {
            let [AccessExpr::Dot(Expr::Identifier(key))] = access_chain.as_slice() else {
                return ControlFlow::Continue(());
            };
            let key = key.value.to_lowercase();
            let root = strip_nested(root.as_ref()).clone();
            let replacement = match function_name(&root).as_deref() {
                Some("_pg_expandarray") => {
                    let Some(array) = arguments(&root).first().map(|a| a.to_string()) else {
                        return ControlFlow::Continue(());
                    };
                    match key.as_str() {
                        "x" => parse_expr(&format!("unnest({array})")),
                        "n" => positions(&array),
                        _ => None,
                    }
                }
                // `(alias.keys).x` over a column that was `_pg_expandarray(...)`.
                None if key == "x"
                    && matches!(root, Expr::CompoundIdentifier(_) | Expr::Identifier(_)) =>
                {
                    Some(root)
                }
                _ => None,
            };
            if let Some(replacement) = replacement {
                *expr = replacement;
                self.changed = true;
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
        {
            // 'pg_catalog.array_in'::regproc: our pg_type/pg_proc columns hold function
            // names as text (pgjdbc's type cache compares typinput with it).
            if let Expr::Value(v) = inner.as_ref() {
                if let datafusion::sql::sqlparser::ast::Value::SingleQuotedString(name) = &v.value {
                    if type_is(data_type, "regproc") {
                        let bare = name.rsplit('.').next().unwrap_or(name).to_string();
                        *expr = Expr::Value(
                            datafusion::sql::sqlparser::ast::Value::SingleQuotedString(bare).into(),
                        );
                        self.changed = true;
                        return ControlFlow::Continue(());
                    }
                }
            }
            // `conrelid::regclass` (psql's "Referenced by"): the relation's name, schema-
            // qualified outside `public`, as regclass prints it; not its number. Only
            // pg_constraint's columns: other psql texts are matched whole by
            // datafusion-pg-catalog, and must reach it unchanged.
            let column = match inner.as_ref() {
                Expr::Identifier(i) => Some(i),
                Expr::CompoundIdentifier(parts) => parts.last(),
                _ => None,
            }
            .is_some_and(|i| matches!(i.value.as_str(), "conrelid" | "confrelid"));
            if column && type_is(data_type, "regclass") {
                if let Some(e) = parse_expr(&format!(
                    "((SELECT max(CASE WHEN rn.nspname = 'public' THEN rc.relname \
                     ELSE rn.nspname || '.' || rc.relname END) \
                     FROM pg_catalog.pg_class rc JOIN pg_catalog.pg_namespace rn \
                     ON rn.oid = rc.relnamespace WHERE rc.oid = {inner}))"
                )) {
                    *expr = e;
                    self.changed = true;
                    return ControlFlow::Continue(());
                }
            }
            let parameter = matches!(inner.as_ref(), Expr::Value(v)
                if matches!(v.value, datafusion::sql::sqlparser::ast::Value::Placeholder(_)));
            if parameter && type_is(data_type, "regclass") {
                // A relation named by a bound parameter cannot be resolved when the
                // statement is planned; it names no relation here (SQLAlchemy's
                // pg_description joins, which are empty anyway).
                if let Some(e) = parse_expr(&format!(
                    "CASE WHEN CAST({inner} AS TEXT) IS NULL THEN NULL END"
                )) {
                    *expr = e;
                    self.changed = true;
                }
                return ControlFlow::Continue(());
            }
        }
        match function_name(expr).as_deref() {
            Some("_pg_expandarray") => {
                if let Some(array) = arguments(expr).first().map(|a| a.to_string()) {
                    if let Some(e) = parse_expr(&format!("unnest({array})")) {
                        *expr = e;
                        self.changed = true;
                    }
                }
            }
            Some("generate_subscripts") => {
                let args = arguments(expr);
                if let (Some(array), Some(dim)) = (args.first(), args.get(1)) {
                    // The dimension stays (it may be a bound parameter).
                    if let Some(e) = parse_expr(&format!(
                        "unnest(generate_series(1, array_length({array}, {dim})))"
                    )) {
                        *expr = e;
                        self.changed = true;
                    }
                }
            }
            _ => {}
        }
        if let Expr::Subquery(query) = expr {
            if let Some(replacement) = plannable(query) {
                *expr = replacement;
                self.changed = true;
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewrite(sql: &str) -> Option<String> {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        super::rewrite(sql, &mut statements).then(|| crate::pgwire::pgcompat::text(&statements))
    }

    #[test]
    fn expandarray_becomes_unnest() {
        let sql = rewrite("SELECT (information_schema._pg_expandarray(i.indkey)).n AS k, information_schema._pg_expandarray(i.indkey) AS keys FROM pg_catalog.pg_index i").unwrap();
        assert!(
            sql.contains("unnest(generate_series(1, array_length(i.indkey, 1))) AS k"),
            "{sql}"
        );
        assert!(sql.contains("unnest(i.indkey) AS keys"), "{sql}");
        let sql = rewrite("SELECT r.a FROM (SELECT 1 AS a, information_schema._pg_expandarray(i.indkey) AS keys FROM pg_catalog.pg_index i) r WHERE r.a = (r.keys).x").unwrap();
        assert!(sql.contains("r.a = r.keys"), "{sql}");
    }

    #[test]
    fn correlated_scalar_subqueries_are_aggregated_and_kept() {
        let sql = rewrite("SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a").unwrap();
        assert!(
            sql.contains("((SELECT max(pg_catalog.pg_get_expr(d.adbin, d.adrelid, true))"),
            "{sql}"
        );
        let sql = rewrite("SELECT a.attname, (SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef) FROM pg_catalog.pg_attribute a").unwrap();
        assert!(
            sql.contains("CASE WHEN (a.atthasdef) THEN ((SELECT max(d.adbin) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid)) END"),
            "{sql}"
        );
        let sql = rewrite("SELECT (SELECT c.collname FROM pg_catalog.pg_collation c WHERE c.oid <> a.attcollation) FROM pg_catalog.pg_attribute a").unwrap();
        assert!(
            sql.starts_with("SELECT (NULL) FROM") || sql.starts_with("SELECT NULL FROM"),
            "{sql}"
        );
        let sql = rewrite("SELECT (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid) FROM pg_catalog.pg_namespace n").unwrap();
        assert!(sql.contains("((SELECT count(*)"), "{sql}");
    }

    #[test]
    fn statements_over_user_tables_are_left_alone() {
        assert_eq!(
            rewrite("SELECT (SELECT x FROM pg_catalog.pg_class c WHERE c.oid = o.id) FROM sales.orders o"),
            None
        );
        assert_eq!(rewrite("SELECT 1"), None);
        assert_eq!(
            rewrite("SELECT (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = g.x) FROM sales.generate_series g"),
            None
        );
    }

    #[test]
    fn indoption_subscripts_read_the_int2vector_text() {
        let sql = rewrite("SELECT CASE tmp.I_INDOPTION[tmp.ORDINAL_POSITION - 1] & 1::smallint WHEN 1 THEN 'D' ELSE 'A' END FROM (SELECT i.indoption AS I_INDOPTION, 1 AS ORDINAL_POSITION FROM pg_catalog.pg_index i) tmp").unwrap();
        assert!(
            sql.contains("CAST(NULLIF(split_part(tmp.I_INDOPTION, ' ', (tmp.ORDINAL_POSITION - 1) + 1), '') AS SMALLINT)"),
            "{sql}"
        );
    }

    #[test]
    fn texts_datafusion_postgres_matches_are_kept() {
        // psql's publication query: an aggregated subquery, nothing to change.
        assert_eq!(
            rewrite("SELECT pubname, (CASE WHEN pr.prattrs IS NOT NULL THEN (SELECT string_agg(attname, ', ') FROM pg_catalog.pg_attribute WHERE attrelid = pr.prrelid) ELSE NULL END) FROM pg_catalog.pg_publication_rel pr"),
            None
        );
    }
}
