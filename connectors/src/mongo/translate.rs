//! Logical plans as aggregation pipelines.
//!
//! [`FederateMongo`] wraps the MongoDB-only part of a plan that federation hands us;
//! at physical planning [`MongoPlanner`] translates it bottom-up. Each node either
//! extends its input's pipeline with stages meaning exactly the same, or stays a
//! DataFusion node over the pipeline built so far:
//!
//! | plan node | stages |
//! |---|---|
//! | scan | the dataset's own stages, pushed filters as `$match`, `$project` of the columns |
//! | Filter | `$match` (see [`super::filter`]: SQL's NULL logic kept) |
//! | Projection / alias | nothing (columns are renamed in the final `$project`) |
//! | Sort | `$sort`, with `$addFields` null flags where SQL's NULLS FIRST/LAST differs from MongoDB's nulls-lowest |
//! | Limit | `$skip` / `$limit` |
//! | Aggregate | `$group` on column keys with count/sum/avg/min/max; SUM over no non-null value is NULL, and a global aggregate over no rows still returns its one row |
//! | inner / left equi-join | `$lookup` with a sub-pipeline, keys never matching NULL |
//!
//! Columns live at generated field names (`c0`, `_id.g0`, `a0`, `_j0.c1` ...), and a
//! final `$project` names exactly the output columns.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, NullEquality, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, FetchType, Join, JoinType, LogicalPlan, SkipType, Sort, TableScan,
    TableSource,
};
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::optimizer::Optimizer;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::push_down_limit::PushDownLimit;
use datafusion::optimizer::{OptimizerConfig, OptimizerContext, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_federation::{FederatedPlanNode, FederatedPlanner, FederationPlanner};
use mongodb::bson::{doc, Bson, Document};

use super::decode::Target;
use super::exec::MongoExec;
use super::filter::{FieldKind, Fields, Filters};
use super::{MongoCollection, MongoSource, MongoTable};
use switchyard_config::ColumnType;

/// Optimizer rule of [`super::MongoFederationProvider`]: marks the plan it is given as
/// MongoDB's part.
#[derive(Debug)]
pub struct FederateMongo {
    /// Whether anything above the collection scans may be translated.
    pub pushdown: bool,
}

impl OptimizerRule for FederateMongo {
    fn name(&self) -> &str {
        "federate_mongodb"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if let LogicalPlan::Extension(Extension { node }) = &plan {
            if node.name() == "Federated" {
                return Ok(Transformed::no(plan));
            }
        }
        Ok(Transformed::yes(LogicalPlan::Extension(Extension {
            node: Arc::new(FederatedPlanNode::new(
                plan,
                Arc::new(MongoPlanner {
                    pushdown: self.pushdown,
                }),
            )),
        })))
    }
}

/// Plans a MongoDB part: one pipeline, and DataFusion above what does not translate.
#[derive(Debug)]
pub struct MongoPlanner {
    pushdown: bool,
}

#[async_trait]
impl FederationPlanner for MongoPlanner {
    async fn plan_federation(
        &self,
        node: &FederatedPlanNode,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let translated = if self.pushdown {
            translate(&prepare(node.plan())?, true)?
        } else {
            translate(node.plan(), false)?
        };
        match translated {
            Translated::Pipe(pipe) => pipe.into_exec(node.plan().schema()),
            Translated::Local(plan) => {
                DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(
                    FederatedPlanner::new(),
                )])
                .create_physical_plan(&plan, session)
                .await
            }
        }
    }
}

/// A pipeline computed so far, and where each output column of its plan node lives.
#[derive(Debug, Clone)]
struct Pipe {
    collection: Arc<MongoCollection>,
    stages: Vec<Document>,
    /// Field path and comparison kind of each column, in schema order.
    fields: Vec<(String, FieldKind)>,
    /// The row to return when a global aggregate sees no documents.
    empty_row: Option<Vec<ScalarValue>>,
    /// Joins so far (for unique `_jN` names).
    joins: usize,
}

impl Pipe {
    fn into_exec(self, schema: &DFSchema) -> Result<Arc<dyn ExecutionPlan>> {
        let mut project = Document::new();
        let mut targets = Vec::new();
        for (i, ((path, kind), field)) in self.fields.iter().zip(schema.fields()).enumerate() {
            let name = format!("o{i}");
            project.insert(&name, format!("${path}"));
            targets.push(Target {
                path: name,
                json: *kind == FieldKind::Opaque && field.data_type() == &DataType::Utf8,
            });
        }
        if project.is_empty() {
            // Rows without columns (count(*) above): fetch as little as possible.
            project.insert("_id", 1);
        } else {
            project.insert("_id", 0);
        }
        let mut stages = self.stages;
        // Right after the scan's own `$project`, one renaming `$project` does both.
        if let Some(merged) = stages
            .last()
            .and_then(|last| last.get_document("$project").ok())
            .and_then(|prev| compose(prev, &project))
        {
            stages.pop();
            project = merged;
        }
        stages.push(doc! {"$project": project});
        Ok(Arc::new(MongoExec::new(
            self.collection,
            stages,
            targets,
            self.empty_row,
            Arc::new(schema.as_arrow().clone()),
        )))
    }

