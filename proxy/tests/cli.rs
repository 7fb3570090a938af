//! The `switchyard` command line: help texts and `check-config` on good and bad files.

use std::process::Command;

fn switchyard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_explains_each_command() {
    let (ok, out, _) = switchyard(&["--help"]);
    assert!(ok);
    for command in ["serve", "demo", "check-config"] {
        assert!(out.contains(command), "--help lists {command}:\n{out}");
    }
    let (ok, out, _) = switchyard(&["serve", "--help"]);
    assert!(ok && out.contains("--config"), "{out}");
    let (ok, out, _) = switchyard(&["demo", "--help"]);
    assert!(
        ok && out.contains("demo / demo") && out.contains("--listen"),
        "{out}"
    );
}

#[test]
fn check_config_reports_the_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crm.db"), "").unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "users: [{ name: a, password: b, roles: [r] }]\nroles: { r: { allow: ['*'] } }\n\
         origins:\n  crm: { kind: sqlite, path: crm.db }\ndatasets:\n  crm: { origin: crm, tables: [accounts] }\n",
    )
    .unwrap();
    let (ok, out, err) = switchyard(&["check-config", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("crm.accounts <- origin crm"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "origins:\n  crm: { kind: sqlite, path: crm.db }\ndatasets:\n  crm: { origin: crn, tables: [a] }\n").unwrap();
    let (ok, _, err) = switchyard(&["check-config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.yaml:4:"), "names file and line: {err}");
    assert!(
        err.contains("unknown origin crn") && err.contains("fix:"),
        "{err}"
    );

    let (ok, _, err) = switchyard(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!ok, "serve refuses a bad config at start");
    assert!(err.contains("bad.yaml:4:"), "{err}");
}

#[test]
fn audit_verify_accepts_an_intact_log_and_names_the_tampered_line() {
    use switchyard_safety::{AuditLog, AuditRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, switchyard_config::Fsync::Always).unwrap();
    for (i, user) in ["ann", "bob", "cy"].iter().enumerate() {
        log.append(&AuditRecord {
            time: format!("2026-11-23T10:00:0{i}Z"),
            user: user.to_string(),
            fingerprint: "SELECT * FROM sales.orders WHERE id = ?".into(),
            outcome: "ok".into(),
            rows: 1,
            ..Default::default()
        })
        .unwrap();
    }
    drop(log);
    let file = path.to_str().unwrap();
    let (ok, out, err) = switchyard(&["audit", "verify", file]);
    assert!(ok, "{err}");
    assert!(out.contains("3 records"), "{out}");

    // Someone hides that bob read a row.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"rows\":1", "\"rows\":0", 2)).unwrap();
    let (ok, _, err) = switchyard(&["audit", "verify", file]);
    assert!(!ok);
    assert!(
        err.contains("audit.jsonl:1") && err.contains("edited"),
        "{err}"
    );

    // Someone drops bob's line altogether.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let (ok, _, err) = switchyard(&["audit", "verify", file]);
    assert!(!ok);
    assert!(err.contains("audit.jsonl:2"), "{err}");
}
