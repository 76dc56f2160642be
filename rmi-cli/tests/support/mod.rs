//! Helpers shared by rmi-cli's integration tests: `rmi-ns` as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rmi::naming::{NameServerProxy, NsLocator};

/// Kills the child process when dropped, so a failing test leaves nothing running.
pub(crate) struct ChildGuard(pub(crate) Child);

impl ChildGuard {
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["--host", "127.0.0.1", "--port", "0", "--nobc"])
        .args(extra)
        .env("RMI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rmi-ns");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines
        .next()
        .expect("rmi-ns printed nothing")
        .expect("read rmi-ns output");
    std::thread::spawn(move || lines.for_each(drop));
    let addr = line
        .strip_prefix("NS running on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from rmi-ns: {line:?}"));
    let port = addr.rsplit(':').next().unwrap().parse().expect("port");
    (ChildGuard(child), port)
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
