//! Errors: the one [`Error`] a caller sees, and [`RemoteError`], the failure that crosses the wire.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Result alias used throughout rmi.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a remote call, told apart by variant.
///
/// Communication failures (`Io`, `ConnectionClosed`, `Timeout`) mean the call may or may not
/// have run; `Protocol` and `Codec` mean the bytes were wrong; the remaining variants are
/// answers from the remote side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed: connect refused, reset, or another socket error. Its Display says
    /// what rmi was doing; the socket error is its `source()`.
    #[error("communication error: {context}")]
    Io {
        /// What rmi was doing when the socket failed.
        context: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The request was provably not executed: it was never sent (the connection could not be
    /// made, closed before the request was written, or the call timed out waiting for an
    /// in-flight slot), or its daemon, shutting down, answered it unrun. Safe to retry.
    ///
    /// Display and `source()` are the cause's, and [`is_timeout`](Error::is_timeout),
    /// [`is_connection`](Error::is_connection) and the other questions look through it, so
    /// ask them rather than matching the cause's variant.
    #[error(transparent)]
    NotSent(Box<Error>),
    /// The connection closed before the reply to this call arrived.
    #[error("connection closed: {0}")]
    ConnectionClosed(String),
    /// The call or the connect did not finish within its deadline.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The peer sent bytes that are not a valid Pyro message (Pyro5 protocol 502, or Pyro4 48
    /// where a daemon accepts it), or a limit was hit.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A payload could not be serialized or deserialized.
    #[error("serialization error: {0}")]
    Codec(String),
    /// A URI could not be parsed.
    #[error("invalid uri {uri:?}: {reason}")]
    InvalidUri {
        /// The text that was given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The daemon refused the connection handshake (Pyro's CONNECTFAIL).
    #[error("connection refused by daemon: {0}")]
    ConnectFailed(String),
    /// The daemon has no object with this id.
    #[error("unknown object {0:?}")]
    UnknownObject(String),
    /// The object has no method with this wire name.
    #[error("unknown method {method:?} on object {object:?}")]
    UnknownMethod {
        /// The object id.
        object: String,
        /// The wire name that was called.
        method: String,
    },
    /// The arguments did not decode as the types the method takes.
    #[error("bad arguments: {0}")]
    BadArguments(Box<RemoteError>),
    /// The remote method panicked; only this call failed.
    #[error("remote method panicked: {0}")]
    Panicked(Box<RemoteError>),
    /// Any other error raised on the remote side.
    #[error("remote error: {0}")]
    Remote(Box<RemoteError>),
    /// A name service refused or failed: a logical URI could not be resolved, a name could
    /// not be registered, no name server was found (Pyro's `NamingError`). rmi-core knows no
    /// name server; the [`Resolve`](crate::Resolve) hook's backend (rmi-naming) reports these.
    #[error("naming error: {0}")]
    Resolve(String),
    /// The call was delivered but provably did not run (e.g. a batched call after one that
    /// failed).
    #[error("not executed: {0}")]
    NotExecuted(String),
    /// The daemon is shutting down or the local side was closed.
    #[error("closed: {0}")]
    Closed(String),
    /// A local daemon operation was refused: duplicate or reserved object id, bad bind address.
    #[error("daemon error: {0}")]
    Daemon(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The error itself, or the cause a [`NotSent`](Error::NotSent) wraps.
    pub fn cause(&self) -> &Error {
        match self {
            Error::NotSent(inner) => inner.cause(),
            other => other,
        }
    }

    /// True when a deadline passed (the call's, the connect's, or the wait for an in-flight
    /// slot), wherever it happened.
    pub fn is_timeout(&self) -> bool {
        matches!(self.cause(), Error::Timeout(_))
    }

    /// True when the connection failed or closed (socket error, reset, peer gone).
    pub fn is_connection(&self) -> bool {
        matches!(self.cause(), Error::Io { .. } | Error::ConnectionClosed(_))
    }

    /// True for failures of the connection itself (socket error, peer gone, timeout),
    /// as opposed to an answer from the remote object: [`is_connection`](Self::is_connection)
    /// or [`is_timeout`](Self::is_timeout).
    pub fn is_communication(&self) -> bool {
        self.is_connection() || self.is_timeout()
    }

    /// True when the request provably did not run on the remote object: it was never sent, or
    /// the daemon refused it before dispatch (unknown object or method, undecodable arguments,
    /// refused handshake). Such a call can be retried without risk of running twice. (Every
    /// [`Error::Resolve`] counts, taken for a lookup that failed before the call: a
    /// `NamingError` a method raised after its work counts too, so a method with side effects
    /// should not relay one.) It takes the daemon's word: rmi's kinds of error are believed
    /// only from an rmi daemon, not from a Python one relaying an rmi backend's exception.
    pub fn is_not_executed(&self) -> bool {
        matches!(
            self,
            Error::NotSent(_)
                | Error::NotExecuted(_)
                | Error::ConnectFailed(_)
                | Error::UnknownObject(_)
                | Error::UnknownMethod { .. }
                | Error::BadArguments(_)
                | Error::InvalidUri { .. }
                | Error::Resolve(_)
        )
    }

    /// Wraps a failure that happened before the request was written.
    pub(crate) fn not_sent(self) -> Self {
        match self {
            Error::NotSent(_)
            | Error::ConnectFailed(_)
            | Error::UnknownObject(_)
            | Error::InvalidUri { .. }
            | Error::Resolve(_) => self,
            other => Error::NotSent(Box::new(other)),
        }
    }

    /// Turns a remote error received in a reply into the matching variant.
    pub(crate) fn from_remote(err: RemoteError) -> Self {
        match err.kind {
            RemoteErrorKind::UnknownObject => {
                Error::UnknownObject(err.object.clone().unwrap_or_default())
            }
            RemoteErrorKind::UnknownMethod => Error::UnknownMethod {
                object: err.object.clone().unwrap_or_default(),
                method: err.method.clone().unwrap_or_default(),
            },
            RemoteErrorKind::BadArguments => Error::BadArguments(Box::new(err)),
            RemoteErrorKind::Panic => Error::Panicked(Box::new(err)),
            RemoteErrorKind::Resolve => Error::Resolve(err.message),
            _ => Error::Remote(Box::new(err)),
        }
    }
}

/// Lets infallible conversions (such as `Uri` into itself) meet a `TryInto<_, Error: Into<Error>>`
/// bound.
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// Displays an error with its causes, for people and logs: `message: cause: cause`.
///
/// ```
/// use rmi_core::error::Report;
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let err = rmi_core::Error::Io { context: "connecting to 127.0.0.1:9".into(), source: io };
/// assert_eq!(
///     Report(&err).to_string(),
///     "communication error: connecting to 127.0.0.1:9: connection refused"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// What kind of failure a [`RemoteError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// No object with the requested id is registered.
    UnknownObject,
    /// The object has no such method.
    UnknownMethod,
    /// The arguments did not decode as the method's parameter types.
    BadArguments,
    /// The method panicked.
    Panic,
    /// A name service refused an operation (unknown name, name taken): Pyro's `NamingError`.
    /// (Named `Naming` on the wire, as before.)
    #[serde(rename = "Naming")]
    Resolve,
    /// The request was malformed at the protocol level.
    Protocol,
    /// A streamed result has no more items (Pyro's `StopIteration`).
    StopIteration,
    /// The caller's deadline passed and the daemon cancelled the method.
    DeadlineExceeded,
    /// Anything else.
    Other,
}

/// A failure on the remote side, as it travels back to the caller.
///
/// It carries a Python-style type name (so Pyro peers can recognise it later), a message and the
/// chain of causes, like Pyro's remote traceback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteError {
    /// What kind of failure this is.
    pub kind: RemoteErrorKind,
    /// The remote error's type name, e.g. `Pyro5.errors.DaemonError` or `rmi.Panic`.
    pub type_name: String,
    /// The error message.
    pub message: String,
    /// Causes, outermost first (the remote "traceback").
    pub chain: Vec<String>,
    /// The object id the call addressed, when known.
    pub object: Option<String>,
    /// The method the call addressed, when known.
    pub method: Option<String>,
    /// Sent to Python peers under its own class name, though Python cannot rebuild it without
    /// help (a daemon's [`exception_classes`](crate::DaemonBuilder::exception_classes)).
    #[serde(skip)]
    pub(crate) keep_class: bool,
    /// The operating system's error number of an I/O error: Python peers get the exception as
    /// Python raises it, `(errno, strerror)`, so `e.errno` works.
    #[serde(skip)]
    pub(crate) os_error: Option<i32>,
    /// The daemon's own answer, raised by its `Pyro.Daemon` object (an object unknown to
    /// `get_metadata`): its kind stands, where a method's error of that kind would pass for
    /// the daemon's (see `__private::raised`).
    #[serde(skip)]
    pub(crate) daemon_answer: bool,
    /// What a Python peer's exception carried besides its message (its arguments and its own
    /// attributes), so that the error an rmi method relays reaches a Python caller as the same
    /// exception.
    #[serde(skip)]
    pub(crate) python: Option<PythonParts>,
}

/// A Python peer's exception's arguments and attributes as they came, for the Pyro formats to
/// send on (`protocol::codec::exception` puts them in and takes them out; opaque here, since
/// `error` imports nothing).
#[derive(Clone)]
pub(crate) struct PythonParts(pub(crate) std::sync::Arc<dyn std::any::Any + Send + Sync>);

impl fmt::Debug for PythonParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PythonParts(..)")
    }
}