    fn leaf(self, original: &LogicalPlan) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(FederatedPlanNode::new(
                original.clone(),
                Arc::new(PipePlanner(self)),
            )),
        })
    }
}

/// `outer` applied after `inner` as one `$project`, when `outer` only renames fields
/// that `inner` copies from paths.
fn compose(inner: &Document, outer: &Document) -> Option<Document> {
    let mut merged = Document::new();
    for (name, value) in outer {
        match value {
            Bson::String(reference) => {
                let field = reference.strip_prefix('$')?;
                match inner.get(field)? {
                    Bson::String(path) if path.starts_with('$') => {
                        merged.insert(name, path.clone());
                    }
                    _ => return None,
                }
            }
            other if name == "_id" => {
                merged.insert(name, other.clone());
            }
            _ => return None,
        }
    }
    Some(merged)
}

/// Plans an already translated pipeline under a DataFusion node.
#[derive(Debug)]
struct PipePlanner(Pipe);

#[async_trait]
impl FederationPlanner for PipePlanner {
    async fn plan_federation(
        &self,
        node: &FederatedPlanNode,
        _session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.0.clone().into_exec(node.plan().schema())
    }
}

enum Translated {
    Pipe(Pipe),
    Local(LogicalPlan),
}

fn translate(plan: &LogicalPlan, pushdown: bool) -> Result<Translated> {
    if let LogicalPlan::TableScan(scan) = plan {
        return Ok(match scan_pipe(scan)? {
            Some(p) => Translated::Pipe(p),
            None => Translated::Local(plan.clone()),
        });
    }
    let inputs = plan.inputs();
    let children = inputs
        .iter()
        .map(|i| translate(i, pushdown))
        .collect::<Result<Vec<_>>>()?;
    let pipes: Vec<&Pipe> = children
        .iter()
        .filter_map(|c| match c {
            Translated::Pipe(p) => Some(p),
            Translated::Local(_) => None,
        })
        .collect();
    if pushdown && !inputs.is_empty() && pipes.len() == inputs.len() {
        if let Some(p) = extend(plan, &pipes)? {
            return Ok(Translated::Pipe(p));
        }
    }
    if inputs.is_empty() {
        return Ok(Translated::Local(plan.clone()));
    }
    let new_inputs = children
        .into_iter()
        .zip(inputs)
        .map(|(c, original)| match c {
            Translated::Pipe(p) => p.leaf(original),
            Translated::Local(l) => l,
        })
        .collect();
    Ok(Translated::Local(
        plan.with_new_exprs(plan.expressions(), new_inputs)?,
    ))
}

/// Gives the plan's MongoDB scans our own table source (which takes the filters it can
/// translate), then pushes filters, column lists and limits down to the scans —
/// federation cut this part out before DataFusion's optimizer could do that.
fn prepare(plan: &LogicalPlan) -> Result<LogicalPlan> {
    let plan = plan
        .clone()
        .transform_up(|p| {
            if let LogicalPlan::TableScan(scan) = &p {
                if let Some(src) = mongo_source(&scan.source)? {
                    let source: Arc<dyn TableSource> = Arc::new(src);
                    return Ok(Transformed::yes(LogicalPlan::TableScan(TableScan {
                        source,
                        ..scan.clone()
                    })));
                }
            }
            Ok(Transformed::no(p))
        })?
        .data;
    let optimizer = Optimizer::with_rules(vec![
        Arc::new(ExtractEquijoinPredicate::new()),
        Arc::new(PushDownFilter::new()),
        Arc::new(OptimizeProjections::new()),
        Arc::new(PushDownLimit::new()),
    ]);
    optimizer.optimize(plan, &OptimizerContext::new(), |_, _| {})
}

/// The source of a scan if it is a MongoDB table (before or after [`prepare`]).
fn mongo_source(source: &Arc<dyn TableSource>) -> Result<Option<MongoSource>> {
    if let Some(src) = (source.as_ref() as &dyn std::any::Any).downcast_ref::<MongoSource>() {
        return Ok(Some(src.clone()));
    }
    Ok(
        datafusion_federation::get_table_source(source)?.and_then(|fed| {
            (fed.as_ref() as &dyn std::any::Any)
                .downcast_ref::<MongoSource>()
                .cloned()
        }),
    )
}

