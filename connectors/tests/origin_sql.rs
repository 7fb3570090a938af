//! The SQL an origin receives for statement shapes that once broke there: decorrelated
//! subqueries whose aggregates the outer query refers to (TPC-H Q2, Q17, Q20).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::error::Result;
use datafusion::physical_plan::displayable;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;
use datafusion::sql::unparser::dialect::{Dialect, PostgreSqlDialect};
use datafusion_federation::sql::{
    RemoteTable, RemoteTableRef, SQLExecutor, SQLFederationProvider, SQLTableSource,
};
use datafusion_federation::FederatedTableProviderAdaptor;
use switchyard_connectors::sql::OriginTable;

/// An origin that is never reached: these tests only read the SQL planned for it.
struct Unreached;

#[async_trait]
impl SQLExecutor for Unreached {
    fn name(&self) -> &str {
        "postgres"
    }
    fn compute_context(&self) -> Option<String> {
        Some("pg".into())
    }
    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(PostgreSqlDialect {})
    }
    fn execute(
        &self,
        _query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        EmptyExec::new(schema).execute(0, Arc::new(Default::default()))
    }
    async fn table_names(&self) -> Result<Vec<String>> {
        Ok(vec![])
    }
    async fn get_table_schema(&self, _table_name: &str) -> Result<SchemaRef> {
        unreachable!("schemas are given")
    }
}

/// Tables named `local_schema.X` here and `tpch.X` at the origin.
fn context(local_schema: &str) -> SessionContext {
    let ctx = SessionContext::new_with_state(switchyard_planner::session_state());
    ctx.catalog(switchyard_planner::CATALOG)
        .unwrap()
        .register_schema(local_schema, Arc::new(MemorySchemaProvider::new()))
        .unwrap();
    let provider = Arc::new(SQLFederationProvider::new(Arc::new(Unreached)));
    let decimal = DataType::Decimal128(15, 2);
    let text = DataType::Utf8;
    let int = DataType::Int64;
    let tables: [(&str, Vec<(&str, DataType)>); 6] = [
        (
            "lineitem",
            vec![
                ("l_partkey", DataType::Int64),
                ("l_suppkey", DataType::Int64),
                ("l_quantity", decimal.clone()),
                ("l_extendedprice", decimal.clone()),
                ("l_shipdate", DataType::Date32),
            ],
        ),
        (
            "part",
            vec![
                ("p_partkey", DataType::Int64),
                ("p_brand", DataType::Utf8),
                ("p_name", DataType::Utf8),
                ("p_mfgr", text.clone()),
                ("p_type", text.clone()),
                ("p_size", DataType::Int32),
            ],
        ),
        (
            "partsupp",
            vec![
                ("ps_partkey", DataType::Int64),
                ("ps_suppkey", DataType::Int64),
                ("ps_availqty", DataType::Int32),
                ("ps_supplycost", decimal.clone()),
            ],
        ),
        (
            "supplier",
            vec![
                ("s_suppkey", int.clone()),
                ("s_name", text.clone()),
                ("s_address", text.clone()),
                ("s_nationkey", int.clone()),
                ("s_phone", text.clone()),
                ("s_acctbal", decimal.clone()),
                ("s_comment", text.clone()),
            ],
        ),
        (
            "nation",
            vec![
                ("n_nationkey", int.clone()),
                ("n_name", text.clone()),
                ("n_regionkey", int.clone()),
            ],
        ),
        (
            "region",
            vec![("r_regionkey", int.clone()), ("r_name", text.clone())],
        ),
    ];
    for (name, columns) in tables {
        let schema = Arc::new(Schema::new(
            columns
                .into_iter()
                .map(|(c, t)| Field::new(c, t, false))
                .collect::<Vec<_>>(),
        ));
        let table = Arc::new(OriginTable(RemoteTable::new(
            RemoteTableRef::from(TableReference::partial("tpch", name)),
            schema,
        )));
        let source = Arc::new(SQLTableSource::new_with_table(Arc::clone(&provider), table));
        ctx.register_table(
            TableReference::partial(local_schema, name),
            Arc::new(FederatedTableProviderAdaptor::new(source)),
        )
        .unwrap();
    }
    ctx
}

