//! The call context: who is calling, with what annotations and deadline, seen from inside a method.
//!
//! The daemon runs every call with its [`CallContext`] installed; a method reads it with
//! [`current`] (or [`CallContext::current`]). It is the Rust form of Pyro's `current_context`:
//! the caller's address, the correlation id, the request annotations, the caller's deadline,
//! a way to set response annotations, and the daemon serving the call (to register new objects
//! and return their proxies). Tasks a method spawns do not inherit it; pass it along.
//!
//! ```
//! # async fn method() {
//! if let Some(ctx) = rmi_core::context::current() {
//!     tracing::info!(peer = %ctx.peer(), time_left = ?ctx.time_left(), "called");
//!     ctx.set_response_annotation(*b"SRVR", b"node-1".to_vec());
//! }
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::connection::Conn;
use super::{Certificate, Daemon};
use crate::protocol::frame::Annotation;
use crate::protocol::names::DEADLINE_ANNOTATION;
use crate::transport::received;

// Set, by reference, while a method's future is polled (see `CallContext::scope`).
scoped_tls::scoped_thread_local!(static CONTEXT: CallContext);

/// What a method knows about the call it is running. Cheap to clone.
#[derive(Clone)]
pub struct CallContext {
    inner: Arc<Inner>,
}

struct Inner {
    /// The daemon, the connection's id, the peer's address and certificate.
    conn: Arc<Conn>,
    /// Copied from the request into the connection's reused allocation: a copy of a few bytes
    /// costs less than the reference counts a slice of the request takes and drops.
    object: String,
    method: String,
    correlation_id: uuid::Uuid,
    annotations: Vec<Annotation>,
    deadline: Option<Instant>,
    oneway: bool,
    response: Mutex<Vec<Annotation>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("peer", &self.inner.conn.peer)
            .field("object", &self.inner.object)
            .field("method", &self.inner.method)
            .field("correlation_id", &self.inner.correlation_id)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

/// The context of the call running in this task, if any.
pub fn current() -> Option<CallContext> {
    CONTEXT.is_set().then(|| CONTEXT.with(Clone::clone))
}

/// What a call made now inherits from the remote call being served on this thread, if any:
/// its correlation id and the time its caller has left (the hook of `crate::chain`, which
/// proxies ask). Outside a method, one thread-local read.
pub(crate) fn inherited() -> Option<crate::chain::Inherited> {
    CONTEXT
        .is_set()
        .then(|| CONTEXT.with(|ctx| (ctx.correlation_id(), ctx.time_left())))
}

pin_project_lite::pin_project! {
    /// A method's future with its call's context installed: see [`CallContext::scope`].
    pub(crate) struct Scoped<'a, F> {
        ctx: &'a CallContext,
        #[pin]
        fut: Option<F>,
    }

    impl<F> PinnedDrop for Scoped<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.fut.is_some() {
                // Cancelled: what the method's future drops may ask for its context too.
                let ctx = *this.ctx;
                CONTEXT.set(ctx, || this.fut.set(None));
            }
        }
    }
}

impl<F: std::future::Future> std::future::Future for Scoped<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let mut this = self.project();
        let ctx = *this.ctx;
        installed(ctx, || {
            let fut = this.fut.as_mut().as_pin_mut();
            let out = std::task::ready!(fut.expect("polled after completion").poll(cx));
            this.fut.set(None);
            std::task::Poll::Ready(out)
        })
    }
}

/// Runs `poll` with `ctx` installed, and the daemon's settings for proxies decoded meanwhile
/// (the method's arguments, decoded as it runs, dial as the daemon says).
fn installed<T>(ctx: &CallContext, poll: impl FnOnce() -> T) -> T {
    CONTEXT.set(ctx, || match &ctx.inner.conn.daemon.inner.callbacks {
        Some(callbacks) => received::receiving(callbacks, poll),
        None => poll(),
    })
}

pin_project_lite::pin_project! {
    /// A future run with a call's context installed whenever it is polled: see
    /// [`CallContext::in_scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InScope<F> {
        ctx: CallContext,
        #[pin]
        fut: F,
    }
}

impl<F: std::future::Future> std::future::Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        installed(this.ctx, || this.fut.poll(cx))
    }
}

impl<F> std::fmt::Debug for InScope<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InScope").field("ctx", &self.ctx).finish()
    }
}

/// Reply annotation ids the runtime sets or reads itself, which a method may not set.
const RUNTIME_ANNOTATIONS: [[u8; 4]; 9] = [
    crate::protocol::names::NOT_RUN_ANNOTATION,
    crate::protocol::names::STREAM_ANNOTATION,
    crate::protocol::names::BULK_ANNOTATION,
    crate::protocol::names::MAC_ANNOTATION,
    *b"CORR",
    crate::protocol::names::DEADLINE_ANNOTATION,
    crate::protocol::names::SERIALIZER_ANNOTATION,
    crate::protocol::names::PAKE_ANNOTATION,
    crate::protocol::names::PROOF_ANNOTATION,
];

/// The largest name buffer a finished call's context keeps for the next call's names.
const KEEP_NAME: usize = 256;

