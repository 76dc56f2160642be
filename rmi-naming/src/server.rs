//! The name server object (`Pyro.NameServer`) and a builder that starts it with its responder.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};

use rmi_core::{Daemon, Error, Uri};
use rmi_macros::remote;
use tokio::task::JoinHandle;

use crate::broadcast::{BroadcastResponder, DEFAULT_BROADCAST_ADDR, DEFAULT_BROADCAST_PORT};
use crate::registry::{Registry, NAME_SERVER_NAME};
use crate::NamingError;

/// Object id of the name server in its daemon, as in Pyro.
pub const NAME_SERVER_OBJECT_ID: &str = "Pyro.NameServer";

/// The name server's remote interface, with Pyro5's methods and semantics: plain return
/// values, and failures raised as `Pyro5.errors.NamingError` (so a Python client gets its own
/// exception; a Rust one gets [`Error::Resolve`]). `safe` and `metadata` may be left out, as in
/// Pyro5.
///
/// Most code uses [`NameServerProxy`](crate::NameServerProxy), which wraps the generated
/// `NameServerApiProxy` and turns naming failures into [`Error::Resolve`].
#[remote(crate = ::rmi_core)]
pub trait NameServerApi {
    /// Registers `name` for `uri`; with `safe`, an existing name is refused.
    #[rmi(raises)]
    async fn register(
        &self,
        name: String,
        uri: Uri,
        safe: Option<bool>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError>;
    /// The URI registered under `name`.
    #[rmi(raises)]
    /// (`return_metadata`, Pyro5's second parameter: only `False` or left out is supported;
    /// use `lookup_with_metadata` for the metadata.)
    async fn lookup(
        &self,
        name: String,
        return_metadata: Option<Truthy>,
    ) -> Result<Uri, NamingError>;
    /// The URI and metadata registered under `name`.
    #[rmi(raises)]
    async fn lookup_with_metadata(
        &self,
        name: String,
    ) -> Result<(Uri, BTreeSet<String>), NamingError>;
    /// Removes by name, else by prefix, else by regex (matched at the start); returns the count.
    #[rmi(raises)]
    async fn remove(
        &self,
        name: Option<String>,
        prefix: Option<String>,
        regex: Option<String>,
    ) -> Result<u32, NamingError>;
    /// Names and URIs, filtered by prefix or by regex (matched at the start), not both.
    #[rmi(raises)]
    /// (`return_metadata`, as in Pyro5: only `False` or left out is supported.)
    async fn list(
        &self,
        prefix: Option<String>,
        regex: Option<String>,
        return_metadata: Option<Truthy>,
    ) -> Result<BTreeMap<String, Uri>, NamingError>;
    /// Names whose metadata has all of `meta_all` or any of `meta_any`, with URI and metadata.
    #[rmi(raises)]
    async fn yplookup(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
    ) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, NamingError>;
    /// Replaces the metadata of `name`.
    #[rmi(raises)]
    async fn set_metadata(
        &self,
        name: String,
        metadata: BTreeSet<String>,
    ) -> Result<(), NamingError>;
    /// Number of registered names, the name server's own included.
    async fn count(&self) -> u32;
    /// Does nothing; shows the name server is alive.
    async fn ping(&self);
}

/// A flag as Python reads one: any value, by its truthiness (`0.0` and `None` are false). Pyro5
/// passes such values positionally. Under bincode, a plain bool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Truthy(pub bool);

impl<'de> serde::Deserialize<'de> for Truthy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Truthy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value to read as true or false")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Truthy, E> {
                Ok(Truthy(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0.0))
            }
            fn visit_str<E>(self, v: &str) -> Result<Truthy, E> {
                Ok(Truthy(!v.is_empty()))
            }
            fn visit_unit<E>(self) -> Result<Truthy, E> {
                Ok(Truthy(false))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_bool(V)
        }
    }
}

