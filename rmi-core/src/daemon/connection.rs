//! One connection: the handshake, then the request loop with back-pressure, and its writer.
//!
//! The connection speaks the protocol of its first header, Pyro5's or Pyro4's: the reader
//! holds every later message to it, the writer answers in it, and calls learn it.
//!
//! The loop holds an in-flight slot for each running call and each reply not yet written; with
//! none free it stops reading, so a peer that does not read its replies stops being served
//! instead of growing the daemon's memory.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;

use super::call::Call;
use super::handshake::{handshake, Certificate, Client};
use super::hooks::{self, ClientGone, DisconnectHook};
use super::registration::{Entry, Target};
use super::signal::Signal;
use super::{reply_to, streams, Daemon};
use crate::dispatch::Dispatch;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::protocol::codec::{self, HandshakeData};
use crate::protocol::frame::{self, Message, MessageType, Protocol};
use crate::protocol::names::NOT_RUN_ANNOTATION;
use crate::transport::outbox::Budget;
use crate::transport::{self, BoxIo, Outgoing, QueuedBytes, WriteDeadline};

/// A connection's instance of a per-connection object, with the number of the registration
/// that made it.
pub(super) type Session = (u64, Arc<dyn Dispatch>);

/// What one client connection owns: its session instances. Dropped, with them, when the
/// connection and its last running call are gone: the moment the daemon's disconnect hook
/// runs, if it has one.
pub(super) struct ConnectionState {
    pub(super) sessions: Mutex<HashMap<String, Session>>,
    /// The disconnect hook, with the connection it reports.
    gone: Option<(DisconnectHook, Arc<Conn>)>,
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        let Some((hook, conn)) = &self.gone else {
            return;
        };
        let late = conn.late.as_ref().and_then(|late| late.bound.get());
        let gone = ClientGone {
            daemon: &conn.daemon,
            connection: conn.id,
            peer: &conn.peer,
            object: late.unwrap_or(&conn.connected),
            peer_certificate: conn.peer_certificate.as_ref(),
        };
        hooks::run(&conn.daemon, "on_disconnect", &**hook, |hook| hook(&gone));
    }
}

/// What every call on one connection reads, behind one reference count instead of one per
/// field (a call that finishes at its first poll even hands its clone back for the next, and
/// a reused context keeps its own). Atomic increments and decrements are cheap in
/// instructions but not in time: seven fewer pairs per call (the `Daemon` is two `Arc`s) made
/// the daemon's thread about 7 % faster at 8 connections × 8 calls (BENCHMARKS.md, eleventh
/// round). Not the session instances: a context a method keeps must not keep those alive.
pub(super) struct Conn {
    pub(super) daemon: Daemon,
    pub(super) id: streams::ConnectionId,
    /// The peer's address, as logged and as `CallContext::peer` gives it.
    pub(super) peer: Arc<str>,
    /// The client's verified TLS certificate, if it sent one.
    pub(super) peer_certificate: Option<Certificate>,
    /// The object this connection's CONNECT named (empty: none; see `late`).
    pub(super) connected: Arc<str>,
    /// For a connection whose CONNECT named no object: the object its first call binds it to.
    pub(super) late: Option<Late>,
    /// Raised when the caller's connection is gone: a batch stops there.
    pub(super) peer_gone: Arc<Signal>,
}

/// A connection opened for no object (a Pyro4 client without METADATA, whose proxy makes a
/// connection per object): bound to the first object it calls, once the handshake validator,
/// if any, has accepted that object too. Without this, a validator that admits clients per
/// object would see an empty object and let the connection call every object.
pub(super) struct Late {
    /// The object the connection is bound to, once a call has bound it.
    pub(super) bound: OnceLock<Arc<str>>,
    /// The client's handshake data, shown to the validator with the object (when there is a
    /// validator).
    pub(super) handshake: Option<HandshakeData>,
}

/// The instance serving a call: the shared one, borrowed from its registration (no reference
/// count taken per call), or this connection's or a new one.
pub(super) enum Instance<'e> {
    Shared(&'e dyn Dispatch),
    Own(Arc<dyn Dispatch>),
}

impl std::ops::Deref for Instance<'_> {
    type Target = dyn Dispatch;

    fn deref(&self) -> &(dyn Dispatch + 'static) {
        match self {
            Instance::Shared(d) => *d,
            Instance::Own(d) => &**d,
        }
    }
}

impl ConnectionState {
    /// The state of `conn`, which reports its end to `hook`, if any.
    fn new(conn: &Arc<Conn>, hook: Option<&DisconnectHook>) -> Self {
        ConnectionState {
            sessions: Mutex::default(),
            gone: hook.map(|hook| (hook.clone(), conn.clone())),
        }
    }

    /// The instance that serves a call to `entry`: shared, this connection's, or a new one.
    pub(super) fn target<'e>(&self, id: &str, entry: &'e Entry) -> Instance<'e> {
        match &entry.target {
            Target::Shared(d) => Instance::Shared(&**d),
            Target::Session(make) => {
                let mut sessions = self.sessions.lock();
                let kept = sessions.get(id).filter(|(g, _)| *g == entry.generation);
                let mut replaced = None;
                let instance = match kept {
                    Some((_, instance)) => instance.clone(),
                    // None yet, or one of a registration since replaced under this id (its
                    // instance, of another factory, perhaps another type, goes).
                    None => {
                        let instance = make();
                        replaced =
                            sessions.insert(id.to_owned(), (entry.generation, instance.clone()));
                        instance
                    }
                };
                // Its `Drop` is user code: not under the lock, and a panic in it is not the
                // factory's, nor this call's.
                drop(sessions);
                if let Some(replaced) = replaced {
                    super::call::drop_quietly(replaced, "a replaced session instance");
                }
                Instance::Own(instance)
            }
            Target::PerCall(make) => Instance::Own(make()),
        }
    }
}

/// Arrival order on one connection, for calls to a `one_at_a_time` object: the request loop
/// hands each call a [`Turn`] as it reads it, and a call waits for its turn before it runs, so
/// calls that tasks pick up in any order still run in the order they arrived.
#[derive(Default)]
pub(super) struct Turns {
    state: Mutex<TurnState>,
}

#[derive(Default)]
struct TurnState {
    /// The number the next call gets.
    next: u64,
    /// The call whose turn it is.
    serving: u64,
    /// Calls that finished (or needed no turn) before their turn came, as runs of turns
    /// (first → one past the last). A flood of calls that need no turn, behind one long call,
    /// is one run; there are no more runs than calls still running (each holds an in-flight
    /// slot), so this stays small whatever a peer sends.
    done_early: std::collections::BTreeMap<u64, u64>,
    /// The wakers of calls waiting for their turn, by turn: only the call whose turn comes
    /// is woken (waking every waiter at each turn made 1,024 pipelined calls half a million
    /// wake-ups).
    waiting: std::collections::HashMap<u64, std::task::Waker>,
}

