//! PostgreSQL's change feed: logical replication with pgoutput.
//!
//! Each live dataset has a publication of its table and a replication slot of its
//! own (`switchyard_<schema>_<name>` unless the config names them). A snapshot
//! creates the slot with an exported snapshot and reads the dataset's rows in
//! that snapshot, so the stream starts exactly where the rows end: nothing is
//! missed or seen twice. [`stream`] turns the replication stream into
//! [`FeedEvent`](crate::changes::FeedEvent)s; the transport is `pgwire-replication`.
//!
//! What is checked first, each with a fix in its message: `wal_level = logical`,
//! the REPLICATION privilege, PostgreSQL 14 or newer (binary pgoutput), a key to
//! apply updates and deletes by (a primary key or a replica identity).

pub mod pgoutput;
mod stream;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, TlsConfig};
use switchyard_config::{Dataset, DatasetSource, FilterValue, Live, Mode, SslMode};
use switchyard_sqlstate::SqlState;

use super::PgPool;
use crate::changes::{ChangeFeed, ChangeStream, Position, Snapshot};
use crate::sql::{parse_table_name, quoted, DatasetSql};
use crate::{ConnectorError, Result};

pub use stream::PgStream;

/// How often the slot's position is reported to the origin.
const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The change feed of one PostgreSQL origin.
#[derive(Debug)]
pub struct PgFeed {
    pool: Arc<PgPool>,
}

/// What the feed of one dataset is called at the origin.
#[derive(Debug, Clone)]
struct Names {
    slot: String,
    publication: String,
    /// `"schema"."table"`.
    table: String,
    filters: Vec<(String, FilterValue)>,
    /// A sync dataset (its key must identify one row).
    sync: bool,
}

impl PgFeed {
    /// The feed of the origin `pool` reaches.
    pub fn new(pool: Arc<PgPool>) -> Self {
        PgFeed { pool }
    }

    fn origin(&self) -> String {
        self.pool.origin().to_string()
    }

    fn not_live(&self, code: SqlState, message: String, fix: &str) -> ConnectorError {
        ConnectorError::NotLive {
            origin: self.origin(),
            code,
            message,
            fix: fix.to_string(),
        }
    }