/// A filter over `table`'s columns as a MongoDB query filter, when it translates exactly.
pub(super) fn table_filter(table: &MongoTable, e: &Expr) -> Option<Document> {
    Filters(&TableFields(table)).when_true(e)
}

/// Whether a scan filter on `table` translates exactly.
pub(super) fn scan_filter_translates(table: &MongoTable, e: &Expr) -> bool {
    Filters(&TableFields(table)).when_true(e).is_some()
}

fn kind_of(t: &ColumnType) -> FieldKind {
    match t {
        ColumnType::Jsonb | ColumnType::Array(_) => FieldKind::Opaque,
        ColumnType::Text => FieldKind::Text,
        _ => FieldKind::Scalar,
    }
}

/// Columns of a table by name, at their document paths (for filters before `$project`).
struct TableFields<'a>(&'a MongoTable);

impl Fields for TableFields<'_> {
    fn field(&self, c: &Column) -> Option<(String, FieldKind)> {
        let col = self.0.columns.iter().find(|x| x.name == c.name)?;
        Some((col.path.clone(), kind_of(&col.sql_type)))
    }
}

/// Columns of a plan node's input, at the pipeline's field names.
struct PipeFields<'a> {
    schema: &'a DFSchema,
    fields: &'a [(String, FieldKind)],
}

impl Fields for PipeFields<'_> {
    fn field(&self, c: &Column) -> Option<(String, FieldKind)> {
        let i = self.schema.index_of_column(c).ok()?;
        self.fields.get(i).cloned()
    }
}

fn scan_pipe(scan: &TableScan) -> Result<Option<Pipe>> {
    let Some(source) = mongo_source(&scan.source)? else {
        return Ok(None);
    };
    let table = &source.table;
    let mut stages = table.base.clone();
    if !scan.filters.is_empty() {
        let Some(m) = Filters(&TableFields(table)).all(&scan.filters) else {
            return Ok(None);
        };
        stages.push(doc! {"$match": m});
    }
    let projection: Vec<usize> = scan
        .projection
        .clone()
        .unwrap_or_else(|| (0..table.columns.len()).collect());
    let mut project = Document::new();
    let mut fields = Vec::new();
    for i in projection {
        let col = &table.columns[i];
        let name = format!("c{i}");
        project.insert(&name, format!("${}", col.path));
        fields.push((name, kind_of(&col.sql_type)));
    }
    project.insert("_id", if fields.is_empty() { 1 } else { 0 });
    stages.push(doc! {"$project": project});
    if let Some(n) = scan.fetch {
        if n == 0 {
            return Ok(None);
        }
        stages.push(doc! {"$limit": n as i64});
    }
    Ok(Some(Pipe {
        collection: Arc::clone(&table.collection),
        stages,
        fields,
        empty_row: None,
        joins: 0,
    }))
}

fn column_index(e: &Expr, schema: &DFSchema) -> Option<usize> {
    match e.clone().unalias() {
        Expr::Column(c) => schema.index_of_column(&c).ok(),
        _ => None,
    }
}

/// `pipes` (the translated inputs of `plan`) extended by `plan`, if it translates exactly.
fn extend(plan: &LogicalPlan, pipes: &[&Pipe]) -> Result<Option<Pipe>> {
    let mut pipe = pipes[0].clone();
    match plan {
        LogicalPlan::Filter(f) => {
            if pipe.empty_row.is_some() {
                return Ok(None);
            }
            let fields = PipeFields {
                schema: f.input.schema(),
                fields: &pipe.fields,
            };
            let Some(m) = Filters(&fields).when_true(&f.predicate) else {
                return Ok(None);
            };
            pipe.stages.push(doc! {"$match": m});
            Ok(Some(pipe))
        }
        LogicalPlan::Projection(p) => {
            let mut fields = Vec::new();
            for e in &p.expr {
                let Some(i) = column_index(e, p.input.schema()) else {
                    return Ok(None);
                };
                fields.push(pipe.fields[i].clone());
            }
            if let Some(row) = &pipe.empty_row {
                let mut new_row = Vec::new();
                for e in &p.expr {
                    new_row.push(row[column_index(e, p.input.schema()).expect("checked")].clone());
                }
                pipe.empty_row = Some(new_row);
            }
            pipe.fields = fields;
            Ok(Some(pipe))
        }
        LogicalPlan::SubqueryAlias(_) => Ok(Some(pipe)),
        LogicalPlan::Sort(s) => Ok(sort(pipe, s)),
        LogicalPlan::Limit(l) => {
            if pipe.empty_row.is_some() {
                return Ok(None);
            }
            let (Ok(SkipType::Literal(skip)), Ok(FetchType::Literal(fetch))) =
                (l.get_skip_type(), l.get_fetch_type())
            else {
                return Ok(None);
            };
            if fetch == Some(0) {
                return Ok(None);
            }
            if skip > 0 {
                pipe.stages.push(doc! {"$skip": skip as i64});
            }
            if let Some(n) = fetch {
                pipe.stages.push(doc! {"$limit": n as i64});
            }
            Ok(Some(pipe))
        }
        LogicalPlan::Aggregate(a) => aggregate(pipe, a),
        LogicalPlan::Join(j) => Ok(join(pipe, pipes[1], j)),
        _ => Ok(None),
    }
}

