//! The application's hooks into a daemon: a client gone (Pyro's `Daemon.clientDisconnect`) and
//! a call failed (Pyro5's `Daemon.methodcall_error_handler`).
//!
//! Hooks are plain closures, run on the daemon's own tasks: they should return quickly (spawn
//! any slow work). A hook that panics is logged and the daemon goes on serving.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::handshake::Certificate;
use crate::error::RemoteError;

/// A client connection that has ended, as [`DaemonBuilder::on_disconnect`] sees it.
///
/// [`DaemonBuilder::on_disconnect`]: super::DaemonBuilder::on_disconnect
#[derive(Debug)]
#[non_exhaustive]
pub struct ClientGone<'a> {
    /// The connection's number, as [`HandshakeInfo::connection`](super::HandshakeInfo) and
    /// [`CallContext::connection`](super::context::CallContext::connection) gave it.
    pub connection: u64,
    /// The client's address.
    pub peer: &'a str,
    /// The object the connection was for: the one its CONNECT named or, for a connection that
    /// named none (a Pyro4 client without METADATA), the one its first call bound it to
    /// (empty if it made none).
    pub object: &'a str,
    /// The client's TLS certificate, if it sent one.
    pub peer_certificate: Option<&'a Certificate>,
}

/// A call that ended in an error, as [`DaemonBuilder::on_call_error`] sees it.
///
/// [`DaemonBuilder::on_call_error`]: super::DaemonBuilder::on_call_error
#[derive(Debug)]
#[non_exhaustive]
pub struct FailedCall<'a> {
    /// The number of the connection the call came on.
    pub connection: u64,
    /// The caller's address.
    pub peer: &'a str,
    /// Whether the call was oneway: its caller never learns of the error.
    pub oneway: bool,
    /// The error, as the caller receives it (its [`object`](RemoteError::object) and
    /// [`method`](RemoteError::method) say which call it was, when the request got that far).
    pub error: &'a RemoteError,
}

/// The hook [`DaemonBuilder::on_disconnect`](super::DaemonBuilder::on_disconnect) sets.
pub(super) type DisconnectHook = Arc<dyn Fn(&ClientGone<'_>) + Send + Sync>;
/// The hook [`DaemonBuilder::on_call_error`](super::DaemonBuilder::on_call_error) sets.
pub(super) type CallErrorHook = Arc<dyn Fn(&FailedCall<'_>) + Send + Sync>;

/// Runs a hook; a panic in it is logged, not passed on (it may run in a destructor, where a
/// second panic would abort the process).
pub(super) fn run<T: ?Sized>(name: &str, hook: &T, call: impl FnOnce(&T)) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| call(hook))).is_err() {
        tracing::warn!(hook = name, "a daemon hook panicked");
    }
}
