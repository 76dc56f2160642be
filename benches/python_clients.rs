//! What Python users see: a Python Pyro5 client calling the tutorial's `welcomeMessage` on a
//! Rust daemon and on a Python Pyro5 daemon, sequentially and from 8 client threads (one proxy
//! each, as Pyro proxies belong to one thread), in one run; calls/s and the speedup.
//!
//! ```sh
//! cargo bench --bench python_clients            # RMI_PY_SECONDS=N to time longer (default 2)
//! ```
//!
//! It needs Python 3 with Pyro5 5.17: it makes the same venv as the tests
//! (`target/tmp/pyro5-venv`) on first use, or says loudly why it cannot and stops. Both
//! daemons listen on 127.0.0.1, on ports they pick.

#[path = "../tests/it/python/shared.rs"]
mod shared;

use std::time::Duration;

use rmi::Daemon;

/// The tutorial's object, in Rust.
#[rmi::remote]
pub trait Greeter {
    /// Returns `"Hi welcome " + name`.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

/// The tutorial's object, in Python, served by a Pyro5 daemon (its default thread pool).
const PYTHON_SERVER: &str = r#"
import Pyro5.api
@Pyro5.api.expose
class GreetingMaker(object):
    def welcomeMessage(self, name):
        return "Hi welcome " + str(name)
daemon = Pyro5.api.Daemon(host="127.0.0.1")
print("URI", daemon.register(GreetingMaker), flush=True)
daemon.requestLoop()
"#;

/// Calls `welcomeMessage` for `seconds` from `threads` threads, one proxy each; prints the
/// calls per second.
const PYTHON_CLIENT: &str = r#"
import sys, threading, time
import Pyro5.api
uri, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counts = [0] * threads
start = threading.Barrier(threads + 1)
def work(i):
    with Pyro5.api.Proxy(uri) as p:
        assert p.welcomeMessage("Rashmi") == "Hi welcome Rashmi"
        start.wait()
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            p.welcomeMessage("Rashmi")
            n += 1
        counts[i] = n
ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in ts: t.start()
start.wait()
t0 = time.perf_counter()
for t in ts: t.join()
print("RATE", sum(counts) / (time.perf_counter() - t0), flush=True)
"#;

/// CPU time (user + system) process `pid` has used, in seconds (`/proc/<pid>/stat`).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / ticks_per_second
}

fn rate(python: &std::path::Path, uri: &str, threads: usize, seconds: f64) -> f64 {
    let (ok, out) = shared::python_output(
        python,
        &[
            "-c",
            PYTHON_CLIENT,
            uri,
            &threads.to_string(),
            &seconds.to_string(),
        ],
        &[],
    );
    assert!(ok, "the Python client failed:\n{out}");
    out.lines()
        .find_map(|l| l.strip_prefix("RATE "))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RATE line in:\n{out}"))
}

fn main() {
    let Some(python) = shared::pyro5_python() else {
        eprintln!("*** python_clients: no Python with Pyro5 5.17 here; nothing measured ***");
        return;
    };
    let seconds: f64 = std::env::var("RMI_PY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    // The Rust daemon on a multi-thread runtime of its own (2 workers), as a server runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rust_uri = rt.block_on(async {
        let daemon = Daemon::bind("127.0.0.1:0").await.expect("bind");
        let uri = daemon
            .register(GreeterServer::new(GreetingMaker))
            .expect("register");
        tokio::spawn(async move { daemon.serve().await });
        uri.to_string()
    });
    let mut py_daemon = shared::PythonProcess::start(python, &["-c", PYTHON_SERVER], &[]);
    let py_uri = py_daemon.wait_for("URI ");
    std::thread::sleep(Duration::from_millis(100));

    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0);
    let py_pid = py_daemon.pid();
    let me = std::process::id();
    println!("Python Pyro5 client calling welcomeMessage, {seconds} s per figure:");
    println!("| client threads | Python daemon, calls/s | rmi daemon, calls/s | speedup | Python daemon CPU per call | rmi daemon CPU per call |");
    println!("|---|---|---|---|---|---|");
    for threads in [1, 8] {
        let cpu = cpu_seconds(py_pid, ticks);
        let python_rate = rate(python, &py_uri, threads, seconds);
        let python_cpu = cpu_seconds(py_pid, ticks) - cpu;
        let cpu = cpu_seconds(me, ticks);
        let rust_rate = rate(python, &rust_uri, threads, seconds);
        let rust_cpu = cpu_seconds(me, ticks) - cpu;
        // Calls counted over `seconds`; the connect and first call are outside that but small.
        let per_call = |cpu: f64, rate: f64| cpu / (rate * seconds) * 1e6;
        println!(
            "| {threads} | {python_rate:.0} | {rust_rate:.0} | {:.2}x | {:.0} µs | {:.0} µs |",
            rust_rate / python_rate,
            per_call(python_cpu, python_rate),
            per_call(rust_cpu, rust_rate),
        );
    }
    drop(py_daemon);
}
