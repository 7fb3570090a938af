//! The pipeline stage by stage, on real DataFusion plans over in-memory tables:
//! what each stage refuses, what RBAC rewrites, and the answers the rewritten plans give.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use switchyard_safety::{
    Checked, Denied, Outcome, Pipeline, Policy, SafetyError, Stage, StatementInput,
};

const CONFIG: &str = r#"
users:
  - { name: ann, password: x, roles: [reader] }
  - { name: rep, password: x, roles: [regional], attributes: { region: north } }
  - { name: both, password: x, roles: [regional, reader], attributes: { region: south } }
  - { name: writer, password: x, roles: [writer] }
  - { name: capped, password: x, roles: [capped] }
  - { name: nobody, password: x }
roles:
  reader: { allow: ["sales.*", crm.accounts], deny: [sales.secrets] }
  regional:
    allow: [sales.orders]
    columns:
      sales.orders: { deny: [note], mask: { customer: hash, region: redact } }
    row_filters:
      sales.orders: "region = user.region OR current_user = 'boss'"
  writer:
    grants:
      - { tables: [sales.orders], privileges: [select, update, delete] }
  capped:
    allow: ["sales.*"]
    guardrails: { max_rows: 2, max_cartesian_rows: 10 }
safety:
  injection: { stacked: deny, comment: allow }
  deny_functions: [upper]
"#;

fn pipeline() -> Pipeline {
    let config = switchyard_config::parse_str(CONFIG, Path::new("test.yaml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    Pipeline::new(Policy::new(&config, "public"))
}

fn context() -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "public"),
    );
    let catalog = ctx.catalog("datafusion").unwrap();
    let orders_schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("customer", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let orders = RecordBatch::try_new(
        orders_schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
            Arc::new(StringArray::from(vec!["north", "south", "north", "west"])),
            Arc::new(StringArray::from(vec![
                Some("ada"),
                Some("bob"),
                None,
                Some("cy"),
            ])),
            Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
        ],
    )
    .unwrap();
    let small = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
    let sales = Arc::new(MemorySchemaProvider::new());
    sales
        .register_table(
            "orders".into(),
            Arc::new(MemTable::try_new(orders_schema, vec![vec![orders]]).unwrap()),
        )
        .unwrap();
    sales
        .register_table(
            "secrets".into(),
            Arc::new(MemTable::try_new(small.clone(), vec![vec![]]).unwrap()),
        )
        .unwrap();
    catalog.register_schema("sales", sales).unwrap();
    let crm = Arc::new(MemorySchemaProvider::new());
    for t in ["accounts", "notes"] {
        crm.register_table(
            t.into(),
            Arc::new(MemTable::try_new(small.clone(), vec![vec![]]).unwrap()),
        )
        .unwrap();
    }
    catalog.register_schema("crm", crm).unwrap();
    ctx
}

async fn check(user: &str, sql: &str) -> Result<Checked, Box<Denied>> {
    let ctx = context();
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
    let p = pipeline();
    let input = StatementInput {
        ast: &statements[0],
        stacked: statements.len(),
        trailing_comment: false,
    };
    let plan = ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statements[0].clone(),
        )))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    p.check(&input, plan, &p.principal(user), &ctx.state())
}

async fn error(user: &str, sql: &str) -> (SafetyError, Stage) {
    match check(user, sql).await {
        Ok(_) => panic!("{user}: {sql} was allowed"),
        Err(d) => {
            let last = d.decision.stages.last().expect("a deciding stage");
            assert_eq!(last.outcome, Outcome::Denied);
            (d.error, last.stage)
        }
    }
}

