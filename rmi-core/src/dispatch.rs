//! The server side of an object: [`Dispatch`], which generated `{Trait}Server` types implement.

use std::future::Future;
use std::pin::Pin;

use crate::error::RemoteError;
use crate::protocol::codec::{Args, Metadata};
use crate::stream::EncodedStream;

/// What a dispatched call produced.
pub enum Outcome {
    /// The encoded result.
    Value(Vec<u8>),
    /// A stream of encoded items, for a method returning `RemoteStream<T>`.
    Stream(EncodedStream),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Value(v) => write!(f, "Value({} bytes)", v.len()),
            Outcome::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A boxed, `Send` future, as [`Dispatch`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object a daemon can serve: it names its methods and runs a call by wire name.
///
/// `#[rmi::remote]` implements this for `{Trait}Server<T>`; implement it by hand only for
/// dynamic objects. It is dyn-compatible, so it returns a boxed future rather than being an
/// `async fn`.
pub trait Dispatch: Send + Sync + 'static {
    /// The object's methods and which of them are oneway (sent in CONNECTOK).
    fn metadata(&self) -> Metadata;

    /// The metadata of every instance of this type, known without an instance; used for
    /// session and per-call registrations, which make instances only when calls come. Generated
    /// servers implement it; the default (no methods) suits hand-written dispatchers that are
    /// only registered as instances.
    fn describe() -> Metadata
    where
        Self: Sized,
    {
        Metadata::default()
    }

    /// Runs `method` with the encoded `args`; returns the encoded result (or stream) in the
    /// arguments' serializer, or the error to send back.
    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>>;
}
