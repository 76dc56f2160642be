//! rmi: the object, its daemon, and an rmi name server with the object registered.

use rmi::Serializer;

/// The benchmark's object, with the plain `Vec<u8>` signature the issue asks for.
#[rmi::remote]
pub trait Bench {
    /// Returns `"Hi welcome " + name`.
    async fn greet(&self, name: String) -> String;
    /// Returns the length of `data`.
    #[rmi(name = "blobLen")]
    async fn blob_len(&self, data: Vec<u8>) -> u64;
}

struct Impl;

impl Bench for Impl {
    async fn greet(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
    async fn blob_len(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
}

/// The name registered in the name server.
pub const NAME: &str = "bench.compare";

/// Where the daemon and the name server listen.
pub struct RmiServer {
    pub uri: rmi::Uri,
    /// The same as text, as a user's configuration holds it: a fresh proxy parses it (and
    /// the connect figure counts that), but formatting it is no part of connecting.
    pub uri_text: String,
    /// `PYRONAME:bench.compare@host:port`.
    pub pyroname: String,
}

/// Starts a daemon with the object and a name server (no broadcast) that knows it; run on
/// the server runtime. Both live until the process ends.
pub async fn start() -> RmiServer {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.expect("rmi bind");
    let uri = daemon
        .register(BenchServer::new(Impl))
        .expect("rmi register");
    tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let _ = daemon.serve().await;
        }
    });
    let ns = rmi::naming::NameServer::builder()
        .host("127.0.0.1")
        .port(0)
        .no_broadcast()
        .start()
        .await
        .expect("rmi name server");
    let ns_addr = ns.daemon().location().clone();
    let ns_proxy = rmi::naming::NameServerProxy::connect(ns.uri())
        .await
        .expect("connect name server");
    ns_proxy.register(NAME, &uri).await.expect("register name");
    drop(ns_proxy);
    // The name server and daemon run for the whole benchmark.
    std::mem::forget(ns);
    std::mem::forget(daemon);
    RmiServer {
        uri_text: uri.to_string(),
        uri,
        pyroname: format!("PYRONAME:{NAME}@{ns_addr}"),
    }
}

pub async fn connect(uri: &rmi::Uri, ser: Serializer) -> BenchProxy {
    BenchProxy::builder(uri)
        .expect("rmi builder")
        .serializer(ser)
        .connect()
        .await
        .expect("rmi connect")
}

/// A proxy that dials on its first call (Pyro's default; no I/O here): with the serializer
/// set, that call goes out right behind the CONNECT.
pub fn lazy(uri: &str, ser: Serializer) -> BenchProxy {
    lazy_with(BenchProxy::builder(uri).expect("rmi builder"), ser)
}

fn lazy_with(builder: rmi::ProxyBuilder, ser: Serializer) -> BenchProxy {
    BenchProxy::from_proxy(builder.serializer(ser).build())
}

/// Like [`lazy`] (bincode), resolving `PYRONAME:` with a process-wide resolver whose watched
/// cache is on: after the first lookup, a name is answered without asking the name server
/// while a watch on it says the name has not changed. Call on the client runtime (the
/// resolver's watch task runs there).
pub fn lazy_cached(pyroname: &str) -> BenchProxy {
    static CACHED: std::sync::OnceLock<std::sync::Arc<dyn rmi::Resolve>> =
        std::sync::OnceLock::new();
    let resolver = CACHED
        .get_or_init(|| {
            std::sync::Arc::new(
                rmi::naming::NamingResolver::new(rmi::naming::NsLocator::new().no_broadcast())
                    .cache(std::time::Duration::from_secs(60)),
            )
        })
        .clone();
    let builder = BenchProxy::builder(pyroname.to_owned()).expect("rmi builder");
    lazy_with(builder.resolver(resolver), Serializer::Bincode)
}

/// Resolves `PYRONAME:` through the name server, then connects (bincode).
pub async fn connect_by_name(pyroname: &str) -> BenchProxy {
    BenchProxy::builder(pyroname.to_owned())
        .expect("rmi builder")
        .serializer(Serializer::Bincode)
        .connect()
        .await
        .expect("rmi connect by name")
}
