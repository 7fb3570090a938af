//! The gate judges plans: tables hidden in subqueries, joins or EXPLAIN are found,
//! and writes are refused whatever their spelling.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use switchyard_config::Role;
use switchyard_safety::{Gate, Principal, SafetyError};

async fn context() -> SessionContext {
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_information_schema(true),
    );
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true)]));
    let catalog = ctx.catalog("datafusion").unwrap();
    for (s, tables) in [
        ("sales", ["orders", "secrets"]),
        ("crm", ["accounts", "notes"]),
    ] {
        let provider = Arc::new(MemorySchemaProvider::new());
        for t in tables {
            let table = MemTable::try_new(schema.clone(), vec![vec![]]).unwrap();
            provider
                .register_table(t.to_string(), Arc::new(table))
                .unwrap();
        }
        catalog.register_schema(s, provider).unwrap();
    }
    ctx
}

fn reader() -> Principal {
    let mut roles = BTreeMap::new();
    roles.insert(
        "reader".to_string(),
        Role {
            allow: vec!["sales.*".into(), "crm.accounts".into()],
            deny: vec!["sales.secrets".into()],
        },
    );
    Principal::new("ann", &["reader".to_string()], &roles)
}

async fn check(sql: &str) -> Result<(), SafetyError> {
    let ctx = context().await;
    let plan = ctx.state().create_logical_plan(sql).await.expect("plans");
    Gate::new("public").check(&plan, &reader())
}

fn denied(table: &str) -> Result<(), SafetyError> {
    Err(SafetyError::TableDenied {
        table: table.into(),
        user: "ann".into(),
    })
}

#[tokio::test]
async fn granted_tables_pass() {
    assert_eq!(
        check("SELECT o.id FROM sales.orders o JOIN crm.accounts a ON a.id = o.id").await,
        Ok(())
    );
    assert_eq!(
        check("SELECT count(*) FROM information_schema.tables").await,
        Ok(())
    );
}

#[tokio::test]
async fn denied_tables_are_found_wherever_they_hide() {
    assert_eq!(
        check("SELECT * FROM sales.secrets").await,
        denied("sales.secrets")
    );
    assert_eq!(check("SELECT * FROM crm.notes").await, denied("crm.notes"));
    assert_eq!(
        check("SELECT id FROM sales.orders WHERE id IN (SELECT id FROM sales.secrets)").await,
        denied("sales.secrets")
    );
    assert_eq!(
        check("SELECT id FROM sales.orders WHERE EXISTS (SELECT 1 FROM crm.notes n WHERE n.id = orders.id)").await,
        denied("crm.notes")
    );
    assert_eq!(
        check("WITH s AS (SELECT * FROM \"sales\".\"secrets\") SELECT * FROM sales.orders UNION ALL SELECT * FROM s")
            .await,
        denied("sales.secrets")
    );
    assert_eq!(
        check("EXPLAIN SELECT * FROM /* hi */ sales.secrets").await,
        denied("sales.secrets")
    );
}

#[tokio::test]
async fn writes_are_refused() {
    for sql in [
        "CREATE TABLE sales.x (id int)",
        "INSERT INTO sales.orders VALUES (1)",
        "DROP TABLE sales.orders",
        "CREATE VIEW v AS SELECT * FROM sales.orders",
        "EXPLAIN INSERT INTO sales.orders VALUES (1)",
    ] {
        let r = check(sql).await;
        assert!(
            matches!(r, Err(SafetyError::ReadOnly { .. })),
            "{sql}: {r:?}"
        );
        assert_eq!(r.unwrap_err().sqlstate(), "25006");
    }
}

#[tokio::test]
async fn user_without_roles_reads_nothing() {
    let ctx = context().await;
    let plan = ctx
        .state()
        .create_logical_plan("SELECT * FROM sales.orders")
        .await
        .unwrap();
    let nobody = Principal::new("nobody", &[], &BTreeMap::new());
    assert!(Gate::new("public").check(&plan, &nobody).is_err());
}
