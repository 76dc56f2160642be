//! The server side: [`Daemon`] accepts connections and runs calls on registered objects.
//!
//! A listener accepts connections; each gets a handler that performs the CONNECT handshake and
//! then reads requests: a call that finishes at its first poll is answered by the handler
//! itself, one that has to wait goes on in a task of its own, so pipelined calls run
//! concurrently and are answered by sequence number as they finish. A malformed message closes only its own
//! connection; a panicking method becomes an error reply to its caller only. Every call runs
//! inside a [`context::CallContext`] and, when something could see it, a `tracing` span.
//!
//! # Layout
//!
//! - `bind`: [`BindAddr`], what a daemon binds to, and the host its URIs keep;
//! - `builder`: [`DaemonBuilder`], the settings and their defaults;
//! - `listener`: the accept loop, the connection limit and shutdown;
//! - `connection`: one connection's request loop, back-pressure and writer;
//! - `handshake`: the CONNECT handshake, the validator and shared-secret authentication;
//! - `hooks`: the application's hooks, a client gone and a call failed;
//! - `call`: one INVOKE: routing, batches, deadlines, panics, the reply;
//! - [`context`]: what a running method knows about its call;
//! - `registration`: [`Registration`], instance modes and the object table;
//! - `streams`: open streamed results, lingering past their connection;
//! - `object`: the daemon's own object, `Pyro.Daemon`;
//! - `log`: rate-limited warnings and truncated peer text.

mod bind;
mod builder;
mod call;
mod connection;
pub mod context;
mod handshake;
mod hooks;
mod listener;
mod log;
mod object;
mod registration;
mod signal;
mod streams;

pub use crate::protocol::codec::HandshakeData;
pub use bind::BindAddr;
pub use builder::{
    DaemonBuilder, DEFAULT_FRAME_TIMEOUT, DEFAULT_GRACE_PERIOD, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HOST, DEFAULT_MAX_BATCH_CALLS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_ORPHANED_CALLS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_CONNECTION, DEFAULT_MIN_READ_RATE, DEFAULT_MIN_WRITE_RATE,
    DEFAULT_STREAM_LINGER, DEFAULT_WRITE_TIMEOUT,
};
pub use handshake::{
    answer_any, AnswerAny, Certificate, HandshakeInfo, ValidateHandshake, MAX_HANDSHAKE_SIZE,
};
pub use hooks::{ClientGone, FailedCall};
pub use registration::{InstanceMode, Registration};

use foldhash::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::protocol::frame::{self, Message, MessageType};
use crate::uri::{Location, Uri};
use listener::ListenerSlot;
use registration::Entry;

/// Serves registered objects. Cheap to clone; clones are the same daemon.
///
/// ```
/// # async fn demo() -> Result<(), rmi_core::Error> {
/// let daemon = rmi_core::Daemon::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
/// daemon.shutdown();
/// server.await.unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
    /// The listening socket until `serve` takes it or a shutdown closes it.
    listener: Arc<Mutex<ListenerSlot>>,
}

struct Inner {
    config: DaemonBuilder,
    /// Where the listener is bound.
    bound: Location,
    /// Where clients reach it without address translation: the bound location, with the host
    /// as `bind` was given it by name, if it was.
    internal: Location,
    /// The location put in URIs (the internal one unless advertised otherwise).
    advertised: Location,
    /// Registered objects by id, the daemon object included.
    objects: Objects,
    /// Raised to stop accepting and reading; running calls go on.
    shutdown: Arc<signal::Signal>,
    /// Raised when the grace period is over: running calls are dropped.
    abort: Arc<signal::Signal>,
    /// Connection handlers and call tasks, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Open streamed results of all connections.
    streams: Arc<streams::Streams>,
    /// The id the next connection gets.
    next_connection: AtomicU64,
    /// Ticks of the connections' bursts of requests (see connection.rs, `Burst`).
    burst_ticks: AtomicU64,
    /// One permit per open connection (`max_connections`).
    connections: Arc<Semaphore>,
    /// One permit per call running on after its connection ended (`max_orphaned_calls`).
    orphans: Arc<Semaphore>,
    /// One permit per connection over `max_connections` being answered (see
    /// `listener::MAX_REFUSING`); past them, such a connection is closed at once.
    refusing: Arc<Semaphore>,
    /// Connections refused over `max_connections` are logged at most this often.
    refusal_warnings: log::RateLimit,
    /// Failed accepts (out of file descriptors) are logged at most this often.
    accept_warnings: log::RateLimit,
    /// Failed oneway calls are logged at most this often (peers choose how many fail).
    oneway_warnings: log::RateLimit,
    /// Panicking calls are logged at most this often.
    panic_warnings: log::RateLimit,
    /// Clients that failed to prove the shared secret, per address.
    auth_failures: log::AuthFailures,
    /// What proxies in a method's arguments dial with: the shared secret and `callback_tls`
    /// (`None` when neither is set).
    callbacks: Option<crate::transport::received::DialSecurity>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("bound", &self.inner.bound)
            .field("advertised", &self.inner.advertised)
            .finish()
    }
}

impl Daemon {
    /// Binds a daemon with default settings on `addr` (use `"127.0.0.1:0"` for any free port).
    /// The URIs carry the host as `addr` names it (see [`DaemonBuilder::bind`]).
    pub async fn bind(addr: impl BindAddr) -> Result<Daemon, Error> {
        DaemonBuilder::default().bind(addr).await
    }

