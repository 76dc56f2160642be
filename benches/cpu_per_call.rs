//! Instructions and allocations per call, counted rather than timed: run under callgrind.
//!
//! A timed benchmark on a shared 2-core machine moves with the load; an instruction count does
//! not. This binary makes `N` greeting calls (client and daemon in one process, one
//! current-thread runtime, 127.0.0.1 only), sequentially and then with 64 in flight on one
//! connection, next to the same numbers of raw TCP exchanges of the same frame sizes. Run it
//! twice under callgrind with two values of `N`; the difference divided by the difference in
//! calls is the cost of one call, setup excluded:
//!
//! ```sh
//! cargo bench --bench cpu_per_call --no-run
//! for n in 2000 4000; do
//!   RMI_CALLS=$n valgrind --tool=callgrind --callgrind-out-file=cg.$n \
//!     target/release/deps/cpu_per_call-* --bench
//! done
//! ```
//!
//! `RMI_MODE` picks one part (`seq`, `pipe`, `raw-seq`, `raw-pipe`); without it all four run.
//! `pipe-threads` (only when named) is `pipe` with the daemon on a runtime and thread of its
//! own, as in the compare benchmark: for `strace -c -f` and `perf`, not callgrind.
//! `conns8` (only when named) is `pipe` over 8 connections × 8 calls in flight, all on one
//! thread, for callgrind.
//! `conns8-threads` (only when named) is the same with 8 connections × 8 calls in flight, and
//! prints each thread's user and system CPU time (Linux `/proc`), to tell which end is busy.
//! `pipe-mt` and `conns8-mt` (only when named) run daemon and client on one multi-thread
//! runtime of two workers, as `#[tokio::main]` would: 64 calls in flight on one connection or
//! on eight.
//! `bulk-bincode` and `bulk-msgpack` (only when named) make `RMI_CALLS` calls with a 10 MB
//! `Vec<u8>` argument; `connect` and `pyroname` (only when named) open `RMI_CALLS` fresh
//! connections, directly or through `PYRONAME:`, each with its first call (`connect-threads`:
//! directly, to a daemon on a thread of its own); `seq2` (only when
//! named) makes the calls from two tasks, each calling in turn, on one shared proxy.
//! Without valgrind it prints wall time, which is only a sanity check.

use std::time::Instant;

