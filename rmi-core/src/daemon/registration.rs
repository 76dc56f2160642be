//! Registering objects: [`Registration`] (one shared instance, or a factory with Pyro's instance
//! modes), the daemon's `register*` methods, and the entries its object table keeps.

use std::sync::Arc;

use super::Daemon;
use crate::dispatch::{BoxFuture, Dispatch, Outcome};
use crate::error::{Error, RemoteError};
use crate::protocol::codec::{Args, Metadata};
use crate::protocol::names::DAEMON_OBJECT_ID;
use crate::uri::Uri;

/// When a registered factory makes instances (Pyro's `@behavior(instance_mode=...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// One instance for every client (what registering an instance gives).
    Single,
    /// One instance per client connection, made on its first call and dropped when that
    /// connection closes.
    Session,
    /// A fresh instance for every call; the calls of one batch share one, as in Pyro.
    PerCall,
}

type Factory = Arc<dyn Fn() -> Arc<dyn Dispatch> + Send + Sync>;

/// What to register and how; pass it to [`Daemon::register_entry`](super::Daemon::register_entry).
///
/// ```
/// # use rmi_core::daemon::Registration;
/// # fn demo(daemon: &rmi_core::Daemon, make: impl Fn() -> MyServer + Send + Sync + 'static) -> rmi_core::Result<()> {
/// let uri = daemon.register_entry(Registration::session(make).id("bank.account").one_at_a_time())?;
/// # Ok(()) }
/// # struct MyServer;
/// # impl rmi_core::Dispatch for MyServer {
/// #   fn metadata(&self) -> rmi_core::Metadata { Default::default() }
/// #   fn dispatch<'a>(&'a self, _: &'a str, _: rmi_core::protocol::codec::Args)
/// #     -> rmi_core::dispatch::BoxFuture<'a, Result<rmi_core::dispatch::Outcome, rmi_core::RemoteError>> { Box::pin(async { Err(rmi_core::RemoteError::unknown_method("", "")) }) }
/// # }
/// ```
pub struct Registration {
    pub(crate) kind: Kind,
    pub(crate) meta: Metadata,
    pub(crate) id: Option<String>,
    pub(crate) replace: bool,
    pub(crate) one_at_a_time: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.kind {
            Kind::Instance(_) => "instance",
            Kind::Factory(InstanceMode::Single, _) => "single",
            Kind::Factory(InstanceMode::Session, _) => "session",
            Kind::Factory(InstanceMode::PerCall, _) => "percall",
        };
        f.debug_struct("Registration")
            .field("mode", &mode)
            .field("id", &self.id)
            .field("replace", &self.replace)
            .field("one_at_a_time", &self.one_at_a_time)
            .field("meta", &self.meta)
            .finish()
    }
}

pub(crate) enum Kind {
    Instance(Arc<dyn Dispatch>),
    Factory(InstanceMode, Factory),
}

impl Registration {
    /// One shared instance.
    pub fn instance(object: impl Dispatch) -> Self {
        let meta = object.metadata();
        Self::new(Kind::Instance(Arc::new(object)), meta)
    }

    /// A factory run with `mode`: [`InstanceMode::Single`] makes one instance on the first call.
    /// The object's metadata comes from [`Dispatch::describe`], so no instance is made up front.
    /// `make` runs inside the call it makes the instance for: [`CallContext::current`] there
    /// names that call (its peer, connection, method), as Pyro's `current_context` does for an
    /// instance creator; a panic in it is that caller's error.
    ///
    /// `make` is synchronous and runs on the connection's task, which reads no other request
    /// of that connection meanwhile: keep it cheap. A [`Single`](InstanceMode::Single)
    /// factory's other first callers wait for it blocking their threads, as for any
    /// `OnceLock`. Open databases and files lazily in the methods (a `tokio::sync::OnceCell`
    /// in the instance), or make the instance before registering it.
    ///
    /// [`CallContext::current`]: crate::CallContext::current
    pub fn factory<D, F>(mode: InstanceMode, make: F) -> Self
    where
        D: Dispatch,
        F: Fn() -> D + Send + Sync + 'static,
    {
        let make: Factory = Arc::new(move || Arc::new(make()) as Arc<dyn Dispatch>);
        let kind = match mode {
            InstanceMode::Single => {
                let once = Arc::new(std::sync::OnceLock::new());
                Kind::Factory(mode, Arc::new(move || once.get_or_init(|| make()).clone()))
            }
            _ => Kind::Factory(mode, make),
        };
        Self::new(kind, D::describe())
    }

