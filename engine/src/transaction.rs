//! A session's transaction block as the engine knows it: its savepoints.
//!
//! Statements through Switchyard change no data yet, so a savepoint has nothing to
//! undo: names are tracked so that an unknown one is 3B001 as in PostgreSQL and
//! using them outside a block is 25P01. Writes (a later feature) extend this state
//! with what each savepoint must undo at the origin.

use std::sync::Mutex;

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
#[derive(Debug, Default)]
pub struct Transaction {
    savepoints: Mutex<Vec<String>>,
}

impl Transaction {
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
