//! One open connection: the CONNECT handshake, the in-flight table keyed by sequence number,
//! the reading of replies (by the call itself when it is alone in flight, else by the reader
//! task), and the writer task.

use std::collections::VecDeque;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::io::AsyncRead;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::in_flight::InFlight;
use super::ProxyBuilder;
use crate::error::Error;
use crate::protocol::codec::{
    self, ConnectOk, ConnectRequestRef, DecodeLimits, Metadata, Serializer,
};
use crate::protocol::frame::{self, Message, MessageType, Protocol, FLAGS_META_ON_CONNECT};
use crate::protocol::names::{MAC_ANNOTATION, SERIALIZER_ANNOTATION, STREAM_ANNOTATION};
use crate::transport::{self, outbox, BoxIo, FrameReader, IoReadHalf, IoWriteHalf, Outgoing};
use crate::uri::Uri;

/// One open connection: the way out to its socket plus the state shared with its reader task.
pub(super) struct Connection {
    /// Requests go out here: written by the caller's own task when the socket is free and no
    /// other call is in flight, else by the writer task.
    pub(super) tx: outbox::Sender<IoWriteHalf>,
    pub(super) shared: Arc<ConnShared>,
    /// The serializer calls use (configured, or negotiated at CONNECT).
    pub(super) serializer: Serializer,
    /// The protocol the daemon speaks.
    pub(super) protocol: Protocol,
    /// The direct URI this connection was dialed for (its object the one connected to).
    pub(super) direct: Arc<Uri>,
    pub(super) meta: Metadata,
}

pub(super) struct ConnShared {
    state: Mutex<ConnState>,
    slots: Arc<Semaphore>,
    /// Set (after `state.closed`) when the connection dies: every call asks, without a lock.
    closed: std::sync::atomic::AtomicBool,
    /// The daemon runs this connection's calls one after another, in order: a Pyro daemon
    /// (Python's: it did not answer the serializer offer, or speaks Pyro4).
    pub(super) in_order: bool,
    /// The daemon is rmi's: it answered the serializer offer, or proved the shared secret. Only
    /// then is the kind of error its exceptions name (`_rmiKind`) believed: a Python daemon
    /// passes on the attributes of an rmi backend's exception it relays.
    pub(super) rmi_peer: bool,
    /// Set when a call (or ping) on an `in_order` connection was given up on: every later
    /// call there would wait behind it, so new calls go on a new connection (see
    /// [`ConnShared::retired`]), while those in flight on this one finish.
    retired: AtomicBool,
    /// Replies the reader delivered together (they arrived in one read) whose callers have
    /// not sent again: those callers are about to, so a request waits for the writer task to
    /// share one write with theirs instead of being written alone.
    burst: AtomicUsize,
    /// The socket's read half, read by whoever holds the reading ([`role`](Self::role)).
    side: Mutex<ReadSide>,
    /// Who reads replies: [`TASK`], [`NOBODY`], or [`caller`]`(seq)`. Changed only with `side`
    /// locked; read without it.
    role: AtomicU32,
    /// The reader task: woken when the reading passes to it, and when the connection closes.
    reader_task: AtomicWaker,
    /// The next ticket of a oneway call, by which it can be taken back while still queued
    /// (see [`outbox::Sender::withdraw`]); unique on the connection.
    tickets: AtomicU64,
    /// The writer task's stop: woken when the connection closes, so that a writer parked on
    /// a socket the daemon does not read lets go of it.
    writer_stop: AtomicWaker,
    /// Set when `state.orphan_streams` has ids: a call asks without the lock.
    orphans: AtomicBool,
    /// Set while `state.silent_since` is: a call asks without the lock.
    given_up: AtomicBool,
    /// Batches of stream closes under way (see [`ConnShared::closing`]), which a call lets go
    /// out ahead of its request.
    closes: AtomicUsize,
    /// Woken when a batch of closes ends.
    closes_done: tokio::sync::Notify,
    /// Woken when a call is given up on: callers waiting for a slot look again whether every
    /// slot is now held by calls given up on (see `Connection::slot`).
    abandoned: tokio::sync::Notify,
}

/// The read side of a connection.
struct ReadSide {
    reader: FrameReader<IoReadHalf>,
    /// Authenticated connections: checks each reply's MAC before it is delivered.
    verifier: Option<crate::auth::Verifier>,
    /// Replies delivered from what one read brought in, so far.
    run: usize,
    /// What those replies' delivery owes: slots to give back and callers to wake.
    settle: Settle,
}

/// Slots freed and callers to wake by the replies of one read, settled together (see
/// [`ConnShared::settle`]): each slot given back on its own took the semaphore's lock.
#[derive(Default)]
struct Settle {
    freed: usize,
    woken: Vec<Waker>,
    /// A reply to a call given up opened a stream (see `ConnState::orphan_streams`).
    orphaned: bool,
}

/// Who reads the connection's replies.
///
/// A call alone in flight (the sequential case) reads its own reply: the socket wakes the
/// caller, not a reader task that would then have to wake it. With more than one call, or a
/// ping, in flight, the reader task reads and hands each reply to its call, so no caller that
/// stops being polled can hold up another's reply. When the last call is done and nothing is
/// in flight, nobody reads (and no task runs); a call that starts looks at what arrived
/// meanwhile first (see [`ConnShared::look`]), so a connection the daemon closed is found
/// closed before a call is sent on it.
const TASK: u32 = 0;
/// At most this many streams opened for calls given up are kept to be closed; past it, they
/// are left to end with the connection (a daemon answering every call with a stream cannot
/// grow the list).
const MAX_ORPHAN_STREAMS: usize = 256;
/// See [`TASK`].
const NOBODY: u32 = 1;
/// The role of the call `seq` reading its own reply; see [`TASK`].
fn caller(seq: u16) -> u32 {
    0x1_0000 | u32::from(seq)
}

/// How long a connection found silent after calls were given up on (see
/// [`ConnShared::silent_for`]) has to answer a ping before it is dropped.
const SILENCE_PROBE: Duration = Duration::from_secs(1);

/// Where a ping's answer (or the connection's failure) goes.
type PingWaiter = oneshot::Sender<Result<Message, Error>>;

struct ConnState {
    pending: InFlight<Pending>,
    /// Pings waiting for their answers, in the order sent, each by its outbox ticket; with no
    /// sender once given up on after it was written (its answer, if it comes, is still its).
    pings: VecDeque<(u64, Option<PingWaiter>)>,
    /// Calls waiting for an in-flight slot: a slot comes free only when a reply is read.
    slot_waiters: usize,
    /// Oneway calls given up on (their deadline) in the middle of their write: each counts as
    /// a call given up on (see [`ConnShared::silent_for`]) until its write ends.
    stuck_oneways: usize,
    next_seq: u16,
    closed: Option<String>,
    /// Replies that belonged to no call (see [`ConnState::stray`]).
    strays: u64,
    /// When a caller last gave up on a call whose reply had not come (see
    /// [`ConnShared::wedged_since`]).
    last_abandoned: Option<tokio::time::Instant>,
    /// Replies (and ping answers) read, ever.
    replies: u64,
    /// Since when a call given up on has waited for its reply with nothing read meanwhile,
    /// and `replies` then (see [`ConnShared::silent_for`]).
    silent_since: Option<(tokio::time::Instant, u64)>,
    /// Streams the daemon opened for calls given up before their replies came, to be closed
    /// (see [`ConnShared::take_orphan_streams`]).
    orphan_streams: Vec<String>,
}

impl ConnState {
    /// Logs a reply that belongs to no call: the connection's first at warning level, later
    /// ones at debug level, so that a daemon sending many cannot flood the client's log.
    fn stray(&mut self, what: &'static str, seq: u16) {
        self.strays += 1;
        if self.strays == 1 {
            tracing::warn!(
                seq,
                "{what} (more on this connection are logged at debug level)"
            );
        } else {
            tracing::debug!(seq, strays = self.strays, "{what}");
        }
    }

    /// Notes the stream a reply nobody will read opened (see `orphan_streams`); true if it did.
    fn note_orphan_stream(&mut self, reply: &Message) -> bool {
        if !reply.has_flag(frame::FLAGS_ITEMSTREAMRESULT)
            || self.orphan_streams.len() >= MAX_ORPHAN_STREAMS
        {
            return false;
        }
        let Some(id) = reply
            .annotation(&STREAM_ANNOTATION)
            .and_then(|id| std::str::from_utf8(id).ok())
        else {
            return false;
        };
        self.orphan_streams.push(id.to_owned());
        true
    }