/// Refuses Pyro5's `return_metadata=True`, whose result has another shape, naming the method
/// that gives the metadata.
fn no_metadata(return_metadata: Option<Truthy>, instead: &str) -> Result<(), NamingError> {
    match return_metadata {
        Some(Truthy(true)) => Err(NamingError::new(format!(
            "return_metadata=True is not supported here; call {instead}"
        ))),
        _ => Ok(()),
    }
}

/// The name server object: a [`Registry`] behind a lock.
#[derive(Debug, Default)]
pub struct NameServer {
    registry: Mutex<Registry>,
}

impl NameServer {
    /// An empty name server.
    pub fn new() -> Self {
        NameServer::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock())
    }
}

impl NameServerApi for NameServer {
    async fn register(
        &self,
        name: String,
        uri: Uri,
        safe: Option<bool>,
        metadata: Option<BTreeSet<String>>,
    ) -> Result<(), NamingError> {
        tracing::info!(%name, %uri, "register");
        let (safe, metadata) = (safe.unwrap_or(false), metadata.unwrap_or_default());
        self.with(|r| r.register(&name, uri, safe, metadata))
    }

    async fn lookup(
        &self,
        name: String,
        return_metadata: Option<Truthy>,
    ) -> Result<Uri, NamingError> {
        no_metadata(return_metadata, "lookup_with_metadata")?;
        self.with(|r| r.lookup(&name).map(|e| e.uri.clone()))
    }

    async fn lookup_with_metadata(
        &self,
        name: String,
    ) -> Result<(Uri, BTreeSet<String>), NamingError> {
        self.with(|r| r.lookup(&name).map(|e| (e.uri.clone(), e.metadata.clone())))
    }

    async fn remove(
        &self,
        name: Option<String>,
        prefix: Option<String>,
        regex: Option<String>,
    ) -> Result<u32, NamingError> {
        self.with(|r| r.remove(name.as_deref(), prefix.as_deref(), regex.as_deref()))
    }

    async fn list(
        &self,
        prefix: Option<String>,
        regex: Option<String>,
        return_metadata: Option<Truthy>,
    ) -> Result<BTreeMap<String, Uri>, NamingError> {
        no_metadata(return_metadata, "yplookup")?;
        self.with(|r| {
            Ok(r.list(prefix.as_deref(), regex.as_deref())?
                .into_iter()
                .map(|(k, e)| (k.clone(), e.uri.clone()))
                .collect())
        })
    }

    async fn yplookup(
        &self,
        meta_all: Option<BTreeSet<String>>,
        meta_any: Option<BTreeSet<String>>,
    ) -> Result<BTreeMap<String, (Uri, BTreeSet<String>)>, NamingError> {
        self.with(|r| {
            Ok(r.yplookup(meta_all.as_ref(), meta_any.as_ref())?
                .into_iter()
                .map(|(k, e)| (k.clone(), (e.uri.clone(), e.metadata.clone())))
                .collect())
        })
    }

    async fn set_metadata(
        &self,
        name: String,
        metadata: BTreeSet<String>,
    ) -> Result<(), NamingError> {
        self.with(|r| r.set_metadata(&name, metadata))
    }

    async fn count(&self) -> u32 {
        self.with(|r| r.count() as u32)
    }

    async fn ping(&self) {}
}

/// Settings for starting a name server; see [`NameServer::builder`].
#[derive(Debug, Clone)]
pub struct NameServerBuilder {
    host: String,
    port: u16,
    unix: Option<std::path::PathBuf>,
    broadcast: Option<(String, u16)>,
    daemon: rmi_core::DaemonBuilder,
}

impl NameServer {
    /// Settings for a name server on 127.0.0.1:9090 with a broadcast responder on
    /// 127.255.255.255:9091.
    pub fn builder() -> NameServerBuilder {
        NameServerBuilder {
            host: "127.0.0.1".into(),
            port: rmi_core::uri::DEFAULT_NS_PORT,
            unix: None,
            daemon: Daemon::builder(),
            broadcast: Some((DEFAULT_BROADCAST_ADDR.into(), DEFAULT_BROADCAST_PORT)),
        }
    }
}

