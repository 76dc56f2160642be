//! Streamed results: [`RemoteStream`] on the server, [`ItemStream`] on the caller's side.
//!
//! A method returning `RemoteStream<T>` answers with Pyro's ITEMSTREAMRESULT: the daemon keeps
//! the stream under an id and the caller pulls items one at a time through
//! `Pyro.Daemon.get_next_stream_item`, lazily, as it polls. Dropping the [`ItemStream`] early
//! closes the stream on the server (`close_stream`, oneway). A stream outlives its connection
//! only for the daemon's linger period, and a daemon caps the open streams per connection.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::protocol::codec::Serializer;
use crate::proxy::Proxy;

/// Items already encoded in the caller's serializer, as the daemon keeps them.
pub type EncodedStream = BoxStream<'static, Result<Vec<u8>, RemoteError>>;

/// The return type of a streaming remote method: any `Stream` (or iterator) of `T`.
///
/// With `#[rmi::remote]`, `async fn numbers(&self, n: u32) -> RemoteStream<u32>` gives the
/// proxy `async fn numbers(&self, n: u32) -> Result<ItemStream<u32>, rmi::Error>`.
pub struct RemoteStream<T> {
    inner: BoxStream<'static, T>,
}

impl<T: Send + 'static> RemoteStream<T> {
    /// Streams the items of `stream`.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        RemoteStream {
            inner: stream.boxed(),
        }
    }

    /// Streams the items of `iter` (lazily: the iterator runs as items are asked for).
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures_util::stream::iter(iter))
    }
}

impl<T: Serialize + Send + 'static> RemoteStream<T> {
    /// The stream with each item encoded in `ser`.
    pub fn encode_with(self, ser: Serializer) -> EncodedStream {
        self.inner
            .map(move |item| {
                ser.encode(&item).map_err(|e| {
                    RemoteError::new(
                        RemoteErrorKind::Other,
                        "rmi.SerializeError",
                        format!("could not serialize a stream item: {e}"),
                    )
                })
            })
            .boxed()
    }
}

impl<T> std::fmt::Debug for RemoteStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteStream")
    }
}

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
                    .call_daemon::<_, T>("get_next_stream_item", &(id,))
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
        // the daemon already dropped does nothing).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (proxy, id) = (self.proxy.clone(), std::mem::take(&mut self.id));
            handle.spawn(async move {
                let _ = proxy.call_daemon_oneway("close_stream", &(id,)).await;
            });
        }
    }
}