impl TurnState {
    /// Turn `n`, later than the one being served, is done: joined to the runs beside it.
    fn done_early(&mut self, n: u64) {
        let (mut start, mut end) = (n, n + 1);
        if let Some((&before, &before_end)) = self.done_early.range(..n).next_back() {
            if before_end == n {
                start = before;
            }
        }
        if let Some(after_end) = self.done_early.remove(&end) {
            end = after_end;
        }
        self.done_early.insert(start, end);
    }
}

impl Turns {
    /// The next turn, in arrival order.
    pub(super) fn take(self: &Arc<Self>) -> Turn {
        let mut state = self.state.lock();
        let n = state.next;
        state.next += 1;
        Turn {
            turns: self.clone(),
            n,
        }
    }
}

/// A call's place in its connection's arrival order; dropping it lets the next call go.
pub(super) struct Turn {
    turns: Arc<Turns>,
    n: u64,
}

impl Turn {
    /// Waits until every call that arrived earlier on the connection is done (or started
    /// without needing a turn).
    pub(super) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.turns.state.lock();
            if state.serving == self.n {
                return Poll::Ready(());
            }
            match state.waiting.entry(self.n) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    e.get_mut().clone_from(cx.waker())
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.turns.state.lock();
        state.waiting.remove(&self.n);
        if state.serving != self.n {
            state.done_early(self.n);
            return;
        }
        state.serving += 1;
        let next = state.serving;
        if let Some(end) = state.done_early.remove(&next) {
            state.serving = end;
        }
        let next = state.serving;
        let woken = state.waiting.remove(&next);
        drop(state);
        if let Some(waker) = woken {
            waker.wake();
        }
    }
}

/// The longest a reply waits for the rest of its batch's replies, so that they share a write.
///
/// The loop looks at the clock between calls, so a call whose first poll runs longer (a method
/// that computes or blocks without awaiting) holds the replies made before it until it
/// returns, on a multi-thread runtime too. Tried: handing them to the outbox before each such
/// poll, with a timer that wakes the writer task at the limit. tokio fired no timer while the
/// worker was blocked (it polls its timers from a worker with nothing to run, and the other
/// slept), and a writer task woken from the blocked worker waits in that worker's LIFO slot,
/// which no other worker takes from. Only waking another thread before each such poll would
/// do, at a thread wake-up per batch. The README tells users to move such work to
/// `spawn_blocking`, which ends the first poll at once.
const HOLD_LIMIT: Duration = Duration::from_micros(200);

/// How many replies the request loop writes at a time while its connection's burst of requests
/// is the daemon's only one (see [`Burst`]). A client with many calls in flight sends them in
/// bursts; writing the first replies while the rest of the burst runs lets it work on them
/// (read, wake its callers, send their next calls) at the same time as the daemon, instead of
/// the two taking turns. With 64 calls in flight and the two on cores of their own, 16 made a
/// run 2.2 times as fast as one write per burst; 8 and 32 were slower (more writes; longer
/// turns). While other connections bring bursts too, the daemon is what everyone waits for,
/// and a burst's replies share one write again (more writes would only cost it time).
const HOLD_MAX: usize = 16;

/// Replies the request loop holds so that they share a write with the replies after them.
#[derive(Default)]
struct Held {
    /// How many the loop holds (in its own list, handed to the outbox together).
    count: usize,
    /// When the oldest was held, if more requests were at hand then: the clock is read only
    /// when the reply may have to wait.
    since: Option<Instant>,
}

impl Held {
    /// One more reply held; `more_at_hand` says whether requests are already buffered.
    fn add(&mut self, more_at_hand: bool) {
        self.count += 1;
        if more_at_hand && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Whether what is held must go out now: nothing more is at hand to join it, `HOLD_MAX`
    /// are held and the connection's burst is the daemon's only one (`alone`), or the oldest
    /// has waited `HOLD_LIMIT`.
    fn due(&self, more_at_hand: bool, alone: bool) -> bool {
        self.count > 0
            && (!more_at_hand
                || (alone && self.count >= HOLD_MAX)
                || self
                    .since
                    .is_some_and(|since| since.elapsed() >= HOLD_LIMIT))
    }
}

/// On one thread (see [`one_thread`]), how many other connections' bursts may start between
/// two of a connection's, at most [`BURST_WINDOW`] apart, for its burst to count as alone.
/// Throughput with 64 calls in flight on each connection (`compare --profile rmi Nx64`,
/// thousands of calls/s, three runs each):
///
/// | other bursts allowed | 2 connections | 3 | 4 | 8 |
/// |---|---|---|---|---|
/// | 1 | 745–760 | 1,034–1,173 | 1,083–1,187 | 1,177–1,196 |
/// | **2** | 888–902 | 1,028–1,034 | 1,094–1,163 | 1,181–1,255 |
/// | 3 | 899–924 | 882–981 | 844–960 | 1,127–1,191 |
/// | any (judged at every tick, as on threads) | 886–935 | 883–917 | 919–944 | 853–890 |
const FEW_OTHERS: u64 = 2;

/// On one thread, a connection whose last burst started longer ago than this counts as alone
/// when its next one starts: the other bursts counted since are not ones that ran beside it.
const BURST_WINDOW: Duration = Duration::from_millis(5);

/// Whether the daemon's connections take turns on one thread: a current-thread runtime, or a
/// multi-thread one with a single worker (what `Burst` is told).
fn one_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
            || h.metrics().num_workers() == 1
    })
}

/// Whether a connection's burst of requests is the only one the daemon is working through.
///
/// Every connection ticks a daemon-wide counter when a burst starts (requests at hand after
/// none) and every `HOLD_MAX` requests into it; a burst is alone while no other connection
/// ticked between this one's last two ticks. One atomic add per `HOLD_MAX` requests. On a
/// multi-thread runtime, two bursting connections count as not alone even when each has a
/// worker of its own: their replies then go out a burst at a time, as before there was a
/// `HOLD_MAX`.
///
/// On one thread a tick in the middle of a burst tells next to nothing: other connections run
/// only when the burst's loop yields (after about 128 requests, tokio's cooperative budget),
/// so nearly every such tick found the burst alone (and each of 16 connections with 64 calls
/// in flight wrote its replies in four writes instead of one: a third of the daemon's CPU went
/// to system calls). There only bursts tick, as they start, and a burst counts as alone when
/// at most [`FEW_OTHERS`] other bursts started since this connection's last one, or that one
/// started more than [`BURST_WINDOW`] ago (a connection's first burst is alone). With a few
/// busy connections the client still has time to work on early replies; with more it has
/// other connections' replies to work on. (The rule assumes the busy connections' replies go
/// to clients with other work at hand; an independent client among many busy ones gets its
/// burst's replies in one write, as before there was a `HOLD_MAX`, within `HOLD_LIMIT`.)
struct Burst<'a> {
    /// The daemon's tick counter.
    ticks: &'a AtomicU64,
    /// Only the tick that starts a burst decides (one thread).
    at_start_only: bool,
    /// When this connection's last burst started (one thread).
    started: Option<Instant>,
    /// Requests at hand since this many loop turns (`None`: none at hand).
    on_for: Option<usize>,
    /// The counter right after this connection's last tick (`None`: never ticked).
    last: Option<u64>,
    /// Threads: no other connection ticked between this one's last two ticks. One thread: at
    /// most `FEW_OTHERS` did, or the last tick was long ago. A first tick counts as alone.
    alone: bool,
}

