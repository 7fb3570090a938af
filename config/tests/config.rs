//! Config parsing: the documented example loads, and each kind of mistake names its line and fix.

use std::path::Path;

use switchyard_config::{parse_str, ConfigError, DatasetSource, FilterValue, OriginKind, TlsMode};

fn env(name: &str) -> Option<String> {
    match name {
        "PROD_PW" => Some("p@ss word".into()),
        "ANALYST_PASSWORD" => Some("analyst-pw".into()),
        _ => None,
    }
}

/// Writes the files the example refers to and returns the folder.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/server.pem"), "x").unwrap();
    std::fs::write(dir.path().join("certs/server.key"), "x").unwrap();
    std::fs::create_dir_all(dir.path().join("data/events")).unwrap();
    std::fs::write(dir.path().join("data/crm.db"), "").unwrap();
    dir
}

// Line 1 is empty, so the YAML lines below are numbered from 2.
const EXAMPLE: &str = r#"
listen: 127.0.0.1:6432
tls: { mode: require, cert: certs/server.pem, key: certs/server.key }
users:
  - { name: analyst, password: "${ANALYST_PASSWORD}", roles: [reader] }
roles:
  reader: { allow: ["public.*", "pg1.*"] }
origins:
  prod:      { kind: postgres, url: "postgres://app:${PROD_PW}@db1:5432/production" }
  analytics: { kind: postgres, url: "postgres://app@db2:5432/analytics?sslmode=disable" }
  crm:       { kind: sqlite, path: data/crm.db }
  lake:      { kind: files, path: data/events/ }
datasets:
  public: { origin: prod, tables: [users, orders] }
  pg1.products: { origin: prod, table: public.products, filters: { status: 1 } }
  analytics.events:
    origin: analytics
    query: "SELECT * FROM public.events WHERE created_at > now() - interval '7 days'"
local: { path: data/local.db }
"#;

fn parse(dir: &Path, text: &str) -> Result<switchyard_config::Config, ConfigError> {
    parse_str(text, &dir.join("switchyard.yaml"), &env)
}

fn error(text: &str) -> ConfigError {
    let dir = example_dir();
    parse(dir.path(), text).expect_err("config should be refused")
}

#[test]
fn documented_example_loads() {
    let dir = example_dir();
    let c = parse(dir.path(), EXAMPLE).unwrap();
    assert_eq!(c.listen, "127.0.0.1:6432");
    assert_eq!(c.tls.mode, TlsMode::Require);
    assert_eq!(
        c.tls.cert.as_deref(),
        Some(dir.path().join("certs/server.pem").as_path())
    );
    assert_eq!(c.users[0].password, "analyst-pw");
    assert_eq!(c.roles["reader"].allow, vec!["public.*", "pg1.*"]);
    let OriginKind::Postgres(pg) = &c.origins[0].kind else {
        panic!("prod is postgres")
    };
    assert_eq!(
        (pg.host.as_str(), pg.port, pg.database.as_str()),
        ("db1", 5432, "production")
    );
    assert_eq!(
        (pg.user.as_str(), pg.password.as_deref()),
        ("app", Some("p@ss word"))
    );
    let OriginKind::Postgres(an) = &c.origins[1].kind else {
        panic!("analytics is postgres")
    };
    assert_eq!(
        (an.password.as_deref(), an.sslmode.as_str()),
        (None, "disable")
    );
    assert!(matches!(c.origins[2].kind, OriginKind::Sqlite { .. }));
    assert!(matches!(c.origins[3].kind, OriginKind::Files { .. }));
    let names: Vec<String> = c.datasets.iter().map(|d| d.qualified_name()).collect();
    assert_eq!(
        names,
        [
            "public.users",
            "public.orders",
            "pg1.products",
            "analytics.events"
        ]
    );
    assert_eq!(
        c.datasets[2].source,
        DatasetSource::Table {
            table: "public.products".into(),
            filters: vec![("status".into(), FilterValue::Int(1))]
        }
    );
    assert!(
        matches!(&c.datasets[3].source, DatasetSource::Query(q) if q.contains("interval '7 days'"))
    );
    assert_eq!(c.local.path, dir.path().join("data/local.db"));
}