    fn names(&self, dataset: &Dataset) -> Result<Names> {
        let (table, filters) = match &dataset.source {
            DatasetSource::Table { table, filters } => (table, filters.clone()),
            _ => {
                return Err(self.not_live(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "dataset {} is a query, which cannot be maintained incrementally",
                        dataset.qualified_name()
                    ),
                    "use refresh: <interval> instead of live: true",
                ))
            }
        };
        let live = match &dataset.mode {
            Mode::Materialize { live: Some(l), .. } => l.clone(),
            _ => Live::default(),
        };
        let default = default_name(&dataset.qualified_name());
        Ok(Names {
            slot: live.slot.unwrap_or_else(|| default.clone()),
            publication: live.publication.unwrap_or(default),
            table: quoted(&parse_table_name(table)),
            filters,
            sync: dataset.mode.sync().is_some(),
        })
    }

    /// Checks what logical replication needs at the origin, each with its fix.
    /// Returns the table's key columns and OID.
    async fn check_origin(&self, names: &Names) -> Result<(Vec<String>, u32)> {
        let rows = self
            .pool
            .query(
                "SELECT current_setting('wal_level'),
                        current_setting('server_version_num')::int,
                        (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                        c.relreplident::text,
                        current_user::text,
                        c.oid::int8
                   FROM pg_class c WHERE c.oid = $1::text::regclass",
                &names.table,
            )
            .await?;
        let row = rows.first().ok_or_else(|| ConnectorError::NotFound {
            origin: self.origin(),
            object: format!("table {}", names.table),
        })?;
        let wal_level: String = row.get(0);
        let version: i32 = row.get(1);
        let replication: bool = row.get::<_, Option<bool>>(2).unwrap_or(false);
        let identity: String = row.get(3);
        let user: String = row.get(4);
        let relid = row.get::<_, i64>(5) as u32;
        if wal_level != "logical" {
            return Err(self.not_live(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("wal_level is {wal_level}, and live datasets need logical replication"),
                "set wal_level = logical in postgresql.conf and restart PostgreSQL",
            ));
        }
        if version < 140000 {
            return Err(self.not_live(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!("PostgreSQL {} is older than 14", version / 10000),
                "live datasets need PostgreSQL 14 or newer; use refresh: <interval> instead",
            ));
        }
        if !replication {
            return Err(self.not_live(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("role {user} has no REPLICATION privilege"),
                &format!("run ALTER ROLE {user} REPLICATION at the origin (as a superuser)"),
            ));
        }
        let key: Vec<String> = if identity == "f" {
            self.pool
                .query(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass
                       AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    &names.table,
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
        } else {
            let which = if identity == "i" {
                "i.indisreplident"
            } else {
                "i.indisprimary"
            };
            self.pool
                .query(
                    &format!(
                        "SELECT a.attname::text FROM pg_index i
                           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                          WHERE i.indrelid = $1::text::regclass AND {which}
                          ORDER BY array_position(i.indkey::int2[], a.attnum)"
                    ),
                    &names.table,
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        if key.is_empty() || identity == "n" {
            return Err(self.not_live(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "table {} has no primary key (nor replica identity), so its updates and deletes cannot be followed",
                    names.table
                ),
                &format!(
                    "add a primary key, or run ALTER TABLE {} REPLICA IDENTITY FULL at the origin",
                    names.table
                ),
            ));
        }
        if names.sync && identity == "f" {
            return Err(self.not_live(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "table {} has no primary key, so a sync dataset cannot tell its rows apart (replica identity full is not enough)",
                    names.table
                ),
                "add a primary key at the origin",
            ));
        }
        Ok((key, relid))
    }

    /// The table's OID.
    async fn relid(&self, names: &Names) -> Result<u32> {
        let rows = self
            .pool
            .query("SELECT $1::text::regclass::oid::int8", &names.table)
            .await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or_default() as u32)
    }

    /// Creates the dataset's publication, or adds the table to it.
    async fn ensure_publication(&self, names: &Names) -> Result<()> {
        let has = self
            .pool
            .query(
                "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
                &names.publication,
            )
            .await?;
        let exists: bool = has.first().map(|r| r.get(0)).unwrap_or(false);
        let publication = crate::sql::quote_ident(&names.publication);
        let result = if !exists {
            self.pool
                .execute(&format!(
                    "CREATE PUBLICATION {publication} FOR TABLE {}",
                    names.table
                ))
                .await
        } else {
            match self
                .pool
                .execute(&format!(
                    "ALTER PUBLICATION {publication} ADD TABLE {}",
                    names.table
                ))
                .await
            {
                // 42710: the table is in it already.
                Err(ConnectorError::Origin { code, .. }) if code == SqlState::DUPLICATE_OBJECT => {
                    Ok(())
                }
                other => other,
            }
        };
        result.map_err(|e| match e {
            ConnectorError::Origin { code, message, .. }
                if code == SqlState::INSUFFICIENT_PRIVILEGE =>
            {
                self.not_live(
                    code,
                    format!("cannot create publication {}: {message}", names.publication),
                    &format!(
                        "create it at the origin as the table's owner: CREATE PUBLICATION {} FOR TABLE {}",
                        names.publication, names.table
                    ),
                )
            }
            other => other,
        })
    }

    /// Drops the dataset's slot; a session that just let go of it (our own
    /// earlier stream) is waited for a little.
    async fn drop_slot(&self, slot: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let active = self
                .pool
                .query(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    slot,
                )
                .await?;
            match active.first().map(|r| r.get::<_, bool>(0)) {
                None => return Ok(()),
                Some(false) => {
                    self.pool
                        .query("SELECT pg_drop_replication_slot($1)::text", slot)
                        .await?;
                    return Ok(());
                }
                Some(true) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Some(true) => {
                    return Err(ConnectorError::Origin {
                        origin: self.origin(),
                        code: SqlState::OBJECT_IN_USE,
                        message: format!("replication slot {slot} is in use by another session"),
                    })
                }
            }
        }
    }

    /// A replication session for `slot`, not started yet.
    async fn session(
        &self,
        names: &Names,
        start: Lsn,
        ack: Option<Lsn>,
    ) -> Result<ReplicationClient> {
        let s = self.pool.settings();
        if matches!(
            s.sslmode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        ) {
            return Err(self.not_live(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "sslmode={:?} is asked, and live datasets replicate over plaintext only for now",
                    s.sslmode
                ),
                "use refresh: <interval>, or sslmode=prefer on a trusted network",
            ));
        }
        let mut config = ReplicationConfig::new(
            s.host.clone(),
            s.user.clone(),
            s.password.clone().unwrap_or_default(),
            s.database.clone(),
            names.slot.clone(),
            names.publication.clone(),
        )
        .with_port(s.port)
        .with_tls(TlsConfig::disabled())
        .with_start_lsn(start)
        .with_binary(true)
        .with_status_interval(STATUS_INTERVAL)
        .with_application_name("switchyard live");
        if let Some(ack) = ack {
            config = config.with_ack_lsn(ack);
        }
        ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| stream::replication_error(&self.origin(), e))
    }
}