impl<'a> Burst<'a> {
    fn new(ticks: &'a AtomicU64, at_start_only: bool) -> Self {
        Burst {
            ticks,
            at_start_only,
            started: None,
            on_for: None,
            last: None,
            alone: true,
        }
    }

    /// Says, once per turn of the request loop, whether requests are at hand; returns whether
    /// this burst is alone.
    fn at_hand(&mut self, at_hand: bool) -> bool {
        self.at_hand_at(at_hand, Instant::now)
    }

    /// [`at_hand`](Self::at_hand), with the clock `now` (read only when a burst starts on one
    /// thread): the tests give it the times they mean.
    fn at_hand_at(&mut self, at_hand: bool, now: impl FnOnce() -> Instant) -> bool {
        if !at_hand {
            self.on_for = None;
            return false;
        }
        let turns = self.on_for.map_or(0, |n| n + 1);
        self.on_for = Some(turns);
        if self.at_start_only {
            // One thread: only burst starts tick; how many other connections started one
            // since this one's last start.
            if turns == 0 {
                let before = self.ticks.fetch_add(1, Ordering::Relaxed);
                let others = self.last.map_or(0, |last| before.wrapping_sub(last));
                let now = now();
                let recent = self
                    .started
                    .is_some_and(|at| now.duration_since(at) <= BURST_WINDOW);
                self.alone = !recent || others <= FEW_OTHERS;
                self.last = Some(before.wrapping_add(1));
                self.started = Some(now);
            }
        } else if turns.is_multiple_of(HOLD_MAX) {
            let before = self.ticks.fetch_add(1, Ordering::Relaxed);
            self.alone = self.last.is_none_or(|last| last == before);
            self.last = Some(before.wrapping_add(1));
        }
        self.alone
    }
}