    /// One instance per client connection (Pyro's `session` mode).
    pub fn session<D: Dispatch, F: Fn() -> D + Send + Sync + 'static>(make: F) -> Self {
        Self::factory(InstanceMode::Session, make)
    }

    /// A fresh instance per call (Pyro's `percall` mode).
    pub fn percall<D: Dispatch, F: Fn() -> D + Send + Sync + 'static>(make: F) -> Self {
        Self::factory(InstanceMode::PerCall, make)
    }

    fn new(kind: Kind, meta: Metadata) -> Self {
        Registration {
            kind,
            meta,
            id: None,
            replace: false,
            one_at_a_time: false,
        }
    }

    /// Registers under `id` instead of a generated `obj_…` id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Replaces an object already registered under the same id instead of refusing.
    pub fn replace(mut self) -> Self {
        self.replace = true;
        self
    }

    /// Runs each instance's calls one at a time (what Pyro's thread-per-connection gave
    /// session objects for their calls that answer). Calls that arrive on one connection run
    /// in the order they arrived, pipelined and oneway ones included (Pyro runs a oneway call
    /// in a thread of its own, beside the next); calls from different connections take turns in the
    /// order they reach the instance. Calls to other instances still run concurrently. A call
    /// waits for its turn no longer than its caller's deadline (counted from its arrival):
    /// past it, the call is answered `DeadlineExceeded` without running, and the calls behind
    /// it keep their order.
    ///
    /// A call back into the instance made while one of its calls runs waits for that call: a
    /// listener whose method publishes itself to a server that calls it back at once waits for
    /// ever (Pyro's thread pool would run the callback). Give such calls a deadline, or leave
    /// the instance concurrent.
    pub fn one_at_a_time(mut self) -> Self {
        self.one_at_a_time = true;
        self
    }
}

/// A registered object as the daemon keeps it.
pub(crate) struct Entry {
    /// This registration's number, unique in the process: a connection's session instance is
    /// kept for it, so one registered in its place (same id) makes a new one.
    pub(crate) generation: u64,
    pub(crate) meta: Metadata,
    pub(crate) target: Target,
    /// Registered `one_at_a_time`: each connection's calls also keep their arrival order.
    pub(crate) serial: bool,
}

pub(crate) enum Target {
    Shared(Arc<dyn Dispatch>),
    Session(Factory),
    PerCall(Factory),
}

impl Entry {
    pub(crate) fn from_registration(reg: Registration) -> Entry {
        let serial = reg.one_at_a_time;
        let wrap = move |d: Arc<dyn Dispatch>| -> Arc<dyn Dispatch> {
            if serial {
                Arc::new(OneAtATime {
                    inner: d,
                    turn: tokio::sync::Mutex::new(()),
                })
            } else {
                d
            }
        };
        let target = match reg.kind {
            Kind::Instance(d) => Target::Shared(wrap(d)),
            Kind::Factory(InstanceMode::Single, make) => Target::Shared(wrap(Arc::new(Lazy {
                make,
                meta: reg.meta.clone(),
            }))),
            Kind::Factory(InstanceMode::Session, make) => {
                Target::Session(Arc::new(move || wrap(make())))
            }
            Kind::Factory(InstanceMode::PerCall, make) => Target::PerCall(make),
        };
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Entry {
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            meta: reg.meta,
            target,
            serial,
        }
    }
}