#[test]
fn missing_environment_variable_is_named() {
    let e = error(&EXAMPLE.replace("${PROD_PW}", "${NO_SUCH_PW}"));
    assert_eq!(e.line, Some(9));
    assert!(e.reason.contains("NO_SUCH_PW"), "{e}");
    assert!(e.to_string().contains("switchyard.yaml:9:"), "{e}");
}

#[test]
fn unknown_origin_names_the_known_ones() {
    let e = error(&EXAMPLE.replace("{ origin: prod, tables", "{ origin: prdo, tables"));
    assert_eq!(e.line, Some(14));
    assert!(e.reason.contains("unknown origin prdo"), "{e}");
    assert!(e.fix.contains("prod, analytics, crm, lake"), "{e}");
}

#[test]
fn duplicate_dataset_across_list_and_single_form() {
    let text = EXAMPLE.replace(
        "local: {",
        "  public.orders: { origin: crm, table: orders }\nlocal: {",
    );
    let e = error(&text);
    assert!(e.reason.contains("public.orders is defined twice"), "{e}");
    assert!(e.reason.contains("first defined at line 14"), "{e}");
}

#[test]
fn bad_url_is_refused() {
    let e = error(&EXAMPLE.replace(
        "postgres://app@db2:5432/analytics?sslmode=disable",
        "mysql://db2/analytics",
    ));
    assert_eq!(e.line, Some(10));
    assert!(e.reason.contains("bad URL"), "{e}");
    let e = error(&EXAMPLE.replace(
        "postgres://app@db2:5432/analytics?sslmode=disable",
        "postgres://db2:5432",
    ));
    assert!(e.reason.contains("no database"), "{e}");
    let e = error(&EXAMPLE.replace("sslmode=disable", "sslmode=always"));
    assert_eq!(e.line, Some(10));
    assert!(
        e.reason.contains(
            "sslmode=always is not one of disable, prefer, require, verify-ca, verify-full"
        ),
        "{e}"
    );
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let e = error(&EXAMPLE.replace("  reader: { allow:", "  reader: { alow:"));
    assert_eq!(e.line, Some(7));
    assert!(e.reason.contains("alow"), "{e}");
}

#[test]
fn missing_tls_file_is_refused() {
    let e = error(&EXAMPLE.replace("certs/server.key", "certs/missing.key"));
    assert_eq!(e.line, Some(3));
    assert!(e.reason.contains("missing.key"), "{e}");
    assert!(e.reason.contains("does not exist"), "{e}");
}

#[test]
fn unknown_role_and_bad_kind_fields() {
    let e = error(&EXAMPLE.replace("roles: [reader]", "roles: [writer]"));
    assert!(e.reason.contains("unknown role writer"), "{e}");
    let e = error(&EXAMPLE.replace("{ kind: sqlite, path: data/crm.db }", "{ kind: sqlite }"));
    assert!(e.reason.contains("has no path"), "{e}");
    let e = error(&EXAMPLE.replace(
        "{ kind: files, path: data/events/ }",
        "{ kind: files, path: data/nowhere/ }",
    ));
    assert!(e.reason.contains("does not exist"), "{e}");
}

#[test]
fn dataset_shapes_are_checked() {
    let e = error(&EXAMPLE.replace(
        "public: { origin: prod, tables: [users, orders] }",
        "public: { origin: prod, table: users }",
    ));
    assert!(e.reason.contains("needs `tables"), "{e}");
    let e = error(&EXAMPLE.replace(
        "local: {",
        "  pg_catalog.x: { origin: prod, table: x }\nlocal: {",
    ));
    assert!(e.reason.contains("reserved"), "{e}");
}

#[test]
fn defaults_when_sections_are_missing() {
    let dir = example_dir();
    let c = parse(dir.path(), "users: [{ name: u, password: p }]\n").unwrap();
    assert_eq!(c.listen, "127.0.0.1:6432");
    assert_eq!(c.tls.mode, TlsMode::Disable);
    assert_eq!(c.local.path, dir.path().join("data/local.db"));
}

const SAFETY: &str = r#"
users:
  - { name: rep, password: x, roles: [regional], attributes: { region: north, tenant: 7 } }
roles:
  regional:
    allow: [sales.orders]
    grants:
      - { tables: ["local.*"], privileges: [select, insert] }
    columns:
      sales.orders: { deny: [note], mask: { email: hash, phone: redact } }
    row_filters:
      sales.orders: "region = user.region AND tenant_id = user.tenant"
    guardrails: { max_rows: 100, statement_timeout: 500ms }
