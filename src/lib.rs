//! rmi: remote objects for Rust in the spirit of Pyro. Define a trait, serve an implementation
//! from a [`Daemon`], find it by name through the name server, and call it through a typed
//! async proxy as if it were local.
//!
//! This crate is the one dependency you add. It joins the runtime (`rmi-core`), the
//! [`remote`] macro (`rmi-macros`) and the name server ([`naming`]), so `PYRONAME:` and
//! `PYROMETA:` URIs work wherever a URI does.
//!
//! # Example
//!
//! The Pyro tutorial, in one process over loopback:
//!
//! ```
//! #[rmi::remote]
//! pub trait Greeter {
//!     /// Says hello.
//!     #[rmi(name = "welcomeMessage")]
//!     async fn welcome_message(&self, name: String) -> String;
//! }
//!
//! struct Server;
//! impl Greeter for Server {
//!     async fn welcome_message(&self, name: String) -> String {
//!         format!("Hi welcome {name}")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! // A name server on a free port (the `rmi-ns` binary runs the same thing).
//! let ns = rmi::naming::NameServer::builder().port(0).no_broadcast().start().await?;
//!
//! // Server: daemon, register the object, register its URI under a name.
//! let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! let uri = daemon.register(GreeterServer::new(Server))?;
//! let names = rmi::naming::NameServerProxy::connect(ns.uri()).await?;
//! names.register("server", &uri).await?;
//! tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//!
//! // Client: a proxy by name, then a call.
//! let greeter = GreeterProxy::connect(format!("PYRONAME:server@{}", ns.daemon().location())).await?;
//! assert_eq!(greeter.welcome_message("Rashmi".into()).await?, "Hi welcome Rashmi");
//! # daemon.shutdown();
//! # Ok(()) }
//! ```
//!
//! The examples below run the same way: a daemon on `127.0.0.1:0` serving in a task, and a
//! proxy to it. The repository's `examples/` directory has longer, Pyro-style versions.
//!
//! # Oneway calls
//!
//! `#[rmi(oneway)]` on a method returning `()`: the proxy method returns once the request is
//! written, and the daemon sends no reply (a failure is only logged on the server). The
//! object's metadata lists such methods as oneway. Untyped: [`Proxy::call_oneway`].
//!
//! ```
//! #[rmi::remote]
//! pub trait Worker {
//!     /// Starts a long job; the caller does not wait.
//!     #[rmi(oneway)]
//!     async fn start(&self, millis: u64);
//! }
//!
//! struct W;
//! impl Worker for W {
//!     async fn start(&self, millis: u64) {
//!         tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(WorkerServer::new(W))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let worker = WorkerProxy::connect(&uri).await?;
//! let started = std::time::Instant::now();
//! worker.start(10_000).await?; // returns at once
//! assert!(started.elapsed() < std::time::Duration::from_secs(5));
//! assert_eq!(worker.proxy().metadata().await?.oneway, ["start"]);
//! # Ok(()) }
//! ```
//!
//! # Instance modes
//!
//! [`Daemon::register`] serves one instance to everyone (Pyro's `single`). A factory gives
//! Pyro's other modes: [`Daemon::register_session`] makes one instance per client connection
//! (on its first call; dropped when the connection closes), [`Daemon::register_percall`] a
//! fresh one per call. [`Registration`] adds an id and
//! [`one_at_a_time`](Registration::one_at_a_time), which runs each instance's calls in arrival
//! order instead of concurrently; pass it to [`Daemon::register_entry`].
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! #[rmi::remote]
//! pub trait Account {
//!     /// Adds `amount`; returns the balance.
//!     async fn deposit(&self, amount: u64) -> u64;
//! }
//!
//! #[derive(Default)]
//! struct Acc(AtomicU64);
//! impl Account for Acc {
//!     async fn deposit(&self, amount: u64) -> u64 {
//!         self.0.fetch_add(amount, Ordering::SeqCst) + amount
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let uri = daemon.register_session(|| AccountServer::new(Acc::default()))?;
//! let (alice, bob) = (AccountProxy::connect(&uri).await?, AccountProxy::connect(&uri).await?);
//! alice.deposit(10).await?;
//! assert_eq!(bob.deposit(5).await?, 5, "another connection, another instance");
//! assert_eq!(alice.clone().deposit(1).await?, 11, "clones share the connection");
//!
//! let reg = rmi::Registration::percall(|| AccountServer::new(Acc::default())).id("bank.teller");
//! let teller = AccountProxy::connect(daemon.register_entry(reg)?).await?;
//! assert_eq!(teller.deposit(10).await?, 10);
//! assert_eq!(teller.deposit(10).await?, 10, "a fresh instance for every call");
//!
//! let serial = rmi::Registration::instance(AccountServer::new(Acc::default())).one_at_a_time();
//! daemon.register_entry(serial)?;
//! # Ok(()) }
//! ```
//!
//! # Remote references and callbacks
//!
//! A `{Trait}Proxy` serializes as its URI, so methods take and return proxies. A method can
//! register an object in the daemon serving it ([`CallContext::daemon`]) and return a proxy
//! to it (Pyro's autoproxy); a client can serve a callback object from a daemon of its own
//! and pass its proxy in. A received proxy dials on its first call. When a callback fails,
//! the server sees it (`Ok(Err(..))` or an [`Error`]) and can report it to its own caller.
//!
//! ```
//! #[rmi::remote]
//! pub trait Item {
//!     /// The item's name.
//!     async fn name(&self) -> String;
//! }
//!
//! #[rmi::remote]
//! pub trait Shop {
//!     /// Makes an item in this daemon and returns a proxy to it.
//!     async fn make(&self, name: String) -> ItemProxy;
//!     /// Calls the item back: a proxy as an argument.
//!     async fn inspect(&self, item: ItemProxy) -> Result<String, String>;
//! }
//!
//! struct Named(String);
//! impl Item for Named {
//!     async fn name(&self) -> String {
//!         self.0.clone()
//!     }
//! }
//!
//! struct S;
//! impl Shop for S {
//!     async fn make(&self, name: String) -> ItemProxy {
//!         let ctx = rmi::context::current().expect("inside a call");
//!         let uri = ctx.daemon().register(ItemServer::new(Named(name))).expect("registered");
//!         ItemProxy::from_uri(uri).expect("a PYRO: uri")
//!     }
//!     async fn inspect(&self, item: ItemProxy) -> Result<String, String> {
//!         item.name().await.map_err(|e| format!("callback failed: {e}"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(ShopServer::new(S))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let shop = ShopProxy::connect(&uri).await?;
//! let cup = shop.make("cup".into()).await?; // a proxy to an object the server made
//! assert_eq!(cup.name().await?, "cup");
//!
//! // A callback object served by the client's own daemon.
//! let mine = rmi::Daemon::bind("127.0.0.1:0").await?;
//! let me = ItemProxy::from_uri(mine.register(ItemServer::new(Named("mine".into())))?)?;
//! tokio::spawn({ let d = mine.clone(); async move { d.serve().await } });
//! assert_eq!(shop.inspect(me).await?, Ok("mine".to_string()));
//! # Ok(()) }
//! ```
//!
//! # Call context
//!
//! Inside a method, [`context::current`] gives the [`CallContext`]: the caller's address, the
//! correlation id, the request annotations, the caller's deadline, the serving daemon and the
//! connection id; it also sets reply annotations. Only the task running the call has it.
//! Callers add annotations with [`Proxy::with_annotation`] and read the reply's with
//! [`Proxy::call_full`].
//!
//! ```
//! #[rmi::remote]
//! pub trait Who {
//!     /// Who is calling.
//!     async fn whoami(&self) -> String;
//! }
//!
//! struct W;
//! impl Who for W {
//!     async fn whoami(&self) -> String {
//!         let ctx = rmi::context::current().expect("inside a call");
//!         ctx.set_response_annotation(*b"SRVR", b"node-1".to_vec());
//!         let user = ctx.annotation(b"USER").map(|v| String::from_utf8_lossy(v).into_owned());
//!         format!("{} from {}", user.unwrap_or_default(), ctx.peer())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(WhoServer::new(W))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let who = WhoProxy::connect(&uri).await?;
//! let alice = who.proxy().with_annotation(*b"USER", &b"alice"[..]);
//! let reply = alice.call_full::<_, String>("whoami", &[(); 0]).await?;
//! assert!(reply.value.starts_with("alice from 127.0.0.1:"));
//! assert!(reply.annotations.iter().any(|(id, v)| id == b"SRVR" && &v[..] == b"node-1"));
//! let alice = WhoProxy::from_proxy(alice); // typed again, annotation included
//! # assert!(alice.whoami().await?.starts_with("alice"));
//! # Ok(()) }
//! ```
//!
//! # Streaming
//!
//! A method returning [`RemoteStream<T>`](RemoteStream) (from any `Stream` or iterator) gives
//! the caller an [`ItemStream<T>`](ItemStream): a `Stream` of `Result<T, Error>` that fetches
//! one item per poll, so nothing is made before it is asked for. Dropping it early closes the
//! stream on the server. See [`DaemonBuilder::max_streams_per_connection`] and
//! [`DaemonBuilder::stream_linger`].
//!
//! ```
//! use futures_util::StreamExt;
//! use rmi::RemoteStream;
//!
//! #[rmi::remote]
//! pub trait Numbers {
//!     /// 1, 2, 3, …
//!     async fn count(&self) -> RemoteStream<u64>;
//! }
//!
//! struct N;
//! impl Numbers for N {
//!     async fn count(&self) -> RemoteStream<u64> {
//!         RemoteStream::iter(1..)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(NumbersServer::new(N))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let numbers = NumbersProxy::connect(&uri).await?;
//! let mut items = numbers.count().await?;
//! assert_eq!(items.next().await.transpose()?, Some(1));
//! assert_eq!(items.next().await.transpose()?, Some(2));
//! drop(items); // closes the stream on the server
//! # Ok(()) }
//! ```
//!
//! # Batches
//!
//! `proxy.batch()` queues calls to one object, each giving a typed [`Slot`]; `send()` makes one
//! round trip and returns [`BatchResults`] in order. Execution stops at the first call that
//! fails (a method returning `Err(..)` has not failed: that is a value); later calls report
//! that they did not run. `send_oneway()` sends without waiting.
//!
//! ```
//! #[rmi::remote]
//! pub trait Calc {
//!     /// `a / b`; panics when `b` is 0.
//!     async fn div(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct C;
//! impl Calc for C {
//!     async fn div(&self, a: i64, b: i64) -> i64 {
//!         a.checked_div(b).expect("division by zero")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(CalcServer::new(C))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! # std::panic::set_hook(Box::new(|_| {}));
//! let calc = CalcProxy::connect(&uri).await?;
//! let mut batch = calc.batch();
//! let (a, b, c) = (batch.div(8, 2), batch.div(1, 0), batch.div(9, 3));
//! let results = batch.send().await?;
//! assert_eq!(results.get(&a)?, 4);
//! assert!(matches!(results.get(&b), Err(rmi::Error::Panicked(_))));
//! assert!(results.get(&c).is_err(), "not executed");
//! assert_eq!(results.executed(), 2);
//! # Ok(()) }
//! ```
//!
//! # Timeouts, deadlines and cancellation
//!
//! A deadline per proxy ([`ProxyBuilder::timeout`]) or per call ([`Proxy::with_timeout`], a
//! view of the same connection) fails a call with [`Error::Timeout`]; the connection stays
//! usable and the late reply is discarded. The remaining time travels with the call: the
//! method can read [`CallContext::time_left`], and when the deadline passes the daemon cancels
//! the method (drops its future), as gRPC deadlines do. Dropping a call's future (a `select!`,
//! an aborted task) without a deadline cancels it on the caller's side only. A failed call may still have
//! run, unless [`Error::is_not_executed`] says it provably did not (never sent, or refused
//! before dispatch); such calls are safe to repeat.
//!
//! ```
//! use std::time::Duration;
//!
//! #[rmi::remote]
//! pub trait Slow {
//!     /// Sleeps `ms` milliseconds (less if the caller's deadline comes first).
//!     async fn sleep(&self, ms: u64) -> u64;
//! }
//!
//! struct S;
//! impl Slow for S {
//!     async fn sleep(&self, ms: u64) -> u64 {
//!         let left = rmi::context::current().and_then(|ctx| ctx.time_left());
//!         let wait = left.map_or(Duration::from_millis(ms), |l| l.min(Duration::from_millis(ms)));
//!         tokio::time::sleep(wait).await;
//!         ms
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(SlowServer::new(S))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let slow: SlowProxy = SlowProxy::builder(&uri)?.timeout(Duration::from_secs(30)).connect().await?;
//! let hasty = slow.with_timeout(Duration::from_millis(50));
//! let err = hasty.sleep(10_000).await.unwrap_err();
//! assert!(matches!(err, rmi::Error::Timeout(_)) && !err.is_not_executed());
//! assert_eq!(slow.sleep(1).await?, 1, "the connection is still fine");
//! # Ok(()) }
//! ```
//!
//! # Reconnect and retries
//!
//! When a connection dies, the next call dials again (resolving a `PYRONAME:` again, so a
//! moved server is found), once for all waiting calls, with jittered backoff
//! ([`ProxyBuilder::reconnect_attempts`], default 2). A request that was never sent is retried
//! on its own. One that was in flight is not, since it may have run, unless its method is
//! `#[rmi(idempotent)]` (retried once), the proxy is [`idempotent`](Proxy::idempotent), or it
//! has retries ([`Proxy::with_retries`], [`ProxyBuilder::retries`]).
//!
//! ```
//! #[rmi::remote]
//! pub trait Store {
//!     /// Safe to run twice: retried once after a connection failure.
//!     #[rmi(idempotent)]
//!     async fn get(&self, key: String) -> Option<String>;
//! }
//!
//! struct Empty;
//! impl Store for Empty {
//!     async fn get(&self, _key: String) -> Option<String> {
//!         None
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! # let daemon = rmi::Daemon::bind("127.0.0.1:0").await?;
//! # let uri = daemon.register(StoreServer::new(Empty))?;
//! # tokio::spawn({ let d = daemon.clone(); async move { d.serve().await } });
//! let store: StoreProxy = StoreProxy::builder(&uri)?.reconnect_attempts(5).connect().await?;
//! store.proxy().close(); // the connection is gone...
//! assert_eq!(store.get("k".into()).await?, None); // ...and the next call redials
//! let patient = StoreProxy::from_proxy(store.proxy().with_retries(3)); // every method
//! # assert_eq!(patient.get("k".into()).await?, None);
//! # Ok(()) }
//! ```
//!
//! # Addresses
//!
//! Daemons bind 127.0.0.1 unless told otherwise (`Daemon::bind("[::1]:0")` for IPv6). Behind
//! NAT, [`DaemonBuilder::advertise`] puts another address in the URIs the daemon hands out
//! (Pyro's `nathost`/`natport`) while it listens where it was bound. `DaemonBuilder::bind_unix`
//! serves on a Unix domain socket (`PYRO:id@./u:/path`; the name server has
//! [`NameServerBuilder::unix`](naming::NameServerBuilder::unix)). A `localhost` URI reaches a
//! daemon on either loopback: it tries 127.0.0.1, then `[::1]`.
//!
//! ```
//! # #[rmi::remote]
//! # pub trait Greeter {
//! #     /// Says hello.
//! #     async fn hello(&self) -> String;
//! # }
//! # struct G;
//! # impl Greeter for G {
//! #     async fn hello(&self) -> String { "hello".into() }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rmi::Error> {
//! let nat = rmi::Daemon::builder().advertise("gateway.example", Some(4444)).bind("127.0.0.1:0").await?;
//! let uri = nat.register_with_id(GreeterServer::new(G), "greeter")?;
//! assert_eq!(uri.to_string(), "PYRO:greeter@gateway.example:4444");
//! # tokio::spawn({ let d = nat.clone(); async move { d.serve().await } });
//! let port = nat.local_addr().expect("a TCP daemon").port();
//! let greeter = GreeterProxy::connect(format!("PYRO:greeter@localhost:{port}")).await?;
//! assert_eq!(greeter.hello().await?, "hello");
//!
//! #[cfg(unix)]
//! {
//!     let path = std::env::temp_dir().join(format!("rmi-doc-{}.sock", std::process::id()));
//!     let unix = rmi::Daemon::builder().bind_unix(&path).await?;
//!     let uri = unix.register_with_id(GreeterServer::new(G), "greeter")?;
//!     assert_eq!(uri.to_string(), format!("PYRO:greeter@./u:{}", path.display()));
//!     # tokio::spawn({ let d = unix.clone(); async move { d.serve().await } });
//!     # assert_eq!(GreeterProxy::connect(&uri).await?.hello().await?, "hello");
//!     # unix.shutdown();
//! }
//! # Ok(()) }
//! ```
//!
//! # Tracing
//!
//! Every call is a `tracing` span at debug level: `rmi.call` (or `rmi.oneway`) on the caller's
//! side with the URI, method and correlation id, and `rmi.dispatch` in the daemon with the
//! object, method, correlation id and peer. The correlation id is the same on both sides (set
//! your own with [`Proxy::with_correlation_id`]), so the logs of two processes join up.
//! Panicking methods are logged as errors, failed oneway calls as warnings.
//!
//! ```
//! tracing_subscriber::fmt().with_env_filter("rmi_core=debug").init();
//! ```
//!
//! # Blocking facade
//!
//! For synchronous programs, `#[remote]` also generates `{Trait}BlockingProxy`, whose methods
//! block; see [`blocking`]. Streamed methods return a [`blocking::Iter`]. Do not use it inside
//! an async runtime: it panics there.
//!
//! ```
//! #[rmi::remote]
//! pub trait Greeter {
//!     /// Says hello.
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! struct G;
//! impl Greeter for G {
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hi welcome {name}")
//!     }
//! }
//!
//! fn main() -> Result<(), rmi::Error> {
//!     // (The server, on a thread with its own runtime.)
//!     let (tx, rx) = std::sync::mpsc::channel();
//!     std::thread::spawn(move || {
//!         tokio::runtime::Runtime::new().unwrap().block_on(async {
//!             let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
//!             tx.send(daemon.register(GreeterServer::new(G)).unwrap()).unwrap();
//!             daemon.serve().await
//!         })
//!     });
//!     let uri = rx.recv().unwrap();
//!
//!     // Plain synchronous code.
//!     let greeter = GreeterBlockingProxy::connect(&uri)?;
//!     assert_eq!(greeter.hello("Rashmi".into())?, "Hi welcome Rashmi");
//!     let builder = GreeterProxy::builder(&uri)?.timeout(std::time::Duration::from_secs(5));
//!     let patient = GreeterBlockingProxy::connect_with(builder)?;
//!     assert_eq!(patient.hello("Irmen".into())?, "Hi welcome Irmen");
//!     Ok(())
//! }
//! ```
//!
//! # Serializers
//!
//! Calls use bincode by default (fastest; Rust to Rust). Select msgpack per proxy with
//! `Proxy::builder(uri).serializer(Serializer::MsgPack)`. bincode is not self-describing:
//! untagged enums, `#[serde(flatten)]` and `skip_serializing_if` fail at run time under it;
//! use msgpack for such types. Byte buffers should use `serde_bytes`.

