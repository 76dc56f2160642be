//! Open item streams of a daemon: one table for all connections, so a stream can outlive its
//! connection for the linger period (and a reconnected caller can go on reading it).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::dispatch::EncodedStream;
use crate::error::{RemoteError, RemoteErrorKind};

/// A connection's identity inside one daemon.
pub(crate) type ConnectionId = u64;

struct Slot {
    items: Arc<tokio::sync::Mutex<EncodedStream>>,
    /// The connection reading it.
    owner: ConnectionId,
    /// Set when the owner disconnected: the stream is dropped at this instant.
    expires: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Streams {
    table: Mutex<HashMap<String, Slot>>,
}

fn terminated() -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Other,
        "Pyro5.errors.PyroError",
        "item stream terminated",
    )
}

impl Streams {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Slot>> {
        self.table.lock()
    }

    /// Keeps `items` for `owner`; refuses past `max` open streams on that connection, and past
    /// `max_total` in the daemon (lingering ones included).
    pub(super) fn open(
        &self,
        owner: ConnectionId,
        items: EncodedStream,
        max: usize,
        max_total: usize,
    ) -> Result<String, RemoteError> {
        let mut table = self.lock();
        if table.len() >= max_total {
            return Err(RemoteError::new(
                RemoteErrorKind::Other,
                "rmi.TooManyStreams",
                format!("too many open streams in this daemon (max_streams = {max_total})"),
            ));
        }
        if table.values().filter(|s| s.owner == owner).count() >= max {
            return Err(RemoteError::new(
                RemoteErrorKind::Other,
                "rmi.TooManyStreams",
                format!(
                    "too many open streams on this connection (max_streams_per_connection = {max})"
                ),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        table.insert(
            id.clone(),
            Slot {
                items: Arc::new(tokio::sync::Mutex::new(items)),
                owner,
                expires: None,
            },
        );
        Ok(id)
    }

    /// The next encoded item of stream `id`, read by connection `reader`. The end of the stream
    /// is a `StopIteration` error and removes it, as does an error item.
    pub(super) async fn next(
        &self,
        id: &str,
        reader: ConnectionId,
    ) -> Result<Vec<u8>, RemoteError> {
        let items = {
            let mut table = self.lock();
            let slot = table.get_mut(id).ok_or_else(terminated)?;
            // Whoever reads a stream owns it (ids are random uuids, as in Pyro): a caller that
            // reconnected picks up its lingering stream, and it lives as long as that connection.
            slot.owner = reader;
            slot.expires = None;
            slot.items.clone()
        };
        let next = items.lock().await.next().await;
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

    /// Drops stream `id`.
    pub(super) fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// `owner` disconnected: its streams linger for `linger`, then go.
    pub(super) fn orphan(self: &Arc<Self>, owner: ConnectionId, linger: Duration) {
        let expires = Instant::now() + linger;
        let mut any = false;
        for slot in self.lock().values_mut().filter(|s| s.owner == owner) {
            slot.expires = Some(expires);
            any = true;
        }
        if any {
            let streams = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep_until(expires).await;
                if let Some(streams) = streams.upgrade() {
                    let now = Instant::now();
                    streams
                        .lock()
                        .retain(|_, s| s.expires.is_none_or(|e| e > now));
                }
            });
        }
    }

    /// Number of open streams.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops every stream (daemon shutdown).
    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}