    /// True when the call `seq` is the only thing waiting on the connection: no other call
    /// (or call waiting for a slot), no ping.
    fn alone(&self, seq: u16) -> bool {
        self.pending.len() == 1
            && self.pings.is_empty()
            && self.slot_waiters == 0
            && self.pending.contains_key(&seq)
    }
}

/// A call waiting for its reply. The reply is handed over in place (no channel per call):
/// the reader stores it here and wakes the caller, who takes it out with the entry.
struct Pending {
    reply: Reply,
    /// Holds an in-flight slot, given back (`ConnShared::slots`' permits, taken and given back
    /// by count: no `Arc` per call) only when the reply arrives or the connection dies.
    slot: bool,
}

enum Reply {
    /// The caller waits; its waker once it has polled.
    Waiting(Option<Waker>),
    /// The reply (or the connection's failure), for the caller to take.
    Arrived(Result<Message, Error>),
    /// The caller gave up (timed out or dropped): the reply is dropped when it comes.
    Abandoned,
}

impl ConnShared {
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// True once a call was given up on where the daemon runs calls in order (a Pyro
    /// daemon): the proxy dials anew for its next call, as Pyro's proxy closes its connection
    /// on a timeout.
    pub(super) fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// A call or ping given up on before its answer came.
    fn gave_up(&self) {
        if self.in_order {
            self.retired.store(true, Ordering::Release);
        }
    }

    /// Marks the connection dead and fails every waiting call with `reason`.
    pub(super) fn close(&self, reason: String) {
        let mut state = self.state.lock();
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let mut woken = Vec::new();
        let mut slots = 0;
        state.pending.retain(|_, p| {
            slots += usize::from(std::mem::take(&mut p.slot));
            match &mut p.reply {
                Reply::Abandoned => false,
                Reply::Arrived(_) => true,
                Reply::Waiting(waker) => {
                    woken.extend(waker.take());
                    p.reply = Reply::Arrived(Err(Error::ConnectionClosed(reason.clone())));
                    true
                }
            }
        });
        for (_, p) in state.pings.drain(..) {
            if let Some(p) = p {
                let _ = p.send(Err(Error::ConnectionClosed(reason.clone())));
            }
        }
        // (Kept last, so that the reason is not copied when nobody was waiting.)
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        drop(state);
        self.slots.close();
        self.slots.add_permits(slots);
        woken.into_iter().for_each(Waker::wake);
        // The reader task ends, and the writer task once it waits (see `Writer::run_until`).
        self.reader_task.wake();
        self.writer_stop.wake();
    }

    /// When every in-flight slot is taken and every call holding one was abandoned by its
    /// caller (the reply will be dropped when it comes, if it ever does): since when, the last
    /// of them was abandoned. A reply since would have freed a slot.
    fn wedged_since(&self) -> Option<tokio::time::Instant> {
        let state = self.state.lock();
        let wedged = self.slots.available_permits() == 0
            && !state.pending.is_empty()
            && state
                .pending
                .values()
                .all(|p| matches!(p.reply, Reply::Abandoned));
        state.last_abandoned.filter(|_| wedged)
    }

    /// When calls were given up on and nothing at all has been read for `limit` since (no
    /// reply, late or not, no ping answer), with no caller still waiting: why the connection
    /// should be dropped. A daemon that answers anything is alive, and is given `limit` again.
    fn silent_for(&self, limit: Duration) -> Option<String> {
        let mut state = self.state.lock();
        let (since, replies) = state.silent_since?;
        let calls_given_up = state
            .pending
            .values()
            .filter(|p| matches!(p.reply, Reply::Abandoned))
            .count();
        let pings_given_up = state.pings.iter().filter(|(_, p)| p.is_none()).count();
        let given_up = calls_given_up + pings_given_up + state.stuck_oneways;
        let now = tokio::time::Instant::now();
        if given_up == 0 || state.replies != replies {
            state.silent_since = (given_up > 0).then_some((now, state.replies));
            self.given_up
                .store(state.silent_since.is_some(), Ordering::Release);
            return None;
        }
        if now.saturating_duration_since(since) < limit
            || calls_given_up < state.pending.len()
            || pings_given_up < state.pings.len()
        {
            return None;
        }
        Some(format!(
            "nothing was read for {limit:?} (abandoned_timeout) while {given_up} call(s) or \
             ping(s) given up on waited for replies; reconnecting"
        ))
    }

    /// Hands `msg` to its call (or ping), with the state locked (`state`); the caller is
    /// woken, and its slot given back, in `settle`'s turn, unless it is `reading` (the caller
    /// reading its own reply is already running).
    fn deliver(state: &mut ConnState, msg: Message, reading: Option<u16>, settle: &mut Settle) {
        // (A ping's answer, too, shows the daemon alive: see `silent_for`.)
        state.replies += 1;
        if msg.msg_type == MessageType::Ping {
            if let Some((_, Some(waiter))) = state.pings.pop_front() {
                let _ = waiter.send(Ok(msg));
            }
            return;
        }
        Self::hand_over(state, msg.seq, Ok(msg), reading, settle);
    }

    /// Hands call `seq` its reply, or the error in its place (a reply that could not be read).
    fn hand_over(
        state: &mut ConnState,
        seq: u16,
        reply: Result<Message, Error>,
        reading: Option<u16>,
        settle: &mut Settle,
    ) {
        let Some(p) = state.pending.get_mut(&seq) else {
            state.stray("a reply for a sequence number with no call; ignored", seq);
            return;
        };
        match &mut p.reply {
            Reply::Waiting(waker) => {
                let waker = waker.take();
                p.reply = Reply::Arrived(reply);
                settle.freed += usize::from(std::mem::take(&mut p.slot));
                if let Some(waker) = waker.filter(|_| reading != Some(seq)) {
                    settle.woken.push(waker);
                }
            }
            // The caller is gone (timed out or dropped): the number is free again. A stream the
            // reply opened would stay open on the daemon for the connection's life: noted, to
            // be closed by the proxy's next call.
            Reply::Abandoned => {
                let gone = state.pending.remove(&seq);
                settle.freed += gone.map_or(0, |p| usize::from(p.slot));
                if let Ok(msg) = &reply {
                    settle.orphaned |= state.note_orphan_stream(msg);
                }
            }
            Reply::Arrived(_) => state.stray("a second reply for one call; ignored", seq),
        }
    }
}

impl ConnShared {
    fn role(&self) -> u32 {
        self.role.load(Ordering::Acquire)
    }

    /// Gives the reading to the reader task (with `side` locked: the caller holds it).
    fn to_task(&self, _side: &mut ReadSide) {
        if self.role.swap(TASK, Ordering::AcqRel) != TASK {
            self.reader_task.wake();
        }
    }

    /// Makes sure the reader task reads: something other than a lone call waits for a reply.
    fn task_reads(&self) {
        if self.role() != TASK {
            self.to_task(&mut self.side.lock());
        }
    }

    /// The call `seq` is done with the reading, if it had it: nobody reads when nothing else
    /// is in flight, else the reader task.
    fn release(&self, seq: u16) {
        if self.role() != caller(seq) {
            return;
        }
        let mut side = self.side.lock();
        if self.role() != caller(seq) {
            return;
        }
        let idle = {
            let state = self.state.lock();
            state.pending.is_empty() && state.pings.is_empty()
        };
        if idle {
            self.role.store(NOBODY, Ordering::Release);
        } else {
            self.to_task(&mut side);
        }
    }

    /// Unless the reader task reads, takes in what arrived meanwhile, without waiting: a
    /// connection the daemon closed is then marked closed before a call is sent on it. (Best
    /// effort, as the reader task's noticing was: a close the runtime has not yet seen, or a
    /// task out of tokio's cooperative budget, finds nothing, and the call is sent and fails
    /// as sent.)
    ///
    /// A lone call that holds the reading may not be polled again soon: the reading goes to
    /// the reader task first (a call about to start would hand it over anyway).
    pub(super) fn look(&self) {
        if self.role() == TASK {
            return;
        }
        let mut side = self.side.lock();
        match self.role() {
            TASK => return,
            // Nothing whole buffered and nothing new on the socket: nothing to take in. (A
            // sequential call's look ends here: the poll below cost it about 400
            // instructions to find the same.)
            NOBODY
                if !side.reader.has_frame()
                    && side.reader.get_ref().may_have_news() == Some(false) =>
            {
                return
            }
            NOBODY => {}
            _ => self.to_task(&mut side),
        }
        // Nobody waits for a wake-up from this poll: with nobody reading none is due, and a
        // reader task just handed the reading polls again with its own waker.
        let _ = self.pump(&mut side, &mut Context::from_waker(Waker::noop()), None);
    }

