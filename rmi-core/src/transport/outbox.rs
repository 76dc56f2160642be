//! The way out to one connection's socket: messages handed in by callers (or calls), written
//! by the caller itself when the socket is free, else by the connection's writer task.
//!
//! A message sent when the connection is not busy is written by the task that produced it,
//! without blocking: one hand-off to another task and its wake-up fewer per message, which is
//! most of what a sequential call costs beyond its bytes. A producer with several messages at
//! hand (the daemon's request loop answering a batch of requests) collects them and sends them
//! together with [`Sender::send_all`] (the loop decides when: see daemon/connection.rs). Whatever the socket does not
//! take at once, and every message of a busy connection, goes to the writer task, which
//! coalesces what queued up meanwhile into one write and enforces the write deadlines.
//!
//! With a `signer` (shared-secret authentication), every message is signed under the same
//! lock that orders it onto the socket, so the signatures' counter follows the wire.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;

use super::{FrameWriter, Outgoing, QueuedBytes, WriteDeadline};
use crate::error::Error;
use crate::protocol::names;

/// Says whether other messages are about to follow (calls in flight): then a message waits
/// for the writer task, so that messages finishing together share one write.
pub type Busy = Box<dyn Fn() -> bool + Send + Sync>;

/// What the counted messages of an outbox ([`Outgoing::counted`]) hold until they are written:
/// an in-flight slot each (a permit taken from `slots` and forgotten) and their bytes in
/// `queued`. The outbox gives them back once per write, not once per message.
#[derive(Debug, Clone)]
pub struct Budget {
    /// In-flight slots.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Bytes queued and not yet written (and whatever else its owner counts there).
    pub queued: Arc<QueuedBytes>,
}

/// Slots and bytes of counted messages, to give back together.
#[derive(Default)]
struct Counted {
    slots: usize,
    bytes: usize,
}

impl Counted {
    fn add(&mut self, counted: Option<u32>) {
        if let Some(bytes) = counted {
            self.slots += 1;
            self.bytes += bytes as usize;
        }
    }
}

/// What a message still needs once its bytes are in a write (copied into the writer's buffer,
/// or a large payload's referenced from it): its notice and its counts, settled when the
/// write ends. Kept instead of the message itself: an `Outgoing` is 136 bytes, which every
/// move copies with `memcpy` (twice per call on a proxy's writer task, `perf`); this is 16.
struct Queued {
    flushed: Option<tokio::sync::oneshot::Sender<()>>,
    counted: Option<u32>,
}

impl Queued {
    /// `out`'s notice and counts, taken out of it.
    fn take(out: &mut Outgoing) -> Self {
        Queued {
            flushed: out.flushed.take(),
            counted: out.counted.take(),
        }
    }
}

impl From<Outgoing> for Queued {
    fn from(mut out: Outgoing) -> Self {
        Queued::take(&mut out)
    }
}

struct Shared<W> {
    state: Mutex<State<W>>,
    /// The writer task, woken when there is something to write or nobody left to send.
    writer_task: AtomicWaker,
    /// Live [`Sender`]s; the writer task ends when the last one is gone.
    senders: AtomicUsize,
    busy: Busy,
    budget: Option<Budget>,
}

impl<W> Shared<W> {
    /// Tells each of `outs` it is written (or, `written` false, that it never will be) and
    /// gives back what they counted.
    fn settle(&self, outs: impl IntoIterator<Item = Queued>, written: bool) {
        let mut counted = Counted::default();
        for out in outs {
            counted.add(out.counted);
            if let (Some(flushed), true) = (out.flushed, written) {
                let _ = flushed.send(());
            }
        }
        self.give_back(counted);
    }

    fn give_back(&self, counted: Counted) {
        if let (Some(budget), true) = (&self.budget, counted.slots > 0) {
            budget.slots.add_permits(counted.slots);
            budget.queued.release(counted.bytes);
        }
    }

    /// A message refused (the writer is gone): what it counted is given back now.
    fn refuse(&self, mut out: Outgoing) -> Outgoing {
        let mut counted = Counted::default();
        counted.add(out.counted.take());
        self.give_back(counted);
        out
    }
}

struct State<W> {
    /// Messages for the writer task, in order.
    queue: VecDeque<Outgoing>,
    /// Messages a sender started writing whose bytes the socket did not take at once: their
    /// bytes are in the idle writer's buffer; the writer task finishes them.
    unflushed: Vec<Queued>,
    /// The frame writer while the writer task is not writing with it.
    idle: Option<FrameWriter<W>>,
    signer: Option<crate::auth::Signer>,
    /// Set when the writer task failed or ended: nothing more is accepted.
    closed: bool,
    /// Tickets of the messages still queued when the writer task ended, dropped with no byte
    /// written: [`Sender::withdraw`] finds them here once.
    never_sent: Vec<u64>,
    /// The writer task was woken for what is queued and has not looked yet: later messages
    /// need no wake-up of their own (each costs a few atomic operations).
    woken: bool,
}