guardrails:
  max_rows: 10000
  on_max_rows: error
  statement_timeout: 30s
  max_result_bytes: 10MB
  max_concurrent_statements: 4
  max_cartesian_rows: 1000000
audit: { path: logs/audit.jsonl, fsync: always }
safety:
  injection: { tautology: warn, stacked: deny }
  deny_functions: [Upper]
"#;

#[test]
fn safety_sections_load() {
    use std::time::Duration;
    use switchyard_config::{Action, Fsync, Mask, Privilege, RowCapAction};
    let dir = tempfile::tempdir().unwrap();
    let c = parse(dir.path(), SAFETY).unwrap_or_else(|e| panic!("{e}"));
    let role = &c.roles["regional"];
    assert_eq!(role.allow, vec!["sales.orders"]);
    assert_eq!(role.grants[0].table, "local.*");
    assert_eq!(
        role.grants[0].privileges,
        vec![Privilege::Select, Privilege::Insert]
    );
    assert_eq!(role.columns[0].deny, vec!["note"]);
    assert_eq!(
        role.columns[0].masks,
        vec![
            ("email".to_string(), Mask::Hash),
            ("phone".to_string(), Mask::Redact)
        ]
    );
    assert_eq!(role.row_filters[0].table, "sales.orders");
    assert_eq!(role.row_filters[0].line, Some(12));
    assert_eq!(
        role.guardrails.statement_timeout,
        Some(Duration::from_millis(500))
    );
    assert_eq!(c.users[0].attributes["tenant"], FilterValue::Int(7));
    assert_eq!(c.guardrails.on_max_rows, Some(RowCapAction::Error));
    assert_eq!(c.guardrails.max_result_bytes, Some(10 << 20));
    assert_eq!(
        c.guardrails.statement_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(c.audit.path, dir.path().join("logs/audit.jsonl"));
    assert_eq!(c.audit.fsync, Fsync::Always);
    assert_eq!(c.safety.injection.tautology, Action::Warn);
    assert_eq!(c.safety.injection.stacked, Action::Deny);
    assert_eq!(c.safety.injection.timing, Action::Deny);
    assert_eq!(c.safety.deny_functions, vec!["upper"]);
}

#[test]
fn safety_mistakes_name_their_line() {
    let e = error(&SAFETY.replace("statement_timeout: 30s", "statement_timeout: soon"));
    assert_eq!(e.line, Some(17), "{e}");
    assert!(e.reason.contains("not a duration"), "{e}");
    let e = error(&SAFETY.replace("max_result_bytes: 10MB", "max_result_bytes: lots"));
    assert_eq!(e.line, Some(18), "{e}");
    let e = error(&SAFETY.replace("tautology: warn", "tautologies: warn"));
    assert!(e.reason.contains("unknown finding"), "{e}");
    let e = error(&SAFETY.replace("privileges: [select, insert]", "privileges: [select, drop]"));
    assert!(e.reason.contains("unknown variant"), "{e}");
    // A row filter naming an attribute the user lacks is refused at start.
    let e = error(&SAFETY.replace(", tenant: 7", ""));
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.reason.contains("user.tenant"), "{e}");
    // The check reads the predicate as SQL, as the row filter is applied: any case
    // of `user`, never inside a string.
    let e = error(
        &SAFETY
            .replace(", tenant: 7", "")
            .replace("user.tenant", "USER.tenant"),
    );
    assert!(e.reason.contains("user.tenant"), "{e}");
    let c = parse(
        tempfile::tempdir().unwrap().path(),
        &SAFETY
            .replace(", tenant: 7", "")
            .replace("tenant_id = user.tenant", "note <> 'user.tenant'"),
    );
    assert!(c.is_ok(), "{c:?}");
    // A row filter that is not one SQL predicate is refused when the config is checked.
    let e = error(&SAFETY.replace("AND tenant_id = user.tenant", "AND; DROP TABLE t"));
    assert_eq!(e.line, Some(12), "{e}");
    assert!(e.reason.contains("is not a SQL predicate"), "{e}");
    let e = error(&SAFETY.replace("mask: { email: hash", "mask: { email: scramble"));
    assert!(e.reason.contains("unknown variant"), "{e}");
}