    /// Reads replies and hands them to their calls until no more bytes are at hand
    /// (`Pending`: `cx` is woken when more come), the reply to `reading` (the call that
    /// reads) is handed over, or the connection has ended (both `Ready`).
    fn pump(&self, side: &mut ReadSide, cx: &mut Context<'_>, reading: Option<u16>) -> Poll<()> {
        let done = self.pump_frames(side, cx, reading);
        self.settle(&mut side.settle);
        done
    }

    /// Gives back the slots the replies delivered so far freed, then wakes their callers (so
    /// that a woken caller finds its slot free).
    fn settle(&self, settle: &mut Settle) {
        if settle.freed > 0 {
            self.slots.add_permits(std::mem::take(&mut settle.freed));
        }
        if std::mem::take(&mut settle.orphaned) {
            self.orphans.store(true, Ordering::Release);
        }
        settle.woken.drain(..).for_each(Waker::wake);
    }

    /// Notes the stream `reply` opened for a caller that reads none, to be closed with the
    /// streams of calls given up on.
    pub(super) fn note_unread_stream(&self, reply: &Message) {
        if self.state.lock().note_orphan_stream(reply) {
            self.orphans.store(true, Ordering::Release);
        }
    }

    /// Notes a stream its reader dropped unfinished where no task can close it (no runtime),
    /// to be closed with the streams of calls given up on by the proxy's next call. (Not
    /// bounded as those are: each is one the caller had in hand.)
    pub(super) fn note_dropped_stream(&self, id: String) {
        self.state.lock().orphan_streams.push(id);
        self.orphans.store(true, Ordering::Release);
    }

    /// Counts a batch of closes under way until the guard is dropped.
    pub(super) fn closing(self: &Arc<Self>) -> ClosesUnderWay {
        self.closes.fetch_add(1, Ordering::AcqRel);
        ClosesUnderWay(self.clone())
    }

    /// Whether a batch of closes is under way.
    pub(super) fn closes_under_way(&self) -> bool {
        self.closes.load(Ordering::Acquire) > 0
    }

    /// Waits, for `within` at most, until no batch of closes is under way.
    pub(super) async fn closes_written(&self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            loop {
                let done = self.closes_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.closes.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        })
        .await;
    }

    /// The streams the daemon opened for calls given up before their replies came, taken to
    /// be closed; none (and no lock) in the common case.
    pub(super) fn take_orphan_streams(&self) -> Vec<String> {
        if !self.orphans.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut state = self.state.lock();
        self.orphans.store(false, Ordering::Release);
        std::mem::take(&mut state.orphan_streams)
    }

    /// [`pump`](Self::pump)'s reading, settled at the end of each read's replies.
    fn pump_frames(
        &self,
        side: &mut ReadSide,
        cx: &mut Context<'_>,
        reading: Option<u16>,
    ) -> Poll<()> {
        // A call reading its own reply decodes and drops it before anything reads again:
        // copying it out of the read buffer (one allocation a reply) would keep nothing.
        side.reader.set_hand_off(reading.is_none());
        // The state lock, held while the replies one read brought in are handed over (one
        // lock for them all); let go before the next read, and before anyone is woken.
        let mut state = None;
        loop {
            let read = std::task::ready!(side.reader.poll_frame(cx));
            // Authenticated connections: a reply that fails its MAC is never decoded.
            if let (Ok(Some(msg)), Some(verifier)) = (&read, side.verifier.as_mut()) {
                // Checked unlocked: callers starting calls do not wait for MACs.
                drop(state.take());
                if let Err(e) = verifier.verify(msg) {
                    self.close(crate::error::Report(&e).to_string());
                    return Poll::Ready(());
                }
            }
            match read {
                Ok(Some(msg))
                    if matches!(msg.msg_type, MessageType::Result | MessageType::Ping) =>
                {
                    let mine = msg.msg_type == MessageType::Result && Some(msg.seq) == reading;
                    let locked = state.get_or_insert_with(|| self.state.lock());
                    Self::deliver(locked, msg, reading, &mut side.settle);
                    side.run += 1;
                    if !side.reader.has_frame() {
                        drop(state.take());
                        self.burst.store(side.run, Ordering::Relaxed);
                        side.run = 0;
                        self.settle(&mut side.settle);
                    }
                    if mine {
                        return Poll::Ready(());
                    }
                }
                Ok(Some(msg)) => {
                    drop(state.take());
                    self.close(format!(
                        "protocol error: unexpected {:?} message from the daemon",
                        msg.msg_type
                    ));
                    return Poll::Ready(());
                }
                Ok(None) => {
                    drop(state.take());
                    self.close("the daemon closed the connection".into());
                    return Poll::Ready(());
                }
                Err(e) => {
                    // A reply over this proxy's `max_message_size` fails its own call alone:
                    // its bytes are read and dropped, and the calls sharing the connection go
                    // on. (Not under a MAC, which every message's bytes must pass.)
                    let skipped = match side.verifier {
                        None => side.reader.skip_oversized(),
                        Some(_) => None,
                    };
                    if let Some(header) = skipped.filter(|h| h.msg_type == MessageType::Result) {
                        let too_large = Error::Protocol(format!(
                            "the reply of {} bytes exceeds this proxy's max_message_size ({} \
                             bytes): the call ran, its result was dropped unread",
                            header.total_len(),
                            side.reader.max_message_size()
                        ));
                        let locked = state.get_or_insert_with(|| self.state.lock());
                        locked.replies += 1;
                        Self::hand_over(
                            locked,
                            header.seq,
                            Err(too_large),
                            reading,
                            &mut side.settle,
                        );
                        drop(state.take());
                        self.settle(&mut side.settle);
                        if Some(header.seq) == reading {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    drop(state.take());
                    self.close(crate::error::Report(&e).to_string());
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// An in-flight slot taken (its permit forgotten) for a call whose entry does not hold it yet:
/// given back when dropped, unless disarmed (`None`) once the entry holds it.
struct Slot<'a>(Option<&'a Semaphore>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(slots) = self.0 {
            slots.add_permits(1);
        }
    }
}

/// A call counted among those waiting for an in-flight slot, while it lives.
struct SlotWaiter<'a>(&'a ConnShared);

impl<'a> SlotWaiter<'a> {
    fn new(shared: &'a ConnShared) -> Self {
        shared.state.lock().slot_waiters += 1;
        shared.task_reads();
        SlotWaiter(shared)
    }
}

impl Drop for SlotWaiter<'_> {
    fn drop(&mut self) {
        self.0.state.lock().slot_waiters -= 1;
    }
}

/// A caller's wait for the reply to call `seq`.
struct ReplyWait<'a> {
    shared: &'a ConnShared,
    seq: u16,
    /// The reply was taken (or the entry removed): nothing to abandon.
    taken: bool,
    /// The call's entry was made, within the poll that polls this first, holding the caller's
    /// waker, and other calls were in flight then: if the reader task reads, this first poll
    /// has nothing to look at (a reply delivered meanwhile wakes the caller).
    registered: bool,
    /// The request's outbox ticket: a caller that stops waiting (its deadline, its future
    /// dropped) while the request is still queued takes it back (see `take_back`).
    unsent: Option<(&'a outbox::Sender<IoWriteHalf>, u64)>,
}

impl ReplyWait<'_> {
    /// Takes the request back if it is still queued, never written: its entry and in-flight
    /// slot go with it, and true is returned. (A request in a write, or written, stays: its
    /// reply may come, and the daemon may run it.)
    fn take_back(&mut self) -> bool {
        let Some((tx, ticket)) = self.unsent.take() else {
            return false;
        };
        if self.taken || !tx.withdraw(ticket) {
            return false;
        }
        self.taken = true;
        let gone = self.shared.state.lock().pending.remove(&self.seq);
        if gone.is_some_and(|p| p.slot) {
            self.shared.slots.add_permits(1);
        }
        self.shared.release(self.seq);
        true
    }
}

impl Future for ReplyWait<'_> {
    type Output = Result<Message, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (shared, seq) = (self.shared, self.seq);
        if std::mem::take(&mut self.registered) && shared.role() == TASK {
            return Poll::Pending;
        }
        loop {
            let mut state = shared.state.lock();
            let arrived = match state.pending.get_mut(&seq) {
                Some(Pending {
                    reply: Reply::Waiting(waker),
                    ..
                }) => {
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                    None
                }
                Some(_) => Some(state.pending.remove(&seq)),
                None => Some(None),
            };
            let alone = state.alone(seq);
            drop(state);
            if let Some(arrived) = arrived {
                self.taken = true;
                shared.release(seq);
                return Poll::Ready(match arrived.map(|p| p.reply) {
                    // The connection ended with this call still queued, or dropped from the
                    // queue unwritten: it never reached the daemon, and may be sent again.
                    Some(Reply::Arrived(Err(e @ Error::ConnectionClosed(_))))
                        if self.unsent.take().is_some_and(|(tx, t)| tx.withdraw(t)) =>
                    {
                        Err(e.not_sent())
                    }
                    Some(Reply::Arrived(reply)) => reply,
                    _ => Err(Error::ConnectionClosed("connection closed".into())),
                });
            }
            // The common case with calls in flight: the reader task reads for them all.
            if !alone && shared.role() == TASK {
                return Poll::Pending;
            }
            // Decided again with the read side locked, and the role taken under the same
            // state lock that calls, pings and slot waiters register under: one that registers
            // after this sees the role and hands the reading back to the task.
            let mut side = shared.side.lock();
            let state = shared.state.lock();
            // The reply may have been read meanwhile (by the reader task, or `look`).
            if !matches!(
                state.pending.get(&seq),
                Some(Pending {
                    reply: Reply::Waiting(_),
                    ..
                })
            ) {
                continue;
            }
            if state.alone(seq) {
                shared.role.store(caller(seq), Ordering::Release);
                drop(state);
            } else {
                drop(state);
                shared.to_task(&mut side);
                return Poll::Pending;
            }
            if shared.pump(&mut side, cx, Some(seq)).is_pending() {
                return Poll::Pending;
            }
            // The reply is in (or the connection ended): take it.
        }
    }
}