/// Hands messages to one connection's socket; cloned by everyone who sends on it.
pub struct Sender<W> {
    shared: Arc<Shared<W>>,
}

impl<W> std::fmt::Debug for Sender<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<W> Clone for Sender<W> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<W> Drop for Sender<W> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.writer_task.wake();
        }
    }
}

/// The writer task's end: run it with [`Writer::run`].
pub struct Writer<W> {
    shared: Arc<Shared<W>>,
}

impl<W> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// A way out to `writer`'s socket: the senders' end and the writer task's end.
///
/// `busy` is asked for every message (see [`Busy`]); `signer` signs every message in wire
/// order; counted messages hold slots and bytes of `budget` until written.
pub fn outbox<W: AsyncWrite + Unpin + Send>(
    writer: FrameWriter<W>,
    busy: Busy,
    signer: Option<crate::auth::Signer>,
    budget: Option<Budget>,
) -> (Sender<W>, Writer<W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            unflushed: Vec::new(),
            idle: Some(writer),
            signer,
            closed: false,
            never_sent: Vec::new(),
            woken: false,
        }),
        writer_task: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        busy,
        budget,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Writer { shared },
    )
}

impl<W: AsyncWrite + Unpin> Sender<W> {
    /// Sends `out`: written now, with anything held before it, when the connection is not
    /// busy and the socket is free and takes it at once; else left to the writer task. Gives
    /// the message back when the connection's writer is gone.
    ///
    /// What `out` holds (its counted slot and bytes, its `flushed` notice) is released once
    /// its bytes are on the socket (a refused message's counts at once).
    #[allow(clippy::result_large_err)]
    pub fn send(&self, out: Outgoing) -> Result<(), Outgoing> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(self.shared.refuse(out));
        }
        state.queue.push_back(out);
        if (self.shared.busy)() {
            self.wake_writer(state);
        } else {
            self.write_queued(state);
        }
        Ok(())
    }

    /// Queues the messages in `held` (leaving it empty) and writes what is queued, as
    /// [`flush`](Self::flush) does: for a sender that collected several messages itself, so
    /// that they take the lock once. Messages refused (the writer is gone) are dropped, their
    /// counts given back.
    pub fn send_all(&self, held: &mut Vec<Outgoing>) {
        let mut state = self.shared.state.lock();
        if state.closed {
            drop(state);
            held.drain(..).for_each(|out| drop(self.shared.refuse(out)));
            return;
        }
        state.queue.extend(held.drain(..));
        if !state.queue.is_empty() {
            self.write_queued(state);
        }
    }

    /// Wakes the writer task for what is queued, unless it was woken already.
    fn wake_writer(&self, mut state: parking_lot::MutexGuard<'_, State<W>>) {
        if !std::mem::replace(&mut state.woken, true) {
            drop(state);
            self.shared.writer_task.wake();
        }
    }

    /// Queues `out` behind what is queued, without writing it or waking the writer task: for
    /// a sender with more messages at hand, which promises a [`flush`](Self::flush) (or a
    /// [`send`](Self::send)) before it waits for anything. Everything held goes out in one
    /// write. Gives the message back when the connection's writer is gone.
    #[allow(clippy::result_large_err)]
    pub fn hold(&self, out: Outgoing) -> Result<(), Outgoing> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(self.shared.refuse(out));
        }
        state.queue.push_back(out);
        Ok(())
    }

    /// Takes back the message sent with `ticket` (non-zero) if it is still queued, not yet
    /// in a write: true if it was (it will never be sent). For a sender that stopped waiting
    /// for its message to be written (a deadline, a dropped future), so that a socket the
    /// peer does not read does not collect messages nobody waits for. Also true, once, for a
    /// message the writer task dropped unwritten as it ended: it was never sent either.
    pub fn withdraw(&self, ticket: u64) -> bool {
        debug_assert_ne!(ticket, 0, "a message without a ticket cannot be withdrawn");
        let mut state = self.shared.state.lock();
        let Some(at) = state.queue.iter().position(|out| out.ticket == ticket) else {
            let never_sent = &mut state.never_sent;
            return match never_sent.iter().position(|&t| t == ticket) {
                Some(at) => {
                    never_sent.swap_remove(at);
                    true
                }
                None => false,
            };
        };
        let out = state.queue.remove(at);
        drop(state);
        self.shared.settle(out.map(Queued::from), false);
        true
    }

    /// Writes what is held now if the socket is free and takes it at once; else leaves it to
    /// the writer task.
    pub fn flush(&self) {
        let state = self.shared.state.lock();
        if !state.queue.is_empty() {
            self.write_queued(state);
        }
    }

    /// Writes the queue from this task when the writer is idle; what the socket does not take
    /// at once (or everything, when the writer task is writing) is left to the writer task.
    fn write_queued(&self, mut state: parking_lot::MutexGuard<'_, State<W>>) {
        let State {
            queue,
            unflushed,
            idle,
            signer,
            ..
        } = &mut *state;
        let writer = match idle.as_mut() {
            Some(writer) if unflushed.is_empty() => writer,
            _ => return self.wake_writer(state),
        };
        loop {
            let taken = batch(queue, writer, signer);
            if !writer.write_now() {
                unflushed.extend(queue.drain(..taken).map(Queued::from));
                return self.wake_writer(state);
            }
            self.shared
                .settle(queue.drain(..taken).map(Queued::from), true);
            if queue.is_empty() {
                return;
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes what senders queue until the last sender is gone, then shuts the stream down.
    ///
    /// What queued up while the task was away is coalesced into one write; when `busy` says
    /// other calls are in flight, the task yields once first, so that replies (or requests)
    /// finishing together share the write.
    ///
    /// A batch not written within `deadline` (a peer that stopped reading, or reads a
    /// trickle) fails the task, and every sender with it. A counted message's slot is given
    /// back only once it is written, so replies a peer does not read keep their slots and the
    /// daemon stops reading its requests.
    pub async fn run(self, deadline: WriteDeadline) -> Result<(), Error> {
        self.run_until(deadline, std::future::pending()).await
    }

    /// Like [`run`](Self::run), but stops when `stop` completes and the writer is waiting
    /// (for messages, or in the middle of a write or shutdown the peer does not take): the
    /// socket's write half is dropped there, whatever is queued is dropped unwritten, and
    /// senders are refused from then on. (A writer stopped while idle, with nothing left
    /// unwritten, still shuts the stream down, within `SHUTDOWN_TIMEOUT`.) For a
    /// connection found dead while its writer may be parked on a full socket, which would
    /// otherwise keep it open until the peer read again. A writer that can still finish (the
    /// last sender gone, the socket taking the rest) finishes as `run` does.
    pub async fn run_until(
        self,
        deadline: WriteDeadline,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let mut stop = std::pin::pin!(stop);
        let (result, stopped) = tokio::select! {
            biased;
            result = self.write_all(deadline) => (result, false),
            () = &mut stop => (Ok(()), true),
        };
        let (writer, dropped) = {
            let mut state = self.shared.state.lock();
            state.closed = true;
            let dropped = (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.unflushed),
            );
            // (The unflushed ones may have been written in part: not among them.)
            state.never_sent = dropped
                .0
                .iter()
                .map(|out| out.ticket)
                .filter(|&t| t != 0)
                .collect();
            (state.idle.take(), dropped)
        };
        let nothing_dropped = dropped.0.is_empty() && dropped.1.is_empty();
        // Messages that can no longer be written give back their slots and bytes now; their
        // `flushed` notices are dropped, which tells their senders.
        self.shared.settle(
            dropped.0.into_iter().map(Queued::from).chain(dropped.1),
            false,
        );
        match (&result, writer) {
            (Ok(()), Some(mut writer)) if !stopped => tokio::select! {
                biased;
                () = writer.shutdown() => {}
                () = stop => {}
            },
            // Stopped while waiting for messages, with none left unwritten (a proxy dropped
            // as its last sender went): still a clean end, a TLS close_notify included,
            // within `SHUTDOWN_TIMEOUT`. A writer stopped in a write is not there to shut.
            (Ok(()), Some(mut writer)) if nothing_dropped => writer.shutdown().await,
            _ => {}
        }
        result
    }

    async fn write_all(&self, deadline: WriteDeadline) -> Result<(), Error> {
        let shared = &*self.shared;
        // (Settled as unwritten if this future is dropped in a write: `run_until` stopped
        // it. Their slots and bytes would be counted for good otherwise, and a daemon waits
        // for those slots before it lets a connection's calls go.)
        let mut written = Unsettled {
            shared,
            outs: Vec::new(),
        };
        let written = &mut written.outs;
        loop {
            let more = std::future::poll_fn(|cx| {
                shared.writer_task.register(cx.waker());
                let mut state = shared.state.lock();
                if !state.queue.is_empty() || !state.unflushed.is_empty() {
                    // (`woken` stays set until the queue is taken below.)
                    Poll::Ready(true)
                } else if shared.senders.load(Ordering::Acquire) == 0 {
                    Poll::Ready(false)
                } else {
                    // Whatever woke the task was written by a sender itself.
                    state.woken = false;
                    Poll::Pending
                }
            })
            .await;
            if !more {
                return Ok(());
            }
            if (shared.busy)() {
                tokio::task::yield_now().await;
            }
            let mut writer = {
                let mut state = shared.state.lock();
                // From here a message queued wakes the task again, for the next write.
                state.woken = false;
                let mut writer = state.idle.take().expect("only this task takes the writer");
                written.append(&mut state.unflushed);
                let State { queue, signer, .. } = &mut *state;
                // Bytes a sender left unwritten go first; a request with a deadline waits for
                // the next write, to be stamped once they are out (see `batch`).
                if written.is_empty() || !queue.iter().any(|out| out.deadline.is_some()) {
                    let taken = batch(queue, &mut writer, signer);
                    // (Only their notices and counts are kept: see `Queued`.)
                    written.extend(queue.drain(..taken).map(Queued::from));
                }
                writer
            };
            if let Err(e) = writer.flush_within(deadline).await {
                shared.settle(written.drain(..), false);
                return Err(e);
            }
            shared.state.lock().idle = Some(writer);
            shared.settle(written.drain(..), true);
        }
    }
}

/// A message this large (or with a payload of its own, `payload_tail`) is a write long enough
/// to end its batch when a request with a deadline comes after it.
const LARGE_WRITE: usize = 64 << 10;

/// Queues into `writer` the messages at the front of `queue` that go out in one write, and says
/// how many: all of them, unless a large one is followed by a request with a deadline, which
/// then waits for the next write, so that the time its caller has left is stamped once the
/// large one is out (a daemon not yet reading may take seconds over it), not before.
fn batch<W: AsyncWrite + Unpin>(
    queue: &mut VecDeque<Outgoing>,
    writer: &mut FrameWriter<W>,
    signer: &mut Option<crate::auth::Signer>,
) -> usize {
    let mut now = None;
    let mut taken = 0;
    while let Some(out) = queue.get_mut(taken) {
        let large = !out.msg.payload_tail.is_empty() || out.msg.payload.len() > LARGE_WRITE;
        out.queue_into(writer, signer, &mut now);
        taken += 1;
        if large && queue.range(taken..).any(|out| out.deadline.is_some()) {
            break;
        }
    }
    taken
}

/// The messages of a write under way, settled as unwritten if the write is dropped.
struct Unsettled<'a, W> {
    shared: &'a Shared<W>,
    outs: Vec<Queued>,
}