pub(super) async fn handle_connection(
    daemon: Daemon,
    stream: BoxIo,
    peer: String,
    peer_certificate: Option<Certificate>,
    handshake_deadline: tokio::time::Instant,
) {
    let inner = daemon.inner.clone();
    let (mut reader, mut writer) =
        transport::split_io(stream, inner.config.limits.max_message_size);
    reader.set_frame_timeout(inner.config.frame_timeout);
    reader.set_min_read_rate(inner.config.min_read_rate);
    // Pyro5 or Pyro4: the first message's header decides.
    reader.accept_either_protocol();
    // A large `Vec<u8>` argument an rmi proxy announces arrives in a buffer of its own.
    reader.split_bulk(MessageType::Invoke);

    // The handshake (daemon/handshake.rs): a CONNECT to a registered object, accepted by the
    // validator; with a shared secret, only once the client has proved it (SPAKE2).
    let client = Client {
        connection: inner.next_connection.fetch_add(1, Ordering::Relaxed),
        peer: &peer,
        certificate: peer_certificate.as_ref(),
        deadline: handshake_deadline,
    };
    let outcome = handshake(&inner, &mut reader, &mut writer, &client);
    let id = client.connection;
    // A peer silent in its handshake (a port probe, a stalled client) does not hold up a
    // shutdown for the whole grace period: the daemon is not taking new clients.
    let mut shutdown = inner.shutdown.wait();
    let outcome = tokio::select! {
        biased;
        outcome = outcome => outcome,
        () = &mut shutdown => {
            tracing::debug!(%peer, "shut down during the handshake");
            return;
        }
    };
    let ((object_id, late_handshake), session) = match outcome {
        Ok(accepted) => accepted,
        Err(reply) => {
            tracing::debug!(%peer, "handshake refused");
            let Some(reply) = reply else {
                writer.shutdown().await;
                return;
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_frame(&reply)).await;
            writer.shutdown().await;
            // A call sent right behind the CONNECT may be unread: drained (until the client,
            // having read the refusal, closes), the connection ends with a FIN, not a reset
            // that could destroy the refusal on its way.
            let _ = tokio::time::timeout(Duration::from_secs(1), reader.discard_until_end()).await;
            return;
        }
    };
    let (signer, mut verifier) = match session {
        Some((s, v)) => (Some(s), Some(v)),
        None => (None, None),
    };
    let protocol = reader.protocol().unwrap_or_default();
    tracing::debug!(%peer, object = %object_id, %protocol, "connected");
    // Shared from here (the writer task, the calls' contexts): one allocation.
    let peer: Arc<str> = peer.into();

    // The request loop holds one slot while it waits for the next request; more than one other
    // taken slot means calls are finishing concurrently and their replies can share a write.
    // Otherwise a reply is written by the task that made it (see transport/outbox.rs).
    let max = inner.config.max_in_flight;
    let slots = Arc::new(Semaphore::new(max));
    let busy = {
        let slots = slots.clone();
        Box::new(move || max - slots.available_permits() >= 3)
    };
    // Reply bytes not yet written, and the requests of calls that wait: over
    // `max_queued_bytes`, stop reading requests.
    let queued = Arc::new(QueuedBytes::new(inner.config.max_queued_bytes));
    let budget = Budget {
        slots: slots.clone(),
        queued: queued.clone(),
    };
    let (tx, out) = transport::outbox(writer, busy, signer, Some(budget));
    // The request loop stops at the daemon's shutdown, or when the writer fails (a peer that
    // stopped reading): two waits for the connection's whole life, each poll an atomic load
    // (see signal.rs; a fresh pair of waits per request cost a lock, a list insert and a
    // removal each).
    let writer_gone = Arc::new(Signal::default());
    // Raised when the peer reset the connection: nobody can read a reply any more, so the
    // writer lets go of the socket at once instead of waiting for the calls still running.
    let reset = Arc::new(Signal::default());
    let deadline = WriteDeadline {
        stall: inner.config.write_timeout,
        min_rate: inner.config.min_write_rate,
    };
    let writer_task = inner.tasks.spawn({
        let (gone, peer) = (writer_gone.clone(), peer.clone());
        let (mut abort, mut reset) = (inner.abort.wait(), reset.wait());
        let stop = std::future::poll_fn(move |cx| {
            match (Pin::new(&mut abort).poll(cx), Pin::new(&mut reset).poll(cx)) {
                (Poll::Pending, Poll::Pending) => Poll::Pending,
                _ => Poll::Ready(()),
            }
        });
        // Boxed: tokio copies a task's future whole each time it moves it (into the task's
        // cell, and again as the task ends), about a kilobyte here; a box moves as a pointer.
        // Whether every reply was written.
        Box::pin(async move {
            let written = out.run_until(deadline, stop).await;
            if let Err(e) = &written {
                tracing::debug!(%peer, error = %e, "closing the connection");
            }
            gone.raise();
            written.is_ok()
        })
    });
    let object_id: Arc<str> = object_id.into();
    // Raised when the peer is gone (end of stream, a read or write failure), so work done
    // only for it (a batch, a wait for a stream's next item) stops; calls go on, as their
    // callers may have only half-closed (and a oneway call's caller may be long gone).
    let peer_gone = Arc::new(Signal::default());
    // Raised when the connection ends with more calls running than the daemon has room for
    // (`max_orphaned_calls`): they are dropped.
    let cancel = Arc::new(Signal::default());
    let conn = Arc::new(Conn {
        daemon: daemon.clone(),
        id,
        peer: peer.clone(),
        peer_certificate,
        late: object_id.is_empty().then(|| Late {
            bound: OnceLock::new(),
            handshake: late_handshake,
        }),
        connected: object_id.clone(),
        peer_gone: peer_gone.clone(),
    });
    let state = Arc::new(ConnectionState::new(
        &conn,
        inner.config.on_disconnect.as_ref(),
    ));
    inner.streams.connected(conn.id);
    // Calls to a one-at-a-time object keep this connection's arrival order.
    let turns = inner
        .object(&object_id)
        .is_some_and(|entry| entry.serial)
        .then(|| Arc::new(Turns::default()));

    let mut writer_failed = writer_gone.wait();
    let mut stopped = std::future::poll_fn(|cx| {
        match (
            Pin::new(&mut shutdown).poll(cx),
            Pin::new(&mut writer_failed).poll(cx),
        ) {
            (Poll::Pending, Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(()),
        }
    });
    // While a request is at hand and a slot free, nothing below waits: the stop signals are
    // then only looked at, not waited on (registering a waker with them costs more).
    let stopped_now = || inner.shutdown.is_raised() || writer_gone.is_raised();
    let mut held = Held::default();
    // The replies held: the outbox's lock is taken once for them all.
    let mut replies: Vec<Outgoing> = Vec::new();
    let mut burst = Burst::new(&inner.burst_ticks, one_thread());
    // The future of the call being run here: calls that finish at their first poll (most do)
    // all run in this one allocation, which a call that has to wait takes into its task.
    let mut inline = Box::pin(None);
    // The context allocation of the last call run here, for the next.
    let mut spare_context = None;
    // The reference counts the last call run here took on the connection, and its object
    // lookup, for the next.
    let mut spare_conn = None;
    // Set when the loop stops for the daemon's shutdown (not for the peer, nor its writer).
    let mut by_shutdown = false;
    'requests: loop {
        // Replies the loop made are held while more requests are at hand, so that a batch of
        // requests is answered in one write; they go out before anything could wait (a
        // request still to arrive, a slot, the byte budget), every `HOLD_MAX` while this
        // burst is the daemon's only one (the client works on those while the rest run), and
        // once the oldest has waited `HOLD_LIMIT` (methods that finish at their first poll
        // can still take long).
        let frame_at_hand = reader.has_frame();
        let more_at_hand = frame_at_hand && slots.available_permits() > 0 && !queued.over_budget();
        let alone = burst.at_hand(more_at_hand);
        if held.due(more_at_hand, alone) {
            tx.send_all(&mut replies);
            held = Held::default();
        }
        // Back-pressure: wait for a free slot before reading the next request. Slots are held
        // by running calls and by replies not yet written.
        let slot = match slots.try_acquire() {
            Ok(permit) if !stopped_now() => {
                // What waiting for the slot did: a turn for other connections now and then
                // (the held replies go out first).
                if !tokio::task::coop::has_budget_remaining() {
                    tx.send_all(&mut replies);
                    held = Held::default();
                }
                tokio::task::coop::consume_budget().await;
                Slot::taken(&slots, permit)
            }
            taken => {
                // (Given back at once if taken: the loop is stopping, or waits for one.)
                drop(taken.map(|permit| Slot::taken(&slots, permit)));
                tokio::select! {
                    biased;
                    _ = &mut stopped => {
                        by_shutdown = inner.shutdown.is_raised();
                        break;
                    }
                    permit = slots.acquire() => Slot::taken(&slots, permit.expect("never closed")),
                    e = peer_reset(&mut reader) => {
                        tracing::debug!(%peer, error = %e, "connection reset while its calls ran; closing it");
                        reset.raise();
                        break;
                    }
                }
            }
        };
        if queued.over_budget() {
            // (Replies held since the check above go out before the wait.)
            tx.send_all(&mut replies);
            held = Held::default();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    by_shutdown = inner.shutdown.is_raised();
                    break;
                }
                _ = queued.wait_within_budget() => {}
                e = peer_reset(&mut reader) => {
                    tracing::debug!(%peer, error = %e, "connection reset while its calls ran; closing it");
                    reset.raise();
                    break;
                }
            }
        }
        // An idle connection (no calls running, no replies pending) may be closed. The read
        // wakes every `idle_timeout` to look: a connection found idle at two wakes in a row has
        // been idle for at least that long (at most twice), and one that is busy is left alone,
        // so the timeout never cuts a call or its reply short.
        let is_idle = || slots.available_permits() + 1 == max;
        let mut idle_at_last_wake = is_idle();
        // The answer to a request refused for its size, sent before the connection closes.
        let mut refusal = None;
        let req = loop {
            let read = if frame_at_hand && !stopped_now() {
                // Whole in the buffer (or malformed): the read returns without waiting.
                reader.read_frame_within(inner.config.idle_timeout).await
            } else {
                tokio::select! {
                    biased;
                    _ = &mut stopped => {
                        by_shutdown = inner.shutdown.is_raised();
                        break None;
                    }
                    read = reader.read_frame_within(inner.config.idle_timeout) => read,
                }
            };
            match read {
                Ok(Some(req)) => break Some(req),
                Ok(None) => break None,
                Err(Error::Timeout(_)) if idle_at_last_wake && is_idle() => {
                    tracing::debug!(%peer, "idle for idle_timeout; closing");
                    break None;
                }
                Err(Error::Timeout(_)) => idle_at_last_wake = is_idle(),
                Err(Error::Io { source, .. })
                    if source.kind() != std::io::ErrorKind::UnexpectedEof =>
                {
                    // (An end without TLS's close_notify is an end, not a reset.)
                    tracing::debug!(%peer, error = %source, "connection reset; closing it");
                    reset.raise();
                    break None;
                }
                Err(e) => {
                    // A request over max_message_size on a connection without a MAC (whose
                    // count the skipped message would put out of step): refused, its bytes
                    // read off and dropped as they come, and the connection serves on, so the
                    // calls sent behind it are not lost with it (a proxy skips a reply so:
                    // H102). One over `SKIP_AT_MOST` times the limit still closes it.
                    let skipped = match verifier {
                        None => reader.skip_oversized(),
                        Some(_) => None,
                    };
                    if let Some(header) = skipped {
                        tracing::debug!(%peer, size = header.total_len(), "request over max_message_size refused; skipping it");
                        let max = reader.max_message_size();
                        if let Some(msg) = refuse_oversized(&conn, &header, protocol, max) {
                            replies.push(slot.reply(msg, &queued));
                            held.add(reader.has_frame());
                        }
                        continue 'requests;
                    }
                    tracing::debug!(%peer, error = %e, "malformed message; closing this connection");
                    refusal = reader.oversized_header().and_then(|header| {
                        refuse_oversized(&conn, &header, protocol, reader.max_message_size())
                    });
                    break None;
                }
            }
        };
        let Some(req) = req else {
            if let Some(msg) = refusal {
                replies.push(slot.reply(msg, &queued));
            }
            break;
        };
        // Authenticated connections: nothing unsigned is ever decoded.
        if let Some(verifier) = verifier.as_mut() {
            if let Err(e) = verifier.verify(&req) {
                tracing::warn!(%peer, error = %e, "closing the connection");
                break;
            }
        }
        match req.msg_type {
            MessageType::Ping => {
                // The answer holds the slot until written, like any reply.
                let msg = reply_to(&req, MessageType::Ping, 0, b"pong".to_vec());
                replies.push(slot.reply(msg, &queued));
                held.add(reader.has_frame());
            }
            MessageType::Invoke => {
                let Some(ser) = protocol.serializer(req.serializer) else {
                    tracing::debug!(%peer, id = req.serializer, "unknown serializer id; closing");
                    break;
                };
                // A compressed request is inflated now (within max_message_size), so that what
                // a call that waits holds is counted at its real size (see below). One that
                // does not inflate is answered as malformed by its call.
                let mut req = req;
                let inflated = req.decompress(inner.config.limits.max_message_size);
                let request_size = req.size();
                let oneway = req.flags & frame::FLAGS_ONEWAY != 0;
                let (call_conn, call_state, object_hint) = spare_conn
                    .take()
                    .unwrap_or_else(|| (conn.clone(), state.clone(), None));
                let mut call = Call {
                    conn: call_conn,
                    state: call_state,
                    ser,
                    protocol,
                    req,
                    turn: turns.as_ref().map(Turns::take),
                    context: spare_context.take(),
                    object_hint,
                };
                inline.set(Some(async move {
                    let reply = call.run(inflated).await;
                    let Call {
                        conn,
                        state,
                        context,
                        object_hint,
                        ..
                    } = call;
                    (reply, context, (conn, state, object_hint))
                }));
                // The reply keeps the call's slot until it is written. A call that finishes at
                // its first poll (most do: no I/O, no waiting) is answered here, without a task
                // of its own, its reply held for the batch's write; one that has to wait goes
                // on in its own task, so the next request is read meanwhile.
                match futures_util::poll!(inline.as_mut().as_pin_mut().expect("just set")) {
                    Poll::Ready((reply, context, refs)) => {
                        inline.set(None);
                        spare_context = context;
                        spare_conn = Some(refs);
                        if let Some(msg) = reply {
                            replies.push(slot.reply(msg, &queued));
                            held.add(reader.has_frame());
                        }
                    }
                    Poll::Pending => {
                        // The call keeps the allocation it runs in; the next call gets a new one.
                        // It is dropped if the daemon aborts its calls (a call that finished at
                        // its first poll never looks at that signal).
                        let mut run = std::mem::replace(&mut inline, Box::pin(None));
                        let mut aborted = inner.abort.wait();
                        let mut cancelled = cancel.wait();
                        let run = std::future::poll_fn(move |cx| {
                            // Biased towards the call.
                            match run.as_mut().as_pin_mut().expect("running").poll(cx) {
                                Poll::Ready((reply, ..)) => Poll::Ready(reply),
                                Poll::Pending => match Pin::new(&mut aborted).poll(cx) {
                                    Poll::Ready(()) => Poll::Ready(None),
                                    Poll::Pending => {
                                        Pin::new(&mut cancelled).poll(cx).map(|()| None)
                                    }
                                },
                            }
                        });
                        // Its request's bytes count against the connection's byte budget
                        // until it ends, as replies not yet written do: calls that wait,
                        // each holding a large request, stop the reading of more.
                        let held = HeldBytes::add(&queued, request_size);
                        // A oneway call has nothing to write: it does not keep the writer (and
                        // so the connection) open once its caller has closed; it runs on as a
                        // call whose connection ended, within `max_orphaned_calls`.
                        let (tx, queued) = ((!oneway).then(|| tx.clone()), queued.clone());
                        let slot = slot.owned(&slots);
                        inner.tasks.spawn(async move {
                            let reply = run.await;
                            drop(held);
                            if let (Some(msg), Some(tx)) = (reply, tx) {
                                let _ = tx.send(slot.reply(msg, &queued));
                            }
                        });
                    }
                }
            }
            other => {
                tracing::debug!(%peer, ?other, "unexpected message type after the handshake; closing");
                break;
            }
        }
    }
    // Shut down while calls of this connection run on (the grace period): requests that
    // arrive meanwhile are answered as not run (see `refuse_not_run`), not read off and
    // dropped at the close, which their callers could only take for "may have run"; their
    // proxies try them once more on a new connection (the daemon that replaced this one, or
    // another of the name). Until the last call has ended and its reply is written, the peer
    // closes or sends what cannot be answered, the writer fails, or the grace period is over.
    // Each answer holds a slot until written, as any reply: a peer that sends without
    // reading is not answered without bound.
    // The peer left (it closed, reset, stopped reading or broke the protocol), as opposed to
    // the loop stopping for the daemon's shutdown, whose calls get the grace period.
    let mut peer_left = !by_shutdown || writer_gone.is_raised();
    if by_shutdown && !writer_gone.is_raised() {
        tx.send_all(&mut replies);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let (mut gone, mut aborted) = (writer_gone.wait(), inner.abort.wait());
        loop {
            let read = if reader.has_frame() {
                // Whole in the buffer (or malformed): the read returns without waiting.
                reader.read_frame_within(inner.config.idle_timeout).await
            } else {
                tokio::select! {
                    biased;
                    () = &mut gone => {
                        peer_left = true;
                        break;
                    }
                    () = &mut aborted => break,
                    _ = slots.acquire_many(all) => break,
                    read = reader.read_frame_within(inner.config.idle_timeout) => read,
                }
            };
            let req = match read {
                Ok(Some(req)) => req,
                Err(Error::Timeout(_)) => continue,
                // The end, a reset, or a malformed message: nothing more to answer.
                Ok(None) | Err(_) => {
                    peer_left = true;
                    break;
                }
            };
            if let Some(verifier) = verifier.as_mut() {
                if verifier.verify(&req).is_err() {
                    break;
                }
            }
            let answer = match req.msg_type {
                MessageType::Ping => reply_to(&req, MessageType::Ping, 0, b"pong".to_vec()),
                MessageType::Invoke => match refuse_not_run(&conn, &req, protocol) {
                    Some(msg) => msg,
                    None => continue,
                },
                _ => break,
            };
            let permit = tokio::select! {
                biased;
                () = &mut gone => {
                    peer_left = true;
                    break;
                }
                () = &mut aborted => break,
                permit = slots.acquire() => permit.expect("never closed"),
            };
            let _ = tx.send(Slot::taken(&slots, permit).reply(answer, &queued));
        }
    }
    // A caller that leaves during the grace period is gone too: a method watching for it
    // stops then, not at the grace period's end (helper-156 #4).
    if peer_left {
        peer_gone.raise();
    }
    // No request can come any more: the connection's streams linger from now, for their
    // caller to pick up from another connection, whatever its calls still running do.
    inner.streams.disconnected(conn.id);
    // Let running calls of this connection send their replies, then close: a half-closed
    // peer still reads them. (After a reset the writer has let go of the socket already;
    // calls still running finish on their own and their replies are dropped, so a method
    // that never returns keeps no socket, connection slot or task of a peer that is gone.)
    tx.send_all(&mut replies);
    drop(tx);
    if reset.is_raised() {
        let _ = writer_task.await;
        orphan_calls(&inner, &slots, max, Some(&cancel), &peer);
        return;
    }
    // Requests the loop left unread (a peer still sending at shutdown, say) are read off and
    // dropped while the replies go out: a socket closed with bytes unread ends with a reset,
    // which destroys what was written and the peer has not read.
    let mut writer_task = writer_task;
    let sending = std::sync::atomic::AtomicBool::new(false);
    let mut drain = std::pin::pin!(async {
        let mut sink = vec![0u8; MIN_DRAIN];
        while let Ok(1..) = reader.get_mut().read(&mut sink).await {
            sending.store(true, Ordering::Relaxed);
        }
    });
    let written = tokio::select! {
        written = &mut writer_task => {
            // The writer sent its FIN. A peer that was still sending may go on until it reads
            // it: a moment more for that one; an idle peer (most: a proxy between calls reads
            // nothing) is closed on at once, with nothing unread. (A writer that failed, a
            // peer that stopped reading say, left nothing to protect.)
            let written = written.unwrap_or(false);
            if written
                && drain.as_mut().now_or_never().is_none()
                && sending.load(Ordering::Relaxed)
            {
                let _ = tokio::time::timeout(DRAIN_AFTER_WRITES, drain).await;
            }
            written
        }
        () = &mut drain => writer_task.await.unwrap_or(false),
    };
    // (None are left when the writer saw every reply out, but oneway calls, which keep no
    // writer; some when it failed, a peer that stopped reading say: those are dropped when
    // there is no room for them, as a reset's are.) A connection its peer closed whose oneway
    // calls find no room keeps its place until they end, as it did before oneway calls let go
    // of the writer: they are not dropped.
    let cancel = (!written).then_some(&*cancel);
    if !orphan_calls(&inner, &slots, max, cancel, &peer) {
        if let Ok(max32) = u32::try_from(max) {
            let _ = slots.acquire_many(max32).await;
        }
    }
}

