//! The accept loop: connections in, the connection limit, TLS, and shutdown with a grace period.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::TcpListener;

use super::connection::handle_connection;
use super::{reply_to, Daemon};
use crate::error::Error;
use crate::protocol::codec::DecodeLimits;
use crate::protocol::frame::MessageType;
use crate::transport::{self, BoxIo};

/// A bound listening socket.
pub(super) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, UnixPath),
}

/// Where a Unix listener's socket file is, and which file it is (device and inode): the file
/// removed when the listener goes is that one only, not one another daemon bound at the path
/// since.
#[cfg(unix)]
pub(super) struct UnixPath {
    pub(super) path: std::path::PathBuf,
    pub(super) file: Option<(u64, u64)>,
}

#[cfg(unix)]
impl UnixPath {
    /// The socket file just bound at `path`.
    pub(super) fn bound(path: &std::path::Path) -> Self {
        UnixPath {
            path: path.to_owned(),
            file: file_identity(path),
        }
    }
}

/// The device and inode of the file at `path` (not following a symbolic link).
#[cfg(unix)]
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The directory of the socket path `path`, opened and locked (`flock`) while a daemon takes
/// the path over, or `None` (an abstract socket, a directory that cannot be opened, a lock
/// still held after 500 ms: another process's, say a launcher's `flock DIR`, which another
/// daemon's takeover, a matter of milliseconds, never holds that long). Two daemons that found the same stale file could otherwise both
/// remove it and bind, the first left serving on an unlinked socket nobody can reach, its URIs
/// reaching the other (helper-167 #3); under the lock, the second finds the first listening.
/// Only rmi daemons take it; closing the file lets go of it.
#[cfg(unix)]
pub(super) async fn lock_socket_dir(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().first() == Some(&0) {
        return None;
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let dir = std::fs::File::open(dir).ok()?;
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        match dir.try_lock() {
            Ok(()) => return Some(dir),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "binding a Unix socket without its directory's lock");
                return None;
            }
        }
    }
}

/// Removes the socket file at `path` when nobody listens on it any more (a daemon that was
/// killed leaves it behind, and binding would fail): a socket that refuses a connection. A
/// file that is no socket, or one a process still accepts on, is left for the bind to report.
#[cfg(unix)]
pub(super) async fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    // (Not waited on for long: a served socket with its backlog full does not answer at once,
    // and is left alone.)
    let probe = tokio::net::UnixStream::connect(path);
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            tracing::info!(path = %path.display(), "removing a stale socket file nobody listens on");
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// The same socket, registered with the runtime `serve` runs on. Bound on another (a
    /// throwaway one, a test fixture's), it would be polled by that one's I/O driver: shut
    /// down, every accept fails ("a Tokio 1.x context was found, but it is being shutdown"),
    /// and the loop took that for a lack of descriptors, for ever; alive but not running, it
    /// accepted nobody, without a word (helper-165 #2). Left as it is if that fails.
    fn on_this_runtime(mut self) -> Listener {
        let moved = match &mut self {
            Listener::Tcp(l) => socket2::SockRef::from(&*l).try_clone().and_then(|dup| {
                let std = std::net::TcpListener::from(dup);
                std.set_nonblocking(true)?;
                TcpListener::from_std(std).map(Listener::Tcp)
            }),
            #[cfg(unix)]
            Listener::Unix(l, at) => socket2::SockRef::from(&*l).try_clone().and_then(|dup| {
                let std = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(dup));
                std.set_nonblocking(true)?;
                let l = tokio::net::UnixListener::from_std(std)?;
                // The socket file is the new listener's to remove.
                let at = UnixPath {
                    path: at.path.clone(),
                    file: at.file.take(),
                };
                Ok(Listener::Unix(l, at))
            }),
        };
        match moved {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "could not move the listening socket to the runtime serving it; kept where it was bound");
                self
            }
        }
    }

    async fn accept(&self) -> std::io::Result<(BoxIo, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                crate::transport::tune(&stream);
                // Sized for any address at once (`to_string` grows the string as it writes).
                let mut text = String::with_capacity(48);
                let _ = write!(text, "{peer}");
                Ok((Box::new(stream), text))
            }
            #[cfg(unix)]
            Listener::Unix(l, at) => {
                let (stream, _) = l.accept().await?;
                // A Unix client has no address of its own: its credentials, as the kernel
                // gives them, tell one from another (and let a validator admit by uid).
                let mut text = format!("unix:{}", at.path.display());
                if let Ok(cred) = stream.peer_cred() {
                    let _ = write!(text, " uid={}", cred.uid());
                    if let Some(pid) = cred.pid() {
                        let _ = write!(text, " pid={pid}");
                    }
                }
                Ok((Box::new(stream), text))
            }
        }
    }
}

