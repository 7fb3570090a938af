//! A session's transaction block as the engine knows it: its savepoints and the
//! transaction its writes opened at an origin.
//!
//! Savepoint names are tracked so that an unknown one is 3B001 as in PostgreSQL and
//! using them outside a block is 25P01. The block's first write opens a transaction
//! at the written origin (setting the block's savepoints there too, so a later
//! `ROLLBACK TO` undoes what it should); savepoint commands, COMMIT and ROLLBACK are
//! then forwarded to it. A block writes one origin: without two-phase commit a
//! second origin's writes could commit while the first's fail, so they are refused
//! (0A000) before anything is sent there. A session that ends with the block open
//! drops the origin transaction, which closes its connection: the origin rolls back.

use std::sync::Mutex;

use switchyard_connectors::write::{Savepoint, SharedWrites, WriteTransaction};
use switchyard_sqlstate::SqlState;

use crate::EngineError;

/// Where the session's block is (the front door knows it from its protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// No block open.
    Idle,
    /// In an open block.
    Open,
    /// In a block that failed: statements are refused until it ends or rolls back.
    Failed,
}

/// A savepoint statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavepointOp {
    /// `SAVEPOINT name`.
    Set,
    /// `RELEASE SAVEPOINT name`.
    Release,
    /// `ROLLBACK TO SAVEPOINT name`.
    RollbackTo,
}

impl SavepointOp {
    fn at_origin(self) -> Savepoint {
        match self {
            SavepointOp::Set => Savepoint::Set,
            SavepointOp::Release => Savepoint::Release,
            SavepointOp::RollbackTo => Savepoint::RollbackTo,
        }
    }

    /// The command tag PostgreSQL answers with.
    pub fn tag(self) -> &'static str {
        match self {
            SavepointOp::Set => "SAVEPOINT",
            SavepointOp::Release => "RELEASE",
            SavepointOp::RollbackTo => "ROLLBACK",
        }
    }
}

/// The session's transaction state.
#[derive(Default)]
pub struct Transaction {
    /// A block is open: set at BEGIN, cleared at its end. The front door's own
    /// status lags behind statements of one multi-statement query.
    open: std::sync::atomic::AtomicBool,
    savepoints: Mutex<Vec<String>>,
    origin: tokio::sync::Mutex<Option<Box<dyn WriteTransaction>>>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("savepoints", &*self.names())
            .finish_non_exhaustive()
    }
}

/// The block's transaction at its origin, held while a write runs in it.
pub struct OriginTransaction<'a>(tokio::sync::MutexGuard<'a, Option<Box<dyn WriteTransaction>>>);

impl OriginTransaction<'_> {
    /// The transaction.
    pub fn get(&mut self) -> &mut dyn WriteTransaction {
        self.0
            .as_mut()
            .expect("an origin transaction is open")
            .as_mut()
    }
}