/// The calls of a connection that ended still running, with nobody to answer (a peer that
/// reset it, or stopped reading; oneway calls of one that closed): they run on within the
/// daemon's room for such calls (`max_orphaned_calls`), counted until the last of them ends;
/// with no room, they are dropped (`cancel`), or, with no `cancel` given, false is returned
/// and the caller waits for them. So a client that resets its connections and connects again
/// cannot leave calls running without bound, while its connection's place is free at once.
fn orphan_calls(
    inner: &super::Inner,
    slots: &Arc<Semaphore>,
    max: usize,
    cancel: Option<&Signal>,
    peer: &str,
) -> bool {
    let running = max.saturating_sub(slots.available_permits());
    if running == 0 || inner.abort.is_raised() {
        return true;
    }
    let (Ok(running32), Ok(max32)) = (u32::try_from(running), u32::try_from(max)) else {
        return cancel.map(Signal::raise).is_some();
    };
    match inner.orphans.clone().try_acquire_many_owned(running32) {
        Ok(room) => {
            let slots = slots.clone();
            inner.tasks.spawn(async move {
                // Every slot back: the last call has ended (or was dropped at the abort).
                let _ = slots.acquire_many(max32).await;
                drop(room);
            });
            true
        }
        Err(_) => {
            let Some(cancel) = cancel else {
                return false;
            };
            let limit = inner.config.max_orphaned_calls;
            tracing::warn!(%peer, calls = running, max_orphaned_calls = limit, "connection gone with calls running and no room for them; dropping them");
            cancel.raise();
            true
        }
    }
}

