//! Red-team suite: statements that try to write, read what a role may not, escape a
//! row filter, unmask a column, or probe the server — through the proxy with a real
//! client, against real origins. Each case asserts the outcome and its SQLSTATE, the
//! audit record (outcome, code, the stage that decided), and — from PostgreSQL's own
//! statement log — that no data query for a refused statement reached the origin.
//!
//! The cases run one after another in one test so that the origin log between two
//! cases belongs to that case alone.

use std::time::Duration;

use crate::common;
use crate::common::{Harness, ANALYST, CAPPED, CRM_ONLY, NORTH_REP, STRICT};
use futures::StreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proto {
    Simple,
    Extended,
}

#[derive(Debug, Clone)]
enum Expect {
    /// Refused with this SQLSTATE; the audit names `stage` as the deciding stage when set.
    Denied(&'static str, Option<&'static str>),
    /// Allowed, then stopped by a runtime guardrail with this SQLSTATE.
    Stopped(&'static str),
    /// Fails with this SQLSTATE, and the message does not contain the text.
    ErrorWithout(&'static str, &'static str),
    /// Succeeds with exactly these rows (text).
    Rows(Vec<Vec<Option<String>>>),
    /// Succeeds with this many rows and these warnings (NOTICE text fragments).
    Warned(usize, &'static [&'static str]),
}

struct Case {
    name: &'static str,
    user: (&'static str, &'static str),
    sql: &'static str,
    proto: Proto,
    params: Vec<String>,
    expect: Expect,
}

fn denied(
    name: &'static str,
    user: (&'static str, &'static str),
    sql: &'static str,
    code: &'static str,
    stage: Option<&'static str>,
) -> Case {
    Case {
        name,
        user,
        sql,
        proto: Proto::Simple,
        params: vec![],
        expect: Expect::Denied(code, stage),
    }
}

fn stopped(
    name: &'static str,
    user: (&'static str, &'static str),
    sql: &'static str,
    code: &'static str,
) -> Case {
    Case {
        name,
        user,
        sql,
        proto: Proto::Simple,
        params: vec![],
        expect: Expect::Stopped(code),
    }
}

fn errs_without(
    name: &'static str,
    user: (&'static str, &'static str),
    sql: &'static str,
    code: &'static str,
    hidden: &'static str,
) -> Case {
    Case {
        name,
        user,
        sql,
        proto: Proto::Simple,
        params: vec![],
        expect: Expect::ErrorWithout(code, hidden),
    }
}

fn rows(
    name: &'static str,
    user: (&'static str, &'static str),
    sql: &'static str,
    want: &[&[&str]],
) -> Case {
    Case {
        name,
        user,
        sql,
        proto: Proto::Simple,
        params: vec![],
        expect: Expect::Rows(
            want.iter()
                .map(|r| {
                    r.iter()
                        .map(|v| (*v != "NULL").then(|| v.to_string()))
                        .collect()
                })
                .collect(),
        ),
    }
}

impl Case {
    fn extended(mut self) -> Self {
        self.proto = Proto::Extended;
        self
    }

    fn params(mut self, p: &[&str]) -> Self {
        self.proto = Proto::Extended;
        self.params = p.iter().map(|s| s.to_string()).collect();
        self
    }
}

const RBAC: Option<&str> = Some("RBAC_GATE");
const AST: Option<&str> = Some("AST_CHECKER");
const INJ: Option<&str> = Some("INJECTION_ANALYSER");
const GUARD: Option<&str> = Some("GUARDRAILS");

