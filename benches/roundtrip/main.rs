//! Round-trip benchmark of rmi against a raw-TCP floor, over 127.0.0.1 only.
//!
//! Run with `cargo bench --bench roundtrip` (release). One run measures, for bincode and msgpack:
//!
//! 1. sequential latency of the greeting call (`welcomeMessage("Rashmi")`), median and p99,
//!    next to a raw TCP ping-pong exchanging frames of exactly the sizes of rmi's request and
//!    reply frames;
//! 2. throughput in calls/s with 64 calls in flight, over one connection (one proxy whose
//!    clones are shared by 64 tasks) and over 8 connections (8 proxies, 8 tasks each), next to
//!    a pipelined raw client keeping the same number of frames outstanding per socket;
//! 3. bulk transfer of a 10 MB `serde_bytes` buffer in MB/s, next to raw TCP sending the same
//!    number of bytes and reading a reply of the same size.
//!
//! rmi and the raw floor alternate (latency in blocks of calls, throughput run by run, bulk call by
//! call) so both see the same background load; throughput reports the best of its runs.
//!
//! Every ratio is rmi's cost over the raw floor's (how many times slower rmi is). Timings are
//! printed, never asserted. `RMI_BENCH_QUICK=1` shrinks every count for a smoke run (< 10 s);
//! CI's smoke run is `RMI_BENCH_QUICK=1 cargo test --bench roundtrip`, unoptimized, to check that
//! the benchmark runs without a release build of every dependency (about 4 minutes on 2 cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmi::protocol::codec::encode_invoke;
use rmi::protocol::frame::{Message, MessageType};
use rmi::{Daemon, Serializer};
use serde::{Deserialize, Serialize};

/// The greeting object of Pyro's tutorial.
#[rmi::remote]
pub trait Greeter {
    /// Returns `"Hi welcome " + name`.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

/// A byte buffer sent as one bytes value (not a sequence of integers).
#[derive(Debug, Serialize, Deserialize)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// An object that receives big buffers.
#[rmi::remote]
pub trait Bulk {
    /// Returns the length of `blob`.
    #[rmi(name = "blobLen")]
    async fn blob_len(&self, blob: Blob) -> u64;
}

struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

struct Sink;

impl Bulk for Sink {
    async fn blob_len(&self, blob: Blob) -> u64 {
        blob.0.len() as u64
    }
}

const NAME: &str = "Rashmi";
const GREETING: &str = "Hi welcome Rashmi";
const BLOB_LEN: usize = 10_000_000;
/// Calls in flight in the throughput runs, in total.
const IN_FLIGHT: usize = 64;
/// Connections of the multi-connection throughput runs.
const CONNECTIONS: usize = 8;

/// Counts and durations, shrunk by `RMI_BENCH_QUICK=1`.
struct Config {
    quick: bool,
    latency_warmup: usize,
    latency_calls: usize,
    throughput_warmup: Duration,
    throughput_time: Duration,
    throughput_rounds: usize,
    bulk_warmup: usize,
    bulk_calls: usize,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("RMI_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Config {
                quick,
                latency_warmup: 200,
                latency_calls: 2_000,
                throughput_warmup: Duration::from_millis(100),
                throughput_time: Duration::from_millis(300),
                throughput_rounds: 1,
                bulk_warmup: 1,
                bulk_calls: 3,
            }
        } else {
            Config {
                quick,
                latency_warmup: 2_000,
                latency_calls: 20_000,
                throughput_warmup: Duration::from_millis(300),
                throughput_time: Duration::from_secs(1),
                throughput_rounds: 3,
                bulk_warmup: 3,
                bulk_calls: 30,
            }
        }
    }
}

/// Calls per block in the latency runs: rmi and raw alternate block by block, so both see
/// the same background load.
const LATENCY_BLOCK: usize = 500;

/// Encoded sizes of rmi's frames for one serializer, and the raw frames of those sizes.
struct Frames {
    request: Arc<Vec<u8>>,
    reply: Arc<Vec<u8>>,
    bulk_request: Arc<Vec<u8>>,
    bulk_reply: Arc<Vec<u8>>,
}