/// The answer to a call refused unread for its size (over `max_message_size`, seen on its
/// header): an `rmi.MessageTooLarge` error for that call, so its caller learns why rather than
/// only that the connection closed (it still closes: the rest of the request is not read,
/// but read off and dropped while the answer goes out). `None` for a oneway call (its failure
/// goes to the call-error hook alone), or a message that is no call.
fn refuse_oversized(
    conn: &Conn,
    header: &frame::Header,
    protocol: Protocol,
    max: usize,
) -> Option<Message> {
    if header.msg_type != MessageType::Invoke {
        return None;
    }
    // In a Pyro format, Pyro's own class: a `CommunicationError`, on which a Python proxy lets
    // go of the connection this daemon closes, and dials anew for its next call (an rmi class
    // would reach it as `RuntimeError`, and its next call find the connection closed).
    let class = match protocol.serializer(header.serializer) {
        Some(codec::Serializer::Bincode) | None => "rmi.MessageTooLarge",
        Some(_) => "Pyro5.errors.MessageTooLargeError",
    };
    let err = RemoteError::new(
        RemoteErrorKind::Other,
        class,
        format!(
            "the daemon refused a request of {} bytes unread: over its max_message_size ({max} \
             bytes)",
            header.total_len()
        ),
    );
    let mut req = Message::new(
        MessageType::Invoke,
        header.serializer,
        header.flags,
        header.seq,
        bytes::Bytes::new(),
    );
    req.corr_id = header.corr_id;
    refusal(conn, &req, protocol, &err)
}