async fn answer(user: &str, sql: &str) -> String {
    let checked = check(user, sql)
        .await
        .unwrap_or_else(|d| panic!("{sql}: {}", d.error));
    let batches = context()
        .execute_logical_plan(checked.plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn rbac_finds_denied_tables_wherever_they_hide() {
    for sql in [
        "SELECT * FROM sales.secrets",
        "SELECT id FROM sales.orders WHERE id IN (SELECT id FROM sales.secrets)",
        "WITH s AS (SELECT * FROM \"sales\".\"secrets\") SELECT id FROM sales.orders UNION ALL SELECT * FROM s",
        "EXPLAIN SELECT * FROM sales.secrets",
    ] {
        let (e, stage) = error("ann", sql).await;
        assert_eq!(stage, Stage::RbacGate, "{sql}");
        assert_eq!(e.sqlstate().code(), "42501");
        assert!(e.to_string().contains("sales.secrets"), "{e}");
    }
    let (e, _) = error("ann", "SELECT * FROM crm.notes").await;
    assert!(e.to_string().contains("crm.notes"));
    let (e, _) = error("nobody", "SELECT * FROM sales.orders").await;
    assert_eq!(e.sqlstate().code(), "42501");
    assert!(
        check("ann", "SELECT count(*) FROM information_schema.tables")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn denied_columns_are_refused_only_when_used() {
    for sql in [
        "SELECT * FROM sales.orders",
        "SELECT id FROM sales.orders WHERE note = 'a'",
        "SELECT n FROM (SELECT note AS n FROM sales.orders) x",
        "SELECT id FROM sales.orders ORDER BY note",
    ] {
        let (e, stage) = error("rep", sql).await;
        assert_eq!(stage, Stage::RbacGate);
        assert_eq!(
            e,
            SafetyError::ColumnDenied {
                column: "note".into(),
                table: "sales.orders".into()
            },
            "{sql}"
        );
    }
    // Unused, it is no reason to refuse.
    assert!(check("rep", "SELECT count(*) FROM sales.orders")
        .await
        .is_ok());
    assert!(check("rep", "SELECT id FROM sales.orders").await.is_ok());
}

#[tokio::test]
async fn row_filters_and_masks_apply_under_every_scan() {
    let out = answer(
        "rep",
        "SELECT id, region, customer FROM sales.orders ORDER BY id",
    )
    .await;
    // North rows only; region redacted, customer hashed (NULL stays NULL).
    assert!(
        out.contains("| 1  | ***    | 8c8d357b5e872bbacd45197626bd5759 |"),
        "{out}"
    );
    assert!(out.contains("| 3  | ***    |"), "{out}");
    assert!(!out.contains("| 2 ") && !out.contains("| 4 "), "{out}");
    assert!(!out.contains("ada"), "{out}");
    // Escapes: OR in the user's WHERE, a UNION, a self-join.
    let out = answer(
        "rep",
        "SELECT count(*) AS n FROM sales.orders WHERE id = 2 OR id > 0",
    )
    .await;
    assert!(out.contains("| 2 |"), "{out}");
    let out = answer(
        "rep",
        "SELECT id FROM sales.orders UNION SELECT id FROM sales.orders ORDER BY id",
    )
    .await;
    assert_eq!(out.matches('\n').count(), 5, "{out}");
    // Probing the masked value through WHERE matches nothing.
    let out = answer(
        "rep",
        "SELECT count(*) AS n FROM sales.orders WHERE customer = 'ada' OR region = 'north'",
    )
    .await;
    assert!(out.contains("| 0 |"), "{out}");
    // Roles add up: with the unfiltered reader role too, every row and every value.
    let out = answer(
        "both",
        "SELECT count(*) AS n, max(customer) AS c FROM sales.orders",
    )
    .await;
    assert!(out.contains("| 4 | cy |"), "{out}");
}

#[tokio::test]
async fn statement_kinds_follow_privileges() {
    for sql in [
        "CREATE TABLE sales.x (id int)",
        "INSERT INTO sales.orders VALUES (9, 'x', 'y', 'z')",
        "DROP TABLE sales.orders",
        "EXPLAIN INSERT INTO sales.orders VALUES (9, 'x', 'y', 'z')",
    ] {
        let (e, stage) = error("ann", sql).await;
        assert_eq!(e.sqlstate().code(), "25006", "{sql}: {e}");
        assert_eq!(stage, Stage::AstChecker);
    }
    // A role with some write privileges gets 42501 for the others.
    let (e, _) = error(
        "writer",
        "INSERT INTO sales.orders VALUES (9, 'x', 'y', 'z')",
    )
    .await;
    assert_eq!(e.sqlstate().code(), "42501");
    assert!(check("writer", "DELETE FROM sales.orders WHERE id = 1")
        .await
        .is_ok());
    // DDL never, even for writers.
    let (e, _) = error("writer", "CREATE TABLE sales.y (id int)").await;
    assert_eq!(e.sqlstate().code(), "25006");
}

#[tokio::test]
async fn denied_functions_are_refused_by_name() {
    let (e, stage) = error(
        "ann",
        "SELECT id FROM sales.orders WHERE id = 1 AND md5(note) = 'x' AND UPPER(region) = 'B'",
    )
    .await;
    assert_eq!(stage, Stage::AstChecker);
    assert_eq!(
        e,
        SafetyError::FunctionDenied {
            name: "upper".into()
        }
    );
    // Functions DataFusion cannot plan are judged without a plan.
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, "SELECT pg_read_file('/etc/passwd')").unwrap();
    let denied = pipeline()
        .check_unplanned(&StatementInput {
            ast: &statements[0],
            stacked: 1,
            trailing_comment: false,
        })
        .expect("refused");
    assert_eq!(denied.error.sqlstate().code(), "42501");
}

#[tokio::test]
async fn the_injection_analyser_flags_tautologies_not_ordinary_ors() {
    for sql in [
        "SELECT id FROM sales.orders WHERE id = 1 OR 1 = 1",
        "SELECT id FROM sales.orders WHERE region = 'x' OR 'a' = 'a'",
        "SELECT id FROM sales.orders WHERE region = 'x' OR id = id",
        "SELECT id FROM sales.orders WHERE id = 1 OR NOT false",
        "SELECT id FROM sales.orders WHERE id = 1 OR region LIKE '%'",
        "SELECT id FROM sales.orders WHERE id = 1 OR 3 >= 2",
    ] {
        let (e, stage) = error("ann", sql).await;
        assert_eq!(stage, Stage::InjectionAnalyser, "{sql}");
        assert!(
            matches!(e, SafetyError::Injection { ref finding, .. } if finding == "tautology"),
            "{sql}: {e}"
        );
    }
    for sql in [
        "SELECT id FROM sales.orders WHERE id = 1 OR id = 2",
        "SELECT id FROM sales.orders WHERE 1 = 1 AND id = 2",
        "SELECT id FROM sales.orders WHERE region = 'a' OR region IS NULL",
        "SELECT id FROM sales.orders WHERE id = 1 OR 1 = 2",
    ] {
        assert!(check("ann", sql).await.is_ok(), "{sql}");
    }
    let (e, _) = error(
        "ann",
        "SELECT region FROM sales.orders UNION SELECT table_name FROM information_schema.tables",
    )
    .await;
    assert!(matches!(e, SafetyError::Injection { ref finding, .. } if finding == "union_catalog"));
    // Config: stacked statements are denied here.
    let (e, _) = error("ann", "SELECT 1; SELECT 2").await;
    assert!(matches!(e, SafetyError::Injection { ref finding, .. } if finding == "stacked"));
}

#[tokio::test]
async fn guardrails_cap_rows_and_refuse_cartesian_products_and_unfiltered_writes() {
    let out = answer("capped", "SELECT id FROM sales.orders ORDER BY id").await;
    // The cap is max_rows + 1, so the front door can tell rows were cut.
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("| ") && !l.contains("id"))
            .count(),
        3,
        "{out}"
    );
    let checked = check("capped", "SELECT id FROM sales.orders")
        .await
        .unwrap();
    assert_eq!(checked.limits.max_rows, Some(2));
    let (e, stage) = error(
        "capped",
        "SELECT count(*) FROM sales.orders a, sales.orders b",
    )
    .await;
    assert_eq!(stage, Stage::Guardrails);
    assert_eq!(e.sqlstate().code(), "54000");
    // A join condition (also written in WHERE) is no cartesian product; nor is a small one.
    assert!(check(
        "capped",
        "SELECT count(*) FROM sales.orders a, sales.orders b WHERE a.id = b.id"
    )
    .await
    .is_ok());
    assert!(check("capped", "SELECT count(*) FROM (SELECT id FROM sales.orders LIMIT 3) a CROSS JOIN (SELECT id FROM sales.orders LIMIT 3) b").await.is_ok());
    let (e, stage) = error("writer", "DELETE FROM sales.orders").await;
    assert_eq!(stage, Stage::Guardrails);
    assert_eq!(e.sqlstate().code(), "21000");
}
