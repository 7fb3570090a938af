//! From a write statement to a checked [`WriteNode`].
//!
//! DataFusion plans the statement's core (`INSERT ... VALUES/SELECT`, `UPDATE ...
//! SET ... WHERE`, `DELETE ... WHERE`) and the safety pipeline checks that plan as
//! any other. What DataFusion does not plan is taken off first and checked here:
//! `RETURNING` becomes a query over the target (checked as a read: SELECT privilege,
//! denied columns, masks), `ON CONFLICT` expressions are planned over the target
//! and `excluded`. The node's expressions are then read off the *checked* plan
//! (row filters included), flattened onto the target's columns.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::ast::{self, Ident, Statement, VisitMut, VisitorMut};
use switchyard_config::{Dataset, Privilege};
use switchyard_safety::{Principal, WriteRules};
use switchyard_sqlstate::SqlState;

use super::node::{Conflict, ConflictOn, WriteKind, WriteNode};
use crate::EngineError;

/// What of a write statement DataFusion does not plan, taken off before it does.
#[derive(Debug, Clone)]
pub struct Extras {
    returning: Option<Vec<ast::SelectItem>>,
    on_conflict: Option<ast::OnConflict>,
    /// INSERT: the target columns named (empty: all).
    columns: Vec<String>,
    /// UPDATE: the columns assigned, in order.
    assigned: Vec<String>,
    /// The target as written, and its alias.
    table: ast::ObjectName,
    alias: Option<Ident>,
}

impl Extras {
    /// RETURNING as a query over the target (`SELECT items FROM table [AS alias]`),
    /// checked as any read: what is returned is what the user may read.
    pub fn returning_query(&self) -> Option<String> {
        let items = self.returning.as_ref()?;
        let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        // Each name part quoted as normalized (`local` is a keyword in FROM).
        let quote = |id: &Ident| format!("\"{}\"", normalize(id).replace('"', "\"\""));
        let alias = match &self.alias {
            Some(a) => format!(" AS {}", quote(a)),
            None => String::new(),
        };
        let table: Vec<String> = self
            .table
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(quote))
            .collect();
        Some(format!(
            "SELECT {} FROM {}{alias}",
            items.join(", "),
            table.join(".")
        ))
    }
}

/// An identifier as DataFusion normalizes it (unquoted → lower case).
fn normalize(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

fn unsupported(message: impl Into<String>) -> EngineError {
    EngineError::coded(SqlState::FEATURE_NOT_SUPPORTED, message)
}

/// A write statement without what DataFusion does not plan, and that part; `None`
/// for any other statement.
pub fn split(statement: &Statement) -> Option<Result<(Statement, Extras), EngineError>> {
    let mut core = statement.clone();
    let extras = match &mut core {
        Statement::Insert(insert) => {
            let ast::TableObject::TableName(name) = &insert.table else {
                return Some(Err(unsupported("INSERT into a table function")));
            };
            let on_conflict = match insert.on.take() {
                None => None,
                Some(ast::OnInsert::OnConflict(c)) => Some(c),
                Some(other) => {
                    return Some(Err(unsupported(format!(
                        "{} is not PostgreSQL; use ON CONFLICT",
                        other.to_string().trim()
                    ))))
                }
            };
            let alias = insert.table_alias.take().map(|a| a.alias);
            Extras {
                returning: insert.returning.take(),
                on_conflict,
                columns: insert
                    .columns
                    .iter()
                    .filter_map(|c| c.0.last().and_then(|p| p.as_ident()).map(normalize))
                    .collect(),
                assigned: vec![],
                table: name.clone(),
                alias,
            }
        }
        Statement::Update(update) => {
            let ast::TableFactor::Table { name, alias, .. } = &update.table.relation else {
                return Some(Err(unsupported("UPDATE of something other than a table")));
            };
            let mut assigned = Vec::new();
            for a in &update.assignments {
                match &a.target {
                    ast::AssignmentTarget::ColumnName(n) => {
                        if let Some(id) = n.0.last().and_then(|p| p.as_ident()) {
                            assigned.push(normalize(id));
                        }
                    }
                    ast::AssignmentTarget::Tuple(_) => {
                        return Some(Err(unsupported(
                            "UPDATE ... SET (a, b) = (...); assign each column on its own",
                        )))
                    }
                }
            }
            Extras {
                returning: update.returning.take(),
                on_conflict: None,
                columns: vec![],
                assigned,
                table: name.clone(),
                alias: alias.as_ref().map(|a| a.name.clone()),
            }
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
            };
            let Some(ast::TableFactor::Table { name, alias, .. }) =
                tables.first().map(|t| &t.relation)
            else {
                return Some(Err(unsupported("DELETE from something other than a table")));
            };
            if delete.using.is_some() {
                return Some(Err(unsupported(
                    "DELETE ... USING is not supported yet; use WHERE ... IN (SELECT ...)",
                )));
            }
            Extras {
                returning: delete.returning.take(),
                on_conflict: None,
                columns: vec![],
                assigned: vec![],
                table: name.clone(),
                alias: alias.as_ref().map(|a| a.name.clone()),
            }
        }
        _ => return None,
    };
    Some(Ok((core, extras)))
}