#[test]
fn mongodb_origins_and_datasets_load_and_mistakes_name_their_line() {
    let dir = example_dir();
    let base = "origins:\n  docs: { kind: mongodb, url: \"mongodb://u:secret@h:27017/?directConnection=true\", database: shop }\ndatasets:\n";
    let ok = format!(
        "{base}  shop: {{ origin: docs, tables: [profiles] }}\n  shop.cities:\n    origin: docs\n    table: profiles\n    columns:\n      - {{ name: city, type: text, path: address.city }}\n      - {{ name: total, type: \"numeric(12, 2)\" }}\n  shop.big:\n    origin: docs\n    table: events\n    pipeline: [{{ \"$match\": {{ n: {{ \"$gt\": 5 }} }} }}]\n"
    );
    let c = parse(dir.path(), &ok).unwrap_or_else(|e| panic!("{e}"));
    let OriginKind::Mongodb(m) = &c.origins[0].kind else {
        panic!("not mongodb: {:?}", c.origins[0].kind)
    };
    assert_eq!(
        (m.database.as_str(), m.sample_size, m.pushdown),
        ("shop", 1000, true)
    );
    assert!(
        !format!("{m:?}").contains("secret"),
        "password printed: {m:?}"
    );
    let cities = c.datasets.iter().find(|d| d.name == "cities").unwrap();
    assert_eq!(cities.columns[0].path, "address.city");
    assert_eq!(cities.columns[1].sql_type.to_string(), "numeric(12,2)");
    assert!(matches!(
        &c.datasets.iter().find(|d| d.name == "big").unwrap().source,
        DatasetSource::Pipeline { collection, pipeline } if collection == "events" && pipeline.contains("$gt")
    ));

    let bad = |text: String, line: u64, needle: &str| {
        let e = parse(dir.path(), &text).expect_err("refused");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    };
    bad(
        "origins:\n  docs: { kind: mongodb, url: \"mongodb://h\" }\n".into(),
        2,
        "has no database",
    );
    bad(
        format!("{base}  shop.x:\n    origin: docs\n    table: t\n    columns:\n      - {{ name: a, type: money }}\n"),
        8,
        "unknown type \"money\"",
    );
    bad(
        format!("{base}  shop.x:\n    origin: docs\n    table: t\n    pipeline: '[{{\"$match\": 1}}, 5]'\n"),
        7,
        "list of stages",
    );
    bad(
        format!("{base}  shop.x: {{ origin: docs, query: \"SELECT 1\" }}\n"),
        4,
        "pipelines, not SQL",
    );
}

