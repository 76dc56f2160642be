//! The storage behind the name server: names to URIs and metadata tags.
//!
//! One backend today, [`memory`]. Persistent and replicated backends (SQLite, etcd) go beside
//! it as modules of their own, behind one registry trait, so the name server object does not
//! change when the storage does.

pub mod memory;

pub use memory::{Entry, Registry};

/// Name under which the name server registers itself; it cannot be removed.
pub const NAME_SERVER_NAME: &str = "Pyro.NameServer";