fn cases() -> Vec<Case> {
    let a = ANALYST;
    let n = NORTH_REP;
    vec![
        // --- Writes and DDL by a read-only role, however spelled ---
        denied("writable CTE", a, "WITH d AS (DELETE FROM sales.orders RETURNING *) SELECT * FROM d", "0A000", None),
        denied("SELECT INTO", a, "SELECT * INTO sales.stolen FROM sales.orders", "25006", AST),
        denied("COMMIT; DROP", a, "COMMIT; DROP TABLE sales.orders", "25006", AST),
        denied("SELECT; DELETE stacked", a, "SELECT 1; DELETE FROM sales.orders WHERE id = 1", "25006", AST),
        denied("leading comment DROP", a, "/* harmless */ DROP TABLE sales.orders", "25006", AST),
        denied("trailing comment DROP", a, "DROP TABLE sales.orders -- bye", "25006", AST),
        denied("mixed case DROP", a, "dRoP tAbLe SaLeS.oRdErS", "25006", AST),
        denied("UPDATE all", a, "UPDATE sales.orders SET amount = 0", "25006", AST),
        denied("DELETE where", a, "DELETE FROM sales.orders WHERE id = 1", "25006", AST),
        denied("INSERT SELECT", a, "INSERT INTO sales.orders SELECT * FROM sales.orders", "25006", AST),
        denied("CREATE VIEW over secrets", a, "CREATE VIEW v AS SELECT * FROM sales.secrets", "42501", RBAC),
        denied("CREATE TABLE AS", a, "CREATE TABLE public.t AS SELECT 1 AS x", "25006", AST),
        denied("COPY to a server file", a, "COPY sales.orders TO '/tmp/switchyard-stolen.csv'", "0A000", None),
        denied("CREATE EXTERNAL TABLE reads server files", a, "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'", "42601", None),
        denied("PREPARE a DELETE", a, "PREPARE p AS DELETE FROM sales.orders WHERE id = $1", "25006", AST),
        denied("DROP via extended", a, "DROP TABLE sales.orders", "25006", AST).extended(),
        denied("multi-statement Parse", a, "SELECT 1; DROP TABLE sales.orders", "42601", None).extended(),
        // --- Functions that read files, reach servers, change settings or sleep ---
        denied("pg_read_file", a, "SELECT pg_read_file('/etc/passwd')", "42501", AST),
        denied("pg_read_file upper case", a, "SELECT PG_READ_FILE('/etc/passwd')", "42501", AST),
        denied("pg_read_file quoted", a, "SELECT \"pg_read_file\"('/etc/passwd')", "42501", AST),
        denied("pg_read_file schema-qualified", a, "SELECT pg_catalog.pg_read_file('/etc/passwd')", "42501", AST),
        denied("pg_ls_dir in FROM", a, "SELECT * FROM pg_ls_dir('/')", "42501", AST),
        denied("dblink", a, "SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(x int)", "42501", AST),
        denied("set_config", a, "SELECT set_config('search_path', 'evil', false)", "42501", AST),
        denied("lo_import", a, "SELECT lo_import('/etc/passwd')", "42501", AST),
        denied("pg_sleep", a, "SELECT pg_sleep(5)", "42501", AST),
        denied("pg_sleep in WHERE", a, "SELECT id FROM sales.orders WHERE id = 1 AND pg_sleep(3) IS NOT NULL", "42501", AST),
        denied("pg_read_file extended", a, "SELECT pg_read_file($1)", "42501", AST).params(&["/etc/passwd"]),
        // --- Tables the role may not read, wherever they hide ---
        denied("denied table", a, "SELECT * FROM sales.secrets", "42501", RBAC),
        denied("denied table quoted", a, "SELECT * FROM \"sales\".\"secrets\"", "42501", RBAC),
        denied("denied table upper case", a, "SELECT * FROM SALES.SECRETS", "42501", RBAC),
        denied("via join", a, "SELECT o.id FROM sales.orders o JOIN sales.secrets s ON s.id = o.id", "42501", RBAC),
        denied("via UNION", a, "SELECT id FROM sales.orders UNION SELECT id FROM sales.secrets", "42501", RBAC),
        denied("via CTE", a, "WITH s AS (SELECT * FROM sales.secrets) SELECT * FROM s", "42501", RBAC),
        denied("via EXISTS", a, "SELECT id FROM sales.orders WHERE EXISTS (SELECT 1 FROM sales.secrets)", "42501", RBAC),
        denied("via IN subquery", a, "SELECT id FROM sales.orders WHERE id IN (SELECT id FROM sales.secrets)", "42501", RBAC),
        denied("via nested derived tables", a, "SELECT * FROM (SELECT * FROM (SELECT * FROM sales.secrets) x) y", "42501", RBAC),
        denied("via EXPLAIN", a, "EXPLAIN SELECT * FROM sales.secrets", "42501", RBAC),
        denied("via EXPLAIN ANALYZE", a, "EXPLAIN ANALYZE SELECT * FROM sales.secrets", "42501", RBAC),
        denied("via prepared statement", a, "SELECT secret FROM sales.secrets WHERE id = $1", "42501", RBAC).params(&["1"]),
        denied("other origin for crm-only role", CRM_ONLY, "SELECT * FROM sales.orders", "42501", RBAC),
        denied("cross-origin join for crm-only role", CRM_ONLY, "SELECT a.id FROM crm.accounts a JOIN sales.customers c ON c.id = a.customer_id", "42501", RBAC),
        denied("Unicode look-alike name", a, "SELECT * FROM sales.\"ѕecrets\"", "42P01", None),
        denied("Unicode escape name", a, "SELECT * FROM sales.U&\"secr\\0065ts\"", "42601", None),
        errs_without("value in an error message stays masked", n, "SELECT CAST(email AS integer) FROM sales.customers", "22P02", "@example.com"),
        denied("secret in an error message", a, "SELECT CAST(secret AS integer) FROM sales.secrets", "42501", RBAC),
        // --- Injection shapes ---
        denied("OR 1=1", a, "SELECT id FROM sales.orders WHERE id = 1 OR 1=1", "42501", INJ),
        denied("OR 'a'='a'", a, "SELECT id FROM sales.orders WHERE status = 'x' OR 'a'='a'", "42501", INJ),
        denied("OR x=x", a, "SELECT id FROM sales.orders WHERE status = 'x' OR id = id", "42501", INJ),
        denied("OR 2>1", a, "SELECT id FROM sales.orders WHERE id = 1 OR 2 > 1", "42501", INJ),
        denied("OR true", a, "SELECT id FROM sales.orders WHERE id = 1 OR true", "42501", INJ),
        denied("UNION with pg_catalog", a, "SELECT status FROM sales.orders UNION SELECT tablename FROM pg_catalog.pg_tables", "42501", INJ),
        denied("UNION with information_schema", a, "SELECT table_name FROM information_schema.tables UNION ALL SELECT status FROM sales.orders", "42501", INJ),
        Case {
            name: "trailing comment warns",
            user: a,
            sql: "SELECT id FROM sales.orders WHERE id = 1 --' AND status = 'paid'",
            proto: Proto::Simple,
            params: vec![],
            expect: Expect::Warned(1, &["comment"]),
        },
        Case {
            // count(*) is renamed `count` in a rewritten text; the comment is still seen.
            name: "trailing comment warns when the items are named",
            user: a,
            sql: "SELECT count(*) FROM sales.orders WHERE id = 1 --' AND status = 'paid'",
            proto: Proto::Simple,
            params: vec![],
            expect: Expect::Warned(1, &["comment"]),
        },
        Case {
            name: "stacked statements warn",
            user: a,
            sql: "SELECT id FROM sales.orders WHERE id = 1; SELECT id FROM sales.orders WHERE id = 2",
            proto: Proto::Simple,
            params: vec![],
            expect: Expect::Warned(2, &["stacked"]),
        },
        rows("parameter carrying SQL stays a value", a, "SELECT count(*) FROM sales.orders WHERE status = $1", &[&["0"]])
            .params(&["x' OR '1'='1'; DROP TABLE sales.orders; --"]),
        // --- Columns the role may not read ---
        denied("denied column via *", n, "SELECT * FROM sales.customers", "42501", RBAC),
        denied("denied column by name", n, "SELECT created_at FROM sales.customers", "42501", RBAC),
        denied("denied column in WHERE", n, "SELECT id FROM sales.customers WHERE created_at > timestamptz '2024-01-02 00:00:00+00'", "42501", RBAC),
        denied("denied column in ORDER BY", n, "SELECT id FROM sales.customers ORDER BY created_at", "42501", RBAC),
        denied("denied column in GROUP BY", n, "SELECT count(*) FROM sales.customers GROUP BY created_at", "42501", RBAC),
        denied("denied column in aggregate", n, "SELECT max(created_at) FROM sales.customers", "42501", RBAC),
        denied("denied column via alias", n, "SELECT x FROM (SELECT created_at AS x FROM sales.customers) s", "42501", RBAC),
        denied("denied column in correlated EXISTS", n, "SELECT id FROM sales.orders o WHERE EXISTS (SELECT 1 FROM sales.customers c WHERE c.id = o.customer_id AND c.created_at IS NULL)", "42501", RBAC),
        denied("denied column via join", n, "SELECT c.created_at FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id", "42501", RBAC),
        denied("denied column via scalar subquery in WHERE", n, "SELECT id FROM sales.orders WHERE ordered_at > (SELECT max(created_at) FROM sales.customers)", "42501", RBAC),
        denied("denied column via EXPLAIN", n, "EXPLAIN SELECT created_at FROM sales.customers", "42501", RBAC),
        denied("denied column via prepared statement", n, "SELECT created_at FROM sales.customers WHERE id = $1", "42501", RBAC).params(&["4"]),
        // --- Row filter escapes: every answer counts north only (50 customers) ---
        rows("row filter: plain count", n, "SELECT count(*) FROM sales.customers", &[&["50"]]),
        rows("row filter: OR cannot widen", n, "SELECT count(*) FROM sales.customers WHERE region = 'south' OR region <> 'nowhere'", &[&["50"]]),
        rows("row filter: UNION", n, "SELECT region FROM sales.customers UNION SELECT region FROM sales.customers", &[&["north"]]),
        rows("row filter: LEFT JOIN from orders", n, "SELECT count(*) FROM sales.orders o LEFT JOIN sales.customers c ON c.id = o.customer_id WHERE c.region = 'south'", &[&["0"]]),
        rows("row filter: FULL JOIN", n, "SELECT count(*) FROM sales.orders o FULL JOIN sales.customers c ON c.id = o.customer_id WHERE c.region IS NOT NULL AND c.region <> 'north'", &[&["0"]]),
        rows("row filter: CTE", n, "WITH x AS (SELECT id, region FROM sales.customers) SELECT count(*) FROM x WHERE region = 'south'", &[&["0"]]),
        rows("row filter: IN subquery", n, "SELECT count(*) FROM sales.orders WHERE customer_id IN (SELECT id FROM sales.customers WHERE region = 'south')", &[&["0"]]),
        rows("row filter: prepared with parameter", n, "SELECT count(*) FROM sales.customers WHERE region = $1", &[&["0"]]).params(&["south"]),
        rows("row filter: self join", n, "SELECT count(*) FROM sales.customers a JOIN sales.customers b ON a.id = b.id + 1", &[&["0"]]),
        // --- Masked columns: values never leave unmasked, not even through WHERE ---
        rows("mask: hashed e-mail", n, "SELECT email FROM sales.customers WHERE id = 4", &[&["98c7f04d5a4d21c2ea97d0e356225555"]]),
        rows("mask: probe by equality", n, "SELECT count(*) FROM sales.customers WHERE email = 'c4@example.com'", &[&["0"]]),
        rows("mask: probe by LIKE", n, "SELECT count(*) FROM sales.customers WHERE email LIKE 'c4@%'", &[&["0"]]),
        rows("mask: redacted manager", n, "SELECT DISTINCT manager FROM crm.accounts WHERE manager IS NOT NULL", &[&["***"]]),
        // --- Guardrails ---
        denied("cartesian product", CAPPED, "SELECT count(*) FROM sales.orders a, sales.orders b", "54000", GUARD),
        denied("cartesian CROSS JOIN", CAPPED, "SELECT count(*) FROM sales.orders a CROSS JOIN sales.customers b", "54000", GUARD),
        stopped("row cap as error", STRICT, "SELECT id FROM sales.orders", "54000"),
        stopped("result bytes", CAPPED, "SELECT repeat(status, 1000) FROM sales.orders", "54000"),
        stopped("statement timeout", CAPPED, common::SLOW_QUERY, "57014"),
        Case {
            name: "row cap truncates with a NOTICE",
            user: CAPPED,
            sql: "SELECT id FROM sales.orders",
            proto: Proto::Simple,
            params: vec![],
            expect: Expect::Warned(5, &["max_rows"]),
        },
    ]
}

