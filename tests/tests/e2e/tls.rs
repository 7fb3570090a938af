//! TLS on the front door: `require` refuses plaintext clients with a clear error and
//! serves TLS clients (psql with sslmode=require).

use std::process::Command;

use crate::common;
use crate::common::{sqlstate, Harness};

fn make_cert(dir: &std::path::Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("server.key"))
        .arg("-out")
        .arg(dir.join("server.pem"))
        .output()
        .expect("openssl is installed");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

async fn start(mode: &str) -> Harness {
    let tls = format!("tls: {{ mode: {mode}, cert: server.pem, key: server.key }}\n");
    Harness::start_full(&tls, "", "", make_cert).await
}

/// Runs psql off the runtime's threads (the server runs in this process).
async fn psql(h: &Harness, sslmode: &str, sql: &str) -> std::process::Output {
    let port = h.port();
    let (sslmode, sql) = (sslmode.to_string(), sql.to_string());
    tokio::task::spawn_blocking(move || psql_blocking(port, &sslmode, &sql))
        .await
        .unwrap()
}

fn psql_blocking(port: u16, sslmode: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .env("PGPASSWORD", "analyst-pw")
        .env("PGCONNECT_TIMEOUT", "10")
        .arg(format!(
            "host=127.0.0.1 port={} user=analyst dbname=switchyard sslmode={sslmode}",
            port
        ))
        .args(["-X", "-A", "-t", "-c", sql])
        .output()
        .expect("psql is installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_plaintext_and_serves_tls() {
    let h = start("require").await;
    let e = h
        .analyst_plain()
        .await
        .expect_err("plaintext must be refused");
    assert_eq!(sqlstate(&e), "28000", "{e:?}");
    assert!(common::message(&e).contains("requires TLS"), "{e:?}");

    let out = psql(&h, "disable", "SELECT 1").await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires TLS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = psql(&h, "require", "SELECT count(*) FROM crm.accounts").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_serves_both() {
    let h = start("allow").await;
    assert!(h.analyst_plain().await.is_ok());
    let out = psql(&h, "require", "SELECT 1").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

trait PlainConnect {
    async fn analyst_plain(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error>;
}

impl PlainConnect for Harness {
    async fn analyst_plain(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = self.config("analyst", "analyst-pw");
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

/// curl against the HTTP door (off the runtime's threads): its stdout.
async fn curl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl is installed")
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_door_serves_tls_as_pgwire_does() {
    for mode in ["require", "allow"] {
        let tls = format!(
            "tls: {{ mode: {mode}, cert: server.pem, key: server.key }}\nhttp: {{ listen: 127.0.0.1:0 }}\n"
        );
        let h = Harness::start_full(&tls, "", "", make_cert).await;
        let addr = h.server.http_addr.expect("the HTTP door");
        let https = curl(&["-k", &format!("https://{addr}/healthz")]).await;
        assert_eq!(https, r#"{"status":"ok"}"#, "{mode}");
        let query = curl(&[
            "-k",
            "-u",
            "analyst:analyst-pw",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"database": "crm", "table": "accounts", "query": "SELECT count(*) AS n FROM accounts"}"#,
            &format!("https://{addr}/v1/query"),
        ])
        .await;
        assert!(query.contains(r#""rows":[{"n":200}]"#), "{mode}: {query}");
        let plain = curl(&[&format!("http://{addr}/healthz")]).await;
        if mode == "require" {
            assert!(plain.contains("requires TLS"), "{plain}");
        } else {
            assert_eq!(plain, r#"{"status":"ok"}"#);
        }
        h.server.stop();
    }
}