/// The allocation of a finished call's context, kept by its connection for the next call.
pub(crate) struct ContextAlloc(Arc<Inner>);

impl ContextAlloc {
    /// The object and method of the call that last used this allocation (empty when they were
    /// long: see [`CallContext::finish`]).
    pub(super) fn names(&self) -> (&str, &str) {
        (&self.0.object, &self.0.method)
    }
}

impl CallContext {
    /// A call's context, in `reuse` (a finished call's allocation) when given.
    pub(super) fn new(
        reuse: Option<ContextAlloc>,
        conn: &Arc<Conn>,
        object: &str,
        method: &str,
        correlation_id: uuid::Uuid,
        annotations: Vec<Annotation>,
        oneway: bool,
    ) -> Self {
        let deadline = annotations
            .iter()
            .find(|(id, _)| *id == DEADLINE_ANNOTATION)
            .and_then(|(_, v)| <[u8; 8]>::try_from(v.as_ref()).ok())
            // A deadline too far to represent is no deadline (the value comes from the wire).
            .and_then(|ms| {
                Instant::now().checked_add(Duration::from_millis(u64::from_be_bytes(ms)))
            });
        let mut reuse = reuse;
        let inner = match reuse
            .as_mut()
            .and_then(|ContextAlloc(alloc)| Arc::get_mut(alloc))
        {
            Some(slot) => {
                // A connection's calls reuse its allocation: its `conn` is this one.
                if !Arc::ptr_eq(&slot.conn, conn) {
                    slot.conn = conn.clone();
                }
                slot.object.clear();
                slot.object.push_str(object);
                slot.method.clear();
                slot.method.push_str(method);
                slot.correlation_id = correlation_id;
                slot.annotations = annotations;
                slot.deadline = deadline;
                slot.oneway = oneway;
                slot.response.get_mut().clear();
                reuse.expect("just used").0
            }
            None => Arc::new(Inner {
                conn: conn.clone(),
                object: object.to_owned(),
                method: method.to_owned(),
                correlation_id,
                annotations,
                deadline,
                oneway,
                response: Mutex::new(Vec::new()),
            }),
        };
        CallContext { inner }
    }

    /// Ends the call: its response annotations, and its context's allocation for the next
    /// call when the method kept no clone of the context.
    pub(crate) fn finish(mut self) -> (Vec<Annotation>, Option<ContextAlloc>) {
        let Some(inner) = Arc::get_mut(&mut self.inner) else {
            return (self.take_response_annotations(), None);
        };
        let response = std::mem::take(inner.response.get_mut());
        // What refers to the request's bytes goes now: kept, it would stop the connection's
        // read buffer from being reused. The names' buffers are kept for the next call's,
        // unless a long name made them large.
        inner.annotations = Vec::new();
        for name in [&mut inner.object, &mut inner.method] {
            if name.capacity() > KEEP_NAME {
                *name = String::new();
            }
        }
        (response, Some(ContextAlloc(self.inner)))
    }

    /// The context of the call running in this task, if any.
    pub fn current() -> Option<CallContext> {
        current()
    }

    /// Runs `fut` with this context installed whenever it is polled: for work a method hands
    /// to a task of its own, which otherwise runs without one.
    ///
    /// Inside it, [`current`](Self::current) answers this context, and calls made through
    /// proxies carry its correlation id and its caller's time left as their deadline, as calls
    /// made in the method itself do, and proxies decoded there take the daemon's settings.
    /// Response annotations set once the call has answered are not sent; once the caller's
    /// deadline has passed, calls made there have no time left and time out at once. The
    /// context holds the call's request annotations (and its connection's state) for as long
    /// as the future lives.
    ///
    /// ```no_run
    /// # async fn method() {
    /// let ctx = rmi_core::CallContext::current().expect("inside a remote method");
    /// let work = tokio::spawn(ctx.in_scope(async {
    ///     // CallContext::current() is the method's here; proxies' calls carry on its call.
    /// }));
    /// work.await.unwrap();
    /// # }
    /// ```
    pub fn in_scope<F: std::future::Future>(self, fut: F) -> InScope<F> {
        InScope { ctx: self, fut }
    }