/// Where a daemon's listening socket is in its life.
pub(super) enum ListenerSlot {
    /// Bound, not yet served.
    Bound(Listener),
    /// Shut down before it was served: the socket is closed.
    ShutDown,
    /// Taken by `serve`.
    Served,
}

impl Drop for Listener {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Listener::Unix(_, at) = self {
            if at.file.is_some() && file_identity(&at.path) == at.file {
                let _ = std::fs::remove_file(&at.path);
            }
        }
    }
}

impl Daemon {
    /// Accepts connections and serves calls until [`shutdown`](Self::shutdown), then waits up
    /// to the grace period for running calls and returns.
    ///
    /// Dropped before it returns (a `select!` that took another branch, a `timeout`), it stops
    /// the daemon as [`shutdown`](Self::shutdown) does, running calls given the grace period:
    /// the connections it accepted do not go on being served by nobody's daemon.
    pub async fn serve(&self) -> Result<(), Error> {
        let slot = std::mem::replace(&mut *self.listener.lock(), ListenerSlot::Served);
        let inner = &self.inner;
        if let ListenerSlot::Served = slot {
            // (Another `serve` has the daemon: this one ends nothing, returning or dropped.)
            return Err(Error::Closed(
                "this daemon is already serving or has served".into(),
            ));
        }
        // (helper-156 #2: dropped, it left its connections served for ever, and, dropped in
        // the grace period, calls that never end never cut off.)
        let mut ending = EndIfDropped(Some(inner.clone()));
        // Shut down before serving: nothing was accepted; the ending below still closes
        // whatever `serve_stream` started.
        if let ListenerSlot::Bound(listener) = slot {
            // Timers first: on a runtime without them, the panic is the caller's, with tokio's
            // own words, not every connection's task's (helper-165 #6).
            drop(tokio::time::sleep(Duration::ZERO));
            self.accept_until_shutdown(listener.on_this_runtime()).await;
        }
        inner.tasks.close();
        // Open streams end first: a read waiting for an item answers "item stream terminated"
        // now, instead of holding the shutdown for the grace period and losing its reply.
        inner.streams.clear();
        if tokio::time::timeout(inner.config.grace_period, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; dropping calls still running");
            inner.abort.raise();
            inner.tasks.wait().await;
        }
        inner.streams.clear();
        ending.0 = None;
        tracing::info!(location = %inner.bound, "daemon stopped");
        Ok(())
    }

