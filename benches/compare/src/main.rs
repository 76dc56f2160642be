//! Side-by-side benchmark: rmi, tarpc, tonic, a minimal hand-written multiplexer ("rawmux")
//! and raw TCP, on identical workloads in one run, over 127.0.0.1 only (every port is 0).
//!
//! The servers of every framework run on one current-thread tokio runtime on their own thread;
//! the clients on another current-thread runtime on the main thread. Each repetition runs
//! every workload for every framework (frameworks in a rotating order, so none is always
//! first); the report gives the median over repetitions, the ratios of rmi to each other
//! framework, a Markdown table, CSV files and a bar chart per figure (PNG and SVG).
//!
//! ```sh
//! cd benches/compare && cargo build --release
//! target/release/compare --quick          # smoke run, a few seconds
//! target/release/compare                  # 10 repetitions, a few minutes
//! target/release/compare --reps 5 --out /tmp/cmp --gate 1.5
//! ```
//!
//! Timings are printed, never asserted: the machine's load moves them.

mod alloc;
mod raw;
mod rawmux;
mod report;
mod rmi_fw;
mod sys;
mod tarpc_fw;
mod tonic_fw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmi::Serializer;

use report::{Figure, Results};

const NAME: &str = "Rashmi";
const GREETING: &str = "Hi welcome Rashmi";
/// The bulk argument, in bytes.
pub const BLOB: usize = 10_000_000;

/// A column of the comparison.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Series {
    Raw,
    RawMux,
    Tarpc,
    Tonic,
    Rmi,
    /// rmi with msgpack (bulk only).
    RmiMsgpack,
    /// rmi through `PYRONAME:` (connect only).
    RmiPyroname,
    /// rmi through `PYRONAME:` with the resolver's watched cache on (connect only).
    RmiPyronameCached,
}

impl Series {
    pub fn label(self) -> &'static str {
        match self {
            Series::Raw => "raw",
            Series::RawMux => "rawmux",
            Series::Tarpc => "tarpc",
            Series::Tonic => "tonic",
            Series::Rmi => "rmi",
            Series::RmiMsgpack => "rmi msgpack",
            Series::RmiPyroname => "rmi PYRONAME",
            Series::RmiPyronameCached => "rmi PYRONAME cached",
        }
    }
}

/// The five frameworks every workload runs.
pub const MAIN: [Series; 5] = [
    Series::Raw,
    Series::RawMux,
    Series::Tarpc,
    Series::Tonic,
    Series::Rmi,
];

struct Config {
    quick: bool,
    reps: usize,
    out: PathBuf,
    throughput_warmup: Duration,
    throughput_time: Duration,
    latency_warmup: usize,
    latency_calls: usize,
    bulk_warmup: usize,
    bulk_calls: usize,
    connect_warmup: usize,
    connect_calls: usize,
    /// Wait (at most a minute) before each repetition until the 1-minute load is below this.
    gate: Option<f64>,
    /// The CPU both threads are pinned to for the pinned latency figure.
    pin_cpu: usize,
    /// `--profile SERIES CONNSxDEPTH` or `--profile SERIES connect`: run only that workload,
    /// for `reps` timed runs.
    profile: Option<(Series, Workload)>,
    /// For every other figure: the client thread's CPU and the server thread's (two different
    /// ones), or `None` to leave both to the scheduler (`--unpinned`).
    apart: Option<(usize, usize)>,
    /// `--multi` (with `--profile`): run the workload on the multi-thread runtimes.
    multi: bool,
}

const USAGE: &str = "usage: compare [--quick] [--reps N] [--out DIR] [--time SECS] [--gate LOAD] [--pin-cpu N] [--unpinned] [--profile SERIES SHAPE [--multi]]

  --quick      smoke run: 2 repetitions with small counts (a few seconds)
  --reps N     repetitions (default 10; 2 with --quick)
  --out DIR    where results.csv, summary.csv, summary.md and the charts go (default target/compare)
  --time SECS  length of each timed throughput run (default 1.0; 0.1 with --quick)
  --gate LOAD  before each repetition, wait up to 60 s for the 1-minute load average to fall below LOAD
  --pin-cpu N  CPU for the pinned-latency figure (default: the last one)
  --unpinned   for the other figures, leave the client and server threads to the scheduler
               (default: the client on CPU 0, the servers on CPU 1, when there are two)
  --profile SERIES CONNSxDEPTH
               run only one throughput workload (say `rmi 8x8`), --reps timed runs of --time
               each, and print each run's calls/s and the CPU per call of the client thread and
               of the server thread, user and system apart (for perf or callgrind); with
               --multi, on the multi-thread runtimes (a worker per CPU each, unpinned), with
               the whole process's CPU per call
  --profile SERIES connect
               the same for fresh connections and their first calls (raw too): --reps runs of
               the connect figure's count each, with the median time per connect, the
               allocations per connect (both ends, counted) and the CPU per connect of each
               thread (for strace -c and perf stat)
  --profile SERIES bulk
               the same for the 10 MB calls (raw and `rmi-msgpack` too): --reps runs of the bulk
               figure's count each, with MB/s and the CPU per call of each thread";