    /// Runs `fut` with this context installed while it is polled, and while it is dropped if
    /// it is cancelled (borrowed: a clone is made only for a method that asks for it with
    /// [`current`]).
    pub(crate) fn scope<F: std::future::Future>(&self, fut: F) -> Scoped<'_, F> {
        Scoped {
            ctx: self,
            fut: Some(fut),
        }
    }

    /// The caller's address: `ip:port`; on a Unix socket `unix:PATH uid=U pid=P`, the
    /// daemon's socket and the caller's credentials as the kernel gives them. A validator
    /// ([`HandshakeInfo::peer`](super::HandshakeInfo)) and the hooks see the same text.
    pub fn peer(&self) -> &str {
        &self.inner.conn.peer
    }

    /// The object id the call addressed.
    pub fn object(&self) -> &str {
        &self.inner.object
    }

    /// The method's wire name.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// The call's correlation id (the caller's, or one made up by the daemon).
    pub fn correlation_id(&self) -> uuid::Uuid {
        self.inner.correlation_id
    }

    /// True when the caller wants no reply.
    pub fn is_oneway(&self) -> bool {
        self.inner.oneway
    }

    /// All request annotations, in order.
    pub fn annotations(&self) -> &[Annotation] {
        &self.inner.annotations
    }

    /// The request annotation `id`, if present.
    pub fn annotation(&self, id: &[u8; 4]) -> Option<&Bytes> {
        self.inner
            .annotations
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v)
    }

    /// When the caller stops waiting, if it sent a deadline. The daemon cancels the method
    /// (drops its future) at this instant.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Time left before the caller's deadline (zero once passed), if it sent one.
    pub fn time_left(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Adds an annotation to the reply (replacing one with the same id).
    ///
    /// The ids the runtime itself puts in replies (`STRM`, `BULK`, `HMAC`, `CORR`, `DDLN`,
    /// `RMIS`, `PAKE`, `PROF`) are not taken: set, they would stand in for the runtime's (a
    /// stream's id, a large result's place), so they are left out, with a warning.
    pub fn set_response_annotation(&self, id: [u8; 4], value: impl Into<Bytes>) {
        if RUNTIME_ANNOTATIONS.contains(&id) {
            tracing::warn!(
                id = %String::from_utf8_lossy(&id),
                method = %self.inner.method,
                "a method set a reply annotation whose id the runtime uses: left out"
            );
            return;
        }
        let mut response = self.inner.response.lock();
        response.retain(|(k, _)| *k != id);
        response.push((id, value.into()));
    }

    /// The daemon serving this call: register new objects here and return their proxies.
    pub fn daemon(&self) -> &Daemon {
        &self.inner.conn.daemon
    }

    /// The caller's TLS certificate, verified by the daemon's client CA (mutual TLS only).
    pub fn peer_certificate(&self) -> Option<&Certificate> {
        self.inner.conn.peer_certificate.as_ref()
    }

    /// The connection the call came on (unique within its daemon).
    pub fn connection(&self) -> u64 {
        self.inner.conn.id
    }

    /// Completes once the call's connection will carry no more requests: its caller closed
    /// it, reset it, or shut down its sending side (a half-closed caller still reads its
    /// replies), or the daemon closed it (a malformed message, a caller that stopped reading
    /// its replies, a failed signature). A method whose work only its caller wants can stop
    /// there, as Go's `ctx.Done()` or a cancelled gRPC call would. (While the daemon does not
    /// read that connection, as it waits for an in-flight slot or its byte budget, see
    /// `DaemonBuilder::max_queued_bytes`, it learns of a plain TCP connection's reset only
    /// when no request waits unread before it, and of anything else only once it reads
    /// again.)
    ///
    /// ```
    /// # async fn method() -> Option<u64> {
    /// # async fn long_search() -> u64 { 42 }
    /// let ctx = rmi_core::context::current()?;
    /// tokio::select! {
    ///     found = long_search() => Some(found),
    ///     () = ctx.caller_gone() => None, // nobody waits for the answer
    /// }
    /// # }
    /// ```
    ///
    /// A oneway call's caller may well be gone while it runs: that is no reason to stop it.
    /// While the daemon shuts down, connections it closes do not count as gone (calls then
    /// get their grace period).
    pub async fn caller_gone(&self) {
        self.inner.conn.peer_gone.wait().await
    }

    /// Whether [`caller_gone`](Self::caller_gone) has completed.
    pub fn is_caller_gone(&self) -> bool {
        self.inner.conn.peer_gone.is_raised()
    }

    /// At most what the reply annotations set so far take in the reply (each with its
    /// header, Pyro4's being the longer).
    pub(crate) fn response_annotations_size(&self) -> usize {
        self.inner
            .response
            .lock()
            .iter()
            .map(|(_, value)| 8 + value.len())
            .sum()
    }

    pub(crate) fn take_response_annotations(&self) -> Vec<Annotation> {
        std::mem::take(&mut *self.inner.response.lock())
    }

    /// The context of one call of the batch this context's call carries: the same caller,
    /// correlation id, request annotations and deadline, and the call's own method name. The
    /// reply annotations it sets go into the batch's by [`pass_annotations_to`].
    ///
    /// [`pass_annotations_to`]: Self::pass_annotations_to
    pub(crate) fn for_batched(&self, method: &str) -> CallContext {
        let batch = &self.inner;
        CallContext {
            inner: Arc::new(Inner {
                conn: batch.conn.clone(),
                object: batch.object.clone(),
                method: method.to_owned(),
                correlation_id: batch.correlation_id,
                annotations: batch.annotations.clone(),
                deadline: batch.deadline,
                oneway: batch.oneway,
                response: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Moves the reply annotations set in this context (a batched call's) into `batch`'s.
    pub(crate) fn pass_annotations_to(&self, batch: &CallContext) {
        for (id, value) in self.take_response_annotations() {
            batch.set_response_annotation(id, value);
        }
    }
}
