//! `rmi-nsc watch [PREFIX]` against a real `rmi-ns`: it prints registrations (plain and
//! shared), removals and lease expiries as they happen, and `rmi-nsc register --shared` adds a
//! daemon to a shared name. 127.0.0.1 only, free ports, bounded waits, no timing asserted.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rmi::naming::LeaseId;
use rmi::Uri;
use support::{locate, spawn_rmi_ns, ChildGuard};

/// A running `rmi-nsc watch`: the process, its stdout lines (read off by a thread) and its
/// stderr so far, which every failure message shows.
struct Watch {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

/// Starts `rmi-nsc watch` with `args`.
fn spawn_watch(port: u16, args: &[&str]) -> Watch {
    let mut child = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["-n", "127.0.0.1", "-p", &port.to_string(), "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rmi-nsc watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = err.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Watch {
        child: ChildGuard(child),
        lines,
        stderr,
    }
}

impl Watch {
    /// How the process ended (within 15 s; a failure shows its stderr).
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                // Give the stderr thread a moment to read the last words.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rmi-nsc watch went on; its stderr: {:?}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next line (up to 15 s) that `pick` accepts; a failure shows how the process ended
    /// and what it wrote to stderr.
    async fn next_line(&mut self, pick: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(line) if pick(&line) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    tokio::task::yield_now().await
                }
                Err(e) => {
                    // Give the stderr thread a moment to read the last words.
                    std::thread::sleep(Duration::from_millis(200));
                    panic!(
                        "no expected line from rmi-nsc watch: {e}; its status: {:?}; its stderr: {:?}",
                        self.child.0.try_wait(),
                        self.stderr.lock().unwrap()
                    )
                }
            }
        }
    }
}

#[tokio::test]
async fn rmi_nsc_watch_prints_changes_as_they_happen() {
    let (_ns, port) = spawn_rmi_ns(&[]);
    let names = locate(port).await;
    let mut watch = spawn_watch(port, &["app."]);
    assert_eq!(
        watch.next_line(|_| true).await,
        "watching names starting with app."
    );
    let one = Uri::tcp("one", "127.0.0.1", 4001);
    let two = Uri::tcp("two", "127.0.0.1", 4002);
    names.register("other.name", &one).await.unwrap();
    names.register("app.plain", &one).await.unwrap();
    assert_eq!(
        watch.next_line(|_| true).await,
        format!("registered app.plain --> {one}"),
        "names outside the prefix are left out"
    );
    // Two daemons behind one name: one through rmi-nsc, one leased and left to expire.
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["-n", "127.0.0.1", "-p", &port.to_string()])
        .args(["register", "--shared", "app.multi", &one.to_string()])
        .output()
        .expect("run rmi-nsc register --shared");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        watch.next_line(|_| true).await,
        format!("registered app.multi --> {one} (shared)")
    );
    // Three seconds: both entries must be seen before it expires, on a loaded machine too.
    let lease = LeaseId(names.api().lease_grant(3000).await.unwrap());
    // A name outside the prefix on the same lease: its expiry, and the removal of the other
    // name below, must be left out too (helper-150 #6: only a registration outside it was).
    names
        .register_shared_leased("other.leased", &two, lease, BTreeSet::new())
        .await
        .unwrap();
    names
        .register_shared_leased("app.multi", &two, lease, BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(names.lookup_all("app.multi").await.unwrap().len(), 2);
    assert_eq!(
        watch.next_line(|_| true).await,
        format!("registered app.multi --> {two} (shared) lease {lease}")
    );
    assert_eq!(
        watch.next_line(|_| true).await,
        format!("expired app.multi {two} lease {lease}")
    );
    assert!(names.remove("other.name").await.unwrap());
    assert!(names.remove("app.plain").await.unwrap());
    assert_eq!(
        watch.next_line(|_| true).await,
        format!("removed app.plain {one}")
    );
    let left: Vec<Uri> = names
        .lookup_all("app.multi")
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(left, [one]);
}

/// When the name server stops, `rmi-nsc watch` says so and exits with success: the end a
/// script waiting on it sees.
#[tokio::test]
async fn rmi_nsc_watch_ends_with_the_name_server() {
    let (mut ns, port) = spawn_rmi_ns(&[]);
    let mut watch = spawn_watch(port, &[]);
    assert_eq!(watch.next_line(|_| true).await, "watching all names");
    let (status, _) = ns.terminate();
    assert!(status.success(), "rmi-ns: {status}");
    assert_eq!(watch.next_line(|_| true).await, "the name server stopped");
    let status = watch.exit_status().await;
    assert!(
        status.success(),
        "rmi-nsc watch: {status}; its stderr: {:?}",
        watch.stderr.lock().unwrap()
    );
}

/// A name server that dies (SIGKILL: no goodbye) ends `rmi-nsc watch` with a failure that says
/// so, not with the clean stop above: a script waiting on it must not take a crash for the
/// end of the changes.
#[tokio::test]
async fn rmi_nsc_watch_fails_when_the_name_server_dies() {
    let (mut ns, port) = spawn_rmi_ns(&[]);
    let mut watch = spawn_watch(port, &[]);
    assert_eq!(watch.next_line(|_| true).await, "watching all names");
    ns.kill_9();
    let status = watch.exit_status().await;
    let stderr = watch.stderr.lock().unwrap().clone();
    assert_eq!(
        status.code(),
        Some(1),
        "rmi-nsc watch: {status}; stderr: {stderr:?}"
    );
    assert!(
        stderr.contains("lost the name server while watching"),
        "stderr: {stderr:?}"
    );
    let rest: Vec<String> = watch.lines.try_iter().collect();
    assert!(
        !rest.iter().any(|l| l.contains("stopped")),
        "a crash reported as a stop: {rest:?}"
    );
}