impl Drop for ReplyWait<'_> {
    fn drop(&mut self) {
        if self.taken || self.take_back() {
            return;
        }
        let mut state = self.shared.state.lock();
        let mut abandoned = false;
        let gone = match state.pending.get_mut(&self.seq) {
            Some(p) if matches!(p.reply, Reply::Waiting(_)) => {
                p.reply = Reply::Abandoned;
                abandoned = true;
                self.shared.gave_up();
                let now = tokio::time::Instant::now();
                state.last_abandoned = Some(now);
                if state.silent_since.is_none() {
                    state.silent_since = Some((now, state.replies));
                    self.shared.given_up.store(true, Ordering::Release);
                }
                None
            }
            // Its reply came, and goes unread: a stream it opened is noted to be closed.
            Some(_) => {
                let gone = state.pending.remove(&self.seq);
                if let Some(Pending {
                    reply: Reply::Arrived(Ok(reply)),
                    ..
                }) = &gone
                {
                    if state.note_orphan_stream(reply) {
                        self.shared.orphans.store(true, Ordering::Release);
                    }
                }
                gone
            }
            None => None,
        };
        drop(state);
        if gone.is_some_and(|p| p.slot) {
            self.shared.slots.add_permits(1);
        }
        // Only a call whose giving up leaves every slot held by calls given up on wedges the
        // connection: the slot waiters look then, not at every call given up on.
        if abandoned
            && self.shared.slots.available_permits() == 0
            && self.shared.wedged_since().is_some()
        {
            self.shared.abandoned.notify_waiters();
        }
        // A late reply is still to come: the reader task takes it in.
        self.shared.release(self.seq);
    }
}

/// What a request is encoded for: the serializer, protocol and object of a connection (open,
/// or about to be).
/// A batch of stream closes under way on a connection (see [`ConnShared::closing`]).
pub(super) struct ClosesUnderWay(Arc<ConnShared>);

impl Drop for ClosesUnderWay {
    fn drop(&mut self) {
        self.0.closes.fetch_sub(1, Ordering::AcqRel);
        self.0.closes_done.notify_waiters();
    }
}

pub(super) struct Wire<'a> {
    pub(super) serializer: Serializer,
    pub(super) protocol: Protocol,
    pub(super) object: &'a str,
}

/// A call's INVOKE to send right behind the CONNECT, before the daemon's answer: a call that
/// opens a connection then waits one round trip, not two. (Pyro daemons, rmi's among them,
/// read nothing after a CONNECT until they have answered it, and nothing at all after
/// refusing it.)
pub(super) struct FirstCall<'a> {
    /// The INVOKE, encoded for the connection's [`Wire`]; its sequence number is set here.
    pub(super) msg: Message,
    /// Set once the INVOKE is on the socket, cleared if the daemon refuses the CONNECT: while
    /// set, a failure may come after the call ran, so it must not be sent again as unsent.
    pub(super) may_have_run: &'a AtomicBool,
}

/// What opening a connection found.
pub(super) enum Opened {
    /// The handshake succeeded; with the sequence number of the [`FirstCall`] sent with it,
    /// whose reply is to be awaited with [`Connection::reply`].
    Ready(Connection, Option<u16>),
    /// The daemon answered in another protocol than the CONNECT's (a Pyro4 daemon refuses a
    /// Pyro5 header with a CONNECTFAIL in protocol 48): dial again, speaking that one.
    Speaks(Protocol),
}

/// The daemon's next handshake message, inflated.
/// (A Pyro daemon may compress it; rmi daemons never compress handshake messages, so
/// inflating before a shared secret's MAC check never meets a signed compressed message.)
async fn next<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Message, Error> {
    let mut msg = next_as_sent(reader).await?;
    inflate(&mut msg, reader.max_message_size())?;
    Ok(msg)
}

/// The daemon's next handshake message as it was sent: compressed if it was (Pyro4's HMAC
/// covers the bytes sent).
async fn next_as_sent<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Message, Error> {
    reader.read_frame().await?.ok_or_else(|| {
        Error::ConnectionClosed("daemon closed the connection during the handshake".into())
    })
}

/// Inflates a compressed handshake message.
fn inflate(msg: &mut Message, max: usize) -> Result<(), Error> {
    msg.decompress(max)
        .map_err(|e| Error::Protocol(e.to_string()))
}

/// Why a proxy with Pyro4's HMAC key refuses the daemon's first answer (`reason`, Pyro4's
/// words): the daemon's own refusal when it sent one, else what the missing or wrong MAC says.
fn hmac_refusal(
    reason: &str,
    mut reply: Message,
    protocol: Protocol,
    limits: &DecodeLimits,
) -> Error {
    let unsigned = reply.annotation(&MAC_ANNOTATION).is_none();
    let refused = reply.msg_type == MessageType::ConnectFail
        && reply.decompress(limits.max_message_size).is_ok();
    Error::ConnectFailed(if refused {
        let said = refusal(&reply, protocol, limits);
        format!(
            "the daemon refused the connection: {said} ({reason}: its answer does not carry the \
             MAC of this proxy's HMAC key)"
        )
    } else if unsigned {
        format!(
            "{reason}: the daemon's answer carries no MAC: it has no HMAC key (Python's Pyro5 \
             daemons never do)"
        )
    } else {
        format!(
            "{reason}: the daemon's answer does not carry the MAC of this proxy's HMAC key: is \
             the daemon's key the same?"
        )
    })
}

/// The reason in a CONNECTFAIL: in the connection's serializer, or in marshal (how Pyro words a
/// refusal before it has agreed on a serializer).
fn refusal(reply: &Message, protocol: Protocol, limits: &DecodeLimits) -> String {
    protocol
        .serializer(reply.serializer)
        .and_then(|ser| ser.decode::<String>(&reply.payload, limits).ok())
        .or_else(|| codec::decode_marshal_str(&reply.payload))
        .unwrap_or_else(|| "(undecodable reason)".into())
}

