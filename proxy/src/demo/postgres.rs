//! The demo's private PostgreSQL: when this machine has PostgreSQL's server binaries,
//! `switchyard demo` runs its own throwaway cluster (two databases, `sales` and
//! `inventory`) so the demo also shows a join across two PostgreSQL databases and a
//! SQLite file, and a live copy of `sales.orders` kept by logical replication
//! (`wal_level = logical`). Nothing external is needed; without the binaries the
//! demo simply has no PostgreSQL origins.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::DemoError;

/// A running private cluster; stopped when dropped.
pub struct DemoPostgres {
    bin: PathBuf,
    data: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

fn server_binaries() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn free_port() -> Result<u16, DemoError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| DemoError::Io {
        path: "127.0.0.1:0".into(),
        source,
    })?;
    Ok(listener
        .local_addr()
        .map_err(|source| DemoError::Io {
            path: "127.0.0.1:0".into(),
            source,
        })?
        .port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl DemoPostgres {
    /// Starts a cluster and loads the demo databases; `None` when PostgreSQL is not installed.
    pub fn start() -> Result<Option<Self>, DemoError> {
        let Some(bin) = server_binaries() else {
            return Ok(None);
        };
        let port = free_port()?;
        // initdb refuses to run as root; the postgres user then owns a folder under /tmp
        // (the demo folder may sit where that user cannot reach).
        let as_postgres = is_root();
        let data = std::env::temp_dir().join(format!("switchyard-demo-pg-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).map_err(|source| DemoError::Io {
            path: data.clone(),
            source,
        })?;
        let pg = DemoPostgres {
            bin,
            data,
            port,
            as_postgres,
        };
        if as_postgres {
            pg.run(Command::new("chown").arg("postgres").arg(&pg.data), "chown")?;
        }
        let cluster = pg.data.join("cluster");
        pg.run(
            pg.command("initdb").arg("-D").arg(&cluster).args([
                "-U",
                "switchyard",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            "initdb",
        )?;
        // In the cluster's own config, so that a bare `pg_ctl start` (the banner's,
        // after its offline-write example stops the origin) starts it as it was.
        let settings = format!(
            "\n# switchyard demo\nport = {port}\nunix_socket_directories = '{}'\n\
             listen_addresses = '127.0.0.1'\nfsync = off\nwal_level = logical\n",
            pg.data.display()
        );
        let conf = cluster.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|source| DemoError::Io {
            path: conf.clone(),
            source,
        })?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(|source| DemoError::Io {
            path: conf.clone(),
            source,
        })?;
        pg.run(&mut pg.pg_ctl("start"), "pg_ctl start")?;
        for (db, sql) in [("sales", SALES_SQL), ("inventory", INVENTORY_SQL)] {
            pg.psql("postgres", &format!("CREATE DATABASE {db}"))?;
            pg.psql(db, sql)?;
        }
        Ok(Some(pg))
    }

    /// `pg_ctl <action>` on the cluster, waiting for it to finish.
    fn pg_ctl(&self, action: &str) -> Command {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(self.data.join("cluster"));
        if action == "start" {
            c.arg("-l").arg(self.data.join("postgres.log"));
        } else {
            c.args(["-m", "fast"]);
        }
        c.args(["-w", action]);
        c
    }

    /// The shell line that runs `pg_ctl <action>` (`stop` or `start`) on the
    /// cluster, for the banner to print.
    pub fn control_line(&self, action: &str) -> String {
        let c = self.pg_ctl(action);
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn psql(&self, db: &str, sql: &str) -> Result<(), DemoError> {
        let mut c = Command::new("psql");
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "switchyard",
            "-p",
            &self.port.to_string(),
            "-d",
            db,
            "-c",
            sql,
        ]);
        self.run(&mut c, "psql")
    }

    fn run(&self, command: &mut Command, what: &str) -> Result<(), DemoError> {
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| DemoError::Io {
                path: PathBuf::from(what),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(DemoError::Postgres(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Config lines for the two PostgreSQL origins and their datasets.
    pub fn config_lines(&self) -> (String, String) {
        let url = |db: &str| {
            format!(
                "postgres://switchyard@127.0.0.1:{}/{db}?sslmode=disable",
                self.port
            )
        };
        (
            format!("  sales:     {{ kind: postgres, url: \"{}\" }}\n  inventory: {{ kind: postgres, url: \"{}\" }}\n", url("sales"), url("inventory")),
            "  sales:     { origin: sales, tables: [orders, visits] }\n  inventory: { origin: inventory, tables: [products] }\n  \
             # A live local copy: answered from the local store, kept fresh by logical replication.\n  \
             sales_live.orders: { origin: sales, table: orders, mode: materialize, live: true }\n  \
             # A sync copy: writes commit locally and are replayed at the origin, also after it was away.\n  \
             field.visits: { origin: sales, table: visits, mode: sync, conflict: origin_wins }\n".to_string(),
        )
    }

    /// The cluster's folder.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for DemoPostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Orders by the demo's crm customers (ids 1..2000), deterministic.
const SALES_SQL: &str = "
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL, product_id integer NOT NULL,
                     quantity integer NOT NULL, status text NOT NULL, ordered_at timestamptz NOT NULL);
INSERT INTO orders
SELECT i, 1 + (i * 7919) % 2000, 1 + (i * 31) % 60, 1 + i % 5,
       (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4],
       timestamptz '2026-01-01 00:00:00+00' + (i * 37 || ' minutes')::interval
FROM generate_series(1, 4000) AS i;
ANALYZE orders;
CREATE TABLE visits (id integer PRIMARY KEY, customer_id integer NOT NULL, note text,
                     at timestamptz NOT NULL DEFAULT now());
INSERT INTO visits SELECT i, 1 + (i * 13) % 2000, 'visit ' || i, timestamptz '2026-03-01 09:00:00+00' + (i || ' hours')::interval
FROM generate_series(1, 20) AS i;";

/// Products, deterministic.
const INVENTORY_SQL: &str = "
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, category text NOT NULL, price numeric(10,2) NOT NULL);
INSERT INTO products
SELECT i, 'product ' || i, (ARRAY['tools', 'garden', 'kitchen'])[1 + i % 3], round((3 + (i * 13) % 97) + (i % 100) / 100.0, 2)
FROM generate_series(1, 60) AS i;
ANALYZE products;";
