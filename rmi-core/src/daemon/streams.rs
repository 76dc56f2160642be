//! Open item streams of a daemon: one table for all connections, so a stream can outlive its
//! connection for the linger period (and a reconnected caller can go on reading it).
//!
//! The table also knows which connections are alive, under the same lock, so that a stream
//! opened or adopted for a connection that is already gone (its call was still running when
//! the peer vanished) starts lingering at once instead of living for ever.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::dispatch::EncodedStream;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::protocol::codec::Serializer;
use crate::protocol::frame::Protocol;

/// A connection's identity inside one daemon.
pub(crate) type ConnectionId = u64;

/// A serializer and the protocol it is spoken in.
pub(super) type Wire = (Serializer, Protocol);

/// A stream's producer. It is user code (an iterator owning a database client, or a runtime
/// of its own), dropped wherever its stream ends: read to its end, closed, swept, cleared at
/// shutdown, refused. A panic in its `Drop` is caught there, and goes no further.
struct Producer(EncodedStream);

impl Drop for Producer {
    fn drop(&mut self) {
        let items = std::mem::replace(&mut self.0, futures_util::stream::empty().boxed());
        super::call::drop_quietly(items, "a stream's producer");
    }
}

struct Slot {
    items: Arc<tokio::sync::Mutex<Producer>>,
    /// Cancelled when the stream is closed, so a read waiting on it ends ("item stream
    /// terminated") and lets go of it, instead of holding it, its task and its caller's
    /// in-flight slot until an item comes, which may be never.
    closed: tokio_util::sync::CancellationToken,
    /// The connection reading it.
    owner: ConnectionId,
    /// Set when the owner is gone: the stream is dropped at this instant.
    expires: Option<Instant>,
    /// When it was opened, or last read.
    last_use: Instant,
    /// The serializer and protocol its items are encoded in: the call's that opened it.
    wire: Wire,
    /// The task that ends it when unused for `stream_lifetime`: stopped with the stream, so
    /// streams closed early leave no task sleeping out the lifetime.
    lifetime_task: Option<tokio::task::AbortHandle>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(task) = &self.lifetime_task {
            task.abort();
        }
    }
}

#[derive(Default)]
struct Table {
    slots: HashMap<String, Slot>,
    /// Connections that are open: only their streams may live without an expiry.
    live: HashSet<ConnectionId>,
}

pub(super) struct Streams {
    table: Mutex<Table>,
    /// How long a stream survives its connection (`stream_linger`).
    linger: Duration,
    /// How long a stream may go unread before it is dropped, its connection alive or not
    /// (`stream_lifetime`; Pyro's `ITER_STREAM_LIFETIME`).
    lifetime: Option<Duration>,
}

fn terminated() -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Other,
        "Pyro5.errors.PyroError",
        "item stream terminated",
    )
}

impl Streams {
    pub(super) fn new(linger: Duration, lifetime: Option<Duration>) -> Self {
        Streams {
            table: Mutex::new(Table::default()),
            linger,
            lifetime,
        }
    }

    /// Connection `id` is open.
    pub(super) fn connected(&self, id: ConnectionId) {
        self.table.lock().live.insert(id);
    }

    /// Connection `id` is gone: its streams linger, then go.
    pub(super) fn disconnected(self: &Arc<Self>, id: ConnectionId) {
        // A linger too long to represent never ends.
        let expires = Instant::now().checked_add(self.linger);
        let mut any = false;
        {
            let mut table = self.table.lock();
            table.live.remove(&id);
            for slot in table.slots.values_mut().filter(|s| s.owner == id) {
                slot.expires = expires;
                any = true;
            }
        }
        if let Some(at) = expires.filter(|_| any) {
            self.sweep_at(at);
        }
    }

