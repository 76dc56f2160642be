//! The application's hooks into a daemon: a client gone (Pyro's `Daemon.clientDisconnect`) and
//! a call failed (Pyro5's `Daemon.methodcall_error_handler`).
//!
//! Hooks are plain closures, run on the daemon's own tasks: the error hook in the connection's
//! request loop, the disconnect hook in a destructor (possibly while the runtime shuts down).
//! They should return quickly and not block: no [`crate::blocking`] proxy, no `block_on` of a
//! call to the same daemon. Slow work goes to a task (`tokio::spawn`, while the runtime runs).
//! A hook that panics is logged (rate-limited) and the daemon goes on serving; a build with
//! `panic = "abort"` aborts, as with any panic.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::connection::Conn;
use super::handshake::Certificate;
use super::Daemon;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::protocol::names::{daemon_method::GET_NEXT_STREAM_ITEM, DAEMON_OBJECT_ID};

/// A client connection that has ended, as [`DaemonBuilder::on_disconnect`] sees it.
///
/// [`DaemonBuilder::on_disconnect`]: super::DaemonBuilder::on_disconnect
#[derive(Debug)]
#[non_exhaustive]
pub struct ClientGone<'a> {
    /// The daemon (a hook that keeps a `Daemon` of its own would keep it alive for ever).
    pub daemon: &'a Daemon,
    /// The connection's number, as [`HandshakeInfo::connection`](super::HandshakeInfo) and
    /// [`CallContext::connection`](super::context::CallContext::connection) gave it.
    pub connection: u64,
    /// The client's address.
    pub peer: &'a str,
    /// The object the connection was for: the one its CONNECT named or, for a connection that
    /// named none (a Pyro4 client without METADATA), the one its first call bound it to (empty
    /// if no call bound it).
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
    /// The daemon (a hook that keeps a `Daemon` of its own would keep it alive for ever).
    pub daemon: &'a Daemon,
    /// The number of the connection the call came on.
    pub connection: u64,
    /// The caller's address.
    pub peer: &'a str,
    /// The object the call addressed; `None` when the request did not get that far (it did
    /// not decode, or was refused unread for its size).
    pub object: Option<&'a str>,
    /// The method the call addressed (for a call in a batch, that call's); `None` as for
    /// `object`, and for some results too large to send.
    pub method: Option<&'a str>,
    /// The call's correlation id (nil for a request refused unread that carried none).
    pub correlation_id: uuid::Uuid,
    /// Whether the call was oneway: its caller never learns of the error.
    pub oneway: bool,
    /// The error, as the caller receives it (or would have, for a oneway call).
    pub error: &'a RemoteError,
}

/// The hook [`DaemonBuilder::on_disconnect`](super::DaemonBuilder::on_disconnect) sets.
pub(super) type DisconnectHook = Arc<dyn Fn(&ClientGone<'_>) + Send + Sync>;
/// The hook [`DaemonBuilder::on_call_error`](super::DaemonBuilder::on_call_error) sets.
pub(super) type CallErrorHook = Arc<dyn Fn(&FailedCall<'_>) + Send + Sync>;

/// A failed call on `conn`, for the daemon's call-error hook.
pub(super) struct Failure<'a> {
    pub(super) object: Option<&'a str>,
    pub(super) method: Option<&'a str>,
    pub(super) correlation_id: uuid::Uuid,
    pub(super) oneway: bool,
}

/// Tells the daemon's call-error hook, if it has one, that a call on `conn` failed with
/// `error`. Not a failure: the end of a stream its reader asked for, and a batch stopped
/// because its caller went away.
pub(super) fn call_failed(conn: &Conn, call: Failure<'_>, error: &RemoteError) {
    let Some(hook) = &conn.daemon.inner.config.on_call_error else {
        return;
    };
    let stream_end = error.kind == RemoteErrorKind::StopIteration
        && call.object == Some(DAEMON_OBJECT_ID)
        && call.method == Some(GET_NEXT_STREAM_ITEM);
    if stream_end || error.type_name == CALLER_GONE {
        return;
    }
    let failed = FailedCall {
        daemon: &conn.daemon,
        connection: conn.id,
        peer: &conn.peer,
        object: call.object.filter(|o| !o.is_empty()),
        method: call.method.filter(|m| !m.is_empty()),
        correlation_id: call.correlation_id,
        oneway: call.oneway,
        error,
    };
    run(&conn.daemon, "on_call_error", &**hook, |hook| hook(&failed));
}

/// The type of the error of a call whose caller went away before it ended.
pub(super) const CALLER_GONE: &str = "rmi.ConnectionClosed";

/// Runs a hook; a panic in it is logged (rate-limited: a peer can make calls fail at will),
/// not passed on (the disconnect hook runs in a destructor).
pub(super) fn run<T: ?Sized>(daemon: &Daemon, name: &str, hook: &T, call: impl FnOnce(&T)) {
    let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| call(hook))) else {
        return;
    };
    let warnings = &daemon.inner.panic_warnings;
    if warnings.allow(|n| tracing::error!(left_out = n, "more calls panicked")) {
        let text = super::call::panic_text(&*panic);
        tracing::error!(hook = name, panic = %super::log::PeerText(&text), "a daemon hook panicked");
    }
}
