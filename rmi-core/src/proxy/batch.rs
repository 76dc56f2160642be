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
use crate::transport::received;

/// The queued calls, in the shape the serializer's batches take.
#[derive(Debug)]
enum Calls {
    /// rmi's own (bincode): each call an encoded INVOKE payload.
    Rmi(Vec<ByteBuf>),
    /// Pyro's (serpent, json, msgpack): each call `[method, [args...], {}]`.
    Pyro(Vec<PyroCall>),
}

impl Calls {
    fn len(&self) -> usize {
        match self {
            Calls::Rmi(c) => c.len(),
            Calls::Pyro(c) => c.len(),
        }
    }
}

/// The results of a batch, in the shape its calls took.
#[derive(Debug)]
enum Items {
    Rmi(Vec<BatchItem>),
    Pyro(Vec<PyroValue>),
}

/// Calls queued for one round trip; made by [`Proxy::batch`].
#[derive(Debug)]
pub struct Batch {
    proxy: Proxy,
    calls: Calls,
    /// The serializer the calls are encoded in: the proxy's when the batch was made.
    serializer: Serializer,
    /// The first call that could not be encoded; `send` reports it.
    error: Option<Error>,
}

/// Where a queued call's result will be in the [`BatchResults`].
#[derive(Debug)]
pub struct Slot<R> {
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
        let serializer = proxy.serializer();
        let calls = match serializer {
            Serializer::Bincode => Calls::Rmi(Vec::new()),
            _ => Calls::Pyro(Vec::new()),
        };
        Batch {
            serializer,
            proxy,
            calls,
            error: None,
        }
    }

    /// Queues a call of `method`; its result will be an `R`.
    pub fn add<A: Serialize, R: DeserializeOwned>(&mut self, method: &str, args: &A) -> Slot<R> {
        match &mut self.calls {
            Calls::Rmi(calls) => {
                // The object id stays empty: the daemon runs batched calls on the connection's
                // object.
                let payload = codec::encode_invoke(self.serializer, "", method, args)
                    .unwrap_or_else(|e| {
                        self.error.get_or_insert(e);
                        Vec::new()
                    });
                calls.push(ByteBuf::from(payload));
            }
            // A call that cannot be encoded is not queued: `send` reports it instead.
            Calls::Pyro(calls) => match PyroCall::new(self.serializer, method, args) {
                Ok(call) => calls.push(call),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            },
        }
        Slot {
            index: self.calls.len().saturating_sub(1),
            _result: PhantomData,
        }
    }

    /// Number of queued calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.calls.len() == 0
    }

    /// Sends the calls and waits for their results.
    pub async fn send(self) -> Result<BatchResults, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let sent = self.calls.len();
        self.proxy.check_batch_serializer(self.serializer).await?;
        let items = match &self.calls {
            Calls::Rmi(calls) => Items::Rmi(self.proxy.send_batch(&(calls,)).await?),
            Calls::Pyro(calls) => Items::Pyro(self.proxy.send_batch(calls).await?),
        };
        Ok(BatchResults {
            items,
            sent,
            serializer: self.serializer,
            receiver: self.proxy.clone(),
        })
    }

    /// Sends the calls without waiting: the daemon runs them and sends nothing back.
    pub async fn send_oneway(self) -> Result<(), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.proxy.check_batch_serializer(self.serializer).await?;
        match &self.calls {
            Calls::Rmi(calls) => self.proxy.send_batch_oneway(&(calls,)).await,
            Calls::Pyro(calls) => self.proxy.send_batch_oneway(calls).await,
        }
    }
}

/// The results of a sent [`Batch`].
#[derive(Debug)]
pub struct BatchResults {
    items: Items,
    sent: usize,
    serializer: Serializer,
    /// The proxy that sent the batch: its limits bound the decoding, and proxies among the
    /// results dial with its TLS settings and shared secret.
    receiver: Proxy,
}

impl BatchResults {
    /// The result of the call at `slot`: its value, its error, or an error saying it did not
    /// run because an earlier call failed.
    pub fn get<R: DeserializeOwned>(&self, slot: &Slot<R>) -> Result<R, Error> {
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
            Items::Pyro(items) => items.get(slot.index).map(|v| match v.batch_error() {
                Some(e) => Err(Error::from_remote(e)),
                None => received::receiving(security, || v.decode()),
            }),
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
