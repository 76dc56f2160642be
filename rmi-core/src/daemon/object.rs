//! The daemon's own object, `Pyro.Daemon`: ping, registered, info, get_metadata, close_stream
//! and get_next_stream_item.
//!
//! Its contract is an ordinary `#[remote]` trait, served by the generated server, like any
//! object. One method is not: `get_next_stream_item` hands over an item that the streaming
//! method already encoded in its caller's serializer, so it passes bytes through rather than
//! returning a value; [`DaemonObject`] routes that one name to the stream table.

// The generated server's `pub fn`s sit on a type private to the daemon.
#![allow(unreachable_pub)]

use std::sync::Weak;

use futures_util::future::BoxFuture;
use rmi_macros::remote;

use super::context;
use super::log::PeerText;
use super::Inner;
use crate::dispatch::{Dispatch, Outcome};
use crate::error::{RemoteError, RemoteErrorKind};
use crate::protocol::codec::{Args, Metadata};
use crate::protocol::names::daemon_method::GET_NEXT_STREAM_ITEM;
use crate::protocol::names::DAEMON_OBJECT_ID;

/// What `Pyro.Daemon` answers (Pyro5's `DaemonObject`), apart from streamed items.
#[remote(crate = crate, server_only)]
pub(super) trait DaemonApi {
    /// Answers nothing: the daemon is alive.
    async fn ping(&self);
    /// The ids of all registered objects, the daemon object included, sorted.
    #[rmi(raises)]
    async fn registered(&self) -> Result<Vec<String>, RemoteError>;
    /// A line describing the daemon.
    #[rmi(raises)]
    async fn info(&self) -> Result<String, RemoteError>;
    /// The metadata of object `objectId`; an unknown id raises Pyro's `DaemonError`. (The
    /// parameters are named as Pyro's, for Python callers' keyword arguments.)
    #[rmi(raises)]
    #[expect(non_snake_case)]
    async fn get_metadata(&self, objectId: String) -> Result<Metadata, RemoteError>;
    /// Drops streamed result `streamId` (closing one already gone does nothing). Not oneway in
    /// the metadata, as in Pyro's: its callers send it oneway themselves.
    #[expect(non_snake_case)]
    async fn close_stream(&self, streamId: String);
}

/// The daemon's state as its own object sees it: weakly, so the object does not keep the
/// daemon alive.
struct State {
    daemon: Weak<Inner>,
}

impl State {
    fn daemon(&self) -> Result<std::sync::Arc<Inner>, RemoteError> {
        self.daemon
            .upgrade()
            .ok_or_else(|| RemoteError::unknown_object(DAEMON_OBJECT_ID))
    }
}

impl DaemonApi for State {
    async fn ping(&self) {}

    async fn registered(&self) -> Result<Vec<String>, RemoteError> {
        Ok(self.daemon()?.registered())
    }

    async fn info(&self) -> Result<String, RemoteError> {
        let inner = self.daemon()?;
        let n = inner.objects.map.read().len();
        // Pyro's words, which tools read; then what rmi adds.
        Ok(format!(
            "{DAEMON_OBJECT_ID} bound on {}, NAT {}, {n} objects registered. Servertype: rmi \
             (tokio), {} open streams",
            inner.bound,
            inner.advertised,
            inner.streams.len()
        ))
    }

    async fn get_metadata(&self, id: String) -> Result<Metadata, RemoteError> {
        let inner = self.daemon()?;
        let object = inner.object(&id).ok_or_else(|| {
            let mut e = RemoteError::unknown_object(&id);
            e.daemon_answer = true;
            e
        })?;
        Ok(object.meta.clone())
    }

    async fn close_stream(&self, id: String) {
        if let Some(inner) = self.daemon.upgrade() {
            inner.streams.close(&id);
        }
    }
}

/// The daemon's own object, `Pyro.Daemon`: the generated [`DaemonApi`] server, plus
/// `get_next_stream_item`.
pub(super) struct DaemonObject {
    api: DaemonApiServer<State>,
}