/// Serializes calls to one instance (tokio's mutex is fair: in the order calls reach it, which
/// each connection's [`Turns`](super::connection::Turns) makes its arrival order).
struct OneAtATime {
    inner: Arc<dyn Dispatch>,
    turn: tokio::sync::Mutex<()>,
}

impl Dispatch for OneAtATime {
    fn metadata(&self) -> Metadata {
        self.inner.metadata()
    }

    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>> {
        Box::pin(async move {
            let _turn = self.turn.lock().await;
            self.inner.dispatch(method, args).await
        })
    }
}

/// A single instance made on first use.
struct Lazy {
    make: Factory,
    meta: Metadata,
}

impl Dispatch for Lazy {
    fn metadata(&self) -> Metadata {
        self.meta.clone()
    }

    fn dispatch<'a>(
        &'a self,
        method: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Outcome, RemoteError>> {
        Box::pin(async move { (self.make)().dispatch(method, args).await })
    }
}

impl Daemon {
    /// Registers one shared `object` under a generated id (`obj_` + 32 hex digits) and returns
    /// its URI.
    pub fn register(&self, object: impl Dispatch) -> Result<Uri, Error> {
        self.register_entry(Registration::instance(object))
    }

    /// Registers `object` under `id`; refuses an id already in use.
    pub fn register_with_id(&self, object: impl Dispatch, id: &str) -> Result<Uri, Error> {
        self.register_entry(Registration::instance(object).id(id))
    }

    /// Registers `object` under `id`, replacing any object registered there.
    pub fn register_replacing(&self, object: impl Dispatch, id: &str) -> Result<Uri, Error> {
        self.register_entry(Registration::instance(object).id(id).replace())
    }

    /// Registers a factory whose instances live as long as each client connection (Pyro's
    /// `session` instance mode).
    pub fn register_session<D, F>(&self, make: F) -> Result<Uri, Error>
    where
        D: Dispatch,
        F: Fn() -> D + Send + Sync + 'static,
    {
        self.register_entry(Registration::session(make))
    }

    /// Registers a factory that makes a fresh instance for every call, or batch (Pyro's `percall`).
    pub fn register_percall<D, F>(&self, make: F) -> Result<Uri, Error>
    where
        D: Dispatch,
        F: Fn() -> D + Send + Sync + 'static,
    {
        self.register_entry(Registration::percall(make))
    }

    /// Registers as `registration` says (id, instance mode, one call at a time).
    pub fn register_entry(&self, registration: Registration) -> Result<Uri, Error> {
        let id = registration
            .id
            .clone()
            .unwrap_or_else(|| format!("obj_{}", uuid::Uuid::new_v4().simple()));
        let force = registration.replace;
        self.insert(Arc::new(Entry::from_registration(registration)), &id, force)
    }

    fn insert(&self, object: Arc<Entry>, id: &str, force: bool) -> Result<Uri, Error> {
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(Error::InvalidUri {
                uri: id.to_owned(),
                reason: "object ids may not be empty or contain whitespace or '@'".into(),
            });
        }
        if id == DAEMON_OBJECT_ID {
            return Err(Error::Daemon(format!(
                "the object id {DAEMON_OBJECT_ID:?} is reserved for the daemon"
            )));
        }
        // The object replaced (or refused) is dropped after the table is unlocked: its `Drop`
        // may use the daemon.
        let outcome = self.inner.objects.change(|objects| {
            if !force && objects.contains_key(id) {
                return Err(object);
            }
            Ok(objects.insert(id.to_owned(), object))
        });
        match outcome {
            Ok(_replaced) => Ok(self.uri_for(id)),
            Err(_refused) => Err(Error::Daemon(format!(
                "an object is already registered under id {id:?}"
            ))),
        }
    }

    /// Removes object `id`; returns whether it was registered. Open connections to it get
    /// `UnknownObject` on their next call.
    pub fn unregister(&self, id: &str) -> bool {
        if id == DAEMON_OBJECT_ID {
            return false;
        }
        self.inner
            .objects
            .change(|objects| objects.remove(id))
            .is_some()
    }
}
