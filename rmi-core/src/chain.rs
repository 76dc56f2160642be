//! What a call made inside a remote method inherits from the call it serves: its correlation
//! id and the time its caller has left. The daemon, which knows the call being served,
//! installs the hook; proxies ask it (proxies import nothing of the daemon: see
//! ARCHITECTURE.md).

use std::sync::OnceLock;
use std::time::Duration;

/// A served call's correlation id, and the time its caller has left (if it sent a deadline).
pub(crate) type Inherited = (uuid::Uuid, Option<Duration>);

static HOOK: OnceLock<fn() -> Option<Inherited>> = OnceLock::new();

/// Installs the daemon's answer to [`inherited`] (once per process; every daemon's is the
/// same function).
pub(crate) fn install(hook: fn() -> Option<Inherited>) {
    let _ = HOOK.set(hook);
}

/// What a call made now inherits: `None` outside a remote method, or in a process that has
/// no daemon.
pub(crate) fn inherited() -> Option<Inherited> {
    HOOK.get().and_then(|hook| hook())
}

/// Whether the call served here has no time left (its caller's deadline passed): a proxy's
/// work for it that times out then failed for that caller alone.
pub(crate) fn out_of_time() -> bool {
    matches!(inherited(), Some((_, Some(left))) if left.is_zero())
}