    /// Keeps `items` for `owner`; refuses past `max` open streams on that connection, and past
    /// `max_total` in the daemon (lingering ones included).
    pub(super) fn open(
        self: &Arc<Self>,
        owner: ConnectionId,
        wire: Wire,
        items: EncodedStream,
        max: usize,
        max_total: usize,
    ) -> Result<String, RemoteError> {
        let items = Producer(items);
        let id = uuid::Uuid::new_v4().to_string();
        let expires = {
            let mut table = self.table.lock();
            if table.slots.len() >= max_total {
                return Err(RemoteError::new(
                    RemoteErrorKind::Other,
                    "rmi.TooManyStreams",
                    format!("too many open streams in this daemon (max_streams = {max_total})"),
                ));
            }
            if table.slots.values().filter(|s| s.owner == owner).count() >= max {
                return Err(RemoteError::new(
                    RemoteErrorKind::Other,
                    "rmi.TooManyStreams",
                    format!(
                        "too many open streams on this connection (max_streams_per_connection = {max})"
                    ),
                ));
            }
            let expires = self.expiry_for(&table, owner);
            table.slots.insert(
                id.clone(),
                Slot {
                    items: Arc::new(tokio::sync::Mutex::new(items)),
                    closed: tokio_util::sync::CancellationToken::new(),
                    owner,
                    expires,
                    last_use: Instant::now(),
                    wire,
                    lifetime_task: None,
                },
            );
            expires
        };
        if let Some(at) = expires {
            self.sweep_at(at);
        }
        if let Some(lifetime) = self.lifetime {
            self.end_when_unused(id.clone(), lifetime);
        }
        Ok(id)
    }