impl Frames {
    /// Builds the messages rmi sends for the greeting and the bulk call (same object id, method
    /// and arguments), so the raw floor moves exactly as many bytes per call.
    fn new(ser: Serializer, greeter_id: &str, bulk_id: &str) -> Frames {
        let frame = |ty, payload: Vec<u8>| {
            Message::new(ty, ser.id(), 0, 1, payload)
                .to_bytes()
                .to_vec()
        };
        let invoke = encode_invoke(ser, greeter_id, "welcomeMessage", &(NAME.to_owned(),))
            .expect("encode invoke");
        let result = ser.encode(&GREETING.to_owned()).expect("encode result");
        let bulk = encode_invoke(ser, bulk_id, "blobLen", &(Blob(vec![0xA5; BLOB_LEN]),))
            .expect("encode bulk");
        let bulk_result = ser.encode(&(BLOB_LEN as u64)).expect("encode bulk result");
        Frames {
            request: Arc::new(frame(MessageType::Invoke, invoke)),
            reply: Arc::new(frame(MessageType::Result, result)),
            bulk_request: Arc::new(frame(MessageType::Invoke, bulk)),
            bulk_reply: Arc::new(frame(MessageType::Result, bulk_result)),
        }
    }
}

/// Latency percentiles in microseconds, and the call rate they imply.
struct Latency {
    median: f64,
    p99: f64,
    calls_per_sec: f64,
}

impl Latency {
    fn from_samples(mut nanos: Vec<u64>) -> Latency {
        nanos.sort_unstable();
        let total: u64 = nanos.iter().sum();
        let at = |q: f64| nanos[((nanos.len() - 1) as f64 * q).round() as usize] as f64 / 1_000.0;
        Latency {
            median: at(0.5),
            p99: at(0.99),
            calls_per_sec: nanos.len() as f64 / (total as f64 / 1e9),
        }
    }
}

fn ser_name(ser: Serializer) -> &'static str {
    match ser {
        Serializer::MsgPack => "msgpack",
        _ => "bincode",
    }
}

async fn greeter(uri: &rmi::Uri, ser: Serializer) -> GreeterProxy {
    GreeterProxy::builder(uri)
        .expect("builder")
        .serializer(ser)
        .connect()
        .await
        .expect("connect greeter")
}

fn mb_per_sec(calls: usize, total: Duration) -> f64 {
    (calls * BLOB_LEN) as f64 / 1e6 / total.as_secs_f64()
}

mod raw;
use raw::{raw_server, raw_throughput_run, RawPingPong};

// ---------------------------------------------------------------------------------------------
// rmi.

