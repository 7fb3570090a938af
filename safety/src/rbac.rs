//! RBAC_GATE: table privileges, column access, and the plan rewrite that puts row
//! filters and column masks directly on top of every scan of a governed table —
//! inside subqueries, CTEs, joins and UNIONs alike, since each is a scan.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::disjunction;
use datafusion::logical_expr::{
    cast, lit, Expr, Filter, LogicalPlan, Projection, TableScan, WriteOp,
};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{Optimizer, OptimizerContext};
use datafusion::prelude::Column;
use switchyard_config::{Mask, Privilege};
use switchyard_planner::Unfederated;

use crate::policy::{ColumnAccess, Policy, Principal};
use crate::SafetyError;

/// Schemas every session reads for catalog emulation (psql's `\dt`, drivers' metadata).
pub(crate) const CATALOG_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// `schema.table` of a scan, unqualified names resolved against the default schema.
pub(crate) fn resolve(policy: &Policy, name: &TableReference) -> (String, String) {
    let schema = name.schema().unwrap_or(&policy.default_schema).to_string();
    (schema, name.table().to_string())
}

pub(crate) fn is_catalog(schema: &str) -> bool {
    CATALOG_SCHEMAS.contains(&schema)
}

/// Table functions (`generate_series(...)`) scan as `name()`: no stored data, no grant.
pub(crate) fn is_table_function(name: &TableReference) -> bool {
    name.table().ends_with("()")
}

/// Every user-table scan in the plan (subqueries included), in plan order.
pub(crate) fn user_scans(policy: &Policy, plan: &LogicalPlan) -> Vec<(String, String)> {
    let mut out = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let (s, t) = resolve(policy, &scan.table_name);
            if !is_catalog(&s)
                && !is_table_function(&scan.table_name)
                && !out.contains(&(s.clone(), t.clone()))
            {
                out.push((s, t));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("the visitor never fails");
    out
}

/// The table a DML statement writes and the privilege it needs.
pub(crate) fn write_target(plan: &LogicalPlan) -> Option<(TableReference, Privilege)> {
    match plan {
        LogicalPlan::Dml(dml) => {
            let privilege = match dml.op {
                WriteOp::Insert(_) | WriteOp::Ctas => Privilege::Insert,
                WriteOp::Update => Privilege::Update,
                WriteOp::Delete => Privilege::Delete,
                // Any other write (TRUNCATE and the like) needs DELETE.
                _ => Privilege::Delete,
            };
            Some((dml.table_name.clone(), privilege))
        }
        LogicalPlan::Explain(e) => write_target(&e.plan),
        LogicalPlan::Analyze(a) => write_target(&a.input),
        // PREPARE p AS DELETE ...: judged now, since EXECUTE shows no tables.
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p)) => {
            write_target(&p.input)
        }
        _ => None,
    }
}

/// Checks privileges and columns, then rewrites the plan; notes say what was applied.
/// `scans` are the plan's user-table scans ([`user_scans`]) and `target` its DML
/// target, both already found by the pipeline.
pub(crate) fn gate(
    policy: &Policy,
    who: &Principal,
    plan: LogicalPlan,
    scans: &[(String, String)],
    target: Option<&(String, String)>,
    state: &SessionState,
    notes: &mut Vec<String>,
) -> Result<LogicalPlan, SafetyError> {
    // The write privilege on a DML target is AST_CHECKER's to judge (read-only roles
    // get 25006 there); here the target only needs no SELECT grant.
    let mut governed = false;
    // An INSERT does not scan its target: a scan of it is a read of its own.
    let insert = matches!(&plan, LogicalPlan::Dml(d) if matches!(d.op, WriteOp::Insert(_)));
    for (s, t) in scans {
        let access = policy.access(who, s, t);
        let is_target = !insert && target.is_some_and(|(ts, tt)| ts == s && tt == t);
        if !access.privileges.contains(&Privilege::Select) && !is_target {
            return Err(SafetyError::TableDenied {
                table: format!("{s}.{t}"),
                privilege: "select".into(),
            });
        }
        governed |= access.row_filter.is_some() || access.has_column_rules();
    }
    if !governed {
        return Ok(plan);
    }
    match (&plan, target) {
        (_, None) => check_columns(policy, who, &plan, state)?,
        // What an INSERT reads is its source, checked as any query; the columns an
        // UPDATE or DELETE reads of its target are the engine's write rules to judge.
        (LogicalPlan::Dml(dml), Some(_)) if matches!(dml.op, WriteOp::Insert(_)) => {
            check_columns(policy, who, &dml.input, state)?
        }
        _ => {}
    }
    let rewritten = plan
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan) => guard_scan(policy, who, scan, state, notes),
            other => Ok(Transformed::no(other)),
        })
        .map_err(|e| match e {
            datafusion::error::DataFusionError::External(inner) => {
                match inner.downcast::<SafetyError>() {
                    Ok(safety) => *safety,
                    Err(other) => SafetyError::RowFilter {
                        table: "?".into(),
                        reason: other.to_string(),
                    },
                }
            }
            other => SafetyError::RowFilter {
                table: "?".into(),
                reason: other.to_string(),
            },
        })?
        .data;
    // Masks may change a column's type (hash → text): recompute the schemas above.
    rewritten
        .transform_up_with_subqueries(|p| Ok(Transformed::yes(p.recompute_schema()?)))
        .map(|t| t.data)
        .map_err(|e| SafetyError::RowFilter {
            table: "?".into(),
            reason: e.to_string(),
        })
}