/// `switchyard_<schema>_<name>`, cut to PostgreSQL's 63 bytes with a hash kept.
fn default_name(dataset: &str) -> String {
    let base: String = format!("switchyard_{}", dataset.replace('.', "_"))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if base.len() <= 63 {
        return base;
    }
    let hash = base.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("{}_{:08x}", &base[..54], hash as u32)
}

#[async_trait]
impl ChangeFeed for PgFeed {
    async fn snapshot(&self, dataset: &Dataset) -> Result<Snapshot> {
        let names = self.names(dataset)?;
        let (key, relid) = self.check_origin(&names).await?;
        self.ensure_publication(&names).await?;
        self.drop_slot(&names.slot).await?;
        let mut session = self.session(&names, Lsn::ZERO, None).await?;
        let created = session
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                crate::sql::quote_ident(&names.slot)
            ))
            .await
            .map_err(|e| stream::replication_error(&self.origin(), e))?;
        let text = |i: usize| -> Result<String> {
            created
                .first()
                .and_then(|r| r.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| ConnectorError::Origin {
                    origin: self.origin(),
                    code: SqlState::PROTOCOL_VIOLATION,
                    message: "CREATE_REPLICATION_SLOT answered without a snapshot".into(),
                })
        };
        let position = text(1)?;
        let exported = text(2)?;
        let wanted = DatasetSql::of(&dataset.qualified_name(), &dataset.source)?;
        let (schema, rows) = self
            .pool
            .snapshot_query(&exported, &wanted.describe_sql())
            .await?;
        let lsn = parse_lsn(&self.origin(), &position)?;
        tracing::info!(dataset = %dataset.qualified_name(), slot = %names.slot, %position, "replication slot created");
        let stream = PgStream::new(
            session,
            Arc::clone(&self.pool),
            dataset.qualified_name(),
            names.table.clone(),
            relid,
            schema,
            &key,
            &names.filters,
            lsn,
        )?;
        Ok(Snapshot {
            rows,
            position,
            key,
            stream: Box::new(stream),
        })
    }

    async fn resume(
        &self,
        dataset: &Dataset,
        schema: SchemaRef,
        key: &[String],
        position: &Position,
    ) -> Result<Box<dyn ChangeStream>> {
        let names = self.names(dataset)?;
        let name = dataset.qualified_name();
        let lsn = parse_lsn(&self.origin(), position)?;
        let resnapshot = |why: String| ConnectorError::Resnapshot {
            dataset: name.clone(),
            why,
        };
        let slot = self
            .pool
            .query(
                "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), active
                   FROM pg_replication_slots WHERE slot_name = $1",
                &names.slot,
            )
            .await?;
        let Some(slot) = slot.first() else {
            return Err(resnapshot(format!(
                "replication slot {} is gone (dropped at the origin)",
                names.slot
            )));
        };
        let confirmed: Option<String> = slot.get(0);
        let wal_status: String = slot.get(1);
        if wal_status == "lost" {
            return Err(resnapshot(format!(
                "replication slot {} was invalidated (the origin removed WAL it needed)",
                names.slot
            )));
        }
        if let Some(confirmed) = confirmed {
            let confirmed = parse_lsn(&self.origin(), &confirmed)?;
            if confirmed > lsn {
                return Err(resnapshot(format!(
                    "replication slot {} stands at {confirmed}, past the local copy's {lsn}",
                    names.slot
                )));
            }
        }
        let published = self
            .pool
            .query(
                "SELECT count(*) FROM pg_publication_tables
                  WHERE pubname = $1",
                &names.publication,
            )
            .await?;
        if published.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) == 0 {
            return Err(resnapshot(format!(
                "publication {} no longer publishes the table",
                names.publication
            )));
        }
        let relid = self.relid(&names).await?;
        let session = self.session(&names, lsn, Some(lsn)).await?;
        Ok(Box::new(PgStream::new(
            session,
            Arc::clone(&self.pool),
            name,
            names.table.clone(),
            relid,
            schema,
            key,
            &names.filters,
            lsn,
        )?))
    }

    async fn drop_feed(&self, dataset: &Dataset) -> Result<()> {
        let names = self.names(dataset)?;
        self.drop_slot(&names.slot).await?;
        self.pool
            .execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                crate::sql::quote_ident(&names.publication)
            ))
            .await
    }
}

fn parse_lsn(origin: &str, text: &str) -> Result<Lsn> {
    Lsn::parse(text).map_err(|e| ConnectorError::Origin {
        origin: origin.to_string(),
        code: SqlState::PROTOCOL_VIOLATION,
        message: format!("LSN {text:?}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_names_fit_postgres() {
        assert_eq!(
            super::default_name("sales.orders"),
            "switchyard_sales_orders"
        );
        let long = super::default_name(&format!("s.{}", "x".repeat(80)));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with("switchyard_s_xxx"));
    }
}
