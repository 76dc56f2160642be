//! Real etcd processes for tests: one member or a cluster, all on 127.0.0.1 with free ports
//! (bound to 127.0.0.1:0 and released), data in a temporary directory, every process killed by
//! its PID when the cluster is dropped.
//!
//! Included with `#[path]` by rmi-naming's unit tests (the shared registry suite), its
//! integration tests and rmi-cli's, so the helpers live in one place. Uses std only (blocking):
//! call it before a test starts its own work.
//!
//! Without an etcd binary (`RMI_TEST_ETCD`, else `/usr/bin/etcd`, else `etcd` on the `PATH`)
//! [`EtcdCluster::start`] prints a loud `*** SKIPPED: etcd not installed ***` and returns
//! `None`, or panics when `RMI_TEST_NO_SKIP=1` or `CI=true` (where a skip would hide a gap).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the etcd binary is, if anywhere.
pub(crate) fn etcd_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RMI_TEST_ETCD") {
        // Given but absent counts as not installed (which also tries the skip path).
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let usr = PathBuf::from("/usr/bin/etcd");
    if usr.is_file() {
        return Some(usr);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// Says loudly that an etcd test is skipped; panics where a skip is not allowed.
pub(crate) fn skip(test: &str) {
    // Straight to the process's stderr, past the test harness's capture: seen even on success.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: etcd not installed *** ({test}: install Debian's etcd-server, or set \
         RMI_TEST_ETCD to an etcd binary)\n"
    );
    // (Set at all, as the Python tests read them: `CI=1` is a CI too.)
    let no_skip =
        std::env::var_os("RMI_TEST_NO_SKIP").is_some() || std::env::var_os("CI").is_some();
    assert!(
        !no_skip,
        "etcd is required here (RMI_TEST_NO_SKIP=1 or CI=true) but was not found"
    );
}

/// A port free now on 127.0.0.1 (bound and released; another process could take it first,
/// which makes the start fail and be tried again with new ports).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One etcd process.
#[derive(Debug)]
pub(crate) struct EtcdMember {
    /// Its member name in the cluster.
    pub(crate) name: String,
    /// Its client port.
    pub(crate) client_port: u16,
    /// Its peer port.
    pub(crate) peer_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl EtcdMember {
    /// `127.0.0.1:PORT` of its client port.
    pub(crate) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Its PID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL (by its PID), and wait until it is gone.
    pub(crate) fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of its log, for a failure message.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// An etcd cluster of real processes on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub(crate) struct EtcdCluster {
    /// Its members, in the order of `--initial-cluster`.
    pub(crate) members: Vec<EtcdMember>,
    // Declared last: dropped after the processes.
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader and answers; `None` (after
    /// a loud skip message) when etcd is not installed.
    pub(crate) fn start(size: usize, test: &str) -> Option<EtcdCluster> {
        EtcdCluster::start_with(size, test, &[])
    }

    /// [`start`](Self::start), each member given `flags` too.
    pub(crate) fn start_with(size: usize, test: &str, flags: &[&str]) -> Option<EtcdCluster> {
        let Some(binary) = etcd_binary() else {
            skip(test);
            return None;
        };
        let mut failure = String::new();
        for _ in 0..3 {
            match EtcdCluster::try_start(&binary, size, flags) {
                Ok(cluster) => return Some(cluster),
                Err(why) => failure = why,
            }
        }
        panic!("etcd did not start: {failure}");
    }

    fn try_start(binary: &PathBuf, size: usize, flags: &[&str]) -> Result<EtcdCluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let token = format!("rmi-test-{}-{}", std::process::id(), ports[0].0);
        let mut members = Vec::with_capacity(size);
        for (i, &(client_port, peer_port)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let log = dir.path().join(format!("{name}.log"));
            let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let child = Command::new(binary)
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(dir.path().join(&name))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--logger", "zap", "--log-level", "warn"])
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
            members.push(EtcdMember {
                name,
                client_port,
                peer_port,
                child: Some(child),
                log,
            });
        }
        let mut cluster = EtcdCluster { members, dir };
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// Waits (bounded) until every running member says it is healthy (it has a leader).
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.members.len() {
            loop {
                if !self.members[i].is_running() {
                    return Err(format!(
                        "etcd member {} exited:\n{}",
                        self.members[i].name,
                        self.members[i].log_tail()
                    ));
                }
                if health(self.members[i].client_port) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd member {} not healthy within {START_TIMEOUT:?}:\n{}",
                        self.members[i].name,
                        self.members[i].log_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Every member's `127.0.0.1:PORT`.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// The `--storage` value for rmi-ns: `etcd:127.0.0.1:P1,127.0.0.1:P2,…`.
    pub(crate) fn storage(&self) -> String {
        format!("etcd:{}", self.endpoints().join(","))
    }

    /// A gauge or counter of member `i`'s Prometheus metrics (`/metrics`), if it answers.
    pub(crate) fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let text = post(self.members[i].client_port, "/metrics", "")?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The index of the member that leads now, asked through etcd's JSON gateway (bounded).
    pub(crate) fn leader(&self) -> Option<usize> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let mut ids = Vec::new();
            let mut leader = None;
            for m in &self.members {
                let status = post(m.client_port, "/v3/maintenance/status", "{}");
                let field = |name: &str| {
                    status.as_deref().and_then(|s| {
                        let at = s.find(&format!("\"{name}\":\""))? + name.len() + 4;
                        Some(s[at..].split('"').next()?.to_owned())
                    })
                };
                ids.push(field("member_id"));
                if let Some(l) = field("leader") {
                    leader = Some(l);
                }
            }
            if let Some(i) = leader.and_then(|l| ids.iter().position(|id| id.as_ref() == Some(&l)))
            {
                return Some(i);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

/// A plain HTTP/1.0 request to etcd's client port; the body of the answer.
fn post(port: u16, path: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let method = if body.is_empty() { "GET" } else { "POST" };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then(|| head.contains(" 200 "))?
        .then(|| body.to_owned())
}

/// Whether etcd's `/health` on `port` says the member is healthy.
fn health(port: u16) -> bool {
    post(port, "/health", "").is_some_and(|b| b.contains("\"health\":\"true\""))
}