impl Connection {
    /// Performs the CONNECT handshake on `stream` to `direct`'s object, speaking `protocol`, and starts the reader
    /// and writer tasks.
    ///
    /// The serializer: the configured one for everything (bincode with a shared secret, which
    /// only rmi daemons speak); or, when none is configured, the CONNECT goes in serpent (which
    /// every Pyro daemon reads) offering bincode in [`SERIALIZER_ANNOTATION`], and calls use
    /// what the CONNECTOK names there (an rmi daemon names bincode), else the serializer the
    /// CONNECTOK came in (serpent from a Python daemon, which says nothing).
    pub(super) async fn open(
        stream: BoxIo,
        direct: Arc<Uri>,
        config: &ProxyBuilder,
        protocol: Protocol,
        first: Option<FirstCall<'_>>,
    ) -> Result<Opened, Error> {
        let object = direct.object().unwrap_or_default();
        // (Where a daemon's guesses at the secret are counted: see below.)
        let peer_ip = config
            .secret
            .as_ref()
            .and_then(|_| transport::peer_ip(&stream));
        let (mut reader, mut writer) = transport::split_io(stream, config.limits.max_message_size);
        // A daemon that speaks the other protocol is recognised by its answer's header.
        reader.accept_either_protocol();
        // Replies go to their callers, who decode them after the reader has read on.
        reader.hand_messages_off();
        // A large `Vec<u8>` result an rmi daemon announces arrives in a buffer of its own.
        reader.split_bulk(MessageType::Result);
        writer.set_protocol(protocol);
        // Only rmi daemons run the shared-secret handshake: with a secret there is nothing to
        // negotiate, bincode it is.
        let configured = config.serializer.or_else(|| {
            config
                .secret
                .as_ref()
                .map(|_| Serializer::Bincode)
                .filter(|_| protocol == Protocol::Pyro5)
        });
        let connect_ser = configured.unwrap_or(Serializer::Serpent);
        let request = ConnectRequestRef {
            handshake: &config.handshake,
            object,
        };
        let payload = Bytes::from(connect_ser.encode_in(protocol, &request)?);
        // Pyro4 sends the metadata only when asked (as Pyro4's own proxies ask).
        let flags = match protocol {
            Protocol::Pyro4 => FLAGS_META_ON_CONNECT,
            Protocol::Pyro5 => 0,
        };
        // (A configured serializer is offered alone: an rmi daemon's answer says the daemon is
        // rmi's, which runs a connection's calls concurrently; a Pyro daemon does not answer.
        // Under a shared secret, which only rmi daemons take, the CONNECT carries its request
        // and the SPAKE2 message alone.)
        let secret = config.secret.is_some();
        let offer = (protocol == Protocol::Pyro5 && !secret).then(|| {
            let id = configured.map_or(Serializer::BINCODE_ID, |ser| protocol.serializer_id(ser));
            (SERIALIZER_ANNOTATION, Bytes::copy_from_slice(&[id]))
        });
        let connect_message = || {
            let mut msg = Message::new(
                MessageType::Connect,
                protocol.serializer_id(connect_ser),
                flags,
                0,
                payload.clone(),
            );
            msg.annotations.extend(offer.clone());
            msg
        };
        let mut connect = connect_message();
        // (A daemon that failed to prove the secret too often lately gets no more guesses,
        // counted per host as the daemon counts its clients.)
        let offering = match (&config.secret, direct.location()) {
            (Some(_), location) => {
                let location = location.map(|l| l.to_string()).unwrap_or_default();
                let host = crate::auth::guesser(peer_ip, &location);
                Some(crate::auth::ClientGuesses::get().may_offer(&host, &location)?)
            }
            _ => None,
        };
        let auth = config
            .secret
            .as_ref()
            .map(|secret| crate::auth::ClientHandshake::start(secret, &mut connect));
        // With Pyro4's HMAC key every message is signed from the CONNECT on.
        let mut keyed = config
            .hmac_key
            .as_ref()
            .map(|key| crate::auth::hmac_session(key, protocol));
        if let Some((signer, _)) = keyed.as_mut() {
            signer.sign(&mut connect);
        }
        // The first call goes right behind the CONNECT (never where the daemon must prove
        // itself first, or where its answer is yet to be checked: see `ProxyBuilder::early_serializer`).
        // Nor behind a CONNECT over rmi daemons' bound: an rmi daemon refuses it unread, but a
        // Python one may take it, run the call, and die before it answers; the call then waits
        // for the CONNECTOK, and a close before that is a refusal of a call never sent.
        let first = first.filter(|_| {
            auth.is_none()
                && config.early_serializer().is_some()
                && connect.size() <= crate::protocol::MAX_HANDSHAKE_SIZE
        });
        // An rmi daemon closes on a CONNECT over its bound without reading it: the close (seen
        // while writing the rest of it, or as the answer) is said as that refusal (another dial
        // would get the same), not as an outage to retry.
        let over_bound = |e: Error| {
            if connect.size() > crate::protocol::MAX_HANDSHAKE_SIZE && e.is_connection() {
                Error::ConnectFailed(format!(
                    "the daemon closed the connection at a CONNECT of {} bytes, more than rmi \
                     daemons take (MAX_HANDSHAKE_SIZE, {} bytes): send less handshake data \
                     ({e})",
                    connect.size(),
                    crate::protocol::MAX_HANDSHAKE_SIZE
                ))
            } else {
                e
            }
        };
        let first_seq = match first {
            Some(FirstCall {
                mut msg,
                may_have_run,
            }) => {
                msg.seq = FIRST_SEQ;
                if let Some((signer, _)) = keyed.as_mut() {
                    signer.sign(&mut msg);
                }
                writer.queue(&connect);
                // Under TLS, two writes make two records: a Python daemon reads the CONNECT's
                // record through OpenSSL's buffer and then waits on the socket (its multiplex
                // server selects on it), where the INVOKE's record must still be.
                #[cfg(feature = "tls")]
                if config.tls.is_some() {
                    writer.flush().await.map_err(over_bound)?;
                }
                writer.queue(&msg);
                writer.flush().await.map_err(over_bound)?;
                may_have_run.store(true, Ordering::Release);
                Some((FIRST_SEQ, may_have_run))
            }
            None => {
                writer.write_frame(&connect).await.map_err(over_bound)?;
                None
            }
        };
        // A refusal is an answer: the daemon read nothing after the CONNECT.
        let refused = || {
            if let Some((_, may_have_run)) = first_seq {
                may_have_run.store(false, Ordering::Release);
            }
        };
        let mut reply = match next_as_sent(&mut reader).await.map_err(over_bound) {
            Ok(reply) => reply,
            Err(e @ Error::ConnectFailed(_)) => {
                refused();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match reader.protocol() {
            Some(answered) if answered != protocol => {
                refused();
                return Ok(Opened::Speaks(answered));
            }
            _ => {}
        }
        // With a shared secret (see crate::auth): the daemon proves it first, and nothing more is
        // sent unless it did; then the client proves it with a second, signed CONNECT, and the
        // daemon's real answer comes signed.
        // With Pyro4's HMAC key the answer must carry the key's MAC, over the bytes sent (a
        // Pyro4 daemon may compress its answer).
        if let Some(key) = &config.hmac_key {
            if let Err(reason) = crate::auth::pyro4_check(Some(key), protocol, &reply) {
                refused();
                return Err(hmac_refusal(reason, reply, protocol, &config.limits));
            }
        }
        inflate(&mut reply, reader.max_message_size())?;
        let (signer, verifier) = match (auth, keyed) {
            (_, Some((signer, verifier))) => (Some(signer), Some(verifier)),
            (Some(auth), None) if reply.msg_type != MessageType::ConnectFail => {
                let (mut signer, mut verifier) =
                    auth.confirm(&connect, &reply).inspect_err(|e| {
                        // (Only an answer with the daemon's half of the exchange was a guess.)
                        let answered = reply.annotation(&crate::protocol::names::PAKE_ANNOTATION);
                        if matches!(e, Error::ConnectFailed(_)) && answered.is_some() {
                            if let Some(offering) = &offering {
                                crate::auth::ClientGuesses::get().failed(offering);
                            }
                        }
                    })?;
                signer.set_protocol(protocol);
                verifier.set_protocol(protocol);
                let mut proof = connect_message();
                signer.sign(&mut proof);
                writer.write_frame(&proof).await?;
                reply = next(&mut reader).await?;
                verifier.verify(&reply)?;
                (Some(signer), Some(verifier))
            }
            _ => (None, None),
        };
        let (meta, answered_in) = match reply.msg_type {
            MessageType::ConnectOk => {
                let ser = protocol.serializer(reply.serializer).ok_or_else(|| {
                    Error::Protocol(format!(
                        "CONNECTOK in unknown serializer id {}",
                        reply.serializer
                    ))
                })?;
                // A Pyro4 daemon not asked for metadata answers with the bare handshake answer.
                let ok = if protocol.meta_on_connect(&reply) {
                    ser.decode::<ConnectOk>(&reply.payload, &config.limits)?
                } else {
                    ConnectOk {
                        handshake: ser.decode(&reply.payload, &config.limits)?,
                        meta: Metadata::default(),
                    }
                };
                if let Some(validate) = &config.validate_answer {
                    validate(&ok.handshake.to_string()).map_err(Error::ConnectFailed)?;
                }
                (ok.meta, ser)
            }
            MessageType::ConnectFail => {
                refused();
                let mut reason = refusal(&reply, protocol, &config.limits);
                if reason.starts_with("unknown object") {
                    return Err(Error::UnknownObject(object.to_owned()));
                }
                if reason == crate::auth::HMAC_NOT_SYMMETRIC && config.hmac_key.is_none() {
                    reason.push_str(
                        ": the daemon requires Pyro4's HMAC key (ProxyBuilder::hmac_key), or \
                         refuses one",
                    );
                }
                return Err(Error::ConnectFailed(reason));
            }
            other => {
                return Err(Error::Protocol(format!(
                    "expected CONNECTOK or CONNECTFAIL, got {other:?}"
                )))
            }
        };
        // The serializer for calls: the configured one, or the one the daemon picked from the
        // offer, or the one it answered in (a Pyro daemon answers in the CONNECT's; a daemon
        // answering in bincode speaks it).
        let rmi_peer = secret || reply.annotation(&SERIALIZER_ANNOTATION).is_some();
        let in_order = protocol == Protocol::Pyro4 || !rmi_peer;
        let serializer = match configured {
            Some(ser) => ser,
            None => reply
                .annotation(&SERIALIZER_ANNOTATION)
                .and_then(|picked| match picked.as_ref() {
                    [id] => protocol.serializer(*id),
                    _ => None,
                })
                .unwrap_or(answered_in),
        };
        // A Python daemon over TLS gets one call at a time, as from Pyro's own proxies. Its
        // multiplex server reads one request each time the socket is readable; requests
        // written together share a TLS record, which OpenSSL decrypts whole, and those after
        // the first then wait in its buffer, where readiness does not show them, for ever.
        // (Its threaded server reads a connection's requests one at a time anyway.)
        #[cfg(feature = "tls")]
        let one_at_a_time = in_order && config.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let one_at_a_time = false;
        let max = if one_at_a_time {
            1
        } else {
            config.max_in_flight
        };
        let slots = Arc::new(Semaphore::new(max));
        let mut pending = InFlight::default();
        if let Some((seq, _)) = first_seq {
            // The first call's reply may be read already: its entry is there before any read.
            pending.insert(
                seq,
                Pending {
                    reply: Reply::Waiting(None),
                    slot: slots.try_acquire().map(SemaphorePermit::forget).is_ok(),
                },
            );
        }
        let shared = Arc::new(ConnShared {
            state: Mutex::new(ConnState {
                pending,
                pings: VecDeque::new(),
                slot_waiters: 0,
                stuck_oneways: 0,
                next_seq: FIRST_SEQ + u16::from(first_seq.is_some()),
                closed: None,
                strays: 0,
                last_abandoned: None,
                replies: 0,
                silent_since: None,
                orphan_streams: Vec::new(),
            }),
            slots,
            closed: std::sync::atomic::AtomicBool::new(false),
            in_order,
            rmi_peer,
            retired: AtomicBool::new(false),
            burst: AtomicUsize::new(0),
            side: Mutex::new(ReadSide {
                reader,
                verifier,
                run: 0,
                settle: Settle::default(),
            }),
            role: AtomicU32::new(TASK),
            reader_task: AtomicWaker::new(),
            writer_stop: AtomicWaker::new(),
            tickets: AtomicU64::new(1),
            orphans: AtomicBool::new(false),
            closes: AtomicUsize::new(0),
            closes_done: tokio::sync::Notify::new(),
            abandoned: tokio::sync::Notify::new(),
            given_up: AtomicBool::new(false),
        });
        let busy_shared = shared.clone();
        // Another call in flight, or callers of replies that came together about to send:
        // their requests share a write.
        let busy = Box::new(move || {
            max - busy_shared.slots.available_permits() >= 2
                || busy_shared.burst.load(Ordering::Relaxed) > 0
        });
        let (tx, out) = transport::outbox(writer, busy, signer, None);
        // (Made before the task is spawned: a runtime that shuts down before the task first
        // runs drops it unstarted.)
        let unfinished = CloseIfDropped(Some(shared.clone()));
        // Boxed, as the daemon's writer task is (see daemon/connection.rs): a future of about
        // a kilobyte is otherwise copied whole as tokio moves it.
        let closed = shared.clone();
        let stop = std::future::poll_fn(move |cx| {
            closed.writer_stop.register(cx.waker());
            if closed.is_closed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::spawn(Box::pin(async move {
            let unfinished = unfinished;
            let ended = out
                .run_until(transport::WriteDeadline::default(), stop)
                .await;
            let closer = unfinished.disarm();
            if let Err(e) = ended {
                closer.close(crate::error::Report(&e).to_string());
            }
        }));
        tokio::spawn(reader_task(shared.clone()));
        Ok(Opened::Ready(
            Connection {
                tx,
                shared,
                serializer,
                protocol,
                direct,
                meta,
            },
            first_seq.map(|(seq, _)| seq),
        ))
    }

    /// What calls on this connection are encoded for.
    pub(super) fn wire(&self) -> Wire<'_> {
        Wire {
            serializer: self.serializer,
            protocol: self.protocol,
            object: self.object(),
        }
    }

    /// The object this connection is to.
    pub(super) fn object(&self) -> &str {
        self.direct.object().unwrap_or_default()
    }

    /// Waits for the reply to the [`FirstCall`] sent with the CONNECT, numbered `seq`.
    ///
    /// Must be called as soon as the connection opened, with no wait between: until then
    /// nobody would abandon the call's entry if the caller went away.
    pub(super) async fn reply(
        &self,
        seq: u16,
        timeout: Option<Duration>,
    ) -> Result<Message, Error> {
        let wait = ReplyWait {
            shared: &self.shared,
            seq,
            taken: false,
            registered: false,
            unsent: None,
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::Timeout(t))?,
            None => wait.await,
        }
    }

    /// Sends an INVOKE (its sequence number is filled in here) and waits for its reply.
    ///
    /// A call that finds every in-flight slot held by calls their callers abandoned (timed out
    /// or dropped, their replies never coming) for `abandoned_timeout` closes the connection,
    /// so the proxy redials instead of hanging for ever.
    pub(super) async fn request(
        &self,
        mut msg: Message,
        timeout: Option<Duration>,
        abandoned_timeout: Duration,
    ) -> Result<Message, Error> {
        // One deadline for the whole call: waiting for an in-flight slot counts too.
        // A timeout too long to represent as an instant is no timeout.
        let deadline =
            timeout.and_then(|t| tokio::time::Instant::now().checked_add(t).map(|at| (at, t)));
        // A connection that went silent after calls were given up on (a peer gone without a
        // close, a write stuck on a socket nobody reads): this call goes out on a new one. The
        // slots need not all be held for it to be noticed (see `slot`).
        self.close_if_silent(abandoned_timeout, deadline).await?;
        match self.shared.slots.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => self
                .slot(deadline, abandoned_timeout, &mut msg)
                .await?
                .forget(),
        }
        // The slot is given back by this guard until the call's entry holds it.
        let mut slot = Slot(Some(&self.shared.slots));
        // The entry holds the caller's waker from the start: the reply's first poll need not
        // take the lock to leave it (see `ReplyWait::registered`).
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let mut pending = Some(Pending {
            reply: Reply::Waiting(Some(waker)),
            slot: true,
        });
        let (seq, registered) = match self.try_take_seq(&mut pending)? {
            Some((seq, alone)) => (seq, !alone),
            None => (self.take_seq(pending).await?, false),
        };
        slot.0 = None;
        // From here the reply is this caller's to take; if it stops waiting, the entry stays
        // (holding its slot) until the reply comes or the connection dies.
        let mut wait = ReplyWait {
            shared: &self.shared,
            seq,
            taken: false,
            registered,
            unsent: None,
        };
        msg.seq = seq;
        // This caller may be one of a burst the reader woke: one fewer of them to come.
        let _ = self
            .shared
            .burst
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        // A call given up (its deadline, its future dropped) while still queued is taken back
        // (see `ReplyWait::take_back`).
        let ticket = self.shared.tickets.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Outgoing {
                ticket,
                // A call that waited (for a slot, or in the outbox behind other writes) tells
                // the daemon the time its caller has left when it is written, not the whole
                // timeout it was encoded with: the daemon cancels the method when its caller
                // stops waiting, not that long after.
                deadline: deadline.map(|(at, _)| at),
                ..msg.into()
            })
            .is_err()
        {
            wait.taken = true;
            let gone = self.shared.state.lock().pending.remove(&seq);
            if gone.is_some_and(|p| p.slot) {
                self.shared.slots.add_permits(1);
            }
            return Err(self.closed_error().not_sent());
        }
        wait.unsent = Some((&self.tx, ticket));
        let Some((at, t)) = deadline else {
            return wait.await;
        };
        match tokio::time::timeout_at(at, &mut wait).await {
            Ok(reply) => reply,
            // Still queued behind other writes (a large argument the daemon reads slowly, say):
            // taken back, with its entry and slot, so the daemon never runs a call its caller
            // gave up on, and the caller knows it was not sent.
            Err(_) if wait.take_back() => Err(Error::Timeout(t).not_sent()),
            Err(_) => Err(Error::Timeout(t)),
        }
    }