/// The SQL each origin receives, for tables named as at the origin and renamed.
async fn origin_sql(sql: &str) -> Vec<String> {
    let mut all = vec![];
    for local_schema in ["tpch", "public"] {
        let ctx = context(local_schema);
        let sql = sql.replace("tpch.", &format!("{local_schema}."));
        let plan = ctx
            .sql(&sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let parts: Vec<String> = shown
            .lines()
            .filter_map(|l| l.split_once("VirtualExecutionPlan"))
            .map(|(_, rest)| {
                let (_, sql) = rest
                    .rsplit_once("_sql=")
                    .unwrap_or_else(|| panic!("no final SQL in {rest}"));
                sql.to_string()
            })
            .collect();
        assert_eq!(parts.len(), 1, "one origin part: {shown}");
        all.extend(parts);
    }
    all
}

/// Every column an origin query names in quotes with a parenthesis (an aggregate's or
/// expression's display name) is defined by an alias in the same query, and the
/// tables are the origin's own.
fn assert_names_resolve(sql: &str) {
    assert!(
        sql.contains("\"tpch\".\"lineitem\"") || sql.contains("\"tpch\".\"partsupp\""),
        "{sql}"
    );
    // A decorrelated subquery is one SELECT at the origin: as a derived table inside
    // another, its outer columns would name tables out of scope.
    assert!(
        !sql.contains("AS \"derived_projection\") AS \"__scalar_sq"),
        "stacked derived tables:\n{sql}"
    );
    let mut rest = sql;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let name = &after[..end];
        if name.contains('(') {
            assert!(
                sql.contains(&format!(" AS \"{name}\"")),
                "origin SQL refers to {name:?} without defining it:\n{sql}"
            );
        }
        rest = &after[end + 1..];
    }
}

#[tokio::test]
async fn q17_correlated_average_reaches_the_origin_as_valid_sql() {
    let parts = origin_sql(
        "SELECT sum(l_extendedprice) / 7.0 AS avg_yearly FROM tpch.lineitem, tpch.part
         WHERE p_partkey = l_partkey AND p_brand = 'Brand#23'
           AND l_quantity < (SELECT 0.2 * avg(l_quantity) FROM tpch.lineitem WHERE l_partkey = p_partkey)",
    )
    .await;
    for sql in parts {
        assert_names_resolve(&sql);
    }
}

#[tokio::test]
async fn q2_whole_reaches_the_origin_as_valid_sql() {
    let parts = origin_sql(
        "SELECT s_acctbal, s_name, n_name, p_partkey, p_mfgr, s_address, s_phone, s_comment
         FROM tpch.part, tpch.supplier, tpch.partsupp, tpch.nation, tpch.region
         WHERE p_partkey = ps_partkey AND s_suppkey = ps_suppkey AND p_size = 15
           AND p_type LIKE '%BRASS' AND s_nationkey = n_nationkey
           AND n_regionkey = r_regionkey AND r_name = 'EUROPE'
           AND ps_supplycost = (
             SELECT min(ps_supplycost) FROM tpch.partsupp, tpch.supplier, tpch.nation, tpch.region
             WHERE p_partkey = ps_partkey AND s_suppkey = ps_suppkey
               AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = 'EUROPE')
         ORDER BY s_acctbal DESC, n_name, s_name, p_partkey
         LIMIT 100",
    )
    .await;
    for sql in parts {
        assert_names_resolve(&sql);
        // Sorted and limited at the origin as one SELECT: a derived table under the
        // ORDER BY would leave its tables out of the ORDER BY's scope.
        assert!(!sql.contains("\"derived_projection\""), "{sql}");
    }
}

#[tokio::test]
async fn q2_correlated_minimum_reaches_the_origin_as_valid_sql() {
    let parts = origin_sql(
        "SELECT s_name, p_partkey FROM tpch.part, tpch.supplier, tpch.partsupp
         WHERE p_partkey = ps_partkey AND s_suppkey = ps_suppkey
           AND ps_supplycost = (SELECT min(ps_supplycost) FROM tpch.partsupp, tpch.supplier
                                WHERE p_partkey = ps_partkey AND s_suppkey = ps_suppkey)",
    )
    .await;
    for sql in parts {
        assert_names_resolve(&sql);
    }
}

#[tokio::test]
async fn q20_correlated_sum_reaches_the_origin_as_valid_sql() {
    let parts = origin_sql(
        "SELECT s_name FROM tpch.supplier WHERE s_suppkey IN (
            SELECT ps_suppkey FROM tpch.partsupp
            WHERE ps_partkey IN (SELECT p_partkey FROM tpch.part WHERE p_name LIKE 'forest%')
              AND ps_availqty > (SELECT 0.5 * sum(l_quantity) FROM tpch.lineitem
                                 WHERE l_partkey = ps_partkey AND l_suppkey = ps_suppkey
                                   AND l_shipdate >= DATE '1994-01-01'))",
    )
    .await;
    for sql in parts {
        assert_names_resolve(&sql);
    }
}
