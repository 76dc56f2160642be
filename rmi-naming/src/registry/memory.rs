//! The in-memory store, the default: names go when the process does. Leases are emulated with a
//! timer, as in the SQLite store.

use std::sync::Arc;

use super::engine::{store_via_engine, Engine, State};
use super::Limits;

/// Names, entries and leases in memory, within [`Limits`].
#[derive(Debug)]
pub struct MemoryStore {
    engine: Arc<Engine>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Limits::default())
    }
}

impl MemoryStore {
    /// An empty store enforcing `limits`' totals (entries, leases, reply size).
    pub fn new(limits: Limits) -> Self {
        MemoryStore {
            engine: Engine::new(State::default(), limits, None),
        }
    }
}

store_via_engine!(MemoryStore);