    /// Waits for an in-flight slot for `msg`, until `deadline` if there is one; a call that
    /// never got a slot was never sent.
    async fn slot(
        &self,
        deadline: Option<(tokio::time::Instant, Duration)>,
        abandoned_timeout: Duration,
        msg: &mut Message,
    ) -> Result<OwnedSemaphorePermit, Error> {
        // The common case: a slot is free, with no clock read and no timer.
        match self.shared.slots.clone().try_acquire_owned() {
            Ok(slot) => return Ok(slot),
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(self.closed_error().not_sent())
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        // A small payload may share its allocation with many others (the encoder's arena):
        // one that waits, perhaps long, gets its own.
        if msg.payload.len() <= codec::ARENA_MAX {
            msg.payload = Bytes::copy_from_slice(&msg.payload);
        }
        // A slot comes free when a reply is read: make sure someone reads (a lone call that
        // holds the reading may not be polled again soon).
        let _waiting = SlotWaiter::new(&self.shared);
        // One place in the semaphore's queue for the whole wait: looks taken in between do
        // not send this caller to the back.
        let acquire = self.shared.slots.clone().acquire_owned();
        let mut acquire = std::pin::pin!(acquire);
        loop {
            // Told when a call given up on leaves the connection wedged, from before the look
            // below: the only way it becomes wedged while this caller waits (a reply frees a
            // slot, which the queue hands on).
            let abandoned = self.shared.abandoned.notified();
            let mut abandoned = std::pin::pin!(abandoned);
            abandoned.as_mut().enable();
            // Counted from the moment the connection wedged, not from this caller's arrival:
            // callers whose own deadlines are shorter than `abandoned_timeout` (each timing out
            // and leaving its call abandoned in turn) would otherwise never see it.
            let now = tokio::time::Instant::now();
            let wedged = self.shared.wedged_since();
            if wedged.is_some_and(|since| now.saturating_duration_since(since) >= abandoned_timeout)
            {
                let reason = format!(
                    "every in-flight slot was held by abandoned calls for {abandoned_timeout:?} (abandoned_timeout); reconnecting"
                );
                tracing::warn!(%reason, "closing the connection");
                self.shared.close(reason);
                return Err(self.closed_error().not_sent());
            }
            // Not wedged: nothing to look at again until a call is given up on (before, a
            // look every `abandoned_timeout`, which at zero woke the caller every millisecond).
            let step = wedged.and_then(|since| since.checked_add(abandoned_timeout));
            let until = match (deadline, step) {
                (Some((at, _)), Some(step)) => Some(at.min(step)),
                (Some((at, _)), None) => Some(at),
                (None, step) => step,
            };
            let timer = async {
                match until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                slot = &mut acquire => return slot.map_err(|_| self.closed_error().not_sent()),
                () = &mut abandoned => {}
                () = timer => {
                    if let Some((_, t)) =
                        deadline.filter(|(at, _)| tokio::time::Instant::now() >= *at)
                    {
                        return Err(Error::Timeout(t).not_sent());
                    }
                }
            }
        }
    }

    /// Takes the next free sequence number; with `pending`, reserves it until the reply comes.
    ///
    /// The in-flight limit does not bound the numbers in use: a reply that arrived frees its
    /// call's slot at once, but keeps its number until the caller comes back for it. With the
    /// limit at its largest, every number can be in use; this then yields until a caller has
    /// taken its reply, instead of searching for a free number under the lock for good.
    async fn take_seq(&self, mut pending: Option<Pending>) -> Result<u16, Error> {
        loop {
            if let Some((seq, _)) = self.try_take_seq(&mut pending)? {
                return Ok(seq);
            }
            tokio::task::yield_now().await;
        }
    }

    /// [`take_seq`](Self::take_seq) without waiting: `None` when every number is in use; with
    /// the number, whether the call is then alone on the connection (see [`ConnState::alone`]).
    fn try_take_seq(&self, pending: &mut Option<Pending>) -> Result<Option<(u16, bool)>, Error> {
        let mut state = self.shared.state.lock();
        if let Some(reason) = &state.closed {
            return Err(Error::ConnectionClosed(reason.clone()).not_sent());
        }
        let Some(seq) = state.pending.free_seq(state.next_seq) else {
            return Ok(None);
        };
        state.next_seq = seq.wrapping_add(1);
        if let Some(pending) = pending.take() {
            state.pending.insert(seq, pending);
        }
        Ok(Some((seq, state.alone(seq))))
    }

    /// Writes a oneway INVOKE; it holds an in-flight slot until it is on the socket.
    pub(super) async fn send_oneway(
        &self,
        mut msg: Message,
        timeout: Option<Duration>,
        abandoned_timeout: Duration,
    ) -> Result<(), Error> {
        let deadline =
            timeout.and_then(|t| tokio::time::Instant::now().checked_add(t).map(|at| (at, t)));
        // As for a call (see `request`): a proxy that makes only oneway calls redials too.
        self.close_if_silent(abandoned_timeout, deadline).await?;
        let _slot = self.slot(deadline, abandoned_timeout, &mut msg).await?;
        // Oneway calls take a number (as in Pyro) but never reserve it: no reply will come.
        msg.seq = self.take_seq(None).await?;
        let ticket = self.shared.tickets.fetch_add(1, Ordering::Relaxed);
        let (flushed, written) = oneshot::channel();
        self.tx
            .send(Outgoing {
                msg,
                flushed: Some(flushed),
                counted: None,
                ticket,
                deadline: None,
            })
            .map_err(|_| self.closed_error().not_sent())?;
        // The deadline covers the write too (a daemon that stops reading fills the socket).
        // A call given up (its deadline, its future dropped) is taken back if it is still
        // queued, so a stuck socket does not collect oneway calls nobody waits for.
        let mut unsent = Withdraw {
            tx: &self.tx,
            ticket: Some(ticket),
        };
        let mut written = written;
        let outcome = match deadline {
            Some((at, t)) => tokio::time::timeout_at(at, &mut written)
                .await
                .map_err(|_| Error::Timeout(t)),
            None => Ok((&mut written).await),
        };
        match outcome {
            Ok(Ok(())) => {
                unsent.ticket = None;
                Ok(())
            }
            // The writer ended without writing it: still queued, it never left (a connection
            // that closed while a large write ahead of it was under way, say).
            Ok(Err(_)) if unsent.withdraw() => Err(self.closed_error().not_sent()),
            Ok(Err(_)) => {
                unsent.ticket = None;
                Err(self.closed_error())
            }
            Err(timeout) if unsent.withdraw() => Err(timeout.not_sent()),
            // Partly written (or in the write under way): it may still arrive. Until its write
            // ends it counts as a call given up on: a connection on which nothing is read any
            // more (a peer gone without a word, its socket full) is dropped past
            // `abandoned_timeout`, as with a call stuck in its write.
            Err(timeout) => {
                {
                    let mut state = self.shared.state.lock();
                    state.stuck_oneways += 1;
                    if state.silent_since.is_none() {
                        state.silent_since = Some((tokio::time::Instant::now(), state.replies));
                        self.shared.given_up.store(true, Ordering::Release);
                    }
                }
                self.shared.gave_up();
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let _ = written.await;
                    let mut state = shared.state.lock();
                    state.stuck_oneways -= 1;
                    // The write ended: the peer took its bytes, a sign of life as a reply is.
                    // The silence counts again from now, if anything is still given up on.
                    if state.silent_since.is_some() {
                        state.silent_since = Some((tokio::time::Instant::now(), state.replies));
                    }
                });
                Err(timeout)
            }
        }
    }

    pub(super) async fn ping(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.shared.tickets.fetch_add(1, Ordering::Relaxed);
        let ping = Message::new(
            MessageType::Ping,
            frame::PING_SERIALIZER,
            0,
            0,
            Bytes::from_static(b"ping"),
        );
        let ping = Outgoing {
            ticket,
            ..ping.into()
        };
        {
            // Queued for its answer and handed to the outbox under one lock, so that pings
            // go out in the order their answers are awaited (answers are matched in order).
            let mut state = self.shared.state.lock();
            if let Some(reason) = &state.closed {
                return Err(Error::ConnectionClosed(reason.clone()));
            }
            state.pings.push_back((ticket, Some(tx)));
            if self.tx.send(ping).is_err() {
                state.pings.retain(|(t, _)| *t != ticket);
                drop(state);
                return Err(self.closed_error().not_sent());
            }
        }
        self.shared.task_reads();
        // A ping given up (its timeout, its future dropped) while still queued is taken back
        // with its place among the answers awaited: a stuck socket collects none of them.
        let unsent = UnsentPing {
            conn: self,
            ticket: Some(ticket),
        };
        let wait = async {
            rx.await
                .unwrap_or_else(|_| Err(self.closed_error()))
                .map(drop)
        };
        let answered = match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::Timeout(t)),
            None => Ok(wait.await),
        };
        match answered {
            Ok(answered) => {
                std::mem::forget(unsent);
                answered
            }
            Err(timeout) if unsent.withdraw() => Err(timeout.not_sent()),
            Err(timeout) => Err(timeout),
        }
    }

    /// Closes the connection, and fails the call about to be sent on it as unsent, when it went
    /// silent after calls were given up on (see [`ConnShared::silent_for`]) and does not answer
    /// a ping within [`SILENCE_PROBE`] (or the call's deadline, or `abandoned_timeout`, if
    /// shorter): a peer gone without a close, a write stuck on a socket nobody reads. The call
    /// goes out on a new one.
    ///
    /// The ping is what tells those from a daemon that is only running the given-up call on,
    /// with nothing else asked of it meanwhile (its caller idle): that connection is kept, and
    /// with it what lives on it, a `session` instance above all (helper-146 #1).
    async fn close_if_silent(
        &self,
        abandoned_timeout: Duration,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<(), Error> {
        if !self.shared.given_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(reason) = self.shared.silent_for(abandoned_timeout) else {
            return Ok(());
        };
        let left = deadline.map_or(Duration::MAX, |(at, _)| {
            at.saturating_duration_since(tokio::time::Instant::now())
        });
        let probe = SILENCE_PROBE.min(abandoned_timeout).min(left);
        if self.ping(Some(probe)).await.is_ok() {
            tracing::debug!("a silent connection answered a ping: kept");
            return Ok(());
        }
        tracing::warn!(%reason, "closing the connection");
        self.shared.close(reason);
        Err(self.closed_error().not_sent())
    }

    pub(super) fn closed_error(&self) -> Error {
        let state = self.shared.state.lock();
        Error::ConnectionClosed(
            state
                .closed
                .clone()
                .unwrap_or_else(|| "connection closed".into()),
        )
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last handle is gone: fail anything still waiting; the writer task ends when the
        // channel closes and shuts the socket down, which ends the reader.
        self.shared.close("proxy dropped".into());
    }
}

