//! The caller's side of a streamed result: [`ItemStream`], which pulls items one at a time.
//!
//! A method returning `RemoteStream<T>` answers with Pyro's ITEMSTREAMRESULT: the daemon keeps
//! the stream under an id and the caller pulls items one at a time through
//! `Pyro.Daemon.get_next_stream_item`, lazily, as it polls. Dropping the [`ItemStream`] early
//! closes the stream on the server (`close_stream`, oneway).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::Stream;
use serde::de::DeserializeOwned;

use super::Proxy;
use crate::error::{Error, RemoteErrorKind};
use crate::protocol::names::daemon_method::GET_NEXT_STREAM_ITEM;

type NextItem<T> = Pin<Box<dyn Future<Output = Result<Option<T>, Error>> + Send>>;

/// The caller's side of a streamed result: a `Stream` of `Result<T, rmi::Error>` that fetches
/// each item when polled. It ends after the last item or the first error.
pub struct ItemStream<T> {
    proxy: Proxy,
    id: String,
    next: Option<NextItem<T>>,
    done: bool,
    /// The daemon reported the end (it has dropped the stream): nothing to close.
    ended: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> ItemStream<T> {
    pub(crate) fn new(proxy: Proxy, id: String) -> Self {
        ItemStream {
            proxy,
            id,
            next: None,
            done: false,
            ended: false,
            _item: PhantomData,
        }
    }

    /// The stream's id in the daemon.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<T> std::fmt::Debug for ItemStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> Stream for ItemStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.next.is_none() {
            let (proxy, id) = (self.proxy.clone(), self.id.clone());
            self.next = Some(Box::pin(async move {
                match proxy
                    .call_daemon::<_, T>(GET_NEXT_STREAM_ITEM, &(id,))
                    .await
                {
                    Ok(item) => Ok(Some(item)),
                    Err(Error::Remote(e)) if e.kind == RemoteErrorKind::StopIteration => Ok(None),
                    Err(e) => Err(e),
                }
            }));
        }
        let polled = self.next.as_mut().expect("set above").as_mut().poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.next = None;
                match result {
                    Ok(Some(item)) => Poll::Ready(Some(Ok(item))),
                    Ok(None) => {
                        self.done = true;
                        self.ended = true;
                        Poll::Ready(None)
                    }
                    Err(e) => {
                        self.done = true;
                        Poll::Ready(Some(Err(e)))
                    }
                }
            }
        }
    }
}

impl<T> Drop for ItemStream<T> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Abandoned early, or given up after an error (a timeout leaves the stream open on the
        // daemon): tell the daemon to drop it (oneway, as Pyro's client does; closing a stream
        // the daemon already dropped does nothing). Not through a new connection: with its
        // connection closed (by `Proxy::close`, or by the daemon), the daemon drops the
        // stream after its linger, and a dial only to close it would open a connection the
        // caller had closed, resolving its name again if need be.
        // Sent on this connection only, by a task the proxy's next call lets finish first (so
        // that a stream it opens finds this one's place free under the daemon's
        // `max_streams_per_connection`); with no runtime here, by the next call itself. Closed
        // before then (the stream dropped, then the proxy closed), it is not dialed again.
        // Retired too: a read given up on a Pyro daemon's connection (a timeout, or the drop of
        // the read, right after this) retires it, and the close is to go out on it all the
        // same, to run after the item being made (helper-164 #2).
        let Some(conn) = self.proxy.open_connection(true) else {
            return;
        };
        // (Counted on the connection from now: the next call waits for it, whichever thread
        // runs the task.)
        let id = std::mem::take(&mut self.id);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.proxy.spawn_closes(&conn, vec![id]);
        } else {
            conn.shared.note_dropped_stream(id);
        }
    }
}
