//! Batched calls: queue calls to one object and send them as one `<batch>` INVOKE (one round
//! trip); results come back in order, and execution stops at the first error, as in Pyro.
//!
//! In the Pyro formats (serpent, json, msgpack) the batch is Pyro's own: the calls are the
//! `<batch>` call's arguments, `[method, [args...], {}]` each, and the reply is the list of
//! results with the failure as Pyro's `_ExceptionWrapper`, so a batch reaches a Python daemon
//! (a Python `Pyro5.api.BatchProxy` sends the same to an rmi daemon). Under bincode (rmi to
//! rmi) the calls travel encoded, as rmi's own shape.
//!
//! ```no_run
//! # async fn demo(proxy: rmi_core::Proxy) -> Result<(), rmi_core::Error> {
//! let mut batch = proxy.batch();
//! let a = batch.add::<_, String>("welcomeMessage", &("A",));
//! let b = batch.add::<_, String>("welcomeMessage", &("B",));
//! let results = batch.send().await?;
//! assert_eq!(results.get(&a)?, "Hi welcome A");
//! assert_eq!(results.get(&b)?, "Hi welcome B");
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

use super::Proxy;
use crate::error::Error;
use crate::protocol::codec::{self, BatchItem, PyroCall, PyroValue, Serializer};
use crate::protocol::frame::Protocol;
use crate::transport::received;

/// The queued calls, in the shape the serializer's batches take.
#[derive(Debug)]
enum Calls {
    /// rmi's own (bincode): each call an encoded INVOKE payload.
    Rmi(Vec<ByteBuf>),
    /// Pyro's (serpent, json, msgpack): each call `[method, [args...], {}]`.
    Pyro(Vec<PyroCall>),
}

/// The calls encoded for one kind of connection: its serializer and protocol.
#[derive(Debug)]
struct Shape {
    serializer: Serializer,
    protocol: Protocol,
    calls: Calls,
    /// The first call that could not be encoded in this shape; `send` reports it when this is
    /// the shape the connection takes.
    error: Option<Error>,
}

impl Shape {
    fn new(serializer: Serializer, protocol: Protocol) -> Self {
        let calls = match serializer {
            Serializer::Bincode => Calls::Rmi(Vec::new()),
            _ => Calls::Pyro(Vec::new()),
        };
        Shape {
            serializer,
            protocol,
            calls,
            error: None,
        }
    }

    fn add<A: Serialize>(&mut self, method: &str, args: &A) {
        if self.error.is_some() {
            return;
        }
        let encoded = match &mut self.calls {
            // The object id stays empty: the daemon runs batched calls on the connection's
            // object.
            Calls::Rmi(calls) => codec::encode_invoke(self.serializer, "", method, args)
                .map(|payload| calls.push(ByteBuf::from(payload))),
            Calls::Pyro(calls) => PyroCall::new_in(self.serializer, self.protocol, method, args)
                .map(|call| calls.push(call)),
        };
        self.error = encoded.err();
    }

    /// True when these are the calls for a connection in `serializer` and `protocol` (bincode
    /// is the same in both protocols).
    fn fits(&self, serializer: Serializer, protocol: Protocol) -> bool {
        self.serializer == serializer
            && (self.protocol == protocol || serializer == Serializer::Bincode)
    }
}

/// The results of a batch, in the shape its calls took.
#[derive(Debug)]
enum Items {
    Rmi(Vec<BatchItem>),
    Pyro(Vec<PyroValue>),
}

/// Calls queued for one round trip; made by [`Proxy::batch`].
///
/// The calls are encoded as they are added, for the proxy's connection. A batch made before
/// its proxy connected encodes them for each kind of daemon the proxy may reach (an rmi daemon
/// in bincode, a Python Pyro5 or Pyro4 one in serpent, unless the proxy's serializer or
/// protocol is set), and sends the ones the connection takes: up to three encodings of each
/// call, held until `send`. For batches of large arguments, connect first (any call does),
/// or set the serializer and protocol.
#[derive(Debug)]
pub struct Batch {
    proxy: Proxy,
    /// This batch's number (process-wide): its slots carry it, so that a slot cannot read
    /// another batch's results.
    id: u64,
    /// One per kind of connection the batch may be sent over.
    shapes: Vec<Shape>,
    /// Number of calls added.
    len: usize,
}

/// Where a queued call's result will be in the [`BatchResults`].
#[derive(Debug)]
pub struct Slot<R> {
    /// The number of the batch the slot is of.
    batch: u64,
    index: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> Clone for Slot<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Slot<R> {}

impl Batch {
    pub(crate) fn new(proxy: Proxy) -> Self {
        let shapes = proxy
            .batch_shapes()
            .into_iter()
            .map(|(serializer, protocol)| Shape::new(serializer, protocol))
            .collect();
        /// The next batch's number.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Batch {
            proxy,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            shapes,
            len: 0,
        }
    }

    /// Queues a call of `method`; its result will be an `R`.
    ///
    /// A call whose arguments cannot be encoded is not queued: [`send`](Self::send) reports
    /// its error.
    pub fn add<A: Serialize, R: DeserializeOwned>(&mut self, method: &str, args: &A) -> Slot<R> {
        for shape in &mut self.shapes {
            shape.add(method, args);
        }
        self.len += 1;
        Slot {
            batch: self.id,
            index: self.len - 1,
            _result: PhantomData,
        }
    }