impl NameServerBuilder {
    /// Host or address to bind (default 127.0.0.1).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// TCP port (default 9090; 0 picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Address and UDP port of the `GET_NSURI` responder (default 127.255.255.255:9091; port 0
    /// picks a free one).
    pub fn broadcast(mut self, addr: impl Into<String>, port: u16) -> Self {
        self.broadcast = Some((addr.into(), port));
        self
    }

    /// Listen on a Unix domain socket at `path` instead of TCP (no broadcast responder then).
    pub fn unix(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.unix = Some(path.into());
        self.broadcast = None;
        self
    }

    /// The settings of the daemon hosting the name server: limits, TLS
    /// ([`DaemonBuilder::tls`](rmi_core::DaemonBuilder::tls)), shared secret, validator.
    pub fn daemon(mut self, builder: rmi_core::DaemonBuilder) -> Self {
        self.daemon = builder;
        self
    }

    /// No broadcast responder.
    pub fn no_broadcast(mut self) -> Self {
        self.broadcast = None;
        self
    }

    /// Binds, registers the name server and starts serving in the background.
    pub async fn start(self) -> Result<NameServerHandle, Error> {
        let builder = self.daemon.clone();
        let daemon = match &self.unix {
            #[cfg(unix)]
            Some(path) => builder.bind_unix(path).await?,
            #[cfg(not(unix))]
            Some(_) => {
                return Err(Error::Daemon(
                    "unix sockets are not available on this platform".into(),
                ))
            }
            None => builder.bind((self.host.as_str(), self.port)).await?,
        };
        let server = NameServer::new();
        let uri = daemon.uri_for(NAME_SERVER_OBJECT_ID);
        server
            .with(|r| {
                r.register(
                    NAME_SERVER_NAME,
                    uri.clone(),
                    false,
                    BTreeSet::from(["class:rmi.NameServer".to_owned()]),
                )
            })
            .map_err(|e| Error::Resolve(e.message))?;
        daemon.register_with_id(NameServerApiServer::new(server), NAME_SERVER_OBJECT_ID)?;
        let responder = match &self.broadcast {
            Some((addr, port)) => Some(BroadcastResponder::bind(addr, *port, uri.clone()).await?),
            None => None,
        };
        let broadcast_addr = responder.as_ref().map(|r| r.local_addr());
        let responder_task = responder.map(|r| tokio::spawn(r.run()));
        let serve_task = tokio::spawn({
            let daemon = daemon.clone();
            async move { daemon.serve().await }
        });
        tracing::info!(%uri, ?broadcast_addr, "name server running");
        Ok(NameServerHandle {
            uri,
            daemon,
            broadcast_addr,
            serve_task: Mutex::new(Some(serve_task)),
            responder_task,
        })
    }
}

/// The task running the name server's daemon.
type ServeTask = JoinHandle<Result<(), Error>>;

/// A running name server.
#[derive(Debug)]
pub struct NameServerHandle {
    uri: Uri,
    daemon: Daemon,
    broadcast_addr: Option<std::net::SocketAddr>,
    serve_task: Mutex<Option<ServeTask>>,
    responder_task: Option<JoinHandle<()>>,
}

impl NameServerHandle {
    /// The name server's URI (`PYRO:Pyro.NameServer@host:port`).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The daemon hosting the name server.
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// The address of the broadcast responder, if one runs.
    pub fn broadcast_addr(&self) -> Option<std::net::SocketAddr> {
        self.broadcast_addr
    }

    /// Runs until the daemon stops (after [`shutdown`](Self::shutdown) or a fatal error).
    pub async fn wait(&self) -> Result<(), Error> {
        let task = self.serve_task.lock().take();
        match task {
            Some(t) => t
                .await
                .map_err(|e| Error::Closed(format!("name server task failed: {e}")))?,
            None => Ok(()),
        }
    }

    /// Stops the name server and its responder.
    pub fn shutdown(&self) {
        self.daemon.shutdown();
        if let Some(t) = &self.responder_task {
            t.abort();
        }
    }
}

impl Drop for NameServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
