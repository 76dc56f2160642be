//! Dialing: resolve a logical URI, connect (TLS if configured), handshake (detecting a Pyro4
//! daemon by its answer, and dialing it again in protocol 48), and redial with jittered
//! exponential backoff when the connection is gone; in two steps for a call that dials, which
//! is encoded for the daemon the first step resolved and sent with the CONNECT. While a lookup
//! is under way, the daemon it will likely answer is dialed ahead ([`EarlyDial`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::BoxFuture;

use rand::Rng;

use super::connection::{Connection, FirstCall, Opened};
use super::Proxy;
use crate::error::Error;
use crate::protocol::codec::Serializer;
use crate::protocol::frame::Protocol;
use crate::transport::{self, BoxIo};
use crate::uri::{Location, Uri};

/// First backoff between dials; doubled each time, jittered, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Proxy {
    /// Closes the connection now; the next call dials again (except on a proxy made with
    /// [`ProxyBuilder::connect_over`](super::ProxyBuilder::connect_over), which never dials).
    /// A dial under way meanwhile (a call's, on another task) is not kept either: the call
    /// that dialed is made on it, and it closes once that call ends; the calls that waited
    /// for it dial again.
    pub fn close(&self) {
        // Counted before the connection is taken: a dial that stores its connection after
        // this reads the new count (under the same lock) and keeps it for its callers only.
        self.shared.closes.fetch_add(1, Ordering::AcqRel);
        if let Some(conn) = self.shared.conn.write().take() {
            conn.shared.close("closed by the proxy".into());
        }
    }

    /// The failure of a call its daemon answered as not run, for it was shutting down: the
    /// proxy lets go of that connection (calls in flight on it still get their replies), so
    /// that the next call, this one's retry among them, dials anew, and may reach the daemon
    /// that replaced it, or another of the name. (A proxy made over a stream keeps it: it
    /// never dials.)
    pub(super) fn not_run(&self, conn: &Arc<Connection>) -> Error {
        self.let_go(conn);
        Error::ConnectionClosed("the daemon is shutting down: the call was not run".into())
            .not_sent()
    }

    /// Lets go of `conn`, if it is still the proxy's: the next call dials anew, while calls
    /// in flight on it still get their replies (it closes once the last of them is done). A
    /// proxy made over a stream keeps it: it never dials.
    pub(super) fn let_go(&self, conn: &Arc<Connection>) {
        if self.shared.config.over_stream {
            return;
        }
        let mut current = self.shared.conn.write();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }

    /// The live connection, dialing (and resolving a logical URI) if there is none. Concurrent
    /// callers wait for one dial; failed dials are retried with jittered exponential backoff.
    pub(super) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        let opened = match self.begin_dial().await {
            Ok(Dialing::Live(conn)) => return Ok(conn),
            Ok(Dialing::Due(due)) => self.finish_dial(due, None).await,
            Err(failed) => Err(failed),
        };
        match opened {
            Ok((conn, _)) => Ok(conn),
            Err(DialFailed::Unsent(e) | DialFailed::AfterSend(e)) => Err(e),
        }
    }

    /// The live connection; or, when there is none, the dial this caller is to make (see
    /// [`finish_dial`](Self::finish_dial)), with the dial lock held and the URI resolved, so
    /// that the caller can encode its call for the daemon it will reach.
    pub(super) async fn begin_dial(&self) -> Result<Dialing<'_>, DialFailed> {
        if let Some(conn) = self.live() {
            return Ok(Dialing::Live(conn));
        }
        if self.shared.config.over_stream {
            return Err(DialFailed::Unsent(
                Error::ConnectionClosed(
                    "the stream this proxy was made over has closed, and such a proxy never \
                     dials (make another with connect_over)"
                        .into(),
                )
                .not_sent(),
            ));
        }
        let waiting_since = tokio::time::Instant::now();
        let last_failure = self.shared.dial_lock.lock().await;
        if let Some(conn) = self.live() {
            return Ok(Dialing::Live(conn));
        }
        // A dial that ended while we waited failed for us too: do not dial all over again. (But
        // one that failed the call it sent with the CONNECT was that call's failure: dial, the
        // usual way, with no call ahead: a daemon that failed it may fail another.)
        let recent = last_failure.as_ref().filter(|f| f.at >= waiting_since);
        if let Some(failure) = recent.filter(|f| !f.after_send) {
            return Err(DialFailed::Unsent(failure.error()));
        }
        let ahead = recent.is_none();
        let closes = self.shared.closes.load(Ordering::Acquire);
        // The first dial's resolution, within the first dial's connect timeout.
        let timeout = self.shared.config.connect_timeout;
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let (target, early) = match deadline {
            Some(at) => tokio::time::timeout_at(at, self.resolve_dialing_ahead())
                .await
                .unwrap_or((Err(Error::Timeout(timeout)), None)),
            None => self.resolve_dialing_ahead().await,
        };
        // What the dial has left of it, counted from when it starts: the caller's encoding
        // of its call in between is not the dial's.
        let left = deadline.map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
        Ok(Dialing::Due(Due {
            last_failure,
            target,
            early,
            left,
            ahead,
            closes,
        }))
    }

    /// Makes the dial [`begin_dial`](Self::begin_dial) found due: the first attempt to the URI
    /// it resolved, sending `first` right behind the CONNECT if that is the daemon and protocol
    /// it was encoded for (and returning its sequence number, for [`Connection::reply`]); the
    /// later attempts resolving again.
    pub(super) async fn finish_dial(
        &self,
        due: Due<'_>,
        mut first: Option<Ahead>,
    ) -> Result<(Arc<Connection>, Option<u16>), DialFailed> {
        let Due {
            mut last_failure,
            target,
            early,
            left,
            ahead: _,
            closes,
        } = due;
        let deadline = left.and_then(|left| tokio::time::Instant::now().checked_add(left));
        let mut target = Some(Resolved {
            target,
            deadline,
            early,
        });
        let config = &self.shared.config;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let may_have_run = AtomicBool::new(false);
        let (conn, sent) = loop {
            // Only the first dial sends the call ahead; after a failure it goes the usual way.
            match self.dial(target.take(), first.take(), &may_have_run).await {
                Ok(opened) => break opened,
                // Sent with the CONNECT, perhaps run: the call's own failure, not a dial's (and
                // the callers waiting for this dial fail too, their calls unsent).
                Err(e) if may_have_run.load(Ordering::Acquire) => {
                    *last_failure = Some(Failure::new(&e, true));
                    return Err(DialFailed::AfterSend(e));
                }
                // Answers, not outages: another dial would get the same, and so would the callers
                // waiting for this one (each dialing in turn: a name server down, each lookup
                // seconds long). Except a daemon's answer to a logical URI: a waiter resolving
                // it again may reach another daemon of the name.
                Err(e) if e.is_not_executed() && !matches!(e, Error::NotSent(_)) => {
                    if config.uri.is_direct() || matches!(e, Error::Resolve(_)) {
                        *last_failure = Some(Failure::new(&e, false));
                    }
                    return Err(DialFailed::Unsent(e));
                }
                // A certificate refused, the daemon's by this side or this side's by the
                // daemon, is refused again: each retry would only cost a TLS handshake (and a
                // line in the daemon's log). (A logical URI is retried: resolved again, it may
                // name another daemon.)
                Err(e) if config.uri.is_direct() && transport::is_certificate_refusal(&e) => {
                    *last_failure = Some(Failure::new(&e, false));
                    return Err(DialFailed::Unsent(e));
                }
                // The deadline of the call served here ran out (a name-server lookup inherits
                // it): that caller's failure, not the dial's, and not for the callers waiting
                // for this dial, who dial for themselves.
                Err(e) if e.is_timeout() && crate::chain::out_of_time() => {
                    return Err(DialFailed::Unsent(e));
                }
                Err(e) if attempt >= config.reconnect_attempts => {
                    *last_failure = Some(Failure::new(&e, false));
                    return Err(DialFailed::Unsent(e));
                }
                Err(e) => {
                    attempt += 1;
                    let wait = jitter(backoff);
                    tracing::debug!(error = %e, attempt, ?wait, uri = %config.uri, "dial failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let conn = Arc::new(conn);
        self.shared.security.connected_to(conn.direct.location());
        let mut kept = self.shared.conn.write();
        // Closed while it dialed: the connection serves the call that dialed, and closes when
        // that call lets go of it.
        if self.shared.closes.load(Ordering::Acquire) == closes {
            *kept = Some(conn.clone());
        }
        drop(kept);
        Ok((conn, sent))
    }

    /// Resolves the proxy's URI ([`resolve`](Self::resolve)); while the resolver has to wait
    /// (it asks a name server), dials the daemon the resolver says the URI likely resolves to
    /// ([`Resolve::likely`](crate::Resolve::likely)): that dial, begun or done, is returned for
    /// the first attempt to use if the answer is that daemon. Nothing is sent on it before.
    async fn resolve_dialing_ahead(&self) -> (Result<Arc<Uri>, Error>, Option<EarlyDial>) {
        let resolving = self.resolve();
        futures_util::pin_mut!(resolving);
        // Answered at once (a `PYRO:` URI, a cached name): nothing to dial ahead of.
        if let Poll::Ready(target) = futures_util::poll!(resolving.as_mut()) {
            return (target, None);
        }
        let config = &self.shared.config;
        let likely = self.resolver().and_then(|r| r.likely(&config.uri));
        let Some(location) = likely.as_ref().and_then(Uri::location).cloned() else {
            return (resolving.await, None);
        };
        let timeout = config.connect_timeout;
        let mut early = EarlyDial {
            location: location.clone(),
            state: EarlyState::Dialing(Box::pin(async move {
                transport::dial(&location, timeout).await
            })),
        };
        // Once dialed, the connection is kept for `EARLY_MAX_AGE` at most: a slow lookup does
        // not hold the daemon's connection slot (or a Pyro daemon's worker thread) for nothing.
        let mut expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let target = std::future::poll_fn(|cx| {
            if let EarlyState::Dialing(dialing) = &mut early.state {
                if let Poll::Ready(done) = dialing.as_mut().poll(cx) {
                    let at = tokio::time::Instant::now();
                    if done.is_ok() {
                        expiry = Some(Box::pin(tokio::time::sleep_until(at + EARLY_MAX_AGE)));
                    }
                    early.state = EarlyState::Done(done, at);
                }
            }
            if expiry
                .as_mut()
                .is_some_and(|e| e.as_mut().poll(cx).is_ready())
            {
                expiry = None;
                early.state = EarlyState::Expired;
            }
            resolving.as_mut().poll(cx)
        })
        .await;
        (target, Some(early))
    }

    /// The resolver of a logical URI: the proxy's own, else (a proxy made before a default
    /// resolver was installed, received inside a value, say) the one installed since. The one
    /// that resolves a dial is the one told of its failure, and asked where to dial ahead.
    fn resolver(&self) -> Option<Arc<dyn crate::Resolve>> {
        let config = &self.shared.config;
        config.resolver.clone().or_else(crate::resolve::at_dial)
    }

    /// The direct URI to dial: the proxy's own, or what the resolver makes of a logical one.
    async fn resolve(&self) -> Result<Arc<Uri>, Error> {
        let config = &self.shared.config;
        if let Uri::Pyro { .. } = &*config.uri {
            return Ok(config.uri.clone());
        }
        match (&*config.uri, self.resolver()) {
            (Uri::Pyro { .. }, _) => Ok(config.uri.clone()),
            (_, Some(resolver)) => resolver.resolve(&config.uri).await.map(Arc::new),
            (uri, None) => Err(Error::InvalidUri {
                uri: uri.to_string(),
                // (`rmi::Proxy::builder` is rmi-core's, which knows no name server.)
                reason: "a PYRONAME:/PYROMETA: uri needs a name-server resolver: make the proxy \
                         with `rmi::proxy_builder` or a generated `{Trait}Proxy`, or give it \
                         `.resolver(rmi::naming::default_resolver())`"
                    .into(),
            }),
        }
    }

    /// Resolves (if logical; unless `target` brings the resolution already, with its deadline
    /// and the dial begun meanwhile), dials (or takes that dial, if it went to the resolved
    /// daemon) and performs the handshake, within the connect timeout; sends `ahead`
    /// with the CONNECT if the dial reaches the daemon it was encoded for, in its protocol
    /// (setting `may_have_run` while it may have run).
    async fn dial(
        &self,
        target: Option<Resolved>,
        mut ahead: Option<Ahead>,
        may_have_run: &AtomicBool,
    ) -> Result<(Connection, Option<u16>), Error> {
        let config = &self.shared.config;
        let logical = !matches!(*config.uri, Uri::Pyro { .. });
        let deadline = match &target {
            Some(first) => first.deadline,
            None => tokio::time::Instant::now().checked_add(config.connect_timeout),
        };
        // The direct URI a logical one resolved to, to tell the resolver if dialing it failed.
        let resolved: parking_lot::Mutex<Option<Arc<Uri>>> = parking_lot::Mutex::new(None);
        let fut = async {
            let (direct, mut early) = match target {
                Some(first) => (first.target?, first.early),
                None => (self.resolve().await?, None),
            };
            if logical {
                *resolved.lock() = Some(direct.clone());
            }
            let (Some(_), Some(location)) = (direct.object(), direct.location()) else {
                return Err(Error::InvalidUri {
                    uri: direct.to_string(),
                    reason: "resolver returned a logical uri".into(),
                });
            };
            // The configured protocol; else the one the daemon was found to speak; else Pyro5.
            let first = config
                .protocol
                .or_else(|| self.learned_at(location))
                .unwrap_or_default();
            let mut protocol = first;
            loop {
                let early_stream = match early.take() {
                    Some(dialed_ahead) => dialed_ahead.claim(location).await,
                    None => None,
                };
                let stream = match early_stream {
                    Some(stream) => stream,
                    // Within `deadline` (below), which bounds the dial and the handshake.
                    None => transport::dial_unbounded(location).await?,
                };
                #[cfg(feature = "tls")]
                let stream = match &config.tls {
                    Some(tls) => transport::tls_connect(stream, location, tls.clone()).await?,
                    None => stream,
                };
                let first_call = ahead
                    .take()
                    .filter(|a| a.direct == direct && a.protocol == protocol)
                    .map(|a| FirstCall {
                        msg: a.msg,
                        may_have_run,
                    });
                let opened = Connection::open(stream, direct.clone(), config, protocol, first_call);
                match opened.await {
                    Ok(Opened::Ready(conn, sent)) => {
                        if config.protocol.is_none() {
                            *self.shared.learned.lock() = Some((location.clone(), protocol));
                        }
                        return Ok((conn, sent));
                    }
                    // Detected: the daemon answered in the other protocol. Once.
                    Ok(Opened::Speaks(other)) if config.protocol.is_none() && protocol == first => {
                        tracing::debug!(uri = %direct, %other, "the daemon speaks {other}; dialing again in it");
                        protocol = other;
                    }
                    Ok(Opened::Speaks(other)) => {
                        return Err(Error::ConnectFailed(format!(
                            "the daemon at {direct} speaks {other}, not {protocol}{}",
                            if config.protocol.is_some() {
                                " (set by ProxyBuilder::protocol)"
                            } else {
                                ""
                            }
                        )))
                    }
                    Err(e) => {
                        // A daemon found speaking Pyro4 that now drops a Pyro4 CONNECT unanswered
                        // may be a Pyro5 one in its place: the next dial starts from Pyro5 again.
                        if config.protocol.is_none()
                            && protocol != Protocol::Pyro5
                            && e.is_communication()
                        {
                            *self.shared.learned.lock() = None;
                        }
                        return Err(e);
                    }
                }
            }
        };
        let result = match deadline {
            Some(at) => tokio::time::timeout_at(at, fut)
                .await
                .map_err(|_| Error::Timeout(config.connect_timeout))
                .and_then(|r| r),
            // A timeout too long to represent as an instant is no timeout.
            None => fut.await,
        };
        if let Err(e) = &result {
            if let Some(direct) = resolved.lock().take().filter(|_| e.is_communication()) {
                if let Some(resolver) = self.resolver() {
                    resolver.dial_failed(&config.uri, &direct);
                }
            }
        }
        result
    }

    /// The daemon and protocol the `due` dial will reach first, and the serializer to encode a
    /// call in ahead of it (see [`Ahead`]): when the URI resolved and
    /// [`ProxyBuilder::serializer`](super::ProxyBuilder::serializer) is set.
    pub(super) fn ahead_wire<'a>(
        &self,
        due: &'a Due<'_>,
    ) -> Option<(&'a Arc<Uri>, Serializer, Protocol)> {
        let serializer = self
            .shared
            .config
            .early_serializer()
            .filter(|_| due.ahead)?;
        let direct = due.target.as_ref().ok()?;
        let protocol = self
            .shared
            .config
            .protocol
            .or_else(|| direct.location().and_then(|at| self.learned_at(at)))
            .unwrap_or_default();
        Some((direct, serializer, protocol))
    }

    /// The protocol the daemon at `location` was found to speak, if it was.
    fn learned_at(&self, location: &crate::uri::Location) -> Option<Protocol> {
        match &*self.shared.learned.lock() {
            Some((at, protocol)) if at == location => Some(*protocol),
            _ => None,
        }
    }

    /// The connection calls go on: open, and not retired (see
    /// [`open_connection`](Self::open_connection)).
    pub(super) fn live(&self) -> Option<Arc<Connection>> {
        self.open_connection(false)
    }

    /// The proxy's connection while it is open, [`live`](Self::live) or retired (a call was
    /// given up on it, on a daemon that runs a connection's calls in turn): for the close of a
    /// stream read on it.
    pub(super) fn open_connection(&self, retired_too: bool) -> Option<Arc<Connection>> {
        let guard = self.shared.conn.read();
        guard
            .as_ref()
            .filter(|c| {
                // With nothing in flight nobody reads: see whether the daemon closed it.
                c.shared.look();
                // (A proxy made over a stream keeps a retired connection: it never dials.)
                !c.shared.is_closed()
                    && (retired_too || !c.shared.retired() || self.shared.config.over_stream)
            })
            .cloned()
    }
}

/// What [`Proxy::begin_dial`] found.
pub(super) enum Dialing<'a> {
    /// A live connection.
    Live(Arc<Connection>),
    /// None: this caller dials, with [`Proxy::finish_dial`].
    Due(Due<'a>),
}

/// A dial to make: the proxy's dial lock (which keeps its last failure), the first attempt's
/// resolution with what is left of its connect timeout, and whether a call may go ahead.
pub(super) struct Due<'a> {
    last_failure: tokio::sync::MutexGuard<'a, Option<Failure>>,
    target: Result<Arc<Uri>, Error>,
    /// The dial begun while `target` was resolved, to where it was likely to resolve.
    early: Option<EarlyDial>,
    left: Option<Duration>,
    ahead: bool,
    /// [`Proxy::close`]'s count when the dial began.
    closes: u64,
}

/// The proxy's last failed dial, for the callers that waited for it.
pub(super) struct Failure {
    at: tokio::time::Instant,
    /// The error, as the callers that waited for the dial get it.
    shared: Shared,
    /// It failed the call sent with its CONNECT (see [`DialFailed::AfterSend`]).
    after_send: bool,
}

/// A dial's failure, kept for the callers that waited for it: of the same kind, so that
/// [`Error::is_timeout`] and a match on [`Error::Resolve`] say for them what they say for the
/// caller that dialed.
enum Shared {
    Resolve(String),
    ConnectFailed(String),
    UnknownObject(String),
    InvalidUri { uri: String, reason: String },
    NotExecuted(String),
    Timeout(std::time::Duration),
    Other(String),
}

impl Failure {
    fn new(e: &Error, after_send: bool) -> Self {
        let shared = match e.cause() {
            Error::Resolve(m) => Shared::Resolve(m.clone()),
            Error::ConnectFailed(m) => Shared::ConnectFailed(m.clone()),
            Error::UnknownObject(m) => Shared::UnknownObject(m.clone()),
            Error::InvalidUri { uri, reason } => Shared::InvalidUri {
                uri: uri.clone(),
                reason: reason.clone(),
            },
            Error::NotExecuted(m) => Shared::NotExecuted(m.clone()),
            Error::Timeout(t) => Shared::Timeout(*t),
            _ => Shared::Other(crate::error::Report(e).to_string()),
        };
        Failure {
            at: tokio::time::Instant::now(),
            shared,
            after_send,
        }
    }

    /// The failure, for a caller that waited for the dial.
    fn error(&self) -> Error {
        match &self.shared {
            Shared::Resolve(m) => Error::Resolve(m.clone()),
            Shared::ConnectFailed(m) => Error::ConnectFailed(m.clone()),
            Shared::UnknownObject(m) => Error::UnknownObject(m.clone()),
            Shared::InvalidUri { uri, reason } => Error::InvalidUri {
                uri: uri.clone(),
                reason: reason.clone(),
            },
            Shared::NotExecuted(m) => Error::NotExecuted(m.clone()).not_sent(),
            Shared::Timeout(t) => Error::Timeout(*t).not_sent(),
            Shared::Other(reason) => {
                Error::ConnectionClosed(format!("connecting failed: {reason}")).not_sent()
            }
        }
    }
}

/// The first dial's resolution, made by [`Proxy::begin_dial`]: the direct URI, the deadline
/// the dial has, and the dial begun meanwhile.
struct Resolved {
    target: Result<Arc<Uri>, Error>,
    deadline: Option<tokio::time::Instant>,
    early: Option<EarlyDial>,
}

/// A dial begun while the proxy's URI was being resolved, to the daemon it was likely to
/// resolve to (see [`Proxy::resolve_dialing_ahead`]).
pub(super) struct EarlyDial {
    location: Location,
    state: EarlyState,
}

enum EarlyState {
    Dialing(BoxFuture<'static, Result<BoxIo, Error>>),
    /// Dialed, at that instant.
    Done(Result<BoxIo, Error>, tokio::time::Instant),
    /// Dialed, and closed unused after `EARLY_MAX_AGE`.
    Expired,
}

/// The oldest an early connection may be when its lookup answers. The daemon accepted it when
/// it was dialed and gives a client that says nothing only a while to send its CONNECT (rmi's
/// `handshake_timeout`, Pyro's `COMMTIMEOUT`): a CONNECT with a call behind it, sent on a
/// connection the daemon has just closed, would fail the call as one that may have run. A
/// lookup takes about one round trip, and so does the dial, so a connection used at all is
/// usually only microseconds old; this bound assumes handshake timeouts well above it.
const EARLY_MAX_AGE: Duration = Duration::from_millis(250);

impl EarlyDial {
    /// The connection, if this dial went to `location`, worked, and is still open and silent
    /// (else it is closed, and the caller dials as usual: a failure is then that dial's,
    /// reported as ever).
    async fn claim(self, location: &Location) -> Option<BoxIo> {
        if &self.location != location {
            return None;
        }
        let (dialed, at) = match self.state {
            EarlyState::Dialing(dialing) => (dialing.await, tokio::time::Instant::now()),
            EarlyState::Done(done, at) => (done, at),
            EarlyState::Expired => {
                tracing::debug!(%location, "the connection dialed ahead of the lookup is too old; dialing again");
                return None;
            }
        };
        let mut stream = match dialed {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%location, error = %e, "the dial ahead of the lookup failed; dialing again");
                return None;
            }
        };
        if at.elapsed() > EARLY_MAX_AGE {
            tracing::debug!(%location, "the connection dialed ahead of the lookup is too old; dialing again");
            return None;
        }
        // The daemon has had nothing to answer yet: anything to read (its close, a reset, a
        // refusal) means the connection is not one to send a call on.
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut stream), &mut cx, &mut buf) {
            Poll::Pending => Some(stream),
            Poll::Ready(_) => {
                tracing::debug!(%location, "the connection dialed ahead of the lookup was closed or spoke first; dialing again");
                None
            }
        }
    }
}

/// Why a dial ([`Proxy::begin_dial`], [`Proxy::finish_dial`]) failed.
pub(super) enum DialFailed {
    /// No call was sent (or there was none to send).
    Unsent(Error),
    /// The call sent with the CONNECT may have run.
    AfterSend(Error),
}

impl DialFailed {
    /// The error of the call that asked for the connection.
    pub(super) fn into_call_error(self) -> Error {
        match self {
            DialFailed::Unsent(e) => e.not_sent(),
            DialFailed::AfterSend(e) => e,
        }
    }
}

/// A call's INVOKE encoded before dialing, for the daemon at `direct` speaking `protocol`: the
/// dial sends it right behind the CONNECT if that is whom it reaches, in that protocol.
pub(super) struct Ahead {
    pub(super) direct: Arc<Uri>,
    pub(super) protocol: Protocol,
    pub(super) msg: crate::protocol::frame::Message,
}

/// `d` scaled by a random factor in [0.5, 1.5), so many proxies do not redial in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}