    /// The accept loop: a task per connection, until [`shutdown`](Self::shutdown). The
    /// socket is closed on return.
    async fn accept_until_shutdown(&self, listener: Listener) {
        let inner = &self.inner;
        tracing::info!(location = %inner.bound, "daemon serving");
        let mut shutdown = inner.shutdown.wait();
        let mut reserve = open_reserve();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match inner.connections.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let daemon = self.clone();
                            // Boxed: a connection's future is over 5 KB, which tokio would
                            // copy whole each time it moves it (into the task's cell, and
                            // again as the task ends); a box moves as a pointer. A tenth of
                            // the instructions of a connect and first call, under callgrind.
                            inner.tasks.spawn(Box::pin(async move {
                                let _permit = permit;
                                let abort = daemon.inner.abort.wait();
                                tokio::select! {
                                    biased;
                                    _ = accept_connection(daemon, stream, peer) => {}
                                    _ = abort => {}
                                }
                            }));
                        }
                        Err(_) => {
                            let max = inner.config.max_connections;
                            if inner.refusal_warnings.allow(|n| {
                                tracing::warn!(refused = n, max_connections = max, "more connections refused: too many connections")
                            }) {
                                tracing::warn!(%peer, max_connections = max, "connection refused: too many connections");
                            }
                            // Each refusal answered holds a descriptor for up to 3 s: a flood at
                            // the limit could hold all the process has. Past `MAX_REFUSING`
                            // answered at once, the connection is closed without a word.
                            match inner.refusing.clone().try_acquire_owned() {
                                Ok(permit) => {
                                    let limits = inner.config.limits;
                                    let key = inner.config.hmac_key.clone();
                                    // Cut short at shutdown: the refusal's own waits (up to
                                    // about 3 s) held `serve` past its grace period, a zero
                                    // one included (helper-155 #4).
                                    let stop = inner.shutdown.clone();
                                    let reason =
                                        format!("too many connections (max_connections = {max})");
                                    inner.tasks.spawn(async move {
                                        let refusing = refuse_connection(
                                            stream,
                                            reason,
                                            Duration::from_secs(1),
                                            limits,
                                            key,
                                        );
                                        tokio::select! {
                                            () = refusing => {}
                                            _ = stop.wait() => {}
                                        }
                                        drop(permit);
                                    });
                                }
                                Err(_) => drop(stream),
                            }
                        }
                    },
                    // A connection reset while it waited in the queue, say: that one only.
                    Err(e) if is_connection_error(&e) => {
                        tracing::debug!(error = %e, "a connection failed as it was accepted");
                    }
                    // Out of descriptors, with one in reserve: let go of it, so that the
                    // connection waiting can be accepted and told why it is refused, instead
                    // of waiting in the backlog until its client gives up (helper-155 #1).
                    Err(e) if out_of_descriptors(&e) && reserve.take().is_some() => {
                        if inner.accept_warnings.allow(|n| {
                            tracing::warn!(left_out = n, "more accept failures")
                        }) {
                            tracing::warn!(error = %e, "out of file descriptors: connections are refused until some close (the process's limit, `ulimit -n`, may be below max_connections, or the system's is reached)");
                        }
                        let waiting =
                            tokio::time::timeout(Duration::from_millis(100), listener.accept());
                        if let Ok(Ok((stream, _))) = waiting.await {
                            // Refused here, not in a task: accepting nothing meanwhile, the loop
                            // cannot take the descriptor as the refusal closes it, which the
                            // reserve is to have for the clients after this one. A short wait
                            // for the CONNECT (a proxy sends it as it connects): the clients
                            // behind wait for this one.
                            let reason = "the daemon is out of file descriptors (its process's \
                                          limit, `ulimit -n`, or the system's is below the \
                                          connections it serves); try again later"
                                .to_owned();
                            let refusing = refuse_connection(
                                stream,
                                reason,
                                Duration::from_millis(250),
                                inner.config.limits,
                                inner.config.hmac_key.clone(),
                            );
                            tokio::select! {
                                () = refusing => {}
                                _ = inner.shutdown.wait() => {}
                            }
                        }
                        reserve = open_reserve();
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning,
                        // and say so at most 10 times in 10 s (a flood of connections that
                        // used the process's descriptors up wrote 20 lines a second;
                        // helper-155 #1).
                        if inner.accept_warnings.allow(|n| {
                            tracing::warn!(left_out = n, "more accept failures")
                        }) {
                            tracing::warn!(error = %e, "accept failed (out of file descriptors? the process's limit may be below max_connections)");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        // (Descriptors were short when the reserve was last let go of.)
                        if reserve.is_none() {
                            reserve = open_reserve();
                        }
                    }
                },
            }
        }
    }

    /// Serves one already accepted stream (any transport) until it closes or the daemon shuts down.
    pub async fn serve_stream<S>(&self, stream: S, peer: impl Into<String>)
    where
        S: tokio::io::AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // Cut off once the grace period after a shutdown is over, as `serve`'s connections are.
        let abort = self.inner.abort.wait();
        tokio::select! {
            biased;
            () = accept_connection(self.clone(), Box::new(stream), peer.into()) => {}
            _ = abort => {}
        }
    }
}