/// A connection whose NOTICEs are collected.
async fn connect(
    h: &Harness,
    user: (&str, &str),
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (client, mut conn) = h
        .config(user.0, user.1)
        .connect(NoTls)
        .await
        .expect("connects");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notice(n)) => {
                    let _ = tx.send(n.message().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

type Outcome = Result<Vec<Vec<Option<String>>>, (String, String)>;

async fn run(client: &Client, case: &Case) -> Outcome {
    let err = |e: tokio_postgres::Error| (common::sqlstate(&e), common::message(&e));
    match case.proto {
        Proto::Simple => {
            let messages = client.simple_query(case.sql).await.map_err(err)?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect())
        }
        Proto::Extended => {
            let params: Vec<&(dyn ToSql + Sync)> = case
                .params
                .iter()
                .map(|p| p as &(dyn ToSql + Sync))
                .collect();
            let stmt = client.prepare(case.sql).await.map_err(err)?;
            let rows = client.query(&stmt, &params).await.map_err(err)?;
            Ok(rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            // Every checked column here is text or a count.
                            r.try_get::<_, Option<i64>>(i)
                                .map(|v| v.map(|n| n.to_string()))
                                .or_else(|_| r.try_get::<_, Option<String>>(i))
                                .unwrap_or(None)
                        })
                        .collect()
                })
                .collect())
        }
    }
}