fn sort(mut pipe: Pipe, s: &Sort) -> Option<Pipe> {
    if pipe.empty_row.is_some() {
        return None;
    }
    let schema = s.input.schema();
    let mut flags = Document::new();
    let mut keys = Document::new();
    for (n, e) in s.expr.iter().enumerate() {
        let i = column_index(&e.expr, schema)?;
        let (path, kind) = &pipe.fields[i];
        if *kind == FieldKind::Opaque {
            return None;
        }
        let dir = if e.asc { 1 } else { -1 };
        // MongoDB orders null (and missing) lowest: ASC NULLS FIRST and DESC NULLS
        // LAST agree with it; otherwise sort by a null flag first.
        if e.asc != e.nulls_first {
            let flag = format!("_n{}_{n}", pipe.stages.len());
            flags.insert(
                &flag,
                doc! {"$cond": [{"$eq": [{"$ifNull": [format!("${path}"), Bson::Null]}, Bson::Null]}, 1, 0]},
            );
            keys.insert(flag, dir);
        }
        keys.insert(path.clone(), dir);
    }
    if !flags.is_empty() {
        pipe.stages.push(doc! {"$addFields": flags});
    }
    pipe.stages.push(doc! {"$sort": keys});
    if let Some(n) = s.fetch {
        if n == 0 {
            return None;
        }
        pipe.stages.push(doc! {"$limit": n as i64});
    }
    Some(pipe)
}

fn aggregate(mut pipe: Pipe, a: &Aggregate) -> Result<Option<Pipe>> {
    if pipe.empty_row.is_some() {
        return Ok(None);
    }
    let schema = a.input.schema();
    let mut id = Document::new();
    let mut fields = Vec::new();
    for (g, e) in a.group_expr.iter().enumerate() {
        let Some(i) = column_index(e, schema) else {
            return Ok(None);
        };
        let (path, kind) = &pipe.fields[i];
        if *kind == FieldKind::Opaque {
            return Ok(None);
        }
        // null and a missing field are one group, as NULLs are in SQL; text groups by
        // its text (an ObjectId and its hex string are one value in SQL).
        let key = if *kind == FieldKind::Text {
            doc! {"$toString": format!("${path}")}
        } else {
            doc! {"$ifNull": [format!("${path}"), Bson::Null]}
        };
        id.insert(format!("g{g}"), key);
        fields.push((format!("_id.g{g}"), *kind));
    }
    let mut group = doc! {"_id": if id.is_empty() { Bson::Null } else { Bson::Document(id) }};
    let mut fix = Document::new();
    let mut empty_row = Vec::new();
    let out_schema = a.schema.as_arrow();
    for (n, e) in a.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e.clone().unalias()
        else {
            return Ok(None);
        };
        if params.distinct
            || params.filter.is_some()
            || !params.order_by.is_empty()
            || params.args.len() != 1
        {
            return Ok(None);
        }
        let name = format!("a{n}");
        let arg = &params.args[0];
        let field = match arg {
            Expr::Literal(v, _) if !v.is_null() && func.name() == "count" => None,
            // A numeric widening (avg over integers) changes nothing MongoDB computes.
            Expr::Cast(c) if is_numeric(c.field.data_type()) && func.name() != "count" => {
                let Some(i) = column_index(&c.expr, schema) else {
                    return Ok(None);
                };
                let inner = schema.field(i).data_type();
                if !is_numeric(inner) {
                    return Ok(None);
                }
                Some(pipe.fields[i].clone())
            }
            other => {
                let Some(i) = column_index(other, schema) else {
                    return Ok(None);
                };
                Some(pipe.fields[i].clone())
            }
        };
        let not_null_count = |path: &str| {
            doc! {"$sum": {"$cond": [{"$eq": [{"$ifNull": [format!("${path}"), Bson::Null]}, Bson::Null]}, 0, 1]}}
        };
        let out_type = out_schema.field(a.group_expr.len() + n).data_type().clone();
        let (acc, kind) = match (func.name(), &field) {
            ("count", None) => (doc! {"$sum": 1}, FieldKind::Scalar),
            ("count", Some((path, _))) => (not_null_count(path), FieldKind::Scalar),
            ("sum", Some((path, FieldKind::Scalar))) => {
                // $sum of nothing is 0; SUM of nothing is NULL.
                let count = format!("{name}_n");
                group.insert(&count, not_null_count(path));
                fix.insert(&name, doc! {"$cond": [{"$gt": [format!("${count}"), 0]}, format!("${name}"), Bson::Null]});
                (doc! {"$sum": format!("${path}")}, FieldKind::Scalar)
            }
            ("avg", Some((path, FieldKind::Scalar))) => {
                (doc! {"$avg": format!("${path}")}, FieldKind::Scalar)
            }
            ("min", Some((path, k))) if *k != FieldKind::Opaque => {
                (doc! {"$min": format!("${path}")}, *k)
            }
            ("max", Some((path, k))) if *k != FieldKind::Opaque => {
                (doc! {"$max": format!("${path}")}, *k)
            }
            _ => return Ok(None),
        };
        group.insert(&name, acc);
        fields.push((name, kind));
        empty_row.push(if func.name() == "count" {
            ScalarValue::Int64(Some(0))
        } else {
            ScalarValue::try_from(&out_type)?
        });
    }
    pipe.stages.push(doc! {"$group": group});
    if !fix.is_empty() {
        pipe.stages.push(doc! {"$addFields": fix});
    }
    if a.group_expr.is_empty() {
        pipe.empty_row = Some(empty_row);
    }
    pipe.fields = fields;
    Ok(Some(pipe))
}