impl Transaction {
    /// The block's transaction at `origin`, opened through `writes` (with the
    /// block's savepoints) when the block has written nowhere yet; 0A000 when it
    /// has written another origin.
    pub async fn at(
        &self,
        origin: &str,
        writes: &SharedWrites,
    ) -> Result<OriginTransaction<'_>, EngineError> {
        let mut open = self.origin.lock().await;
        match open.as_ref() {
            Some(t) if t.origin() != origin => {
                return Err(EngineError::coded(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "this transaction already writes origin {}; a transaction writes one \
                         origin, since Switchyard has no two-phase commit across origins: \
                         COMMIT first, then write {origin}",
                        t.origin()
                    ),
                ))
            }
            Some(_) => {}
            None => {
                let mut t = writes.begin().await?;
                let names = self.names().clone();
                for name in names {
                    t.savepoint(Savepoint::Set, &name).await?;
                }
                *open = Some(t);
            }
        }
        Ok(OriginTransaction(open))
    }

    /// BEGIN: a block is open.
    pub fn begin(&self) {
        self.reset();
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a block is open.
    pub fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `f` on the block's origin transaction, if the block has written.
    pub async fn with_open<R>(&self, f: impl FnOnce(&dyn WriteTransaction) -> R) -> Option<R> {
        let open = self.origin.lock().await;
        open.as_deref().map(f)
    }

    /// The origin the block writes, if it has written.
    pub async fn writing(&self) -> Option<String> {
        self.origin
            .lock()
            .await
            .as_ref()
            .map(|t| t.origin().to_string())
    }

    /// Ends the block: commits (or rolls back) its origin transaction, if any.
    pub async fn end(&self, commit: bool) -> Result<(), EngineError> {
        self.reset();
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        let Some(t) = self.origin.lock().await.take() else {
            return Ok(());
        };
        if commit {
            t.commit().await?;
        } else {
            t.rollback().await?;
        }
        Ok(())
    }

    /// Forwards an accepted savepoint command to the origin transaction, if any.
    pub async fn forward(&self, op: SavepointOp, name: &str) -> Result<(), EngineError> {
        if let Some(t) = self.origin.lock().await.as_mut() {
            t.savepoint(op.at_origin(), name).await?;
        }
        Ok(())
    }

    /// Whether `ROLLBACK TO name` in a failed block makes it usable again (the
    /// savepoint was set before the failure).
    pub fn recovers(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }

    /// The block ended or a new one began: no savepoint survives.
    pub fn reset(&self) {
        self.names().clear();
    }

    /// The error for any statement but ending the block in a failed block.
    pub fn aborted() -> EngineError {
        EngineError::coded(
            SqlState::IN_FAILED_SQL_TRANSACTION,
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    /// Applies a savepoint statement; `None` when it is not this state's to answer
    /// (a savepoint statement other than ROLLBACK TO in a failed block).
    pub fn savepoint(
        &self,
        op: SavepointOp,
        name: &str,
        block: Block,
    ) -> Option<Result<(), EngineError>> {
        let tag = op.tag();
        let unknown = || {
            EngineError::coded(
                SqlState::INVALID_SAVEPOINT,
                format!("savepoint \"{name}\" does not exist"),
            )
        };
        Some(match block {
            Block::Idle => Err(EngineError::coded(
                SqlState::NO_ACTIVE_SQL_TRANSACTION,
                format!("{tag} can only be used in transaction blocks"),
            )),
            // A known savepoint was let through by `recovers`; this one was never set.
            Block::Failed if op == SavepointOp::RollbackTo => Err(unknown()),
            Block::Failed => return None,
            Block::Open => {
                let mut names = self.names();
                match op {
                    SavepointOp::Set => {
                        names.push(name.to_string());
                        Ok(())
                    }
                    _ => match names.iter().rposition(|n| n == name) {
                        None => Err(unknown()),
                        Some(at) => {
                            // RELEASE drops it and the later ones; ROLLBACK TO keeps it.
                            names.truncate(if op == SavepointOp::Release {
                                at
                            } else {
                                at + 1
                            });
                            Ok(())
                        }
                    },
                }
            }
        })
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.savepoints.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoints_follow_postgres() {
        let t = Transaction::default();
        let code = |r: Option<Result<(), EngineError>>| {
            r.map(|r| r.err().map(|e| e.sqlstate().code().to_string()))
        };
        assert_eq!(
            code(t.savepoint(SavepointOp::Set, "a", Block::Idle)),
            Some(Some("25P01".into()))
        );
        assert_eq!(
            code(t.savepoint(SavepointOp::Set, "a", Block::Open)),
            Some(None)
        );
        assert_eq!(
            code(t.savepoint(SavepointOp::Set, "b", Block::Open)),
            Some(None)
        );
        assert!(t.recovers("b"));
        assert_eq!(
            code(t.savepoint(SavepointOp::Release, "a", Block::Open)),
            Some(None)
        );
        assert!(!t.recovers("b"), "RELEASE drops later savepoints");
        assert_eq!(
            code(t.savepoint(SavepointOp::RollbackTo, "a", Block::Open)),
            Some(Some("3B001".into()))
        );
        assert_eq!(
            code(t.savepoint(SavepointOp::Set, "c", Block::Failed)),
            None
        );
        t.reset();
        assert!(!t.recovers("a"));
    }
}