fn audit_lines(h: &Harness) -> Vec<serde_json::Value> {
    let path = h.dir.path().join("data/audit.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// Origin statements that read user data (not schema lookups), from a log excerpt.
fn data_queries(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("statement: ") || l.contains("execute "))
        .filter(|l| {
            !l.contains("information_schema")
                && !l.contains("pg_catalog")
                && !l.contains("pg_attribute")
        })
        .filter(|l| {
            [
                "\"orders\"",
                "\"customers\"",
                "\"secrets\"",
                "\"products\"",
                "\"stock\"",
            ]
            .iter()
            .any(|t| l.contains(t))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team() {
    let h = Harness::start().await;
    let all = cases();
    assert!(
        all.len() >= 60,
        "the red-team suite keeps at least 60 cases ({})",
        all.len()
    );
    let mut failures = Vec::new();
    for case in &all {
        let (client, mut notices) = connect(&h, case.user).await;
        let log_before = h.pg.log_text().len();
        let audit_before = audit_lines(&h).len();
        let outcome = run(&client, case).await;
        // Let the statement's audit record and the origin's log settle: an origin
        // query of a statement that already failed can still arrive at the origin, so
        // this cannot be a condition to poll for yet (left for the reliability issue).
        drop(client);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let log = h.pg.log_text();
        let origin = data_queries(&log[log_before.min(log.len())..]);
        let records = audit_lines(&h)[audit_before..].to_vec();
        let mut warnings = Vec::new();
        while let Ok(n) = notices.try_recv() {
            warnings.push(n);
        }
        let mut problems = Vec::new();
        match (&case.expect, &outcome) {
            (Expect::Denied(code, stage), Err((got, msg))) => {
                if got != code {
                    problems.push(format!("SQLSTATE {got} ({msg}), expected {code}"));
                }
                if !origin.is_empty() {
                    problems.push(format!("refused, yet reached the origin: {origin:?}"));
                }
                let rec = records
                    .iter()
                    .rev()
                    .find(|r| r["outcome"] == "denied" || r["outcome"] == "error");
                match rec {
                    None => problems.push("no audit record".into()),
                    Some(r) => {
                        if r["error"]["code"] != *code {
                            problems.push(format!("audit error {}, expected {code}", r["error"]));
                        }
                        if let Some(stage) = stage {
                            let decided = r["stages"]
                                .as_array()
                                .and_then(|s| s.last())
                                .map(|s| (s["stage"].clone(), s["outcome"].clone()));
                            if decided
                                != Some((serde_json::json!(stage), serde_json::json!("denied")))
                            {
                                problems.push(format!(
                                    "audit stages {}, expected {stage} to deny",
                                    r["stages"]
                                ));
                            }
                        }
                    }
                }
            }
            (Expect::Stopped(code), Err((got, msg))) => {
                if got != code {
                    problems.push(format!("SQLSTATE {got} ({msg}), expected {code}"));
                }
                if !records.iter().any(|r| r["error"]["code"] == *code) {
                    problems.push(format!("no audit record with {code}: {records:?}"));
                }
            }
            (Expect::ErrorWithout(code, hidden), Err((got, msg))) => {
                if got != code {
                    problems.push(format!("SQLSTATE {got} ({msg}), expected {code}"));
                }
                if msg.contains(hidden) {
                    problems.push(format!("the error message reveals {hidden:?}: {msg}"));
                }
            }
            (Expect::Rows(want), Ok(got)) => {
                if want != got {
                    problems.push(format!("rows {got:?}, expected {want:?}"));
                }
                if !records.iter().any(|r| r["outcome"] == "ok") {
                    problems.push(format!("no ok audit record: {records:?}"));
                }
            }
            (Expect::Warned(n, fragments), Ok(got)) => {
                if got.len() != *n {
                    problems.push(format!("{} rows, expected {n}", got.len()));
                }
                for f in *fragments {
                    if !warnings.iter().any(|w| w.contains(f)) {
                        problems.push(format!("no NOTICE containing {f:?}: {warnings:?}"));
                    }
                }
            }
            (_, other) => problems.push(format!("outcome {other:?}, expected {:?}", case.expect)),
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} [{}]: {}",
                case.name,
                case.sql,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} red-team cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    // The whole run left an intact chain.
    let path = h.dir.path().join("data/audit.jsonl");
    let n = switchyard_safety::verify(&path).expect("the audit chain verifies");
    assert!(n as usize >= all.len());
}