/// The answer to a request that reached a connection after its daemon's shutdown, while the
/// connection's calls ran on: Pyro's `ConnectionClosedError` (a Python caller reconnects, as
/// it would after a close), marked as not run (`NOT_RUN_ANNOTATION`), so that an rmi proxy
/// knows the call is safe to send again, on a new connection. None for a oneway call.
fn refuse_not_run(conn: &Conn, req: &Message, protocol: Protocol) -> Option<Message> {
    let err = RemoteError::new(
        RemoteErrorKind::Other,
        "Pyro5.errors.ConnectionClosedError",
        "the daemon is shutting down: the call was not run",
    );
    let mut msg = refusal(conn, req, protocol, &err)?;
    msg.annotations
        .push((NOT_RUN_ANNOTATION, bytes::Bytes::new()));
    Some(msg)
}

/// The error reply to request `req`, refused without running (the application's
/// `on_call_error` hook told); None for a oneway call, or a serializer the protocol lacks.
fn refusal(conn: &Conn, req: &Message, protocol: Protocol, err: &RemoteError) -> Option<Message> {
    let oneway = req.flags & frame::FLAGS_ONEWAY != 0;
    let call = hooks::Failure {
        object: None,
        method: None,
        correlation_id: uuid::Uuid::from_bytes(req.corr_id),
        oneway,
    };
    hooks::call_failed(conn, call, err);
    if oneway {
        return None;
    }
    let ser = protocol.serializer(req.serializer)?;
    Some(reply_to(
        req,
        MessageType::Result,
        frame::FLAGS_EXCEPTION,
        codec::encode_error_in(ser, protocol, err),
    ))
}

/// The buffer a closing connection reads unread requests into, to drop them.
const MIN_DRAIN: usize = 8 * 1024;

/// How long a closing connection whose peer was still sending goes on reading off its
/// requests once the replies are written, waiting for it to close in turn (see the end of
/// `handle_connection`).
const DRAIN_AFTER_WRITES: Duration = Duration::from_secs(1);

/// Completes when the peer resets the connection while the request loop is not reading it
/// (it waits for a slot or for its byte budget): as far as the socket can tell without taking
/// a byte, so not while requests wait unread (see `IoReadHalf::poll_reset`).
fn peer_reset(
    reader: &mut transport::FrameReader<transport::IoReadHalf>,
) -> impl Future<Output = std::io::Error> + '_ {
    std::future::poll_fn(|cx| {
        // Whole requests already read run first, as they would have (a oneway call its client
        // counted as sent among them): the reset is left for the read after them. (Asked
        // then, the socket would give its error up to the peek and the read would see an end.)
        if reader.has_frame() {
            return Poll::Pending;
        }
        reader.get_mut().poll_reset(cx)
    })
}

/// Bytes counted in a connection's budget while a call holds them, given back when dropped
/// (when the call ends, or its task unwinds or is dropped).
struct HeldBytes {
    queued: Arc<QueuedBytes>,
    bytes: usize,
}

impl HeldBytes {
    fn add(queued: &Arc<QueuedBytes>, bytes: usize) -> Self {
        queued.add(bytes);
        HeldBytes {
            queued: queued.clone(),
            bytes,
        }
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.queued.release(self.bytes);
    }
}

/// One of a connection's in-flight slots, its permit forgotten (no reference count per
/// request): given back when dropped, unless it goes with a reply to the outbox, which gives it
/// back once the reply is written (see `outbox::Budget`).
struct Slot<S: std::ops::Deref<Target = Semaphore>>(Option<S>);

impl<'a> Slot<&'a Semaphore> {
    fn taken(slots: &'a Semaphore, permit: tokio::sync::SemaphorePermit<'_>) -> Self {
        permit.forget();
        Slot(Some(slots))
    }

    /// The slot, for a task of its own.
    fn owned(mut self, slots: &Arc<Semaphore>) -> Slot<Arc<Semaphore>> {
        self.0 = None;
        Slot(Some(slots.clone()))
    }
}

impl<S: std::ops::Deref<Target = Semaphore>> Slot<S> {
    /// The reply `msg`, holding this slot and counting its bytes in `queued` until written.
    fn reply(mut self, msg: Message, queued: &QueuedBytes) -> Outgoing {
        self.0 = None;
        // (Counted as it is kept: a message is far smaller than 4 GiB.)
        let size = u32::try_from(msg.size()).unwrap_or(u32::MAX);
        queued.add(size as usize);
        Outgoing {
            msg,
            flushed: None,
            counted: Some(size),
            ticket: 0,
            deadline: None,
        }
    }
}