/// Refuses the plan when, after DataFusion's own column pruning, a scan still
/// reads a column the user may not see. Pruning follows every reference through
/// aliases, `*`, subqueries, CTEs and joins, so this is exactly "the column is used".
fn check_columns(
    policy: &Policy,
    who: &Principal,
    plan: &LogicalPlan,
    state: &SessionState,
) -> Result<(), SafetyError> {
    let inner = match plan {
        LogicalPlan::Explain(e) => e.plan.as_ref().clone(),
        LogicalPlan::Analyze(a) => a.input.as_ref().clone(),
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p)) => {
            p.input.as_ref().clone()
        }
        other => other.clone(),
    };
    let internal = |e: datafusion::error::DataFusionError| SafetyError::RowFilter {
        table: "?".into(),
        reason: format!("column check failed: {e}"),
    };
    let analyzed = state
        .analyzer()
        .execute_and_check(inner, state.config_options(), |_, _| {})
        .map_err(internal)?;
    let pruned = Optimizer::with_rules(vec![Arc::new(OptimizeProjections::new())])
        .optimize(analyzed, &OptimizerContext::new(), |_, _| {})
        .map_err(internal)?;
    let mut denied = None;
    pruned
        .apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let (s, t) = resolve(policy, &scan.table_name);
                if is_catalog(&s) || is_table_function(&scan.table_name) {
                    return Ok(TreeNodeRecursion::Continue);
                }
                let access = policy.access(who, &s, &t);
                let schema = scan.source.schema();
                let used: Vec<usize> = match &scan.projection {
                    Some(p) => p.clone(),
                    None => (0..schema.fields().len()).collect(),
                };
                for i in used {
                    let name = schema.field(i).name();
                    if access.column(name) == ColumnAccess::Denied {
                        denied = Some(SafetyError::ColumnDenied {
                            column: name.clone(),
                            table: format!("{s}.{t}"),
                        });
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("the visitor never fails");
    denied.map_or(Ok(()), Err)
}

fn external(e: SafetyError) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

/// `scan` → `Projection(masks)` over `Filter(row filter)` over `scan`.
fn guard_scan(
    policy: &Policy,
    who: &Principal,
    scan: TableScan,
    state: &SessionState,
    notes: &mut Vec<String>,
) -> DfResult<Transformed<LogicalPlan>> {
    let (s, t) = resolve(policy, &scan.table_name);
    if is_catalog(&s) || is_table_function(&scan.table_name) {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    let access = policy.access(who, &s, &t);
    let qualified = format!("{s}.{t}");
    let schema = Arc::clone(scan.projected_schema.inner());
    let masks: Vec<(usize, Mask)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match access.column(f.name()) {
            ColumnAccess::Masked(m) => Some((i, m)),
            _ => None,
        })
        .collect();
    if access.row_filter.is_none() && masks.is_empty() {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    let name = scan.table_name.clone();
    let mut scan = scan;
    if !masks.is_empty() {
        // Keep the masks here, not at the origin: read this table on its own.
        if let Ok(provider) = source_as_provider(&scan.source) {
            scan.source = provider_as_source(Arc::new(Unfederated::new(name.clone(), provider)));
        }
    }
    let df_schema: DFSchema = scan.projected_schema.as_ref().clone();
    let mut plan = LogicalPlan::TableScan(scan);
    if let Some(predicate) = row_filter(&access, &qualified, &df_schema, state).map_err(external)? {
        notes.push(format!("row filter on {qualified}: {predicate}"));
        plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?);
    }
    if !masks.is_empty() {
        let mut exprs = Vec::new();
        for (i, (qualifier, field)) in df_schema.iter().enumerate() {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            let expr = match masks.iter().find(|(j, _)| *j == i) {
                Some((_, mask)) => {
                    notes.push(format!("masked {qualified}.{} ({mask:?})", field.name()));
                    mask_expr(*mask, column, field.data_type(), state)?
                        .alias_qualified(qualifier.cloned(), field.name())
                }
                None => column,
            };
            exprs.push(expr);
        }
        plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?);
    }
    Ok(Transformed::yes(plan))
}

/// The user's row filter on a table (its roles' filters ORed) as an expression over
/// `schema`; `None` when every row is the user's.
pub(crate) fn row_filter(
    access: &crate::policy::TableAccess,
    qualified: &str,
    schema: &DFSchema,
    state: &SessionState,
) -> Result<Option<Expr>, SafetyError> {
    let Some(filters) = &access.row_filter else {
        return Ok(None);
    };
    let mut exprs = Vec::new();
    for f in filters {
        let e = state
            .create_logical_expr(&f.to_string(), schema)
            .map_err(|e| SafetyError::RowFilter {
                table: qualified.to_string(),
                reason: e.to_string(),
            })?;
        exprs.push(e);
    }
    Ok(disjunction(exprs))
}

fn mask_expr(mask: Mask, column: Expr, ty: &DataType, state: &SessionState) -> DfResult<Expr> {
    Ok(match mask {
        Mask::Redact => match ty {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                // NULL stays NULL: whether a value exists is not secret, the value is.
                Expr::Case(datafusion::logical_expr::Case::new(
                    None,
                    vec![(
                        Box::new(column.is_null()),
                        Box::new(lit(ScalarValue::Utf8(None))),
                    )],
                    Some(Box::new(lit("***"))),
                ))
            }
            other => lit(ScalarValue::try_from(other)?),
        },
        Mask::Hash => {
            let md5 = state
                .scalar_functions()
                .get("md5")
                .cloned()
                .unwrap_or_else(datafusion::functions::crypto::md5);
            md5.call(vec![cast(column, DataType::Utf8)])
        }
    })
}