impl DaemonObject {
    pub(super) fn new(daemon: Weak<Inner>) -> Self {
        DaemonObject {
            api: DaemonApiServer::new(State { daemon }),
        }
    }

    /// The next item of stream `id`, already encoded in the serializer of the call that
    /// opened it; `StopIteration` at its end.
    async fn next_stream_item(&self, args: Args) -> Result<Outcome, RemoteError> {
        let wire = (args.serializer(), args.protocol());
        let (id,): (String,) = args
            .decode()
            .map_err(|e| RemoteError::bad_arguments(GET_NEXT_STREAM_ITEM, e))?;
        let inner = self.api.get_ref().daemon()?;
        let ctx = context::current();
        let reader = ctx.as_ref().map(|c| c.connection()).unwrap_or_default();
        let next = inner.streams.next(&id, reader, wire);
        let item = match &ctx {
            // A caller that is gone stops waiting (reading an item is cancel-safe): its wait
            // would hold the stream and take the next item, which the caller, reconnected,
            // would then never see.
            Some(ctx) => tokio::select! {
                biased;
                item = next => item,
                () = ctx.caller_gone() => Err(RemoteError::new(
                    RemoteErrorKind::Other,
                    super::hooks::CALLER_GONE,
                    "the caller's connection closed; the stream's next item was left for it",
                )),
            },
            None => next.await,
        };
        let item = item.inspect_err(|e| {
            if e.kind == RemoteErrorKind::Panic
                && inner
                    .panic_warnings
                    .allow(|n| tracing::error!(left_out = n, "more calls panicked"))
            {
                tracing::error!(stream = %PeerText(&id), error = %PeerText(&e.message), "stream producer panicked; stream closed");
            }
        })?;
        // An item too large to send would be taken from the stream and lost, with the stream
        // left open: a reader that went on would find a gap. It ends the stream instead. The
        // reply annotations the producer set (it runs in this read's context) count too.
        let max = inner.config.limits.max_message_size;
        let annotations = ctx.as_ref().map_or(0, |c| c.response_annotations_size());
        if item
            .len()
            .saturating_add(STREAM_REPLY_RESERVE)
            .saturating_add(annotations)
            > max
        {
            inner.streams.close(&id);
            return Err(RemoteError::new(
                RemoteErrorKind::Other,
                "rmi.MessageTooLarge",
                format!(
                    "the stream's next item, {} bytes, exceeds max_message_size ({max} bytes); \
                     the stream is closed",
                    item.len()
                ),
            ));
        }
        Ok(Outcome::Value(item.into()))
    }
}

/// Room a stream item's reply keeps for its annotations (a MAC, Pyro4's correlation id).
const STREAM_REPLY_RESERVE: usize = 256;

impl Dispatch for DaemonObject {
    fn metadata(&self) -> Metadata {
        let mut meta = self.api.metadata();
        meta.methods.push(GET_NEXT_STREAM_ITEM.into());
        meta.methods.sort();
        meta
    }

    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>> {
        if method == GET_NEXT_STREAM_ITEM {
            Box::pin(self.next_stream_item(args))
        } else {
            self.api.dispatch(method, args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::names::daemon_method;

    #[test]
    fn the_contract_serves_every_daemon_method_the_protocol_names() {
        let object = DaemonObject::new(Weak::new());
        let meta = object.metadata();
        let mut expected = vec![
            daemon_method::CLOSE_STREAM,
            daemon_method::GET_METADATA,
            daemon_method::GET_NEXT_STREAM_ITEM,
            daemon_method::INFO,
            daemon_method::PING,
            daemon_method::REGISTERED,
        ];
        expected.sort();
        assert_eq!(meta.methods, expected);
        // As Pyro's: none oneway (`close_stream`'s callers send it oneway themselves).
        assert!(meta.oneway.is_empty(), "{:?}", meta.oneway);
    }
}