impl<S: std::ops::Deref<Target = Semaphore>> Drop for Slot<S> {
    fn drop(&mut self) {
        if let Some(slots) = self.0.take() {
            slots.add_permits(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_given_up_behind_a_long_call_are_kept_as_runs_and_all_skipped_after_it() {
        let turns = Arc::new(Turns::default());
        let long = turns.take();
        long.wait().await;
        // A flood of calls that need no turn, then one still running, then more.
        for _ in 0..100_000 {
            drop(turns.take());
        }
        let running = turns.take();
        for _ in 0..1_000 {
            drop(turns.take());
        }
        let last = turns.take();
        assert_eq!(
            turns.state.lock().done_early.len(),
            2,
            "one run each side of the running call"
        );
        drop(long);
        tokio::time::timeout(Duration::from_secs(5), running.wait())
            .await
            .expect("the call after the run gets its turn");
        drop(running);
        tokio::time::timeout(Duration::from_secs(5), last.wait())
            .await
            .expect("the call after the second run gets its turn");
        assert!(turns.state.lock().done_early.is_empty());
        // Turns given up out of order join up too.
        let (a, b, c, d) = (turns.take(), turns.take(), turns.take(), turns.take());
        drop(c);
        drop(b);
        drop(d);
        assert_eq!(turns.state.lock().done_early.len(), 1);
        drop(last);
        a.wait().await;
        drop(a);
        let state = turns.state.lock();
        assert!(state.done_early.is_empty());
        assert_eq!(state.serving, state.next);
    }

    /// `n` turns of the request loop with requests at hand; the last turn's answer.
    fn turns(burst: &mut Burst<'_>, n: usize) -> bool {
        (0..n).fold(false, |_, _| burst.at_hand(true))
    }

    #[test]
    fn a_lone_connection_stays_alone_through_bursts_and_long_ones() {
        let ticks = AtomicU64::new(0);
        let mut a = Burst::new(&ticks, false);
        assert!(a.at_hand(true), "a first burst counts as alone");
        assert!(turns(&mut a, 100), "a long burst that only it ticks");
        assert!(
            !a.at_hand(false),
            "no requests at hand: nothing to write early"
        );
        assert!(a.at_hand(true), "its next burst");
    }

    #[test]
    fn another_connections_burst_ends_being_alone_until_it_is_quiet_again() {
        let ticks = AtomicU64::new(0);
        let (mut a, mut b) = (Burst::new(&ticks, false), Burst::new(&ticks, false));
        assert!(a.at_hand(true));
        // b starts a burst (b's first: alone by b's count); a sees it at its next tick.
        b.at_hand(true);
        assert!(
            turns(&mut a, HOLD_MAX - 1),
            "between ticks, a keeps what it saw"
        );
        assert!(!a.at_hand(true), "a's tick sees b's burst");
        // b's burst ends without another tick: a's next tick finds only its own.
        b.at_hand(false);
        assert!(!turns(&mut a, HOLD_MAX - 1));
        assert!(
            a.at_hand(true),
            "no tick but a's since a's last: alone again"
        );
    }

    #[test]
    fn a_burst_that_never_ends_keeps_other_connections_from_being_alone() {
        let ticks = AtomicU64::new(0);
        let (mut a, mut b) = (Burst::new(&ticks, false), Burst::new(&ticks, false));
        a.at_hand(true);
        b.at_hand(true);
        b.at_hand(false);
        // a's requests never run out; b's bursts are short (fewer than HOLD_MAX requests).
        for _ in 0..3 {
            turns(&mut a, HOLD_MAX);
            assert!(!b.at_hand(true), "b sees a's ticks");
            b.at_hand(false);
        }
    }

    #[test]
    fn on_one_thread_a_burst_stays_what_its_start_found() {
        // The times are given, not read: a test preempted for longer than BURST_WINDOW
        // between two bursts would find the second alone.
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let ticks = AtomicU64::new(0);
        let mut a = Burst::new(&ticks, true);
        let mut others: Vec<_> = (0..=FEW_OTHERS).map(|_| Burst::new(&ticks, true)).collect();
        assert!(a.at_hand_at(true, || ms(0)), "a first burst is alone");
        a.at_hand(false);
        // Others burst between a's bursts (on one thread, only then can they run): a few
        // leave a alone.
        for b in &mut others[..FEW_OTHERS as usize] {
            b.at_hand_at(true, || ms(0));
            b.at_hand(false);
        }
        assert!(
            a.at_hand_at(true, || ms(1)),
            "FEW_OTHERS bursts since a's last: alone"
        );
        a.at_hand(false);
        for b in &mut others {
            b.at_hand_at(true, || ms(1));
            b.at_hand(false);
        }
        assert!(
            !a.at_hand_at(true, || ms(2)),
            "more than FEW_OTHERS: not alone"
        );
        for _ in 0..4 {
            assert!(
                !turns(&mut a, HOLD_MAX),
                "no later tick of the burst makes it alone"
            );
        }
        a.at_hand(false);
        assert!(
            a.at_hand_at(true, || ms(3)),
            "nothing else since: the next burst is alone"
        );
        assert!(
            turns(&mut a, 4 * HOLD_MAX),
            "and stays alone while nothing else ticks"
        );
        a.at_hand(false);
        for b in &mut others {
            b.at_hand_at(true, || ms(3));
            b.at_hand(false);
        }
        assert!(
            a.at_hand_at(true, || ms(3) + BURST_WINDOW + Duration::from_millis(1)),
            "bursts counted since a burst that started long ago do not count"
        );
    }

    #[tokio::test]
    async fn one_thread_is_a_current_thread_runtime() {
        assert!(one_thread());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn one_thread_is_a_multi_thread_runtime_with_one_worker() {
        assert!(one_thread());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_are_not_one_thread() {
        assert!(!one_thread());
    }

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_turn_ending_wakes_only_the_call_whose_turn_comes() {
        let turns = Arc::new(Turns::default());
        let mut all: Vec<Option<Arc<Turn>>> =
            (0..100).map(|_| Some(Arc::new(turns.take()))).collect();
        let counts: Vec<Arc<Count>> = (0..100)
            .map(|_| Arc::new(Count(Default::default())))
            .collect();
        // Every call waits for its turn (its wait kept, as a call's task keeps it).
        let mut waits: Vec<_> = all
            .iter()
            .map(|turn| {
                let turn = turn.clone().expect("taken");
                Some(Box::pin(async move { turn.wait().await }))
            })
            .collect();
        for (i, (wait, count)) in waits.iter_mut().zip(&counts).enumerate() {
            let waker = std::task::Waker::from(count.clone());
            let wait = wait.as_mut().expect("waiting").as_mut();
            let ready = wait.poll(&mut std::task::Context::from_waker(&waker));
            assert_eq!(
                ready.is_ready(),
                i == 0,
                "only the first call's turn has come"
            );
        }
        let woken = || -> Vec<usize> {
            counts
                .iter()
                .map(|c| c.0.load(Ordering::SeqCst))
                .enumerate()
                .filter(|&(_, n)| n > 0)
                .map(|(i, n)| i * 10 + n)
                .collect()
        };
        let mut end = |i: usize| {
            waits[i] = None;
            all[i] = None;
        };
        end(0);
        assert_eq!(woken(), [11], "turn 1 woken once, no other");
        // Turn 3 finishes early (it needed no turn): turn 2's end skips to 4.
        end(3);
        assert_eq!(woken(), [11]);
        end(1);
        end(2);
        assert_eq!(woken(), [11, 21, 41]);
    }

    #[test]
    fn held_replies_go_out_every_hold_max_only_when_alone() {
        let mut held = Held::default();
        assert!(!held.due(false, true), "nothing held, nothing to write");
        held.add(false);
        assert!(held.due(false, false), "nothing more at hand: written");
        assert!(!held.due(true, true), "more at hand: held for them");
        for _ in 1..HOLD_MAX {
            held.add(false);
        }
        assert!(held.due(true, true), "HOLD_MAX held, alone: written");
        assert!(
            !held.due(true, false),
            "HOLD_MAX held, others bursting: held"
        );
    }
}