#[test]
fn modes_are_read_and_checked_with_their_lines() {
    use switchyard_config::Mode;
    let dir = example_dir();
    let text = EXAMPLE
        .replace(
            "pg1.products: { origin: prod, table: public.products, filters: { status: 1 } }",
            "pg1.products: { origin: prod, table: public.products, filters: { status: 1 }, mode: materialize }",
        )
        .replace(
            "    origin: analytics\n",
            "    origin: analytics\n    mode: materialize\n    refresh: 10m\n",
        );
    let c = parse(dir.path(), &text).unwrap();
    let mode = |name: &str| {
        c.datasets
            .iter()
            .find(|d| d.qualified_name() == name)
            .unwrap()
            .mode
            .clone()
    };
    assert_eq!(mode("public.users"), Mode::Federate);
    assert_eq!(
        mode("pg1.products"),
        Mode::Materialize {
            refresh: None,
            live: None,
            sync: None
        }
    );
    assert_eq!(
        mode("analytics.events"),
        Mode::Materialize {
            refresh: Some(std::time::Duration::from_secs(600)),
            live: None,
            sync: None
        }
    );

    let one = |extra: &str| {
        error(&EXAMPLE.replace(
            "pg1.products: { origin: prod, table: public.products, filters: { status: 1 } }",
            &format!("pg1.products: {{ origin: prod, table: public.products, {extra} }}"),
        ))
    };
    let e = one("mode: cache");
    assert_eq!(e.line, Some(15));
    assert!(
        e.reason.contains("unknown mode \"cache\"")
            && e.fix.contains("federate, materialize or sync"),
        "{e}"
    );
    let sync = |extra: &str| {
        EXAMPLE.replace(
            "pg1.products: { origin: prod, table: public.products, filters: { status: 1 } }",
            &format!("pg1.products: {{ origin: prod, table: public.products, {extra} }}"),
        )
    };
    let e = error(&sync("mode: sync"));
    assert!(
        e.reason.contains("needs conflict:")
            && e.fix
                .contains("origin_wins, local_wins, last_write_wins, reject"),
        "{e}"
    );
    let e = error(&sync(
        "mode: sync, conflict: reject, filters: { status: 1 }",
    ));
    assert!(
        e.reason.contains("is a whole table") && e.fix.contains("remove filters:"),
        "{e}"
    );
    let e = error(&sync("mode: sync, conflict: newest"));
    assert!(
        e.reason.contains("unknown conflict policy \"newest\""),
        "{e}"
    );
    let e = error(&sync("mode: sync, conflict: last_write_wins"));
    assert!(e.reason.contains("needs version_column:"), "{e}");
    let e = error(&sync("mode: sync, conflict: reject, refresh: 1m"));
    assert!(
        e.reason.contains("refresh: does not go with mode: sync"),
        "{e}"
    );
    let e = error(&sync("mode: sync, conflict: reject, live: false"));
    assert!(e.reason.contains("always live"), "{e}");
    let e = error(&sync("mode: materialize, conflict: reject"));
    assert!(e.reason.contains("need mode: sync"), "{e}");
    let synced = parse(
        dir.path(),
        &sync("mode: sync, conflict: last_write_wins, version_column: updated_at"),
    )
    .unwrap();
    let products = synced
        .datasets
        .iter()
        .find(|d| d.qualified_name() == "pg1.products")
        .unwrap();
    assert_eq!(
        products.mode,
        Mode::Materialize {
            refresh: None,
            live: Some(switchyard_config::Live::default()),
            sync: Some(switchyard_config::SyncSettings {
                conflict: switchyard_config::ConflictPolicy::LastWriteWins,
                version_column: Some("updated_at".into()),
            }),
        }
    );
    let live = parse(
        dir.path(),
        &EXAMPLE.replace(
            "pg1.products: { origin: prod, table: public.products, filters: { status: 1 } }",
            "pg1.products: { origin: prod, table: public.products, filters: { status: 1 }, mode: materialize, live: true, slot: products_feed }",
        ),
    )
    .unwrap();
    let products = live
        .datasets
        .iter()
        .find(|d| d.qualified_name() == "pg1.products")
        .unwrap();
    assert_eq!(
        products.mode,
        Mode::Materialize {
            refresh: None,
            live: Some(switchyard_config::Live {
                slot: Some("products_feed".into()),
                publication: None
            }),
            sync: None
        }
    );
    let e = one("mode: materialize, live: true, refresh: 10m");
    assert!(e.reason.contains("exclude each other"), "{e}");
    let e = one("mode: materialize, live: true, slot: Bad-Name");
    assert!(e.reason.contains("is not a valid name"), "{e}");
    let e = one("slot: feed");
    assert!(
        e.reason.contains("need mode: materialize and live: true"),
        "{e}"
    );
    let e = one("mode: materialize, publication: feed");
    assert!(e.reason.contains("need live: true"), "{e}");
    let e = error(&EXAMPLE.replace(
        "    origin: analytics\n",
        "    origin: analytics\n    mode: materialize\n    live: true\n",
    ));
    assert!(
        e.reason.contains("cannot be maintained incrementally") && e.fix.contains("refresh:"),
        "{e}"
    );
    let e = one("refresh: 10m");
    assert!(e.reason.contains("refresh: needs mode: materialize"), "{e}");
    let e = one("mode: materialize, refresh: soon");
    assert!(e.reason.contains("is not an interval"), "{e}");
    let e = error(
        &EXAMPLE
            .replace(
                "lake:      { kind: files, path: data/events/ }",
                "lake:      { kind: files, path: data/events/ }\n  # files\n",
            )
            .replace(
                "  public: { origin: prod, tables: [users, orders] }",
                "  public: { origin: lake, tables: [e], mode: materialize }",
            ),
    );
    assert!(e.reason.contains("need no local copy"), "{e}");
    let e = error(&EXAMPLE.replace(
        "local: { path: data/local.db }",
        "local: { path: data/local.db, max_size: lots }",
    ));
    assert!(e.reason.contains("local.max_size is not a size"), "{e}");
    let e = error(&EXAMPLE.replace("  public: { origin: prod", "  switchyard: { origin: prod"));
    assert!(e.reason.contains("reserved"), "{e}");
}