    /// Binds a daemon with default settings on 127.0.0.1 and a free port, like Pyro's `Daemon()`.
    pub async fn bind_default() -> Result<Daemon, Error> {
        DaemonBuilder::default().bind((DEFAULT_HOST, 0)).await
    }

    /// Settings for a daemon; see [`DaemonBuilder`].
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// The TCP address the daemon listens on (`None` for a Unix-socket daemon).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner.bound {
            Location::Tcp { host, port } => host.parse().ok().map(|ip| SocketAddr::new(ip, *port)),
            Location::Unix(_) => None,
        }
    }

    /// Where the daemon listens.
    pub fn location(&self) -> &Location {
        &self.inner.bound
    }

    /// The `PYRO:` URI of object `id` in this daemon, with the advertised address.
    pub fn uri_for(&self, id: &str) -> Uri {
        Uri::Pyro {
            object: id.to_owned(),
            location: self.inner.advertised.clone(),
        }
    }

    /// The `PYRO:` URI of object `id` at the address the daemon is bound by, whatever
    /// [`DaemonBuilder::advertise`] says (Pyro's `uriFor(obj, nat=False)`): for clients on
    /// this side of the address translation, such as those a LAN broadcast reaches.
    pub fn internal_uri_for(&self, id: &str) -> Uri {
        Uri::Pyro {
            object: id.to_owned(),
            location: self.inner.internal.clone(),
        }
    }

    /// Number of streamed results open in this daemon (lingering ones included).
    pub fn open_streams(&self) -> usize {
        self.inner.streams.len()
    }

    /// Ids of all registered objects, the daemon object included.
    pub fn registered(&self) -> Vec<String> {
        self.inner.registered()
    }

    /// Asks [`serve`](Self::serve) to stop: no new connections or requests; running calls get
    /// the grace period to finish. A daemon not yet serving closes its listening socket now
    /// (connections are refused, not left waiting in the backlog); serving it afterwards
    /// returns at once. The connections of a daemon that is not serving (given to it by
    /// [`serve_stream`](Self::serve_stream)) get the grace period from here, and then their
    /// calls are cut off, as `serve` would.
    pub fn shutdown(&self) {
        self.inner.shutdown.raise();
        let mut slot = self.listener.lock();
        if matches!(*slot, ListenerSlot::Bound(_)) {
            *slot = ListenerSlot::ShutDown;
            drop(slot);
            self.inner.end_in_background();
        }
    }
}

impl Inner {
    fn object(&self, id: &str) -> Option<Arc<Entry>> {
        self.objects.map.read().get(id).cloned()
    }

    /// [`object`](Self::object), through a connection's `hint` of its last lookup: while no
    /// object was registered or removed since, the same id needs no lock (two atomic
    /// operations fewer per call). The hint is updated.
    fn object_hinted(&self, id: &str, hint: &mut Option<ObjectHint>) -> Option<Arc<Entry>> {
        let generation = self.objects.generation.load(Ordering::Acquire);
        if let Some(hint) = hint.as_ref() {
            if hint.generation == generation && hint.id == id {
                if let Some(entry) = hint.entry.upgrade() {
                    return Some(entry);
                }
            }
        }
        let (entry, generation) = {
            let map = self.objects.map.read();
            let generation = self.objects.generation.load(Ordering::Acquire);
            (map.get(id).cloned(), generation)
        };
        let found = entry.as_ref()?;
        let hint = hint.get_or_insert_with(|| ObjectHint {
            id: String::new(),
            generation,
            entry: Weak::new(),
        });
        hint.id.clear();
        hint.id.push_str(id);
        hint.generation = generation;
        hint.entry = Arc::downgrade(found);
        entry
    }

    fn registered(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.objects.map.read().keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// The object table: registered objects by id, and a count of the changes made to it.
#[derive(Default)]
struct Objects {
    map: RwLock<HashMap<String, Arc<Entry>>>,
    /// Raised by every registration and removal, with `map` locked for writing.
    generation: AtomicU64,
}

impl Objects {
    /// Changes the table with `change` (the generation is raised either way: a raise for
    /// nothing costs each connection one locked lookup).
    fn change<R>(&self, change: impl FnOnce(&mut HashMap<String, Arc<Entry>>) -> R) -> R {
        let mut map = self.map.write();
        let result = change(&mut map);
        self.generation.fetch_add(1, Ordering::Release);
        result
    }
}

/// A connection's last object lookup (see [`Inner::object_hinted`]). Weak: it never keeps an
/// object alive after its removal.
pub(crate) struct ObjectHint {
    id: String,
    /// The table's generation when the lookup was made.
    generation: u64,
    entry: Weak<Entry>,
}

fn reply_to(
    req: &Message,
    msg_type: MessageType,
    flags: u16,
    payload: impl Into<bytes::Bytes>,
) -> Message {
    let mut msg = Message::new(msg_type, req.serializer, flags, req.seq, payload);
    msg.corr_id = if req.has_flag(frame::FLAGS_CORR_ID) {
        req.corr_id
    } else {
        *frame::new_correlation_id().as_bytes()
    };
    msg
}