/// Errors compare by what rmi reads of them: their kind, class, message, causes and call.
impl PartialEq for PythonParts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PythonParts {}

/// An I/O error raised by a method (`#[rmi(raises)]` on one returning `io::Result<T>`): Python's
/// `OSError`, or the subclass Python raises for the same failure (`FileNotFoundError`,
/// `PermissionError`, `TimeoutError`, …), with the error's sources as the remote traceback.
impl From<std::io::Error> for RemoteError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let class = match e.kind() {
            K::NotFound => "FileNotFoundError",
            K::PermissionDenied => "PermissionError",
            K::AlreadyExists => "FileExistsError",
            K::ConnectionRefused => "ConnectionRefusedError",
            K::ConnectionReset => "ConnectionResetError",
            K::ConnectionAborted => "ConnectionAbortedError",
            K::BrokenPipe => "BrokenPipeError",
            K::WouldBlock => "BlockingIOError",
            K::TimedOut => "TimeoutError",
            K::Interrupted => "InterruptedError",
            K::IsADirectory => "IsADirectoryError",
            K::NotADirectory => "NotADirectoryError",
            _ => "OSError",
        };
        let mut remote = RemoteError::new(
            RemoteErrorKind::Other,
            format!("builtins.{class}"),
            e.to_string(),
        );
        remote.os_error = e.raw_os_error();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            remote.chain.push(cause.to_string());
            source = cause.source();
        }
        remote
    }
}