impl<W> Drop for Unsettled<'_, W> {
    fn drop(&mut self) {
        if !self.outs.is_empty() {
            self.shared.settle(self.outs.drain(..), false);
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes what is buffered without waiting: true when the socket took all of it (and the
    /// stream flushed), false when some is left for an awaited flush. An error is left to that
    /// flush too, which meets it again and reports it.
    fn write_now(&mut self) -> bool {
        if !self.chunks.is_empty() {
            return false;
        }
        // Nobody is woken by this poll: when the socket is full, the writer task polls again
        // with its own waker.
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // (Measured before the writes: `capacity` counts only what lies past the bytes
        // written, though the whole allocation stays.)
        self.grown |= self.buf.capacity() > super::KEEP_WRITE_BUFFER;
        while !self.buf.is_empty() {
            match Pin::new(&mut self.wr).poll_write(&mut cx, &self.buf) {
                Poll::Ready(Ok(n)) if n > 0 => bytes::Buf::advance(&mut self.buf, n),
                // Left to the writer task's flush, which lets a grown buffer go.
                _ => return false,
            }
        }
        // A buffer that grew for many messages written together is let go of, as after a
        // flush (see `flush_within`): an idle connection keeps only a small one.
        if std::mem::take(&mut self.grown) {
            self.buf = bytes::BytesMut::new();
        }
        matches!(
            Pin::new(&mut self.wr).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        )
    }
}

impl Outgoing {
    /// Queues the message in `writer` (which copies a small one, and keeps its own reference
    /// to a large payload) and lets go of its bytes: until it is written only its notice and
    /// counts are needed, and a small payload may share its allocation with many
    /// others (see `codec::bincode::encode_bytes`), which a stalled peer must not pin.
    ///
    /// A request with a [`deadline`](Outgoing::deadline) first gets the time its caller has
    /// left (`now` is read once for the messages of one write), then `signer`'s MAC.
    fn queue_into<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FrameWriter<W>,
        signer: &mut Option<crate::auth::Signer>,
        now: &mut Option<tokio::time::Instant>,
    ) {
        if let Some(at) = self.deadline {
            let now = *now.get_or_insert_with(tokio::time::Instant::now);
            names::set_time_left(&mut self.msg, at.saturating_duration_since(now));
        }
        if let Some(signer) = signer.as_mut() {
            signer.sign(&mut self.msg);
        }
        writer.queue(&self.msg);
        self.msg.payload = bytes::Bytes::new();
        self.msg.payload_tail.clear();
        self.msg.annotations.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::DuplexStream;

    use super::*;
    use crate::protocol::frame::{Message, MessageType};
    use crate::transport::FrameReader;

    fn message(seq: u16, len: usize) -> Message {
        let payload = Bytes::from(vec![seq as u8; len]);
        Message::new(MessageType::Result, 0, 0, seq, payload)
    }

    type Pipe = (
        Sender<tokio::io::WriteHalf<DuplexStream>>,
        tokio::task::JoinHandle<Result<(), Error>>,
        FrameReader<DuplexStream>,
    );

    /// An outbox over an in-memory pipe of `capacity` bytes (its sender, its writer task) and
    /// the pipe's other end.
    fn over_pipe(capacity: usize, busy: Arc<AtomicBool>) -> Pipe {
        let (ours, theirs) = tokio::io::duplex(capacity);
        let (_, wr) = tokio::io::split(ours);
        let busy: Busy = Box::new(move || busy.load(Ordering::SeqCst));
        let (tx, writer) = outbox(FrameWriter::new(wr), busy, None, None);
        let task = tokio::spawn(writer.run(WriteDeadline::default()));
        (tx, task, FrameReader::new(theirs, 1 << 20))
    }

    fn noticed(msg: Message) -> (Outgoing, tokio::sync::oneshot::Receiver<()>) {
        let (flushed, notice) = tokio::sync::oneshot::channel();
        let out = Outgoing {
            msg,
            flushed: Some(flushed),
            counted: None,
            ticket: 0,
            deadline: None,
        };
        (out, notice)
    }

    #[tokio::test]
    async fn a_lone_message_the_socket_takes_at_once_is_written_by_its_sender() {
        let (tx, _task, mut peer) = over_pipe(64 * 1024, Arc::default());
        let (out, mut notice) = noticed(message(1, 100));
        tx.send(out).unwrap();
        // Written before the sender returned: no other task had to run.
        assert_eq!(notice.try_recv(), Ok(()));
        let got = peer.read_frame().await.unwrap().unwrap();
        assert_eq!((got.seq, got.payload.len()), (1, 100));
    }

    #[tokio::test]
    async fn a_message_waiting_on_a_slow_peer_holds_none_of_its_payload() {
        // Nobody reads the 256-byte pipe: the message stays unwritten, but its payload (which
        // may share an allocation with many others) is let go once copied for writing.
        let (tx, _task, _peer) = over_pipe(256, Arc::default());
        let payload = Bytes::from(vec![3u8; 10_000]);
        let (out, mut notice) =
            noticed(Message::new(MessageType::Result, 0, 0, 1, payload.clone()));
        tx.send(out).unwrap();
        assert!(notice.try_recv().is_err(), "not written: nobody reads");
        assert!(
            payload.is_unique(),
            "the waiting message still holds its payload"
        );
    }

    #[tokio::test]
    async fn what_the_socket_cannot_take_at_once_is_finished_by_the_writer_task_in_order() {
        // A 256-byte pipe takes a fraction of each 10 KB message: the writer task finishes
        // them, and messages sent meanwhile follow in order, whole.
        let (tx, _task, mut peer) = over_pipe(256, Arc::default());
        let (first, mut first_notice) = noticed(message(1, 10_000));
        tx.send(first).unwrap();
        assert!(
            first_notice.try_recv().is_err(),
            "not written yet: the pipe holds 256 bytes"
        );
        let mut notices = vec![first_notice];
        for seq in 2..=5 {
            let (out, notice) = noticed(message(seq, 10_000));
            tx.send(out).unwrap();
            notices.push(notice);
        }
        for seq in 1..=5 {
            let got = tokio::time::timeout(Duration::from_secs(10), peer.read_frame())
                .await
                .expect("the writer task goes on")
                .unwrap()
                .unwrap();
            assert_eq!(got.seq, seq);
            assert!(got.payload.iter().all(|&b| b == seq as u8), "intact");
        }
        for notice in notices {
            notice.await.expect("each is told once written");
        }
    }

    #[tokio::test]
    async fn held_messages_wait_for_the_flush_and_go_out_together() {
        let (tx, _task, mut peer) = over_pipe(64 * 1024, Arc::default());
        // The writer task starts and waits.
        tokio::task::yield_now().await;
        let (first, mut first_notice) = noticed(message(1, 100));
        let (second, mut second_notice) = noticed(message(2, 100));
        tx.hold(first).unwrap();
        tx.hold(second).unwrap();
        tokio::task::yield_now().await;
        assert!(first_notice.try_recv().is_err(), "held, not written");
        tx.flush();
        assert_eq!(
            first_notice.try_recv(),
            Ok(()),
            "written by the flush itself"
        );
        assert_eq!(second_notice.try_recv(), Ok(()));
        assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, 1);
        assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, 2);
    }

    #[tokio::test]
    async fn a_busy_connection_leaves_messages_to_the_writer_task() {
        let busy = Arc::new(AtomicBool::new(true));
        let (tx, _task, mut peer) = over_pipe(64 * 1024, busy.clone());
        let (out, mut notice) = noticed(message(1, 100));
        tx.send(out).unwrap();
        assert!(notice.try_recv().is_err(), "queued for the writer task");
        let (second, _) = noticed(message(2, 100));
        tx.send(second).unwrap();
        busy.store(false, Ordering::SeqCst);
        assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, 1);
        assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, 2);
        notice.await.unwrap();
    }

    #[tokio::test]
    async fn a_writer_woken_for_messages_a_sender_wrote_itself_is_woken_again_for_the_next() {
        let busy = Arc::new(AtomicBool::new(true));
        let (tx, _task, mut peer) = over_pipe(64 * 1024, busy.clone());
        // Queued for the writer task, which is woken (and has not run yet)...
        tx.send(message(1, 10).into()).unwrap();
        // ...but a sender finds the connection not busy and writes both itself.
        busy.store(false, Ordering::SeqCst);
        tx.send(message(2, 10).into()).unwrap();
        // The writer task runs and finds nothing to write.
        tokio::task::yield_now().await;
        busy.store(true, Ordering::SeqCst);
        tx.send(message(3, 10).into()).unwrap();
        for seq in 1..=3 {
            let got = tokio::time::timeout(Duration::from_secs(10), peer.read_frame())
                .await
                .expect("every message is written: the writer task is woken for the third")
                .unwrap()
                .unwrap();
            assert_eq!(got.seq, seq);
        }
    }

    #[tokio::test]
    async fn messages_sent_together_go_out_in_order_and_give_back_their_counts() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (_, wr) = tokio::io::split(ours);
        let budget = Budget {
            slots: Arc::new(tokio::sync::Semaphore::new(4)),
            queued: Arc::new(QueuedBytes::new(1 << 20)),
        };
        let (tx, writer) = outbox(
            FrameWriter::new(wr),
            Box::new(|| false),
            None,
            Some(budget.clone()),
        );
        let _task = tokio::spawn(writer.run(WriteDeadline::default()));
        let mut peer = FrameReader::new(theirs, 1 << 20);
        let mut held = Vec::new();
        for seq in 1..=3 {
            budget.slots.try_acquire().unwrap().forget();
            budget.queued.add(100);
            let mut out = Outgoing::from(message(seq, 10));
            out.counted = Some(100);
            held.push(out);
        }
        assert_eq!(
            (budget.slots.available_permits(), budget.queued.get()),
            (1, 300)
        );
        tx.send_all(&mut held);
        assert!(held.is_empty());
        for seq in 1..=3 {
            assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, seq);
        }
        assert_eq!(
            (budget.slots.available_permits(), budget.queued.get()),
            (4, 0),
            "written: slots and bytes given back"
        );
        // A refused message gives its counts back too.
        drop(peer);
        tokio::time::timeout(Duration::from_secs(10), async {
            while tx.send(message(10, 10).into()).is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer fails once the peer is gone");
        budget.slots.try_acquire().unwrap().forget();
        budget.queued.add(100);
        let mut late = Outgoing::from(message(11, 10));
        late.counted = Some(100);
        tx.send_all(&mut vec![late]);
        assert_eq!(
            (budget.slots.available_permits(), budget.queued.get()),
            (4, 0),
            "refused: slots and bytes given back"
        );
    }

    #[tokio::test]
    async fn the_last_sender_gone_ends_the_writer_which_closes_the_stream() {
        let (tx, task, mut peer) = over_pipe(64 * 1024, Arc::default());
        let other = tx.clone();
        tx.send(message(1, 10).into()).unwrap();
        drop(tx);
        other.send(message(2, 10).into()).unwrap();
        assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, 1);
        assert_eq!(peer.read_frame().await.unwrap().unwrap().seq, 2);
        // The writer task has nothing to do and waits: only the last sender's going wakes it.
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "one sender is left");
        drop(other);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the writer ends with its last sender")
            .unwrap()
            .unwrap();
        assert!(peer.read_frame().await.unwrap().is_none(), "end of stream");
    }

    /// A stream that takes no byte: every write returns `Ok(0)`.
    struct Refusing;

    impl AsyncWrite for Refusing {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(0))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stream_that_takes_no_byte_fails_the_writer_instead_of_spinning_the_sender() {
        let (tx, writer) = outbox(FrameWriter::new(Refusing), Box::new(|| false), None, None);
        let task = tokio::spawn(writer.run(WriteDeadline::default()));
        let (out, notice) = noticed(message(1, 100));
        tx.send(out).unwrap();
        let failed = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the writer gives up")
            .unwrap();
        assert!(failed.is_err(), "the peer stopped accepting data");
        assert!(notice.await.is_err(), "never written");
    }

    #[tokio::test]
    async fn a_failed_writer_gives_later_messages_back_and_drops_the_queued_ones() {
        let (tx, task, peer) = over_pipe(256, Arc::default());
        // Half written into a pipe nobody reads, then the reader goes away.
        let (stuck, stuck_notice) = noticed(message(1, 10_000));
        tx.send(stuck).unwrap();
        let (queued, queued_notice) = noticed(message(2, 100));
        tx.send(queued).unwrap();
        drop(peer);
        assert!(task.await.unwrap().is_err(), "the write fails");
        assert!(
            stuck_notice.await.is_err(),
            "never written: its sender hears so"
        );
        assert!(queued_notice.await.is_err());
        let back = tx
            .send(message(3, 10).into())
            .expect_err("nothing more is accepted");
        assert_eq!(back.msg.seq, 3);
    }

    #[tokio::test]
    async fn a_stopped_writer_lets_go_of_a_socket_it_was_stuck_on() {
        use tokio::io::AsyncReadExt;
        let (ours, mut theirs) = tokio::io::duplex(256);
        let (_, wr) = tokio::io::split(ours);
        let (tx, writer) = outbox(FrameWriter::new(wr), Box::new(|| false), None, None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stop_when = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(writer.run_until(WriteDeadline::default(), stop_when));
        // Nobody reads the 256-byte pipe: the writer task parks on it, half way.
        let (stuck, stuck_notice) = noticed(message(1, 10_000));
        tx.send(stuck).unwrap();
        let (queued, queued_notice) = noticed(message(2, 100));
        tx.send(queued).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the writer stops though the pipe is full")
            .unwrap()
            .unwrap();
        assert!(stuck_notice.await.is_err(), "never written");
        assert!(queued_notice.await.is_err(), "never written");
        tx.send(message(3, 10).into())
            .expect_err("nothing more is accepted");
        // The pipe is let go of (the sender still lives): its reader gets what it held, then
        // the end, not the rest of the message.
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), theirs.read_to_end(&mut got))
            .await
            .expect("the pipe was let go of")
            .unwrap();
        assert!(got.len() < 10_000, "{} bytes", got.len());
    }

    #[tokio::test]
    async fn a_buffer_grown_by_messages_written_together_is_let_go_of() {
        let (ours, theirs) = tokio::io::duplex(64 << 20);
        let (_, wr) = tokio::io::split(ours);
        let (tx, writer) = outbox(FrameWriter::new(wr), Box::new(|| false), None, None);
        let _task = tokio::spawn(writer.run(WriteDeadline::default()));
        // 4,000 small messages, 4 MB together, written at once by their sender.
        let mut held: Vec<Outgoing> = (0..4_000).map(|i| message(i, 1_000).into()).collect();
        tx.send_all(&mut held);
        let mut state = tx.shared.state.lock();
        let writer = state
            .idle
            .as_mut()
            .expect("written by the sender, not the task");
        assert!(writer.buf.is_empty(), "all written");
        // A fresh buffer: the written one's `capacity` would show only what lies past its
        // 4 MB of written bytes (which it still holds).
        assert_eq!(writer.buf.capacity(), 0, "the grown buffer is kept");
        drop(state);
        drop(theirs);
    }

    #[tokio::test]
    async fn a_grown_buffer_the_socket_took_only_part_of_is_let_go_once_the_task_finishes_it() {
        // A pipe that takes 3.5 MiB at once: the sender writes that much, the task the rest.
        let (ours, mut theirs) = tokio::io::duplex(3_584 << 10);
        let (_, wr) = tokio::io::split(ours);
        let (tx, writer) = outbox(FrameWriter::new(wr), Box::new(|| false), None, None);
        let _task = tokio::spawn(writer.run(WriteDeadline::default()));
        let mut held: Vec<Outgoing> = (0..3_799).map(|i| message(i, 1_000).into()).collect();
        let (last, notice) = noticed(message(3_799, 1_000));
        held.push(last);
        tx.send_all(&mut held);
        assert!(
            !tx.shared.state.lock().unflushed.is_empty(),
            "the socket took only part"
        );
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while tokio::io::AsyncReadExt::read(&mut theirs, &mut sink)
                .await
                .is_ok_and(|n| n > 0)
            {}
        });
        tokio::time::timeout(Duration::from_secs(10), notice)
            .await
            .expect("written")
            .unwrap();
        let state = tx.shared.state.lock();
        let writer = state.idle.as_ref().expect("the task is done with it");
        assert!(writer.buf.is_empty(), "all written");
        assert_eq!(writer.buf.capacity(), 0, "the grown buffer is kept");
        drop(state);
        drain.abort();
    }

    #[tokio::test]
    async fn a_withdrawn_message_is_taken_back_only_while_queued_and_only_by_its_ticket() {
        // Nobody reads the 256-byte pipe: the first message parks the writer task half way,
        // and the next two wait in the queue behind it.
        let (tx, _task, _peer) = over_pipe(256, Arc::default());
        let ticketed = |seq: u16, ticket: u64| {
            let (mut out, notice) = noticed(message(seq, 10_000));
            out.ticket = ticket;
            (out, notice)
        };
        let (first, _first_notice) = ticketed(1, 1);
        tx.send(first).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (second, second_notice) = ticketed(2, 2);
        let (third, mut third_notice) = ticketed(3, 3);
        tx.send(second).unwrap();
        tx.send(third).unwrap();
        assert!(!tx.withdraw(1), "in the write under way: not taken back");
        assert!(!tx.withdraw(4), "no such ticket");
        assert!(tx.withdraw(2), "queued: taken back");
        assert!(second_notice.await.is_err(), "never written");
        assert!(!tx.withdraw(2), "only once");
        assert!(third_notice.try_recv().is_err(), "the other stays queued");
        assert_eq!(tx.shared.state.lock().queue.len(), 1);
    }

    #[tokio::test]
    async fn a_message_dropped_unwritten_as_the_writer_stops_is_withdrawn_once() {
        // As above, with a writer task that is stopped while the second message is queued.
        let (ours, _theirs) = tokio::io::duplex(256);
        let (_, wr) = tokio::io::split(ours);
        let (tx, writer) = outbox(FrameWriter::new(wr), Box::new(|| false), None, None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(writer.run_until(WriteDeadline::default(), async {
            let _ = stopped.await;
        }));
        let ticketed = |seq: u16, ticket: u64| {
            let mut out = Outgoing::from(message(seq, 10_000));
            out.ticket = ticket;
            out
        };
        tx.send(ticketed(1, 1)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(ticketed(2, 2)).unwrap();
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(!tx.withdraw(1), "written in part: it may have gone");
        assert!(
            tx.withdraw(2),
            "dropped from the queue unwritten: never sent"
        );
        assert!(!tx.withdraw(2), "only once");
    }

    /// Takes every byte; notes its shutdown.
    struct Recording(Arc<AtomicBool>);

    impl AsyncWrite for Recording {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.0.store(true, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_writer_stopped_while_idle_with_everything_written_still_shuts_the_stream_down() {
        let shut = Arc::new(AtomicBool::new(false));
        let writer = FrameWriter::new(Recording(shut.clone()));
        let (tx, writer) = outbox(writer, Box::new(|| false), None, None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stop_when = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(writer.run_until(WriteDeadline::default(), stop_when));
        let (out, notice) = noticed(message(1, 100));
        tx.send(out).unwrap();
        assert!(notice.await.is_ok(), "written");
        // (A proxy dropped: its connection closes just before its last sender goes.)
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(
            shut.load(Ordering::SeqCst),
            "a clean end (TLS: a close_notify)"
        );
        drop(tx);
    }
}
