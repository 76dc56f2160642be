//! The daemon's own object, `Pyro.Daemon`: ping, registered, get_metadata, info.

use std::sync::Weak;

use super::{Inner, DAEMON_OBJECT_ID};
use crate::dispatch::{BoxFuture, Dispatch, Outcome};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::protocol::codec::{Args, Metadata};

/// The daemon's own object, `Pyro.Daemon`: ping, registered, get_metadata, info.
pub(super) struct DaemonObject {
    pub(super) daemon: Weak<Inner>,
}

impl Dispatch for DaemonObject {
    fn metadata(&self) -> Metadata {
        Metadata {
            methods: [
                "close_stream",
                "get_metadata",
                "get_next_stream_item",
                "info",
                "ping",
                "registered",
            ]
            .map(String::from)
            .to_vec(),
            oneway: vec!["close_stream".into()],
            attrs: Vec::new(),
        }
    }

    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>> {
        Box::pin(async move {
            let ser = args.serializer();
            let inner = self
                .daemon
                .upgrade()
                .ok_or_else(|| RemoteError::unknown_object(DAEMON_OBJECT_ID))?;
            let bad = |e: Error| RemoteError::bad_arguments(method, e);
            let encoded = match method {
                "ping" => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    ser.encode(&())
                }
                "registered" => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    ser.encode(&inner.registered())
                }
                "info" => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    let n = inner
                        .objects
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .len();
                    ser.encode(&format!(
                        "rmi daemon bound on {}, advertised as {}, {n} objects registered, {} open streams",
                        inner.bound,
                        inner.advertised,
                        inner.streams.len()
                    ))
                }
                "get_next_stream_item" => {
                    let (id,): (String,) = args.decode().map_err(bad)?;
                    let reader = crate::context::current()
                        .map(|c| c.connection())
                        .unwrap_or_default();
                    return inner.streams.next(&id, reader).await.map(Outcome::Value);
                }
                "close_stream" => {
                    let (id,): (String,) = args.decode().map_err(bad)?;
                    inner.streams.close(&id);
                    ser.encode(&())
                }
                "get_metadata" => {
                    let (id,): (String,) = args.decode().map_err(bad)?;
                    let object = inner
                        .object(&id)
                        .ok_or_else(|| RemoteError::unknown_object(&id))?;
                    ser.encode(&object.meta)
                }
                _ => return Err(RemoteError::unknown_method(DAEMON_OBJECT_ID, method)),
            };
            encoded.map(Outcome::Value).map_err(|e| {
                RemoteError::new(RemoteErrorKind::Other, "rmi.SerializeError", e.to_string())
            })
        })
    }
}
