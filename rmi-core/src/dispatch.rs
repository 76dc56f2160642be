//! The server side of an object: [`Dispatch`], which generated `{Trait}Server` types implement.

use std::future::Future;
use std::pin::Pin;

use crate::error::RemoteError;
use crate::protocol::codec::{Args, Metadata};

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

    /// Runs `method` with the encoded `args`; returns the encoded result in the arguments'
    /// serializer, or the error to send back.
    fn dispatch<'a>(&'a self, method: &'a str, args: Args) -> BoxFuture<'a, Result<Vec<u8>, RemoteError>>;
}