fn is_numeric(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
    )
}

fn join(mut left: Pipe, right: &Pipe, j: &Join) -> Option<Pipe> {
    let same_db = left.collection.origin == right.collection.origin
        && left.collection.database == right.collection.database;
    let left_join = match j.join_type {
        JoinType::Inner => false,
        JoinType::Left => true,
        _ => return None,
    };
    if !same_db
        || j.filter.is_some()
        || j.on.is_empty()
        || j.null_equality != NullEquality::NullEqualsNothing
        || left.empty_row.is_some()
        || right.empty_row.is_some()
    {
        return None;
    }
    let name = format!("_j{}", left.joins);
    let mut vars = Document::new();
    let mut conds: Vec<Bson> = Vec::new();
    let mut not_null = Document::new();
    for (k, (l, r)) in j.on.iter().enumerate() {
        let li = column_index(l, j.left.schema())?;
        let ri = column_index(r, j.right.schema())?;
        let (lp, lk) = &left.fields[li];
        let (rp, rk) = &right.fields[ri];
        if *lk == FieldKind::Opaque || *rk == FieldKind::Opaque {
            return None;
        }
        let var = format!("k{k}");
        vars.insert(&var, doc! {"$ifNull": [format!("${lp}"), Bson::Null]});
        // Text keys compare as text (an ObjectId equals its hex string in SQL).
        let (lv, rv): (Bson, Bson) = if *lk == FieldKind::Text || *rk == FieldKind::Text {
            (
                doc! {"$toString": format!("$${var}")}.into(),
                doc! {"$toString": format!("${rp}")}.into(),
            )
        } else {
            (format!("$${var}").into(), format!("${rp}").into())
        };
        conds.push(doc! {"$ne": [format!("$${var}"), Bson::Null]}.into());
        conds.push(doc! {"$eq": [lv, rv]}.into());
        not_null.insert(lp.clone(), doc! {"$ne": Bson::Null});
    }
    if !left_join {
        left.stages.push(doc! {"$match": not_null});
    }
    let mut sub = right.stages.clone();
    sub.push(doc! {"$match": {"$expr": {"$and": conds}}});
    left.stages.push(doc! {"$lookup": {
        "from": right.collection.name.clone(),
        "let": vars,
        "pipeline": sub,
        "as": &name,
    }});
    left.stages.push(
        doc! {"$unwind": {"path": format!("${name}"), "preserveNullAndEmptyArrays": left_join}},
    );
    left.fields.extend(
        right
            .fields
            .iter()
            .map(|(p, k)| (format!("{name}.{p}"), *k)),
    );
    left.joins += 1 + right.joins;
    Some(left)
}