    /// Drops stream `id` once it has gone `lifetime` without a read (a read under way is a
    /// use, however long its item takes).
    fn end_when_unused(self: &Arc<Self>, id: String, lifetime: Duration) {
        let streams = Arc::downgrade(self);
        let id_for_slot = id.clone();
        // A lifetime too long to represent never ends.
        let Some(mut at) = Instant::now().checked_add(lifetime) else {
            return;
        };
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep_until(at).await;
                let Some(streams) = streams.upgrade() else {
                    return;
                };
                let now = Instant::now();
                let gone = {
                    let mut table = streams.table.lock();
                    let Some(slot) = table.slots.get(&id) else {
                        return;
                    };
                    if Arc::strong_count(&slot.items) > 1 {
                        // Being read.
                        at = now + lifetime;
                        continue;
                    }
                    let unused_until = slot.last_use + lifetime;
                    if unused_until > now {
                        at = unused_until;
                        continue;
                    }
                    table.slots.remove(&id)
                };
                // Dropped once the lock is released (see `close`).
                if let Some(mut slot) = gone {
                    tracing::debug!(stream = %id, ?lifetime, "stream unused for its lifetime; dropped");
                    // This task: ending anyway, not aborted from inside.
                    slot.lifetime_task = None;
                    slot.closed.cancel();
                }
                return;
            }
        });
        let task = task.abort_handle();
        // Gone already (closed before this line): its task goes too.
        match self.table.lock().slots.get_mut(&id_for_slot) {
            Some(slot) => slot.lifetime_task = Some(task),
            None => task.abort(),
        }
    }

    /// The next encoded item of stream `id`, read by connection `reader`, which speaks `wire`.
    /// The end of the stream is a `StopIteration` error and removes it, as does an error item.
    /// A reader speaking another serializer or protocol than the call that opened the stream
    /// is refused, and the stream left as it was: its items are encoded in the opener's.
    pub(super) async fn next(
        self: &Arc<Self>,
        id: &str,
        reader: ConnectionId,
        wire: Wire,
    ) -> Result<Vec<u8>, RemoteError> {
        let (items, closed, expires) = {
            let mut table = self.table.lock();
            let expires = self.expiry_for(&table, reader);
            let slot = table.slots.get_mut(id).ok_or_else(terminated)?;
            if slot.wire != wire {
                return Err(RemoteError::new(
                    RemoteErrorKind::Other,
                    "Pyro5.errors.PyroError",
                    format!(
                        "the stream's items are encoded in {:?} over {:?}, as the call that \
                         opened it asked, not in {:?} over {:?}: read it with that serializer",
                        slot.wire.0, slot.wire.1, wire.0, wire.1
                    ),
                ));
            }
            // Whoever reads a stream owns it (ids are random uuids, as in Pyro): a caller that
            // reconnected picks up its lingering stream, and it lives as long as that connection.
            slot.owner = reader;
            slot.expires = expires;
            slot.last_use = Instant::now();
            (slot.items.clone(), slot.closed.clone(), expires)
        };
        if let Some(at) = expires {
            self.sweep_at(at);
        }
        // A producer that panics ends its stream, as one that raises does in Pyro: read again,
        // it would go on after the item it lost, or panic on every read.
        let reading = async {
            let mut producer = items.lock().await;
            let next = std::panic::AssertUnwindSafe(producer.0.next());
            match futures_util::FutureExt::catch_unwind(next).await {
                Ok(next) => next,
                Err(panic) => {
                    // Closed while the producer is still held, so a read waiting for it finds
                    // the stream closed, not a producer that panicked.
                    self.close(id);
                    // Logged by the caller, rate-limited as every panic is.
                    let text = super::call::panic_text(&*panic);
                    Some(Err(RemoteError::panic(
                        crate::protocol::names::daemon_method::GET_NEXT_STREAM_ITEM,
                        &format!("the stream's producer panicked: {text}"),
                    )))
                }
            }
        };
        let next = tokio::select! {
            biased;
            () = closed.cancelled() => return Err(terminated()),
            next = reading => next,
        };
        // Its lifetime counts from the end of this read.
        drop(items);
        if self.lifetime.is_some() {
            if let Some(slot) = self.table.lock().slots.get_mut(id) {
                slot.last_use = Instant::now();
            }
        }
        match next {
            Some(Ok(item)) => Ok(item),
            Some(Err(e)) => {
                self.close(id);
                Err(e)
            }
            None => {
                self.close(id);
                Err(RemoteError::stop_iteration())
            }
        }
    }

    /// No expiry for a live connection's stream; the linger period from now for one whose
    /// connection is gone.
    fn expiry_for(&self, table: &Table, owner: ConnectionId) -> Option<Instant> {
        if table.live.contains(&owner) {
            return None;
        }
        Instant::now().checked_add(self.linger)
    }

    /// Drops the streams whose expiry has passed, at `at`.
    fn sweep_at(self: &Arc<Self>, at: Instant) {
        let streams = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(streams) = streams.upgrade() {
                let now = Instant::now();
                // Dropped once the lock is released (see `close`).
                let gone: Vec<_> = streams
                    .table
                    .lock()
                    .slots
                    .extract_if(|_, s| s.expires.is_some_and(|e| e <= now))
                    .collect();
                gone.iter().for_each(|(_, slot)| slot.closed.cancel());
            }
        });
    }

    /// Drops stream `id`, once the table's lock is released: the stream's own `Drop` is user
    /// code, which may be slow or may ask the daemon about its streams.
    pub(super) fn close(&self, id: &str) {
        let gone = self.table.lock().slots.remove(id);
        if let Some(slot) = &gone {
            slot.closed.cancel();
        }
        drop(gone);
    }

    /// Number of open streams.
    pub(super) fn len(&self) -> usize {
        self.table.lock().slots.len()
    }

    /// Drops every stream, ending the reads waiting on them (daemon shutdown: as Pyro's, its
    /// first step, so a read waiting for an item does not hold the daemon for its whole grace
    /// period).
    pub(super) fn clear(&self) {
        let gone = std::mem::take(&mut self.table.lock().slots);
        gone.values().for_each(|slot| slot.closed.cancel());
        drop(gone);
    }
}