    /// Number of calls added (one whose arguments could not be encoded included: `send`
    /// reports it).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no call was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Connects if needed, and takes the calls encoded for the connection.
    async fn calls(self) -> Result<(Proxy, Shape, usize, u64), Error> {
        let (serializer, protocol) = self.proxy.batch_connection().await?;
        let Some(shape) = self
            .shapes
            .into_iter()
            .find(|shape| shape.fits(serializer, protocol))
        else {
            return Err(Error::Protocol(format!(
                "the batch's calls were encoded for another kind of connection than the one \
                 its proxy has now ({serializer:?} in {protocol}); make the batch again"
            ))
            .not_sent());
        };
        if let Some(e) = shape.error {
            return Err(e);
        }
        Ok((self.proxy, shape, self.len, self.id))
    }

    /// Sends the calls and waits for their results.
    ///
    /// In Pyro's format (to a Python daemon, or under serpent, JSON or msgpack), a call of a
    /// method the object does not have fails the whole batch, as Pyro's daemon does, with the
    /// results of the calls before it lost. From an rmi daemon that is
    /// [`Error::UnknownMethod`] when it was the first call (nothing ran), otherwise an
    /// [`Error::Remote`] (`builtins.AttributeError`) that says how many calls ran, for which
    /// [`Error::is_not_executed`] is false; a Python daemon's is always Python's
    /// `AttributeError` ([`Error::Remote`]). (Under bincode the calls before it keep their
    /// results.)
    pub async fn send(self) -> Result<BatchResults, Error> {
        let (proxy, shape, sent, batch) = self.calls().await?;
        let (items, origin) = match &shape.calls {
            Calls::Rmi(calls) => {
                let (items, origin) = proxy.send_batch(&(calls,)).await?;
                (Items::Rmi(items), origin)
            }
            Calls::Pyro(calls) => {
                let (items, origin) = proxy
                    .send_batch(calls)
                    .await
                    .map_err(|e| after_earlier_calls(e, calls))?;
                (Items::Pyro(items), origin)
            }
        };
        Ok(BatchResults {
            batch,
            items,
            rmi_peer: origin.rmi_peer,
            sent,
            serializer: shape.serializer,
            receiver: proxy,
        })
    }

    /// Sends the calls without waiting: the daemon runs them and sends nothing back.
    pub async fn send_oneway(self) -> Result<(), Error> {
        let (proxy, shape, _, _) = self.calls().await?;
        match &shape.calls {
            Calls::Rmi(calls) => proxy.send_batch_oneway(&(calls,)).await,
            Calls::Pyro(calls) => proxy.send_batch_oneway(calls).await,
        }
    }
}

/// A Pyro-format batch's failure `e` as its caller is to see it: an unknown method after
/// calls that ran is no longer "not executed" (helper-164 #3). The daemon stops at the first
/// call of the missing method, so the calls before that one's first place ran.
fn after_earlier_calls(e: Error, calls: &[PyroCall]) -> Error {
    let Error::UnknownMethod { object, method } = e else {
        return e;
    };
    match calls.iter().position(|c| c.method() == Some(&method)) {
        Some(ran @ 1..) => {
            let mut err = crate::error::RemoteError::new(
                crate::error::RemoteErrorKind::Other,
                "builtins.AttributeError",
                format!(
                    "unknown method {method:?}, call {} of the batch: the {ran} call(s) before \
                     it ran, and their results are lost (in Pyro's format a missing method \
                     fails the whole batch)",
                    ran + 1
                ),
            );
            err.object = (!object.is_empty()).then_some(object);
            err.method = Some(method);
            Error::Remote(Box::new(err))
        }
        _ => Error::UnknownMethod { object, method },
    }
}

/// The results of a sent [`Batch`].
#[derive(Debug)]
pub struct BatchResults {
    /// The number of the batch these are the results of.
    batch: u64,
    items: Items,
    /// The batch went to an rmi daemon, whose own kinds of error are believed.
    rmi_peer: bool,
    sent: usize,
    serializer: Serializer,
    /// The proxy that sent the batch: its limits bound the decoding, and proxies among the
    /// results dial with its TLS settings and shared secret.
    receiver: Proxy,
}

impl BatchResults {
    /// The result of the call at `slot`: its value, its error, or an error saying it did not
    /// run because an earlier call failed. A slot of another batch is an error
    /// ([`Error::Protocol`]), not that batch's result at the same place.
    pub fn get<R: DeserializeOwned>(&self, slot: &Slot<R>) -> Result<R, Error> {
        if slot.batch != self.batch {
            return Err(Error::Protocol(
                "this slot is of another batch than these results".into(),
            ));
        }
        // Proxies among the results dial with the TLS settings and secret of the sender.
        let shared = &self.receiver.shared;
        let security = &shared.security;
        let item = match &self.items {
            Items::Rmi(items) => items.get(slot.index).map(|item| match item {
                BatchItem::Ok(bytes) => received::receiving(security, || {
                    self.serializer.decode(bytes, &shared.config.limits)
                }),
                BatchItem::Err(e) => Err(Error::from_remote(e.clone())),
            }),
            Items::Pyro(items) => {
                items
                    .get(slot.index)
                    .map(|v| match v.batch_error_from(self.rmi_peer) {
                        Some(e) => Err(Error::from_remote(e)),
                        None => received::receiving(security, || v.decode()),
                    })
            }
        };
        match item {
            Some(result) => result,
            None if slot.index < self.sent => Err(Error::NotExecuted(
                "an earlier call in the batch failed, so this one did not run".into(),
            )),
            None => Err(Error::Protocol(format!(
                "no call {} in this batch",
                slot.index
            ))),
        }
    }

    /// How many calls ran (all of them, unless one failed).
    pub fn executed(&self) -> usize {
        match &self.items {
            Items::Rmi(items) => items.len(),
            Items::Pyro(items) => items.len(),
        }
    }
}