/// What [`build`] needs besides the plans.
pub struct Context<'a> {
    /// The dataset written.
    pub dataset: &'a Dataset,
    /// The resolved target (`schema`, `name`).
    pub target: (&'a str, &'a str),
    /// The user.
    pub who: &'a Principal,
    /// The user's session.
    pub state: &'a SessionState,
    /// The policy.
    pub policy: &'a switchyard_safety::Policy,
}

/// The dataset a write's target names, and the target resolved.
pub fn target_of(plan: &LogicalPlan) -> Option<&TableReference> {
    match plan {
        LogicalPlan::Dml(dml) => Some(&dml.table_name),
        _ => None,
    }
}

/// Builds the node from the statement's plan before (`unchecked`) and after
/// (`checked`) the pipeline: the columns read and written are judged on the former
/// (the user's own expressions), the expressions sent on the latter (with the row
/// filter). `returning` is the checked RETURNING query, if any.
pub fn build(
    cx: &Context<'_>,
    unchecked: &LogicalPlan,
    checked: LogicalPlan,
    extras: &Extras,
    returning: Option<LogicalPlan>,
) -> Result<WriteNode, EngineError> {
    let (LogicalPlan::Dml(user), LogicalPlan::Dml(dml)) = (unchecked, checked) else {
        return Err(unsupported(
            "EXPLAIN of INSERT, UPDATE or DELETE is not supported",
        ));
    };
    let (schema, table) = cx.target;
    let columns = DFSchema::try_from_qualified_schema(dml.table_name.clone(), &dml.target.schema())
        .map_err(EngineError::from)?;
    let rules = WriteRules::new(cx.policy, cx.who, (schema, table), &columns, cx.state)
        .map_err(EngineError::Refused)?;
    let refused = EngineError::Refused;
    let mut node = WriteNode {
        table: TableReference::partial(schema, table),
        origin: cx.dataset.origin.clone(),
        kind: WriteKind::Delete,
        filter: None,
        check: None,
        input: None,
        returning: None,
        schema: Arc::new(DFSchema::empty()),
    };
    match dml.op {
        WriteOp::Insert(_) => {
            let named: Vec<String> = if extras.columns.is_empty() {
                columns.fields().iter().map(|f| f.name().clone()).collect()
            } else {
                extras.columns.clone()
            };
            for c in &named {
                rules.may_write(c).map_err(refused)?;
            }
            let input = insert_rows(&dml.input, &named)?;
            let on_conflict = match &extras.on_conflict {
                None => None,
                Some(c) => Some(conflict(cx, &rules, &dml, extras, c)?),
            };
            node.kind = WriteKind::Insert { on_conflict };
            node.check = rules.check.clone();
            node.input = Some(input);
        }
        WriteOp::Update | WriteOp::Delete => {
            // The user's expressions: every column they read must be theirs to read.
            let (values, predicates) = flatten(&user.input)?;
            for e in predicates.iter().chain(
                extras
                    .assigned
                    .iter()
                    .filter_map(|c| values.get(c.as_str())),
            ) {
                for c in e.column_refs() {
                    rules.may_read(&c.name).map_err(refused)?;
                }
            }
            for c in &extras.assigned {
                rules.may_write(c).map_err(refused)?;
            }
            // The checked plan's: row filter and masks in them.
            let (mut values, predicates) = flatten(&dml.input)?;
            node.filter = conjunction(predicates);
            if matches!(dml.op, WriteOp::Update) {
                let assignments = extras
                    .assigned
                    .iter()
                    .map(|c| {
                        values
                            .remove(c.as_str())
                            .map(|e| (c.clone(), assigned(e)))
                            .ok_or_else(|| {
                                EngineError::coded(
                                    SqlState::UNDEFINED_COLUMN,
                                    format!(
                                        "column \"{c}\" of relation \"{table}\" does not exist"
                                    ),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                node.kind = WriteKind::Update { assignments };
                node.check = rules.check.clone();
            }
        }
        _ => return Err(unsupported(format!("{} is not supported", dml.op))),
    }
    if let Some(returning) = returning {
        node.schema = Arc::clone(returning.schema());
        node.returning = Some(returning);
    }
    Ok(node)
}

/// The rows an INSERT sends: the columns it names, off DataFusion's projection of
/// the source onto the target's columns. A text value DataFusion would cast to a
/// non-text column is sent as text instead, for the origin to read as its column's
/// type, as PostgreSQL reads a quoted literal (`'{a,"b c"}'` into text[], JSON,
/// enums), which DataFusion's casts do not all do alike.
fn insert_rows(input: &LogicalPlan, named: &[String]) -> Result<LogicalPlan, EngineError> {
    use datafusion::arrow::datatypes::DataType;
    let is_text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
    let LogicalPlan::Projection(p) = input else {
        return Err(unsupported("INSERT whose rows are not a projection"));
    };
    let values = untyped_text(&p.input)?;
    let source = values.schema();
    let mut exprs = Vec::with_capacity(named.len());
    for name in named {
        let Some(i) = p.schema.fields().iter().position(|f| f.name() == name) else {
            return Err(EngineError::coded(
                SqlState::UNDEFINED_COLUMN,
                format!("column \"{name}\" does not exist"),
            ));
        };
        let expr = p.expr[i].clone().unalias();
        let expr = match &expr {
            Expr::Cast(c)
                if !is_text(c.field.data_type())
                    && c.expr.get_type(source.as_ref()).is_ok_and(|t| is_text(&t)) =>
            {
                c.expr.as_ref().clone().alias(name)
            }
            _ => expr.alias(name),
        };
        exprs.push(expr);
    }
    // Over a projection, one projection: a column the source computed is referred
    // to by its display name, which SQL sent to an origin cannot name.
    let (input, exprs) = match &values {
        LogicalPlan::Projection(source) => {
            let by_name: HashMap<Column, Expr> = source
                .expr
                .iter()
                .zip(source.schema.iter())
                .map(|(e, (q, f))| {
                    (
                        Column::new(q.cloned(), f.name()),
                        e.clone().unalias_nested().data,
                    )
                })
                .collect();
            let exprs = exprs
                .into_iter()
                .map(|e| {
                    e.transform(|e| match e {
                        Expr::Column(c) => match by_name.get(&c) {
                            Some(v) => Ok(Transformed::yes(v.clone())),
                            None => Ok(Transformed::no(Expr::Column(c))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                    .map(|t| t.data)
                })
                .collect::<datafusion::common::Result<Vec<_>>>()
                .map_err(EngineError::from)?;
            (source.input.as_ref().clone(), exprs)
        }
        other => (other.clone(), exprs),
    };
    datafusion::logical_expr::LogicalPlanBuilder::from(input)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(EngineError::from)
}

/// A `VALUES` list whose text literals DataFusion typed as their target columns
/// (`CAST('...' AS List(Utf8))`) with the casts taken off again, in columns where
/// every row is such a literal or NULL; other plans as they are.
fn untyped_text(plan: &LogicalPlan) -> Result<LogicalPlan, EngineError> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    let LogicalPlan::Values(v) = plan else {
        return Ok(plan.clone());
    };
    let text_literal = |e: &Expr| -> Option<Expr> {
        match e {
            Expr::Cast(c) if !matches!(c.field.data_type(), DataType::Utf8) => {
                match c.expr.as_ref() {
                    Expr::Literal(ScalarValue::Utf8(Some(_)), _) => Some(c.expr.as_ref().clone()),
                    _ => None,
                }
            }
            Expr::Literal(ScalarValue::Utf8(None), _) => Some(e.clone()),
            _ => None,
        }
    };
    let columns = v.schema.fields().len();
    let mut rows = v.values.clone();
    let mut changed = false;
    for c in 0..columns {
        let is_text =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
        if is_text(v.schema.field(c).data_type()) {
            continue;
        }
        let all: Option<Vec<Expr>> = v.values.iter().map(|r| text_literal(&r[c])).collect();
        let Some(all) = all else { continue };
        if !all
            .iter()
            .any(|e| matches!(e, Expr::Literal(ScalarValue::Utf8(Some(_)), _)))
        {
            continue;
        }
        for (row, e) in rows.iter_mut().zip(all) {
            row[c] = e;
        }
        changed = true;
    }
    if !changed {
        return Ok(plan.clone());
    }
    datafusion::logical_expr::LogicalPlanBuilder::values(rows)
        .and_then(|b| b.build())
        .map_err(EngineError::from)
}

/// An assigned value without the cast to its column's type DataFusion adds: the
/// origin casts an assigned value to its column as PostgreSQL does (and some
/// column types have no cast DataFusion could write, e.g. `NULL` to text[]).
fn assigned(value: Expr) -> Expr {
    match value {
        Expr::Cast(c) => *c.expr,
        other => other,
    }
}

/// Each output column of a write's input (`Projection`s and `Filter`s over the
/// target's scan) as an expression over the target's columns, and the filters'
/// predicates likewise.
fn flatten(plan: &LogicalPlan) -> Result<(HashMap<String, Expr>, Vec<Expr>), EngineError> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let values = scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| {
                    (
                        f.name().clone(),
                        Expr::Column(Column::new_unqualified(f.name())),
                    )
                })
                .collect();
            let predicates = scan.filters.clone();
            Ok((values, predicates))
        }
        LogicalPlan::Filter(f) => {
            let (values, mut predicates) = flatten(&f.input)?;
            predicates.push(substitute(&f.predicate, &values)?);
            Ok((values, predicates))
        }
        LogicalPlan::Projection(p) => {
            let (values, predicates) = flatten(&p.input)?;
            let mut out = HashMap::new();
            for (expr, field) in p.expr.iter().zip(p.schema.fields()) {
                out.insert(
                    field.name().clone(),
                    substitute(&expr.clone().unalias_nested().data, &values)?,
                );
            }
            Ok((out, predicates))
        }
        LogicalPlan::SubqueryAlias(a) => flatten(&a.input),
        other => Err(unsupported(format!(
            "this UPDATE or DELETE needs {} work Switchyard cannot send to the origin yet",
            other.display()
        ))),
    }
}

/// `expr` with each column replaced by its value in `values`.
fn substitute(expr: &Expr, values: &HashMap<String, Expr>) -> Result<Expr, EngineError> {
    let mut subquery = false;
    let _ = expr.apply(|e| {
        if matches!(
            e,
            Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::ScalarSubquery(_)
                | Expr::OuterReferenceColumn(..)
        ) {
            subquery = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if subquery {
        return Err(unsupported(
            "subqueries in UPDATE or DELETE are not supported yet; \
             select the keys first and write WHERE key IN (...)",
        ));
    }
    expr.clone()
        .transform(|e| match e {
            Expr::Column(c) => match values.get(&c.name) {
                Some(v) => Ok(Transformed::yes(v.clone())),
                None => Ok(Transformed::no(Expr::Column(c))),
            },
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .map_err(EngineError::from)
}

/// Qualifies unqualified column names with `table`, so that in `ON CONFLICT DO
/// UPDATE` they mean the existing row (as in PostgreSQL) and not `excluded`'s.
struct Qualify(Ident);

impl VisitorMut for Qualify {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        if let ast::Expr::Identifier(id) = expr {
            *expr = ast::Expr::CompoundIdentifier(vec![self.0.clone(), id.clone()]);
        }
        ControlFlow::Continue(())
    }
}

fn conflict(
    cx: &Context<'_>,
    rules: &WriteRules,
    dml: &datafusion::logical_expr::DmlStatement,
    extras: &Extras,
    c: &ast::OnConflict,
) -> Result<Conflict, EngineError> {
    let target = match &c.conflict_target {
        None => ConflictOn::Any,
        Some(ast::ConflictTarget::Columns(cols)) => {
            ConflictOn::Columns(cols.iter().map(normalize).collect())
        }
        Some(ast::ConflictTarget::OnConstraint(name)) => ConflictOn::Constraint(
            name.0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize)
                .unwrap_or_default(),
        ),
    };
    let ast::OnConflictAction::DoUpdate(update) = &c.action else {
        return Ok(Conflict {
            target,
            update: None,
            filter: None,
        });
    };
    let (schema, name) = cx.target;
    if !cx
        .policy
        .access(cx.who, schema, name)
        .privileges
        .contains(&Privilege::Update)
    {
        return Err(EngineError::Refused(
            switchyard_safety::SafetyError::TableDenied {
                table: format!("{schema}.{name}"),
                privilege: "update".into(),
            },
        ));
    }
    // The existing row as the statement names it (alias or table name) and the
    // proposed row as `excluded`.
    let qualifier = extras
        .alias
        .clone()
        .unwrap_or_else(|| Ident::new(dml.table_name.table()));
    let target_schema = dml.target.schema();
    let existing =
        DFSchema::try_from_qualified_schema(normalize(&qualifier).as_str(), &target_schema)
            .map_err(EngineError::from)?;
    let proposed = DFSchema::try_from_qualified_schema("excluded", &target_schema)
        .map_err(EngineError::from)?;
    let mut both = existing.clone();
    both.merge(&proposed);
    let plan_expr = |e: &ast::Expr| -> Result<Expr, EngineError> {
        let mut e = e.clone();
        let _ = e.visit(&mut Qualify(qualifier.clone()));
        let expr = cx
            .state
            .create_logical_expr(&e.to_string(), &both)
            .map_err(EngineError::from)?;
        for col in expr.column_refs() {
            rules.may_read(&col.name).map_err(EngineError::Refused)?;
        }
        Ok(expr)
    };
    let mut assignments = Vec::new();
    for a in &update.assignments {
        let ast::AssignmentTarget::ColumnName(n) = &a.target else {
            return Err(unsupported(
                "ON CONFLICT DO UPDATE SET (a, b) = (...); assign each column on its own",
            ));
        };
        let column =
            n.0.last()
                .and_then(|p| p.as_ident())
                .map(normalize)
                .unwrap_or_default();
        target_schema.field_with_name(&column).map_err(|_| {
            EngineError::coded(
                SqlState::UNDEFINED_COLUMN,
                format!("column \"{column}\" of relation \"{name}\" does not exist"),
            )
        })?;
        rules.may_write(&column).map_err(EngineError::Refused)?;
        assignments.push((column, plan_expr(&a.value)?));
    }
    let mut filters = Vec::new();
    if let Some(selection) = &update.selection {
        filters.push(plan_expr(selection)?);
    }
    // Only a row the user sees may be updated.
    if let Some(check) = &rules.check {
        filters.push(check.clone());
    }
    Ok(Conflict {
        target,
        update: Some(assignments),
        filter: conjunction(filters),
    })
}