impl RemoteError {
    /// A remote error of the given kind with a type name and message.
    pub fn new(
        kind: RemoteErrorKind,
        type_name: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        RemoteError {
            kind,
            type_name: type_name.into(),
            message: message.into(),
            chain: Vec::new(),
            object: None,
            method: None,
            keep_class: false,
            os_error: None,
            daemon_answer: false,
            python: None,
        }
    }

    /// The error for a call to an object id the daemon does not know.
    pub fn unknown_object(object: &str) -> Self {
        let mut e = Self::new(
            RemoteErrorKind::UnknownObject,
            "Pyro5.errors.DaemonError",
            format!("unknown object {object:?}"),
        );
        e.object = Some(object.to_owned());
        e
    }

    /// The error for a call to a method the object does not have.
    pub fn unknown_method(object: &str, method: &str) -> Self {
        let mut e = Self::new(
            RemoteErrorKind::UnknownMethod,
            "builtins.AttributeError",
            format!("unknown method {method:?}"),
        );
        e.object = (!object.is_empty()).then(|| object.to_owned());
        e.method = Some(method.to_owned());
        e
    }

    /// The error for a property the object does not have, or does not let be set: Pyro's
    /// words, in Python's `AttributeError`.
    pub fn unknown_attribute(name: &str) -> Self {
        Self::new(
            RemoteErrorKind::Other,
            "builtins.AttributeError",
            format!("attempt to access unexposed or unknown remote attribute '{name}'"),
        )
    }

    /// The error for arguments that do not decode as the method's parameters.
    pub fn bad_arguments(method: &str, reason: impl fmt::Display) -> Self {
        let mut e = Self::new(
            RemoteErrorKind::BadArguments,
            "builtins.TypeError",
            format!("arguments of {method:?} do not match its parameters: {reason}"),
        );
        e.method = Some(method.to_owned());
        e
    }

    /// The end of a streamed result.
    pub fn stop_iteration() -> Self {
        Self::new(
            RemoteErrorKind::StopIteration,
            "builtins.StopIteration",
            "end of stream",
        )
    }

    /// The error for a method that panicked.
    pub fn panic(method: &str, payload: &str) -> Self {
        let mut e = Self::new(
            RemoteErrorKind::Panic,
            "rmi.Panic",
            format!("method {method:?} panicked: {payload}"),
        );
        e.method = Some(method.to_owned());
        e
    }

    /// Builds a remote error from any local error, recording its `source()` chain.
    pub fn from_error(
        kind: RemoteErrorKind,
        type_name: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Self {
        let mut e = Self::new(kind, type_name, err.to_string());
        let mut source = err.source();
        while let Some(s) = source {
            e.chain.push(s.to_string());
            source = s.source();
        }
        e
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)?;
        for cause in &self.chain {
            write!(f, "\n  caused by: {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written dispatcher may name its object or leave it to the daemon (which fills in
    /// a missing one): an empty name is no name.
    #[test]
    fn unknown_method_names_its_object_only_when_given_one() {
        let named = RemoteError::unknown_method("calculator", "add");
        assert_eq!(named.object.as_deref(), Some("calculator"));
        assert_eq!(named.method.as_deref(), Some("add"));
        assert_eq!(named.kind, RemoteErrorKind::UnknownMethod);
        assert_eq!(RemoteError::unknown_method("", "add").object, None);
    }
}
