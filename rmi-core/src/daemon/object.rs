//! The daemon's own object, `Pyro.Daemon`: ping, registered, get_metadata, info.

use std::sync::Weak;

use super::Inner;
use crate::dispatch::{BoxFuture, Dispatch, Outcome};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::protocol::codec::{Args, Metadata};
use crate::protocol::names::daemon_method::{
    CLOSE_STREAM, GET_METADATA, GET_NEXT_STREAM_ITEM, INFO, PING, REGISTERED,
};
use crate::protocol::names::DAEMON_OBJECT_ID;

/// The daemon's own object, `Pyro.Daemon`: ping, registered, get_metadata, info.
pub(super) struct DaemonObject {
    pub(super) daemon: Weak<Inner>,
}

impl Dispatch for DaemonObject {
    fn metadata(&self) -> Metadata {
        Metadata {
            methods: [
                CLOSE_STREAM,
                GET_METADATA,
                GET_NEXT_STREAM_ITEM,
                INFO,
                PING,
                REGISTERED,
            ]
            .map(String::from)
            .to_vec(),
            oneway: vec![CLOSE_STREAM.into()],
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
                PING => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    ser.encode(&())
                }
                REGISTERED => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    ser.encode(&inner.registered())
                }
                INFO => {
                    args.decode::<[(); 0]>().map_err(bad)?;
                    let n = inner.objects.read().len();
                    ser.encode(&format!(
                        "rmi daemon bound on {}, advertised as {}, {n} objects registered, {} open streams",
                        inner.bound,
                        inner.advertised,
                        inner.streams.len()
                    ))
                }
                GET_NEXT_STREAM_ITEM => {
                    let (id,): (String,) = args.decode().map_err(bad)?;
                    let reader = super::context::current()
                        .map(|c| c.connection())
                        .unwrap_or_default();
                    return inner.streams.next(&id, reader).await.map(Outcome::Value);
                }
                CLOSE_STREAM => {
                    let (id,): (String,) = args.decode().map_err(bad)?;
                    inner.streams.close(&id);
                    ser.encode(&())
                }
                GET_METADATA => {
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