/// A oneway call handed to the outbox whose sender may stop waiting for its write: taken
/// back then (or when dropped) if it is still queued.
struct Withdraw<'a> {
    tx: &'a outbox::Sender<IoWriteHalf>,
    /// The call's ticket; `None` once it is written.
    ticket: Option<u64>,
}

impl Withdraw<'_> {
    /// Takes the call back if it is still queued: true if it was (it was never sent).
    fn withdraw(&mut self) -> bool {
        self.ticket
            .take()
            .is_some_and(|ticket| self.tx.withdraw(ticket))
    }
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// A ping handed to the outbox whose sender may stop waiting for its answer: taken back then
/// (or when dropped), with its place among the awaited answers, if it is still queued.
struct UnsentPing<'a> {
    conn: &'a Connection,
    ticket: Option<u64>,
}

impl UnsentPing<'_> {
    /// Takes the ping back if it is still queued: true if it was (it was never sent). If it
    /// was not, it is given up on as it is dropped.
    fn withdraw(mut self) -> bool {
        self.take_back()
    }

    /// Takes the ping back if it is still queued (its ticket gone then).
    fn take_back(&mut self) -> bool {
        let Some(ticket) = self.ticket else {
            return false;
        };
        // (Under the state lock, as pings are queued: an answer read meanwhile is for a ping
        // sent before this one. One whose place among the awaited answers was taken by an
        // answer already is not taken back: it goes out, and its answer pays that one back.)
        let mut state = self.conn.shared.state.lock();
        let Some(at) = state.pings.iter().position(|(t, _)| *t == ticket) else {
            return false;
        };
        if !self.conn.tx.withdraw(ticket) {
            return false;
        }
        state.pings.remove(at);
        self.ticket = None;
        true
    }

    /// Gives up on a ping that was written: its answer, if it ever comes, is still matched to
    /// it, and until then it counts as a call given up on does (`ConnShared::silent_for`), so
    /// that a connection on which nothing is read any more is dropped.
    fn abandon(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let mut state = self.conn.shared.state.lock();
        let Some((_, waiter)) = state.pings.iter_mut().find(|(t, _)| *t == ticket) else {
            return;
        };
        *waiter = None;
        self.conn.shared.gave_up();
        if state.silent_since.is_none() {
            state.silent_since = Some((tokio::time::Instant::now(), state.replies));
            self.conn.shared.given_up.store(true, Ordering::Release);
        }
    }
}