pub use rmi_core::{
    auth, batch, blocking, context, daemon, dispatch, error, protocol, proxy, rustls, transport,
    uri, uuid, Batch, BatchResults, CallContext, CallOptions, Daemon, DaemonBuilder, DecodeLimits,
    Dispatch, Error, InstanceMode, IntoUri, ItemStream, Location, Metadata, Proxy, ProxyBuilder,
    Registration, RemoteError, RemoteErrorKind, RemoteStream, Reply, Resolve, Result, Serializer,
    SharedSecret, Slot, Uri,
};

/// Makes a trait a remote contract.
///
/// ```
/// #[rmi::remote]
/// pub trait Counter {
///     /// Adds `n` and returns the new total.
///     async fn add(&self, n: u64) -> u64;
///     /// Application errors travel as `Result<U, E>`; the caller gets `Result<Result<U, E>, rmi::Error>`.
///     #[rmi(name = "checkedDiv")]
///     async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String>;
/// }
/// ```
///
/// rewrites the trait and generates four types next to it, each with the trait's visibility:
///
/// - `Counter`, the trait itself, as the contract: each `async fn` becomes
///   `fn … -> impl Future<Output = T> + Send` (a default body becomes an `async move` block),
///   `Send + Sync + 'static` is added to its supertraits, and the `#[rmi(…)]` attributes are
///   removed;
/// - `CounterServer<T>`, the server side: `CounterServer::new(obj)` (or `from_arc(arc)` for an
///   object shared with other code) wraps an implementation for [`Daemon::register`]. It
///   implements [`Dispatch`] (one `match` arm per wire name: decode the arguments, call, encode
///   the result) and `Clone` (clones share the object); `get_ref()` returns the object;
/// - `CounterProxy`, the typed async client: `Clone + Send + Sync` (clones share one connection),
///   made by `CounterProxy::connect(uri)` (`PYRO:`, `PYRONAME:` or `PYROMETA:`),
///   `CounterProxy::builder(uri)?.….connect()` (a [`ProxyBuilder`]), `from_uri(uri)` (dials on
///   its first call) or `from_proxy(proxy)` and `From<Proxy>`, with one `async fn` per method
///   returning `Result<T, rmi::Error>`: `Result<(), rmi::Error>` for a `#[rmi(oneway)]` method,
///   and `Result<ItemStream<T>, rmi::Error>` (an [`ItemStream`]) for one that returns
///   [`RemoteStream<T>`](RemoteStream). `with_timeout`, `with_options`, `with_annotation`,
///   `with_correlation_id` and `with_retries` return a proxy on the same connection with other
///   call settings; `proxy()` and `into_proxy()` give the untyped [`Proxy`]. It implements
///   `Serialize` and `Deserialize`, travelling as the object's URI, so methods can take and
///   return proxies (a received one dials on its first call);
/// - `CounterBatch`, calls queued to go in one round trip, from `CounterProxy::batch()`: one
///   method per method (streams excepted) returning a [`Slot`] for its result, then `send()`
///   (results in order; execution stops at the first error) or `send_oneway()`;
/// - `CounterBlockingProxy`, the blocking client for synchronous programs (not for use inside
///   an async runtime): `CounterBlockingProxy::connect(uri)` or `connect_with(builder)`, one
///   blocking method per method (a stream becomes a blocking iterator), and `as_async()` for the
///   `CounterProxy` underneath.
///
/// Methods must be `async fn(&self, args…) -> T` with owned serde types. Implement them with
/// plain `async fn`: since the contract asks for `Send` futures, a non-`Send` future is reported
/// at your impl. `#[rmi(name = "…")]` sets the wire name (default: the Rust name),
/// `#[rmi(oneway)]` sends without waiting for a reply (the method must return `()`), and
/// `#[rmi(idempotent)]` marks a method safe to run twice, so a call that fails on the connection
/// is retried (once, or as often as `with_retries` allows). Doc comments and `#[cfg]` carry over
/// to the generated items. `#[remote(crate = path)]` points generated code at another path to
/// this crate.
pub use rmi_macros::remote;

/// The name server: run one, find one, register and look up names.
pub mod naming {
    pub use rmi_naming::*;

    /// A resolver that finds name servers with the default [`NsLocator`] (localhost, then the
    /// loopback broadcast). The first call also installs it as the process default, so proxies
    /// received inside values resolve `PYRONAME:` too.
    pub fn default_resolver() -> std::sync::Arc<dyn rmi_core::Resolve> {
        let resolver: std::sync::Arc<dyn rmi_core::Resolve> =
            std::sync::Arc::new(NamingResolver::default());
        rmi_core::resolve::install_default(resolver.clone());
        resolver
    }
}

/// Settings for an untyped proxy to `uri`, with the default name-server resolver installed so
/// `PYRONAME:`/`PYROMETA:` work.
pub fn proxy_builder(uri: impl IntoUri) -> Result<ProxyBuilder> {
    Ok(ProxyBuilder::new(uri.into_uri()?).resolver(naming::default_resolver()))
}

/// Items used by code that `#[remote]` generates; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use rmi_core::__private::*;

    /// A proxy builder for `uri` that resolves names through the name server.
    pub fn proxy_builder(uri: impl IntoUri) -> Result<ProxyBuilder, Error> {
        crate::proxy_builder(uri)
    }
}