use rmi::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The greeting object of Pyro's tutorial.
#[rmi::remote]
pub trait Greeter {
    /// Returns `"Hi welcome " + name`.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

struct GreetingMaker;

/// Bulk transfers: a 10 MB argument, plain `Vec<u8>`.
#[rmi::remote]
pub trait Bulk {
    /// The length of `data`.
    async fn blob_len(&self, data: Vec<u8>) -> u64;
}

struct Counter;

impl Bulk for Counter {
    async fn blob_len(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
}

/// The bulk calls' argument.
const BLOB: usize = 10 * 1024 * 1024;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

const IN_FLIGHT: usize = 64;
/// rmi's greeting frames (bincode): the raw exchanges move the same bytes.
const REQUEST: usize = 99;
const REPLY: usize = 58;

fn main() {
    let calls: usize = std::env::var("RMI_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mode = std::env::var("RMI_MODE").unwrap_or_default();
    if let Some(conns) = match mode.as_str() {
        "pipe-mt" => Some(1),
        "conns8-mt" => Some(8),
        _ => None,
    } {
        return on_a_multi_thread_runtime(conns, calls);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (daemon, uri) = serving_greeter().await;
        let proxy = GreeterProxy::connect(&uri).await.expect("connect");
        let raw = raw_server().await;
        let want = |m: &str| mode.is_empty() || mode == m;
        // Bulk: `RMI_CALLS` calls with a 10 MB argument, in bincode and in msgpack (only when
        // asked for: they are slow under valgrind).
        for (name, ser) in [
            ("bulk-bincode", rmi::Serializer::Bincode),
            ("bulk-msgpack", rmi::Serializer::MsgPack),
        ] {
            if mode == name {
                let uri = daemon.register(BulkServer::new(Counter)).expect("register");
                let bulk: BulkProxy = BulkProxy::builder(&uri)
                    .expect("builder")
                    .serializer(ser)
                    .connect()
                    .await
                    .expect("connect");
                let t = Instant::now();
                for _ in 0..calls {
                    let n = bulk.blob_len(vec![7; BLOB]).await.expect("call");
                    assert_eq!(n, BLOB as u64);
                }
                report(name, calls, t);
            }
        }
        // A fresh connection and its first call, directly or through `PYRONAME:` (an
        // in-process name server); only when named.
        if mode == "connect" || mode == "connect-threads" || mode == "pyroname" {
            let target = if mode == "connect" {
                uri.to_string()
            } else if mode == "connect-threads" {
                daemon_on_its_own_thread().to_string()
            } else {
                let ns = rmi::naming::NameServer::builder()
                    .host("127.0.0.1")
                    .port(0)
                    .no_broadcast()
                    .start()
                    .await
                    .expect("name server");
                let ns_proxy = rmi::naming::NameServerProxy::connect(ns.uri())
                    .await
                    .expect("connect name server");
                ns_proxy.register("greeter", &uri).await.expect("register");
                let at = ns.daemon().location().clone();
                std::mem::forget(ns);
                format!("PYRONAME:greeter@{at}")
            };
            let t = Instant::now();
            for _ in 0..calls {
                // Lazy, as Pyro's proxies are: the call goes out with the CONNECT.
                let p = GreeterProxy::from_proxy(
                    GreeterProxy::builder(target.clone())
                        .expect("builder")
                        .serializer(rmi::Serializer::Bincode)
                        .build(),
                );
                p.welcome_message("Rashmi".into()).await.expect("call");
            }
            report(&mode, calls, t);
        }
        // Two tasks each calling in turn on one shared proxy (only when named): the reading
        // passes between a lone call and the reader task as they overlap.
        if mode == "seq2" {
            let t = Instant::now();
            let each = |proxy: GreeterProxy| async move {
                for _ in 0..calls / 2 {
                    let r = proxy.welcome_message("Rashmi".into()).await.expect("call");
                    assert_eq!(r, "Hi welcome Rashmi");
                }
            };
            tokio::join!(each(proxy.clone()), each(proxy.clone()));
            report("rmi two sequential callers", calls, t);
        }
        if want("seq") {
            let t = Instant::now();
            for _ in 0..calls {
                let r = proxy.welcome_message("Rashmi".into()).await.expect("call");
                assert_eq!(r, "Hi welcome Rashmi");
            }
            report("rmi sequential", calls, t);
        }
        if want("pipe") {
            let t = Instant::now();
            let made = in_flight(std::slice::from_ref(&proxy), calls).await;
            report("rmi 64 in flight", made, t);
        }
        // 8 connections × 8 calls in flight, all on this one thread (only when named): what a
        // call costs when each read and write carries fewer of them than at 1 × 64.
        if mode == "conns8" {
            let proxies = connect_all(&uri, 8).await;
            let t = Instant::now();
            let made = in_flight(&proxies, calls).await;
            report("rmi 8 x 8", made, t);
        }
        // The compare benchmark's setup (only when named): the daemon on a runtime of its own,
        // on its own thread, 64 calls in flight from here. Not for callgrind, which runs one
        // thread at a time, but for `strace -c -f` (syscalls per call) and `perf stat`.
        if mode == "pipe-threads" {
            let uri = daemon_on_its_own_thread();
            let proxy = GreeterProxy::connect(&uri).await.expect("connect");
            let t = Instant::now();
            let made = in_flight(std::slice::from_ref(&proxy), calls).await;
            report("rmi 64 in flight, daemon on its own thread", made, t);
        }
        if mode == "conns8-threads" {
            let uri = daemon_on_its_own_thread();
            let proxies = connect_all(&uri, 8).await;
            let t = Instant::now();
            let made = in_flight(&proxies, calls).await;
            report("rmi 8 x 8, daemon on its own thread", made, t);
            thread_cpu();
        }
        if want("raw-seq") {
            let mut s = tokio::net::TcpStream::connect(raw).await.expect("raw");
            s.set_nodelay(true).expect("nodelay");
            let (req, mut rep) = ([7u8; REQUEST], [0u8; REPLY]);
            let t = Instant::now();
            for _ in 0..calls {
                s.write_all(&req).await.expect("write");
                s.read_exact(&mut rep).await.expect("read");
            }
            report("raw sequential", calls, t);
        }
        if want("raw-pipe") {
            let s = tokio::net::TcpStream::connect(raw).await.expect("raw");
            s.set_nodelay(true).expect("nodelay");
            let (mut rd, mut wr) = s.into_split();
            let t = Instant::now();
            let writer = tokio::spawn(async move {
                let req = [7u8; REQUEST];
                for _ in 0..calls {
                    wr.write_all(&req).await.expect("write");
                }
                wr
            });
            let mut rep = [0u8; REPLY];
            for _ in 0..calls {
                rd.read_exact(&mut rep).await.expect("read");
            }
            drop(writer.await);
            report("raw pipelined", calls, t);
        }
        daemon.shutdown();
    });
}

/// A daemon on 127.0.0.1 serving the greeting object, on the current runtime; its URI.
async fn serving_greeter() -> (Daemon, rmi::Uri) {
    let daemon = Daemon::bind("127.0.0.1:0").await.expect("bind");
    let uri = daemon
        .register(GreeterServer::new(GreetingMaker))
        .expect("register");
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

/// Daemon and client on one multi-thread runtime of two workers, as `#[tokio::main]` sets
/// up: `IN_FLIGHT` calls in flight over `conns` connections.
fn on_a_multi_thread_runtime(conns: usize, calls: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (daemon, uri) = serving_greeter().await;
        let proxies = connect_all(&uri, conns).await;
        let t = Instant::now();
        let made = in_flight(&proxies, calls).await;
        report(
            &format!("rmi {conns} connection(s), {IN_FLIGHT} in flight, one multi-thread runtime"),
            made,
            t,
        );
        daemon.shutdown();
    });
}

/// `n` proxies to `uri`, each with a connection of its own.
async fn connect_all(uri: &rmi::Uri, n: usize) -> Vec<GreeterProxy> {
    let mut proxies = Vec::with_capacity(n);
    for _ in 0..n {
        proxies.push(GreeterProxy::connect(uri).await.expect("connect"));
    }
    proxies
}

/// Prints each thread's name and user and system CPU time (clock ticks, from `/proc`; Linux).
fn thread_cpu() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        println!("(no /proc: per-thread CPU not shown)");
        return;
    };
    for task in tasks.flatten() {
        let (Ok(stat), Ok(name)) = (
            std::fs::read_to_string(task.path().join("stat")),
            std::fs::read_to_string(task.path().join("comm")),
        ) else {
            continue;
        };
        // The fields after the parenthesised name: state is the first, utime the 12th.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if let (Some(user), Some(system)) = (fields.get(11), fields.get(12)) {
            println!(
                "thread {:?}: user {user} ticks, system {system} ticks",
                name.trim()
            );
        }
    }
}