impl Drop for UnsentPing<'_> {
    fn drop(&mut self) {
        if !self.take_back() {
            self.abandon();
        }
    }
}

/// The sequence number of a connection's first call (0 is the CONNECT's).
const FIRST_SEQ: u16 = 1;

/// Held by a connection's writer task from its spawning: dropped before the task finished
/// (never run, or stopped halfway), the runtime it was spawned on has shut down, and the
/// connection's socket with it (its I/O driver is gone). The connection is then closed, so
/// that the next call, on another runtime, dials again: a socket whose runtime is gone looks
/// quiet to [`IoReadHalf::may_have_news`].
struct CloseIfDropped(Option<Arc<ConnShared>>);

impl CloseIfDropped {
    fn disarm(mut self) -> Arc<ConnShared> {
        self.0.take().expect("armed until now")
    }
}

impl Drop for CloseIfDropped {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.close("the runtime the connection ran on has shut down".into());
        }
    }
}

/// Reads replies while the reading is the task's (see [`TASK`]); ends with the connection.
async fn reader_task(shared: Arc<ConnShared>) {
    std::future::poll_fn(|cx| {
        shared.reader_task.register(cx.waker());
        if shared.is_closed() {
            return Poll::Ready(());
        }
        if shared.role() != TASK {
            return Poll::Pending;
        }
        let mut side = shared.side.lock();
        if shared.role() != TASK {
            return Poll::Pending;
        }
        shared.pump(&mut side, cx, None)
    })
    .await
}