impl Config {
    fn from_args() -> Config {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench`-style runners may pass `--bench`; ignore it.
        args.retain(|a| a != "--bench");
        let quick = args.iter().any(|a| a == "--quick");
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut cfg = if quick {
            Config {
                quick,
                reps: 2,
                out: PathBuf::from("target/compare"),
                throughput_warmup: Duration::from_millis(30),
                throughput_time: Duration::from_millis(100),
                latency_warmup: 100,
                latency_calls: 1_000,
                bulk_warmup: 1,
                bulk_calls: 2,
                connect_warmup: 3,
                connect_calls: 20,
                gate: None,
                profile: None,
                pin_cpu: ncpu - 1,
                apart: (ncpu >= 2).then_some((0, 1)),
                multi: false,
            }
        } else {
            Config {
                quick,
                reps: 10,
                out: PathBuf::from("target/compare"),
                throughput_warmup: Duration::from_millis(200),
                throughput_time: Duration::from_secs(1),
                latency_warmup: 500,
                latency_calls: 5_000,
                bulk_warmup: 2,
                bulk_calls: 8,
                connect_warmup: 10,
                connect_calls: 100,
                gate: None,
                profile: None,
                pin_cpu: ncpu - 1,
                apart: (ncpu >= 2).then_some((0, 1)),
                multi: false,
            }
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next().unwrap_or_else(|| {
                    eprintln!("{name} needs a value\n{USAGE}");
                    std::process::exit(2)
                })
            };
            match a.as_str() {
                "--quick" => {}
                "--reps" => cfg.reps = value("--reps").parse().expect("--reps N"),
                "--out" => cfg.out = PathBuf::from(value("--out")),
                "--time" => {
                    cfg.throughput_time =
                        Duration::from_secs_f64(value("--time").parse().expect("--time SECS"))
                }
                "--gate" => cfg.gate = Some(value("--gate").parse().expect("--gate LOAD")),
                "--pin-cpu" => cfg.pin_cpu = value("--pin-cpu").parse().expect("--pin-cpu N"),
                "--unpinned" => cfg.apart = None,
                "--multi" => cfg.multi = true,
                "--profile" => {
                    let series = value("--profile");
                    let shape = value("--profile");
                    cfg.profile = Some(parse_profile(&series, &shape).unwrap_or_else(|| {
                        eprintln!("--profile SERIES CONNSxDEPTH|connect, e.g. `rmi 8x8`\n{USAGE}");
                        std::process::exit(2)
                    }));
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0)
                }
                other => {
                    eprintln!("unknown argument {other}\n{USAGE}");
                    std::process::exit(2)
                }
            }
        }
        assert!(cfg.reps > 0, "--reps must be at least 1");
        if cfg.multi && !matches!(cfg.profile, Some((_, Workload::Throughput(..)))) {
            eprintln!("--multi goes with --profile SERIES CONNSxDEPTH\n{USAGE}");
            std::process::exit(2)
        }
        cfg
    }
}

/// What `--profile` runs.
#[derive(Clone, Copy, Debug)]
enum Workload {
    /// This many connections with this many calls in flight on each.
    Throughput(usize, usize),
    /// Fresh connections, each with its first call.
    Connect,
    /// 10 MB calls on one connection.
    Bulk,
}

/// `rmi` `8x8` → (Series::Rmi, 8 × 8); `tarpc` `connect` → connects. Raw has no multiplexing
/// client, so only its connects can be profiled.
fn parse_profile(series: &str, shape: &str) -> Option<(Series, Workload)> {
    let s = [
        Series::Raw,
        Series::RawMux,
        Series::Tarpc,
        Series::Tonic,
        Series::Rmi,
        Series::RmiMsgpack,
    ]
    .into_iter()
    .find(|s| s.label().replace(' ', "-") == series)?;
    if shape == "bulk" {
        return Some((s, Workload::Bulk));
    }
    if s == Series::RmiMsgpack {
        return None;
    }
    if shape == "connect" {
        return Some((s, Workload::Connect));
    }
    if s == Series::Raw {
        return None;
    }
    let (c, d) = shape.split_once('x')?;
    Some((s, Workload::Throughput(c.parse().ok()?, d.parse().ok()?)))
}

/// Where every server listens (all on one server runtime).
struct Addrs {
    raw: SocketAddr,
    raw_frames: raw::Frames,
    raw_bulk: SocketAddr,
    raw_bulk_frames: raw::Frames,
    rawmux: SocketAddr,
    tarpc: SocketAddr,
    tonic: SocketAddr,
    rmi: rmi_fw::RmiServer,
}

/// One connection of a framework other than raw; clones share the connection.
#[derive(Clone)]
enum Client {
    RawMux(rawmux::Client),
    Tarpc(tarpc_fw::BenchClient),
    Tonic(tonic_fw::Client),
    Rmi(rmi_fw::BenchProxy),
}

impl Client {
    async fn connect(s: Series, a: &Addrs) -> Client {
        match s {
            Series::RawMux => Client::RawMux(rawmux::connect(a.rawmux).await),
            Series::Tarpc => Client::Tarpc(tarpc_fw::connect(a.tarpc).await),
            Series::Tonic => Client::Tonic(tonic_fw::connect(a.tonic).await),
            Series::Rmi => Client::Rmi(rmi_fw::connect(&a.rmi.uri, Serializer::Bincode).await),
            Series::RmiMsgpack => {
                Client::Rmi(rmi_fw::connect(&a.rmi.uri, Serializer::MsgPack).await)
            }
            Series::RmiPyroname => Client::Rmi(rmi_fw::connect_by_name(&a.rmi.pyroname).await),
            Series::RmiPyronameCached => Client::Rmi(rmi_fw::lazy_cached(&a.rmi.pyroname)),
            Series::Raw => unreachable!("raw has no client"),
        }
    }

    /// Like [`connect`](Self::connect), but an rmi proxy is lazy (dials on its first call, as
    /// Pyro's do): what a program that just calls pays for its first call.
    async fn first_use(s: Series, a: &Addrs) -> Client {
        match s {
            Series::Rmi => Client::Rmi(rmi_fw::lazy(&a.rmi.uri_text, Serializer::Bincode)),
            Series::RmiMsgpack => Client::Rmi(rmi_fw::lazy(&a.rmi.uri_text, Serializer::MsgPack)),
            Series::RmiPyroname => Client::Rmi(rmi_fw::lazy(&a.rmi.pyroname, Serializer::Bincode)),
            Series::RmiPyronameCached => Client::Rmi(rmi_fw::lazy_cached(&a.rmi.pyroname)),
            _ => Client::connect(s, a).await,
        }
    }

    /// `greet("Rashmi")`.
    async fn greet(&mut self) {
        let len = match self {
            Client::RawMux(c) => c
                .call(rawmux::GREET, Bytes::copy_from_slice(NAME.as_bytes()))
                .await
                .len(),
            Client::Tarpc(c) => c
                .greet(tarpc::context::current(), NAME.to_owned())
                .await
                .expect("tarpc greet")
                .len(),
            Client::Tonic(c) => c
                .greet(tonic_fw::pb::GreetRequest {
                    name: NAME.to_owned(),
                })
                .await
                .expect("tonic greet")
                .into_inner()
                .message
                .len(),
            Client::Rmi(p) => p.greet(NAME.to_owned()).await.expect("rmi greet").len(),
        };
        debug_assert_eq!(len, GREETING.len());
    }

    /// `blob_len(data)`.
    async fn blob_len(&mut self, data: Vec<u8>) -> u64 {
        match self {
            Client::RawMux(c) => {
                let reply = c.call(rawmux::BLOB_LEN, Bytes::from(data)).await;
                u64::from_le_bytes(reply[..8].try_into().expect("8 bytes"))
            }
            Client::Tarpc(c) => {
                let mut ctx = tarpc::context::current();
                ctx.deadline = Instant::now() + Duration::from_secs(60);
                c.blob_len(ctx, data).await.expect("tarpc blob_len")
            }
            Client::Tonic(c) => {
                c.blob_len(tonic_fw::pb::Blob { data })
                    .await
                    .expect("tonic blob_len")
                    .into_inner()
                    .len
            }
            Client::Rmi(p) => p.blob_len(data).await.expect("rmi blob_len"),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// What one throughput measurement found.
struct Tput {
    /// In the timed run.
    calls_per_sec: f64,
    /// In the timed run: the whole process's user and system time over its calls.
    cpu_us_per_call: f64,
    /// In the counted run (NaN without one).
    allocs_per_call: f64,
    /// In the counted run (NaN without one).
    bytes_per_call: f64,
}

async fn run_clients(clients: &[Client], depth: usize, time: Duration) -> u64 {
    let deadline = Instant::now() + time;
    let tasks: Vec<_> = clients
        .iter()
        .flat_map(|c| {
            (0..depth).map(move |_| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        c.greet().await;
                        n += 1;
                    }
                    n
                })
            })
        })
        .collect();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("client task");
    }
    calls
}

/// `conns` connections (`clients`; raw dials its own) with `depth` calls in flight on each,
/// looping for `time`: the calls made.
async fn run_for(
    s: Series,
    a: &Addrs,
    clients: &[Client],
    (conns, depth): (usize, usize),
    time: Duration,
) -> u64 {
    if s == Series::Raw {
        raw::pipelined_run(a.raw, &a.raw_frames, conns, depth, time).await
    } else {
        run_clients(clients, depth, time).await
    }
}

/// `conns` connections with `depth` calls in flight on each, looping until the deadline: a
/// warm-up run, the timed one (with the CPU time around it), then, with `count_allocs`, a run
/// as long as the warm-up with every allocation counted. The counting is kept out of the timed
/// run: its two shared counters, updated from both threads on every allocation, took about
/// 8 % off rmi's 8 × 8 (and changed rawmux's batching), so the timed figures would not have
/// been those of the frameworks alone.
async fn throughput(
    s: Series,
    a: &Addrs,
    (conns, depth): (usize, usize),
    cfg: &Config,
    count_allocs: bool,
) -> Tput {
    let mut clients = Vec::with_capacity(conns);
    if s != Series::Raw {
        for _ in 0..conns {
            clients.push(Client::connect(s, a).await);
        }
    }
    let shape = (conns, depth);
    run_for(s, a, &clients, shape, cfg.throughput_warmup).await;
    let cpu0 = sys::cpu_time();
    let t0 = Instant::now();
    let calls = run_for(s, a, &clients, shape, cfg.throughput_time).await;
    let wall = t0.elapsed();
    let cpu = sys::cpu_time() - cpu0;
    let (mut allocs_per_call, mut bytes_per_call) = (f64::NAN, f64::NAN);
    if count_allocs {
        let (n0, b0) = alloc::totals();
        alloc::enable();
        let counted = run_for(s, a, &clients, shape, cfg.throughput_warmup).await;
        alloc::disable();
        let (n1, b1) = alloc::totals();
        let c = counted.max(1) as f64;
        (allocs_per_call, bytes_per_call) = ((n1 - n0) as f64 / c, (b1 - b0) as f64 / c);
    }
    drop(clients);
    Tput {
        calls_per_sec: calls as f64 / wall.as_secs_f64(),
        cpu_us_per_call: cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
        allocs_per_call,
        bytes_per_call,
    }
}

/// Sequential calls on one connection: (median, p99, every sample) in µs.
async fn latency(s: Series, a: &Addrs, cfg: &Config) -> (f64, f64, Vec<f64>) {
    let mut samples = Vec::with_capacity(cfg.latency_calls);
    let total = cfg.latency_warmup + cfg.latency_calls;
    if s == Series::Raw {
        let mut pp = raw::PingPong::connect(a.raw, &a.raw_frames).await;
        for i in 0..total {
            let t = Instant::now();
            pp.call().await;
            if i >= cfg.latency_warmup {
                samples.push(t.elapsed().as_nanos() as f64 / 1e3);
            }
        }
    } else {
        let mut c = Client::connect(s, a).await;
        for i in 0..total {
            let t = Instant::now();
            c.greet().await;
            if i >= cfg.latency_warmup {
                samples.push(t.elapsed().as_nanos() as f64 / 1e3);
            }
        }
    }
    (median(&mut samples), quantile(&mut samples, 0.99), samples)
}

/// 10 MB calls on one connection: MB/s over the timed calls. The argument is copied for each
/// call (methods take it by value) outside the timed region.
async fn bulk(s: Series, a: &Addrs, data: &[u8], cfg: &Config) -> f64 {
    let mut total = Duration::ZERO;
    if s == Series::Raw {
        let mut pp = raw::PingPong::connect(a.raw_bulk, &a.raw_bulk_frames).await;
        for i in 0..cfg.bulk_warmup + cfg.bulk_calls {
            let t = Instant::now();
            pp.call().await;
            if i >= cfg.bulk_warmup {
                total += t.elapsed();
            }
        }
    } else {
        let mut c = Client::connect(s, a).await;
        for i in 0..cfg.bulk_warmup + cfg.bulk_calls {
            let arg = data.to_vec();
            let t = Instant::now();
            let n = c.blob_len(arg).await;
            let e = t.elapsed();
            assert_eq!(n, BLOB as u64, "{} saw the whole buffer", s.label());
            if i >= cfg.bulk_warmup {
                total += e;
            }
        }
    }
    (cfg.bulk_calls * BLOB) as f64 / 1e6 / total.as_secs_f64()
}

/// Connects timed per series in a row, before the next series takes its turn.
const CONNECT_BLOCK: usize = 10;

/// A fresh connection and its first call, for every series in `order`, timed in blocks of
/// `CONNECT_BLOCK` per series, each block after one untimed connect, the series taking turns
/// block by block (each round starting one series later). Per series: (median µs, CPU µs per
/// connect), the CPU taken around each timed connect and the 1 ms after it, in which both ends
/// finish closing the connection.
///
/// Why blocks: all of a series' connects in a row, a connect figure moved by up to 2x between
/// series as the machine changed speed; one connect of each series by turns, every connect ran
/// on code and caches the framework before it had left cold, and the `PYRONAME:` series that
/// always came after another rmi one measured faster than rmi's direct connect.
async fn connect_first_calls(order: &[Series], a: &Addrs, cfg: &Config) -> Vec<(Series, f64, f64)> {
    for &s in order {
        for _ in 0..cfg.connect_warmup {
            connect_once(s, a).await;
        }
    }
    let rounds = cfg.connect_calls.div_ceil(CONNECT_BLOCK);
    let mut samples = vec![Vec::with_capacity(rounds * CONNECT_BLOCK); order.len()];
    let mut cpu = vec![Duration::ZERO; order.len()];
    for round in 0..rounds {
        for k in (0..order.len()).map(|k| (k + round) % order.len()) {
            connect_once(order[k], a).await;
            for _ in 0..CONNECT_BLOCK {
                let cpu_from = sys::cpu_time();
                samples[k].push(connect_once(order[k], a).await.as_nanos() as f64 / 1e3);
                cpu[k] += sys::cpu_time() - cpu_from;
            }
        }
    }
    order
        .iter()
        .zip(samples.iter_mut().zip(cpu))
        .map(|(&s, (v, cpu))| {
            let per = cpu.as_secs_f64() * 1e6 / v.len() as f64;
            (s, median(v), per)
        })
        .collect()
}

/// One fresh connection and its first call, then 1 ms for both ends to close it: how long the
/// connection and the call took.
async fn connect_once(s: Series, a: &Addrs) -> Duration {
    let t = Instant::now();
    let e = if s == Series::Raw {
        let mut pp = raw::PingPong::connect(a.raw, &a.raw_frames).await;
        pp.call().await;
        t.elapsed()
    } else {
        let mut c = Client::first_use(s, a).await;
        c.greet().await;
        let e = t.elapsed();
        drop(c);
        e
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    e
}

/// Pins the client thread to `client` and the server runtime's thread to `server` (`None`:
/// every CPU). Returns whether both worked, and both threads' allowed CPUs afterwards.
async fn pin(
    handle: &tokio::runtime::Handle,
    client: Option<usize>,
    server: Option<usize>,
) -> (bool, String) {
    let here = sys::pin_current_thread(client.map(|c| vec![c]).as_deref());
    let here_list = sys::allowed_cpus();
    let (there, there_list) = handle
        .spawn(async move {
            (
                sys::pin_current_thread(server.map(|c| vec![c]).as_deref()),
                sys::allowed_cpus(),
            )
        })
        .await
        .expect("pin task");
    (
        here && there,
        format!("client {here_list}, servers {there_list}"),
    )
}

/// Where the threads run for every figure but the pinned latency: on CPUs of their own, or
/// wherever the scheduler puts them.
async fn place(handle: &tokio::runtime::Handle, cfg: &Config) -> (bool, String) {
    match cfg.apart {
        Some((client, server)) => pin(handle, Some(client), Some(server)).await,
        None => pin(handle, None, None).await,
    }
}

fn rotated(list: &[Series], by: usize) -> Vec<Series> {
    let mut v = list.to_vec();
    v.rotate_left(by % list.len());
    v
}

fn load() -> String {
    sys::loadavg().map_or("?".into(), |(a, b, c)| format!("{a:.2} {b:.2} {c:.2}"))
}

async fn start_servers(server: &tokio::runtime::Handle) -> Addrs {
    // rawmux's greeting frames: request 4 + 8 + 1 + 6 bytes, reply 4 + 8 + 17; the bulk
    // request 13 + 10 MB, reply 12 + 8. Raw TCP moves frames of exactly these sizes.
    let frames = |req: usize, rep: usize| raw::Frames {
        request: Arc::new(vec![0x5A; req]),
        reply: Arc::new(vec![0xA5; rep]),
    };
    let raw_frames = frames(13 + NAME.len(), 12 + GREETING.len());
    let raw_bulk_frames = frames(13 + BLOB, 12 + 8);
    let spawn = |f| server.spawn(f);
    let raw = spawn(raw::start(raw_frames.clone()));
    let raw_bulk = spawn(raw::start(raw_bulk_frames.clone()));
    Addrs {
        raw: raw.await.expect("raw server"),
        raw_frames,
        raw_bulk: raw_bulk.await.expect("raw bulk server"),
        raw_bulk_frames,
        rawmux: server.spawn(rawmux::start()).await.expect("rawmux server"),
        tarpc: server.spawn(tarpc_fw::start()).await.expect("tarpc server"),
        tonic: server.spawn(tonic_fw::start()).await.expect("tonic server"),
        rmi: server.spawn(rmi_fw::start()).await.expect("rmi server"),
    }
}

/// `--profile`: one workload, `reps` times, with each thread's CPU apart.
async fn profile(cfg: &Config, server: &tokio::runtime::Handle, (s, w): (Series, Workload)) {
    let a = start_servers(server).await;
    let (_, cpus) = place(server, cfg).await;
    let (conns, depth) = match w {
        Workload::Throughput(conns, depth) => (conns, depth),
        Workload::Connect => return profile_connects(cfg, server, s, &a, &cpus).await,
        Workload::Bulk => return profile_bulk(cfg, server, s, &a, &cpus).await,
    };
    println!(
        "# --profile {} {conns}x{depth}: threads on CPUs: {cpus}",
        s.label()
    );
    let server_cpu = || server.spawn(async { sys::thread_cpu_time() });
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(Client::connect(s, &a).await);
    }
    let mut total = run_clients(&clients, depth, cfg.throughput_warmup).await;
    for _ in 0..cfg.reps {
        if cfg.multi {
            // The threads are the runtimes' workers: the whole process's CPU time is the figure.
            let cpu0 = sys::cpu_time();
            let t0 = Instant::now();
            let calls = run_clients(&clients, depth, cfg.throughput_time).await;
            let wall = t0.elapsed();
            total += calls;
            let cpu = sys::cpu_time() - cpu0;
            println!(
                "{} calls/s; µs of CPU per call, whole process: {:.2}",
                report::thousands(calls as f64 / wall.as_secs_f64()),
                cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
            );
            continue;
        }
        let (cu0, cs0) = sys::thread_cpu_time();
        let (su0, ss0) = server_cpu().await.expect("server cpu");
        let t0 = Instant::now();
        let calls = run_clients(&clients, depth, cfg.throughput_time).await;
        let wall = t0.elapsed();
        total += calls;
        let (cu1, cs1) = sys::thread_cpu_time();
        let (su1, ss1) = server_cpu().await.expect("server cpu");
        let per = |d: Duration| d.as_secs_f64() * 1e6 / calls.max(1) as f64;
        println!(
            "{} calls/s; µs per call: client user {:.2} sys {:.2}, server user {:.2} sys {:.2}",
            report::thousands(calls as f64 / wall.as_secs_f64()),
            per(cu1 - cu0),
            per(cs1 - cs0),
            per(su1 - su0),
            per(ss1 - ss0),
        );
    }
    // For instruction counts: two runs with different --reps, (Ir₂ − Ir₁) / (calls₂ − calls₁).
    println!("calls in all, with the warm-up: {total}");
}

/// The bulk argument: bytes that vary like real data (a multiplicative hash of the index):
/// msgpack, which encodes a `Vec<u8>` as integers, spends 1 byte on values below 128 and 2
/// above.
fn bulk_data() -> Vec<u8> {
    (0..BLOB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// `--profile SERIES bulk`: `reps` runs of the bulk figure (its warm-up calls untimed), each
/// with its MB/s and the CPU per call of the client and the server thread.
async fn profile_bulk(
    cfg: &Config,
    server: &tokio::runtime::Handle,
    s: Series,
    a: &Addrs,
    cpus: &str,
) {
    println!("# --profile {} bulk: threads on CPUs: {cpus}", s.label());
    let data = bulk_data();
    let server_cpu = || server.spawn(async { sys::thread_cpu_time() });
    for _ in 0..cfg.reps {
        let (cu0, cs0) = sys::thread_cpu_time();
        let (su0, ss0) = server_cpu().await.expect("server cpu");
        let rate = bulk(s, a, &data, cfg).await;
        let (cu1, cs1) = sys::thread_cpu_time();
        let (su1, ss1) = server_cpu().await.expect("server cpu");
        let calls = (cfg.bulk_warmup + cfg.bulk_calls) as f64;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / calls;
        println!(
            "{rate:.0} MB/s; µs per call (warm-up included): client user {:.0} sys {:.0}, server user {:.0} sys {:.0}",
            per(cu1 - cu0),
            per(cs1 - cs0),
            per(su1 - su0),
            per(ss1 - ss0),
        );
    }
}

/// `--profile SERIES connect`: `reps` runs of the connect figure's count of fresh connections,
/// each with its first call and the 1 ms after it in which both ends close it. Linux splits a
/// thread's CPU time into user and system by clock-tick samples, so over 100 connects the split
/// is rough; the sum is exact.
async fn profile_connects(
    cfg: &Config,
    server: &tokio::runtime::Handle,
    s: Series,
    a: &Addrs,
    cpus: &str,
) {
    println!("# --profile {} connect: threads on CPUs: {cpus}", s.label());
    let server_cpu = || server.spawn(async { sys::thread_cpu_time() });
    for _ in 0..cfg.connect_warmup {
        connect_once(s, a).await;
    }
    let n = cfg.connect_calls;
    for _ in 0..cfg.reps {
        let (cu0, cs0) = sys::thread_cpu_time();
        let (su0, ss0) = server_cpu().await.expect("server cpu");
        let mut times = Vec::with_capacity(n);
        let (n0, b0) = alloc::totals();
        alloc::enable();
        for _ in 0..n {
            times.push(connect_once(s, a).await.as_nanos() as f64 / 1e3);
        }
        alloc::disable();
        let (n1, b1) = alloc::totals();
        let (cu1, cs1) = sys::thread_cpu_time();
        let (su1, ss1) = server_cpu().await.expect("server cpu");
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!(
            "{n} connects, median {:.1} µs; per connect, both ends: {:.1} allocations, {:.0} bytes; CPU µs per connect: client {:.1} (user {:.1} sys {:.1}), server {:.1} (user {:.1} sys {:.1})",
            median(&mut times),
            (n1 - n0) as f64 / n as f64,
            (b1 - b0) as f64 / n as f64,
            per(cu1 - cu0 + cs1 - cs0),
            per(cu1 - cu0),
            per(cs1 - cs0),
            per(su1 - su0 + ss1 - ss0),
            per(su1 - su0),
            per(ss1 - ss0),
        );
    }
    println!(
        "connects in all, with the warm-up: {}",
        cfg.connect_warmup + cfg.reps * n
    );
}

async fn run(cfg: Config, server: tokio::runtime::Handle, multi: Multi) {
    if let Some(p) = cfg.profile {
        if cfg.multi {
            let on = multi.client.clone();
            return on
                .spawn(async move { profile(&cfg, &multi.server, p).await })
                .await
                .expect("profile task");
        }
        return profile(&cfg, &server, p).await;
    }
    let cfg = Arc::new(cfg);
    let a = start_servers(&server).await;
    let ma = Arc::new(start_servers(&multi.server).await);
    // On the multi-thread client runtime, so that the client tasks spread over its workers.
    let multi_throughput = |s: Series, conns: usize, depth: usize| {
        let (a, cfg) = (ma.clone(), cfg.clone());
        let task = multi
            .client
            .spawn(async move { throughput(s, &a, (conns, depth), &cfg, false).await });
        async move { task.await.expect("multi-thread throughput") }
    };
    let data = bulk_data();
    let mut res = Results::default();
    let started = Instant::now();
    println!(
        "# rmi side by side{} — {} repetitions, {} CPUs, client and servers on two current-thread runtimes (the multi-thread rows: on two multi-thread runtimes of {} workers each), 127.0.0.1",
        if cfg.quick { " (--quick)" } else { "" },
        cfg.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        multi.workers,
    );
    println!(
        "throughput: {:.2} s after {:.2} s warm-up; latency: {} calls after {}; bulk: {} x 10 MB after {}; connect: {} after {}",
        cfg.throughput_time.as_secs_f64(),
        cfg.throughput_warmup.as_secs_f64(),
        cfg.latency_calls,
        cfg.latency_warmup,
        cfg.bulk_calls,
        cfg.bulk_warmup,
        cfg.connect_calls,
        cfg.connect_warmup
    );
    let mut pinned_ok = true;
    let (placed, cpus) = place(&server, &cfg).await;
    let mut placed_ok = placed;
    println!(
        "other figures: threads allowed on CPUs: {cpus}{}",
        if cfg.apart.is_some() {
            " (a core each: left to the scheduler, two threads that take turns end up sharing one \
             or not from run to run)"
        } else {
            " (--unpinned)"
        }
    );
    for rep in 0..cfg.reps {
        if let Some(gate) = cfg.gate {
            let until = Instant::now() + Duration::from_secs(60);
            while sys::loadavg().is_some_and(|l| l.0 >= gate) && Instant::now() < until {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let load_before = load();
        let t_rep = Instant::now();
        let order = rotated(&MAIN, rep);
        macro_rules! rec {
            ($f:expr, $s:expr, $v:expr) => {
                res.push($f, $s, rep, $v)
            };
        }

        for &s in &order {
            let t = throughput(s, &a, (1, 64), &cfg, true).await;
            rec!(Figure::Conn1x64, s, t.calls_per_sec);
            rec!(Figure::CpuPerCall, s, t.cpu_us_per_call);
            rec!(Figure::AllocsPerCall, s, t.allocs_per_call);
            rec!(Figure::BytesPerCall, s, t.bytes_per_call);
        }
        for &s in &order {
            let t = throughput(s, &a, (8, 8), &cfg, false).await;
            rec!(Figure::Conn8x8, s, t.calls_per_sec);
        }
        for &s in &order {
            let t = throughput(s, &a, (16, 64), &cfg, false).await;
            rec!(Figure::Conn16x64, s, t.calls_per_sec);
        }
        for &s in &order {
            let t = multi_throughput(s, 1, 64).await;
            rec!(Figure::Multi1x64, s, t.calls_per_sec);
            rec!(Figure::MultiCpuPerCall, s, t.cpu_us_per_call);
        }
        for &s in &order {
            let t = multi_throughput(s, 8, 8).await;
            rec!(Figure::Multi8x8, s, t.calls_per_sec);
        }
        for &s in &order {
            let (med, p99, samples) = latency(s, &a, &cfg).await;
            rec!(Figure::Latency, s, med);
            rec!(Figure::LatencyP99, s, p99);
            res.latency_samples(s, samples);
        }
        let (ok, cpus) = pin(&server, Some(cfg.pin_cpu), Some(cfg.pin_cpu)).await;
        pinned_ok &= ok;
        if rep == 0 {
            println!("pinned latency: threads allowed on CPUs: {cpus}");
        }
        for &s in &order {
            let (med, _, _) = latency(s, &a, &cfg).await;
            rec!(Figure::LatencyPinned, s, med);
        }
        placed_ok &= place(&server, &cfg).await.0;
        let mut bulk_order = order.clone();
        bulk_order.push(Series::RmiMsgpack);
        for &s in &bulk_order {
            rec!(Figure::Bulk, s, bulk(s, &a, &data, &cfg).await);
        }
        let mut connect_order = order.clone();
        connect_order.push(Series::RmiPyroname);
        connect_order.push(Series::RmiPyronameCached);
        for (s, median, cpu) in connect_first_calls(&connect_order, &a, &cfg).await {
            rec!(Figure::Connect, s, median);
            if !matches!(s, Series::RmiPyroname | Series::RmiPyronameCached) {
                rec!(Figure::ConnectCpu, s, cpu);
            }
        }
        println!(
            "rep {}/{}: {:.1} s, load average before {} after {} | 1x64 calls/s: {}",
            rep + 1,
            cfg.reps,
            t_rep.elapsed().as_secs_f64(),
            load_before,
            load(),
            MAIN.iter()
                .map(|&s| format!(
                    "{} {}",
                    s.label(),
                    report::thousands(res.last(Figure::Conn1x64, s))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !pinned_ok {
        println!("(warning: pinning failed; the pinned latency row is unpinned)");
    }
    if !placed_ok {
        println!("(warning: pinning the client and the servers to CPUs of their own failed)");
    }
    let md = res.markdown(&cfg_notes(&cfg));
    println!("\n{md}");
    std::fs::create_dir_all(&cfg.out).expect("create --out dir");
    std::fs::write(cfg.out.join("summary.md"), &md).expect("write summary.md");
    res.write_csv(&cfg.out).expect("write CSV");
    match res.charts(&cfg.out) {
        Ok(files) => {
            println!("charts:");
            for f in files {
                println!("  {}", f.display());
            }
        }
        Err(e) => println!("charts not drawn: {e}"),
    }
    println!(
        "CSV: {} and {}",
        cfg.out.join("results.csv").display(),
        cfg.out.join("summary.csv").display()
    );
    println!("(total {:.1} s)", started.elapsed().as_secs_f64());
}

fn cfg_notes(cfg: &Config) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert("reps", cfg.reps.to_string());
    m.insert("pin_cpu", cfg.pin_cpu.to_string());
    m.insert(
        "placement",
        match cfg.apart {
            Some((c, s)) => format!("client on CPU {c}, servers on CPU {s}"),
            None => "unpinned".into(),
        },
    );
    m
}

/// The second pair of runtimes: multi-thread, a worker per CPU each (what `#[tokio::main]`
/// builds), for the figures of a program written the usual way. Their workers are never pinned.
struct Multi {
    client: tokio::runtime::Handle,
    server: tokio::runtime::Handle,
    workers: usize,
}

fn main() {
    let cfg = Config::from_args();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("servers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            tx.send(rt.handle().clone()).expect("send handle");
            rt.block_on(std::future::pending::<()>());
        })
        .expect("server thread");
    let server = rx.recv().expect("server handle");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let multi_thread = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("multi-thread runtime")
    };
    let (multi_client, multi_server) = (multi_thread(), multi_thread());
    let multi = Multi {
        client: multi_client.handle().clone(),
        server: multi_server.handle().clone(),
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    client.block_on(run(cfg, server, multi));
    // The server thread runs until the process ends.
    std::process::exit(0);
}