/// Runs the TLS handshake when the daemon serves TLS, then the connection.
#[cfg(feature = "tls")]
async fn accept_connection(daemon: Daemon, stream: BoxIo, peer: String) {
    // The TLS handshake and the CONNECT one share the one `handshake_timeout`: a client that
    // proved nothing holds a connection slot that long at most, not twice.
    let deadline = handshake_deadline(&daemon);
    let Some(acceptor) = daemon.inner.config.tls.clone() else {
        return handle_connection(daemon, stream, peer, None, deadline).await;
    };
    // A shutdown does not wait for a TLS handshake (see `handle_connection`).
    let accepting = tokio::time::timeout_at(deadline, acceptor.accept(stream));
    let accepted = tokio::select! {
        biased;
        accepted = accepting => accepted,
        () = daemon.inner.shutdown.wait() => {
            return tracing::debug!(%peer, "shut down during the TLS handshake");
        }
    };
    match accepted {
        Ok(Ok(tls)) => {
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            handle_connection(daemon, Box::new(tls), peer, certificate, deadline).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake within the handshake timeout"),
    }
}

/// Serves the connection (built without the `tls` feature: never TLS).
#[cfg(not(feature = "tls"))]
async fn accept_connection(daemon: Daemon, stream: BoxIo, peer: String) {
    let deadline = handshake_deadline(&daemon);
    handle_connection(daemon, stream, peer, None, deadline).await
}

/// When a connection accepted now must have done its handshake.
fn handshake_deadline(daemon: &Daemon) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    // (A timeout too long to add is none: about thirty years, as tokio's own.)
    now.checked_add(daemon.inner.config.handshake_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Connections over `max_connections` answered at once (each answer takes up to 3 s: reading
/// the CONNECT, writing the refusal, closing).
pub(super) const MAX_REFUSING: usize = 64;

/// Ends a daemon whose `serve` was dropped before it returned (see [`Daemon::serve`]).
struct EndIfDropped(Option<Arc<super::Inner>>);

impl Drop for EndIfDropped {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.shutdown.raise();
            inner.end_in_background();
        }
    }
}

impl super::Inner {
    /// What `serve` does once shut down, for a daemon it does not end: no new tasks, open
    /// streams ended, and the running calls cut off once the grace period is over (in a task,
    /// or at once without a runtime). A daemon shut down before it was served, whose
    /// connections came through [`Daemon::serve_stream`], ended no call and no stream read
    /// that waits for ever (helper-156 #1).
    pub(super) fn end_in_background(self: &Arc<Self>) {
        self.tasks.close();
        self.streams.clear();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.abort.raise();
            return;
        };
        // (Not the daemon itself: its objects go when its last handle does, not a grace
        // period later.)
        let (abort, streams, grace) = (
            self.abort.clone(),
            self.streams.clone(),
            self.config.grace_period,
        );
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            abort.raise();
            streams.clear();
        });
    }
}

/// Whether an `accept` error concerns the one connection it would have returned (reset or
/// aborted while it waited in the queue, as BSDs say; a network error Linux reports for the
/// new socket), not the listener: the loop takes the next at once (helper-155 #6).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(e.raw_os_error(), Some(code) if is_network_errno(code))
}

/// The errors Linux's `accept` may pass on from the new socket (its man page asks callers to
/// treat them as `EAGAIN`).
fn is_network_errno(code: i32) -> bool {
    // ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH
    // (Linux's numbers: the daemon runs where tokio's Unix sockets do).
    cfg!(target_os = "linux") && matches!(code, 100 | 71 | 92 | 112 | 64 | 113 | 95 | 101)
}

/// A descriptor for the accept loop to hold in reserve (`/dev/null` opened), let go of when
/// `accept` fails for want of descriptors: the connection waiting then can be accepted and
/// refused by name, one at a time, and the reserve is taken again once its descriptor is
/// closed. (None where there is no `/dev/null`: there, such connections wait, as before. Where
/// `accept` drops the connection it has no descriptor for, as macOS's does, that client is
/// reset, and the reserve goes to the next one that arrives.)
fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Whether an `accept` error says the process (`EMFILE`) or the system (`ENFILE`) is out of
/// file descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    cfg!(unix) && matches!(e.raw_os_error(), Some(24 | 23))
}

/// Answers a connection the daemon will not serve (over `max_connections`, or out of
/// descriptors): a CONNECTFAIL giving `reason`, then close.
/// Signed with Pyro4's HMAC key when the CONNECT proved it: Pyro4's client refuses an unsigned
/// answer as "hmac key config not symmetric" before reading it, and would send its user
/// chasing a key problem.
async fn refuse_connection(
    stream: BoxIo,
    reason: String,
    connect_wait: Duration,
    limits: DecodeLimits,
    hmac_key: Option<crate::auth::HmacKey>,
) {
    // Held to the handshake's bound: these connections are over the limit.
    let max_size = limits.max_message_size.min(super::MAX_HANDSHAKE_SIZE);
    let (mut reader, mut writer) = transport::split_io(stream, max_size);
    reader.accept_either_protocol();
    // Read the CONNECT (briefly) to answer in the client's protocol and serializer.
    if let Ok(Ok(Some(req))) = tokio::time::timeout(connect_wait, reader.read_frame()).await {
        let protocol = reader.protocol().unwrap_or_default();
        writer.set_protocol(protocol);
        if let Some(ser) = protocol.serializer(req.serializer) {
            let payload = ser.encode_in(protocol, &reason).unwrap_or_default();
            let mut refusal = reply_to(&req, MessageType::ConnectFail, 0, payload);
            if let Some(key) = &hmac_key {
                if crate::auth::pyro4_check(Some(key), protocol, &req).is_ok() {
                    crate::auth::hmac_session(key, protocol)
                        .0
                        .sign(&mut refusal);
                }
            }
            let _ =
                tokio::time::timeout(Duration::from_secs(1), writer.write_frame(&refusal)).await;
        }
    }
    writer.shutdown().await;
}