/// `calls` greeting calls (rounded down to a multiple of `IN_FLIGHT`) from `IN_FLIGHT` tasks,
/// spread evenly over `proxies` (each its own connection); how many were made.
async fn in_flight(proxies: &[GreeterProxy], calls: usize) -> usize {
    let per_task = calls / IN_FLIGHT;
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let p = proxies[i % proxies.len()].clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    p.welcome_message("Rashmi".into()).await.expect("call");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    per_task * IN_FLIGHT
}

/// A daemon serving the greeting object on a current-thread runtime on a thread of its own
/// (left running until the process ends); its object's URI.
fn daemon_on_its_own_thread() -> rmi::Uri {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("daemon".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (_daemon, uri) = serving_greeter().await;
                tx.send(uri).expect("send the URI");
                std::future::pending::<()>().await
            })
        })
        .expect("daemon thread");
    rx.recv().expect("the daemon's URI")
}

/// A TCP server answering every `REQUEST` bytes with `REPLY` bytes.
async fn raw_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            s.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(s);
                let (mut req, rep) = ([0u8; REQUEST], [9u8; REPLY]);
                while rd.read_exact(&mut req).await.is_ok() {
                    if wr.write_all(&rep).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn report(what: &str, calls: usize, since: Instant) {
    let elapsed = since.elapsed();
    println!(
        "{what}: {calls} calls in {elapsed:?} ({:.1} µs/call, timed: a sanity check only)",
        elapsed.as_secs_f64() * 1e6 / calls as f64
    );
}