/// One rmi run of `time`: `IN_FLIGHT` tasks spread evenly over `proxies`, each calling in a
/// loop until the deadline; returns calls/s.
async fn rmi_throughput_run(proxies: &[GreeterProxy], time: Duration) -> f64 {
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let proxy = proxies[i % proxies.len()].clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    proxy
                        .welcome_message(NAME.to_owned())
                        .await
                        .expect("greeting call");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("rmi task");
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

async fn rmi_call(proxy: &GreeterProxy) -> Duration {
    let t = Instant::now();
    let reply = proxy
        .welcome_message(NAME.to_owned())
        .await
        .expect("greeting call");
    let elapsed = t.elapsed();
    assert_eq!(reply.len(), GREETING.len(), "the greeting came back");
    elapsed
}

// ---------------------------------------------------------------------------------------------
// The three measurements; rmi and raw alternate so both see the same background load.

/// Sequential latency of rmi and of the raw ping-pong, in alternating blocks.
async fn latency(proxy: &GreeterProxy, frames: &Frames, cfg: &Config) -> (Latency, Latency) {
    assert_eq!(
        proxy
            .welcome_message(NAME.to_owned())
            .await
            .expect("greeting call"),
        GREETING
    );
    let mut raw = RawPingPong::start(frames.request.clone(), frames.reply.clone()).await;
    for _ in 0..cfg.latency_warmup {
        rmi_call(proxy).await;
        raw.call().await;
    }
    let mut rmi_ns = Vec::with_capacity(cfg.latency_calls);
    let mut raw_ns = Vec::with_capacity(cfg.latency_calls);
    while rmi_ns.len() < cfg.latency_calls {
        let block = LATENCY_BLOCK.min(cfg.latency_calls - rmi_ns.len());
        for _ in 0..block {
            rmi_ns.push(rmi_call(proxy).await.as_nanos() as u64);
        }
        for _ in 0..block {
            raw_ns.push(raw.call().await.as_nanos() as u64);
        }
    }
    (Latency::from_samples(rmi_ns), Latency::from_samples(raw_ns))
}

/// Throughput of rmi over `proxies` and of the raw pipelined client over as many sockets:
/// one warm-up run each, then `throughput_rounds` alternating timed runs; the best run counts.
async fn throughput(proxies: &[GreeterProxy], frames: &Frames, cfg: &Config) -> (f64, f64) {
    let (addr, server) = raw_server(frames.request.len(), frames.reply.clone()).await;
    rmi_throughput_run(proxies, cfg.throughput_warmup).await;
    raw_throughput_run(addr, frames, proxies.len(), cfg.throughput_warmup).await;
    let (mut rmi, mut raw) = (0f64, 0f64);
    for _ in 0..cfg.throughput_rounds {
        rmi = rmi.max(rmi_throughput_run(proxies, cfg.throughput_time).await);
        raw = raw.max(raw_throughput_run(addr, frames, proxies.len(), cfg.throughput_time).await);
    }
    server.abort();
    (rmi, raw)
}

/// MB/s of 10 MB calls: rmi's `blobLen(Blob)` and raw TCP sending rmi's own encoded bulk
/// request frame (40-byte header plus payload) in one `write_all` and reading a reply as long
/// as rmi's, alternating call by call. The caller's copy of the buffer for rmi (the method
/// takes it by value) is made outside the timed region.
async fn bulk(proxy: &BulkProxy, frames: &Frames, cfg: &Config) -> (f64, f64) {
    let data = vec![0xA5u8; BLOB_LEN];
    let mut raw = RawPingPong::start(frames.bulk_request.clone(), frames.bulk_reply.clone()).await;
    let (mut rmi_total, mut raw_total) = (Duration::ZERO, Duration::ZERO);
    for i in 0..cfg.bulk_warmup + cfg.bulk_calls {
        let blob = Blob(data.clone());
        let t = Instant::now();
        let n = proxy.blob_len(blob).await.expect("bulk call");
        let rmi_time = t.elapsed();
        assert_eq!(n, BLOB_LEN as u64, "the daemon saw the whole buffer");
        let raw_time = raw.call().await;
        if i >= cfg.bulk_warmup {
            rmi_total += rmi_time;
            raw_total += raw_time;
        }
    }
    (
        mb_per_sec(cfg.bulk_calls, rmi_total),
        mb_per_sec(cfg.bulk_calls, raw_total),
    )
}

// ---------------------------------------------------------------------------------------------

fn thousands(x: f64) -> String {
    let s = format!("{x:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn run(cfg: Config) -> Result<(), rmi::Error> {
    let daemon = Daemon::bind("127.0.0.1:0").await?;
    let greeter_uri = daemon.register(GreeterServer::new(GreetingMaker))?;
    let bulk_uri = daemon.register(BulkServer::new(Sink))?;
    let server = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });
    let greeter_id = greeter_uri.object().expect("direct uri").to_owned();
    let bulk_id = bulk_uri.object().expect("direct uri").to_owned();

    println!(
        "rmi round-trip benchmark over 127.0.0.1{}{} — {} CPUs, tokio multi-thread runtime",
        if cfg.quick {
            " (RMI_BENCH_QUICK: smoke-run counts)"
        } else {
            ""
        },
        if cfg!(debug_assertions) {
            " (UNOPTIMIZED build, as `cargo test --bench roundtrip` makes it: the figures mean \
             nothing; measure with `cargo bench --bench roundtrip`)"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "latency: {} calls after {} warm-up, rmi and raw alternating in blocks of {LATENCY_BLOCK}; \
         throughput: best of {} x {:.1} s runs after a {:.1} s warm-up, {IN_FLIGHT} in flight; \
         bulk: {} x {} MB after {} warm-up",
        cfg.latency_calls,
        cfg.latency_warmup,
        cfg.throughput_rounds,
        cfg.throughput_time.as_secs_f64(),
        cfg.throughput_warmup.as_secs_f64(),
        cfg.bulk_calls,
        BLOB_LEN / 1_000_000,
        cfg.bulk_warmup
    );
    println!("ratio = rmi cost / raw cost (1.0x = as fast as raw TCP with the same frame sizes)");

    let sers = [Serializer::Bincode, Serializer::MsgPack];
    let mut lines = Vec::new();
    for ser in sers {
        let name = ser_name(ser);
        let frames = Frames::new(ser, &greeter_id, &bulk_id);
        println!(
            "\n[{name}] frames: greeting request {} B, reply {} B; bulk request {} B, reply {} B",
            frames.request.len(),
            frames.reply.len(),
            frames.bulk_request.len(),
            frames.bulk_reply.len()
        );

        // 1. Sequential latency.
        let proxy = greeter(&greeter_uri, ser).await;
        let (rmi, raw) = latency(&proxy, &frames, &cfg).await;
        let mut report = |line: String| {
            println!("{line}");
            lines.push(line);
        };
        report(format!(
            "greeting latency {name}: median {:.1} µs p99 {:.1} µs | raw {:.1} µs p99 {:.1} µs | ratio {:.1}x (p99 {:.1}x)",
            rmi.median,
            rmi.p99,
            raw.median,
            raw.p99,
            rmi.median / raw.median,
            rmi.p99 / raw.p99
        ));
        report(format!(
            "throughput {name} sequential (1 in flight): {} calls/s | raw {} calls/s | ratio {:.1}x",
            thousands(rmi.calls_per_sec),
            thousands(raw.calls_per_sec),
            raw.calls_per_sec / rmi.calls_per_sec
        ));

        // 2. Throughput with 64 in flight: one proxy whose clones share one connection, then
        // 8 proxies from 8 separate connects.
        let (rmi_one, raw_one) = throughput(std::slice::from_ref(&proxy), &frames, &cfg).await;
        report(format!(
            "throughput {name} 1 conn x {IN_FLIGHT} in flight: {} calls/s | raw {} calls/s | ratio {:.1}x",
            thousands(rmi_one),
            thousands(raw_one),
            raw_one / rmi_one
        ));
        let mut proxies = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            proxies.push(greeter(&greeter_uri, ser).await);
        }
        let (rmi_many, raw_many) = throughput(&proxies, &frames, &cfg).await;
        report(format!(
            "throughput {name} {CONNECTIONS} conns x {} in flight: {} calls/s | raw {} calls/s | ratio {:.1}x",
            IN_FLIGHT / CONNECTIONS,
            thousands(rmi_many),
            thousands(raw_many),
            raw_many / rmi_many
        ));
        drop(proxies);
        drop(proxy);

        // 3. Bulk.
        let bulk_proxy: BulkProxy = BulkProxy::builder(&bulk_uri)?
            .serializer(ser)
            .connect()
            .await?;
        let (rmi_mbs, raw_mbs) = bulk(&bulk_proxy, &frames, &cfg).await;
        report(format!(
            "bulk 10 MB {name}: {:.0} MB/s ({:.2} ms/call) | raw {:.0} MB/s ({:.2} ms/call) | ratio {:.1}x",
            rmi_mbs,
            BLOB_LEN as f64 / 1e3 / rmi_mbs,
            raw_mbs,
            BLOB_LEN as f64 / 1e3 / raw_mbs,
            raw_mbs / rmi_mbs
        ));
    }

    println!("\n== summary ==");
    for line in &lines {
        println!("{line}");
    }

    daemon.shutdown();
    server.await.expect("daemon task")?;
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; there are no options to parse.
    let cfg = Config::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    // The clients run in a task on a worker thread, as in a server using rmi. Polled directly by
    // `block_on` on the main thread instead, every reply would wake a third thread on these two
    // cores; on a VM that costs 60-80 µs per round trip, for rmi and raw alike, and drowns the
    // difference being measured.
    if let Err(e) =
        runtime.block_on(async { tokio::spawn(run(cfg)).await.expect("benchmark task") })
    {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
    println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
}
