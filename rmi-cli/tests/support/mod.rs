//! Helpers shared by rmi-cli's integration tests: `rmi-ns` as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rmi::naming::{NameServerProxy, NsLocator};

/// A TCP port on 127.0.0.1 that nothing listens on: bound, read, and let go.
pub(crate) fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Kills the child process when dropped, so a failing test leaves nothing running.
pub(crate) struct ChildGuard(pub(crate) Child);

impl ChildGuard {
    /// SIGTERM (through `kill`, by this child's PID), then waits up to 30 s for it to exit;
    /// returns its exit status and how long it took.
    pub(crate) fn terminate(&mut self) -> (std::process::ExitStatus, std::time::Duration) {
        self.signal("TERM")
    }

    /// [`ChildGuard::terminate`] with another signal (`INT`, `HUP`…).
    pub(crate) fn signal(&mut self, name: &str) -> (std::process::ExitStatus, std::time::Duration) {
        let sent = std::time::Instant::now();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < std::time::Duration::from_secs(30),
                "the process did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Resident memory in KiB (Linux `/proc`).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("the child's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("a VmRSS line")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill_9(&mut self) {
        self.0.kill().expect("kill");
        self.0.wait().expect("wait");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rmi-ns` on a free port with `extra` arguments; returns it and its port.
pub(crate) fn spawn_rmi_ns(extra: &[&str]) -> (ChildGuard, u16) {
    let mut args = vec!["--host", "127.0.0.1", "--port", "0", "--nobc"];
    args.extend_from_slice(extra);
    let (child, lines) = spawn_rmi_ns_with(&args, &[], 1);
    (child, port_of(&lines[0]))
}

/// Starts `rmi-ns` with exactly `args` and `env` added to its environment; returns it and the
/// first `lines` lines it printed (the first says where it listens and its URI, the second
/// where its broadcast responder is).
pub(crate) fn spawn_rmi_ns_with(
    args: &[&str],
    env: &[(&str, &str)],
    lines: usize,
) -> (ChildGuard, Vec<String>) {
    // rmi-ns leaves a signal ignored at its start ignored (`nohup`), so the tests that signal
    // it start it with SIGHUP and SIGINT at their defaults, whatever `cargo test` was started
    // with (a background job of a script has SIGINT ignored), where GNU `env` can.
    let mut command = if env_resets_signals() {
        let mut command = tool("env");
        command
            .arg("--default-signal=HUP,INT")
            .arg(env!("CARGO_BIN_EXE_rmi-ns"));
        command
    } else {
        tool(env!("CARGO_BIN_EXE_rmi-ns"))
    };
    command.args(args).envs(env.iter().copied());
    spawn_rmi_ns_as(command, lines)
}

/// Whether this machine's `env` takes `--default-signal` (GNU coreutils 8.31 and later).
fn env_resets_signals() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        Command::new("env")
            .args(["--default-signal=HUP,INT", "true"])
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// [`spawn_rmi_ns_with`] with `args`, started with the signals `ignored` ignored, as `nohup`
/// and a shell's background jobs start programs (`trap '' HUP` in `sh`, then `exec`).
pub(crate) fn spawn_rmi_ns_ignoring(ignored: &str, args: &[&str]) -> (ChildGuard, Vec<String>) {
    let mut command = tool("sh");
    command
        .arg("-c")
        .arg(format!("trap '' {ignored}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(args);
    spawn_rmi_ns_as(command, 1)
}

/// Spawns `command` (rmi-ns) and reads its first `lines` lines.
fn spawn_rmi_ns_as(mut command: Command, lines: usize) -> (ChildGuard, Vec<String>) {
    let mut child = command
        .env("RMI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rmi-ns");
    let mut output = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = (0..lines)
        .map(|_| {
            output
                .next()
                .expect("rmi-ns printed too little")
                .expect("read rmi-ns output")
        })
        .collect();
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || output.for_each(drop));
    (ChildGuard(child), first)
}

/// The TCP port in rmi-ns's first line (`NS running on HOST:PORT (URI)`).
pub(crate) fn port_of(line: &str) -> u16 {
    let addr = line
        .strip_prefix("NS running on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from rmi-ns: {line:?}"));
    addr.rsplit(':').next().unwrap().parse().expect("port")
}

/// The environment variables the tools read: cleared in every child, so a developer's own
/// settings cannot change what a test sees.
const TOOL_ENV: [&str; 22] = [
    "RMI_NS_HOST",
    "RMI_NS_PORT",
    "RMI_NS_UNIXSOCKET",
    "RMI_NS_NATHOST",
    "RMI_NS_NATPORT",
    "RMI_NS_BCADDR",
    "RMI_NS_BCPORT",
    "RMI_NS_STORAGE",
    "RMI_NS_KEY",
    "PYRO_HMAC_KEY",
    "PYRO_NS_HOST",
    "PYRO_NS_PORT",
    "PYRO_NS_BCPORT",
    "PYRO_NS_AUTOCLEAN",
    "RMI_NS_AUTOCLEAN",
    "RMI_GATEWAY_KEY",
    "RMI_NS_TLS_CA",
    "RMI_NS_TLS_CERT",
    "RMI_NS_TLS_KEY",
    "RMI_NS_TLS_CLIENT_CA",
    "RMI_NS_TLS_CLIENT_CERT",
    "RMI_NS_TLS_CLIENT_KEY",
];

/// `program` with none of [`TOOL_ENV`] in its environment.
pub(crate) fn tool(program: &str) -> Command {
    let mut command = Command::new(program);
    for name in TOOL_ENV {
        command.env_remove(name);
    }
    command
}

/// Runs `rmi-nsc` with `args` and `env`; returns whether it succeeded, and its stdout followed
/// by its stderr.
pub(crate) fn nsc(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    nsc_answering(args, env, None)
}

/// [`nsc`], with `answer` on its stdin (none: stdin is empty).
pub(crate) fn nsc_answering(
    args: &[&str],
    env: &[(&str, &str)],
    answer: Option<&str>,
) -> (bool, String) {
    let mut child = tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rmi-nsc");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(answer) = answer {
        std::io::Write::write_all(&mut stdin, answer.as_bytes()).expect("answer rmi-nsc");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait for rmi-nsc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub(crate) async fn locate(port: u16) -> NameServerProxy {
    NsLocator::new()
        .host("127.0.0.1")
        .port(port)
        .locate()
        .await
        .expect("locate rmi-ns")
}

/// Python's Pyro in venvs under the workspace's `target/tmp`, and Python processes: the root's
/// `tests/it/python/shared.rs`, so both test crates make and share the same venvs.
#[path = "../../../tests/it/python/shared.rs"]
pub(crate) mod python;
