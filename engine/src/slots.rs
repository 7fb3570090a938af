//! Statements running per user, for `max_concurrent_statements`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::EngineError;

/// Running statements per user.
#[derive(Debug, Default)]
pub struct Slots {
    running: Mutex<HashMap<String, u32>>,
}

/// One running statement's slot; freed on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    user: String,
}

impl Slots {
    /// Takes a slot for `user`, or fails (53400) when they run `limit` already.
    pub fn acquire(
        self: &Arc<Self>,
        user: &str,
        limit: Option<u32>,
    ) -> Result<Option<Slot>, EngineError> {
        let Some(limit) = limit else {
            return Ok(None);
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(user.to_string()).or_default();
        if *n >= limit {
            return Err(EngineError::TooManyStatements {
                user: user.to_string(),
                limit,
            });
        }
        *n += 1;
        Ok(Some(Slot {
            slots: Arc::clone(self),
            user: user.to_string(),
        }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_freed_when_dropped() {
        let slots = Arc::new(Slots::default());
        let first = slots.acquire("a", Some(1)).expect("free");
        assert!(first.is_some());
        let e = slots.acquire("a", Some(1)).expect_err("taken");
        assert_eq!(e.sqlstate().code(), "53400");
        assert!(slots.acquire("b", Some(1)).is_ok(), "per user");
        drop(first);
        assert!(slots.acquire("a", Some(1)).is_ok());
        assert!(slots.acquire("a", None).expect("no limit").is_none());
    }
}
