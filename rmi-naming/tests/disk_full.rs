//! The SQLite store when its disk fills: a change that could not be written fails, is not
//! left in memory, and the store takes writes again once the disk does (it reads the file
//! back), instead of refusing every write until a restart.
//!
//! The full disk is real, made with the process's file size limit (`RLIMIT_FSIZE`, set with
//! util-linux's `prlimit`): the store's writes past it fail with `EFBIG`, as they would with
//! `ENOSPC`. The limit is the whole process's, so the checks run in a child process (this test
//! binary again), started with `SIGXFSZ` ignored (the signal would kill it).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rmi_core::Uri;
use rmi_naming::registry::{Change, SqliteStore};
use rmi_naming::{Limits, Registry};

/// Environment variable that makes the child test run: the directory of its store.
const CHILD: &str = "RMI_TEST_DISK_FULL_CHILD";

fn uri(port: u16) -> Uri {
    Uri::tcp("obj", "127.0.0.1", port)
}

/// Sets this process's file size limit (soft), in bytes or `unlimited`.
fn file_size_limit(limit: &str) {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--fsize={limit}:"),
        ])
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "prlimit --fsize={limit}:");
}

/// The largest of the store's files.
fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_full_disk_fails_the_change_and_the_store_takes_writes_once_it_has_room() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    if prlimit_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = run_child("disk_full_child", CHILD, dir.path()).await;
    assert!(
        text.contains("DISK FULL CHILD PASSED"),
        "the child's checks failed:\n{text}"
    );
    eprintln!(
        "{}",
        text.lines().find(|l| l.contains("PASSED")).unwrap_or("")
    );
}

/// True (after a loud skip message; a failure under CI) when util-linux's `prlimit` is missing.
fn prlimit_missing() -> bool {
    let found = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("RMI_TEST_NO_SKIP").is_none(),
            "prlimit (util-linux) is missing under CI"
        );
        eprintln!("\n*** SKIPPED: prlimit (util-linux) is not installed ***\n");
    }
    !found
}

/// Runs this test binary's test `test` as a child process with `env` set to `dir` and
/// `SIGXFSZ` ignored (the signal would kill it at the file size limit); killed if it runs
/// over a minute. Its output, asserted to be a success's.
async fn run_child(test: &str, env: &str, dir: &Path) -> String {
    // One child at a time: each asserts how often its store was read back, which a child
    // running beside it, on a machine of two cores, should not disturb.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""])
        .arg(exe)
        .args(["--exact", test, "--nocapture"])
        .env(env, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed, not waited for, if it hangs: the test fails instead of holding up the run.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the child failed:\n{text}");
    text
}

/// The child: runs only with [`CHILD`] set.
#[tokio::test]
async fn disk_full_child() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    let path = dir.join("names.db");
    let store = Arc::new(SqliteStore::open(&path, Limits::default()).await.unwrap());
    let registry = Registry::new(store.clone(), Limits::default());
    registry
        .register("before", uri(1), false, BTreeSet::new(), None)
        .await
        .unwrap();
    let mut watch = registry.watch();

    // No file of the store may grow by more than a page: the next large entries fill the disk.
    file_size_limit(&(largest_file(dir) + 4096).to_string());
    let tags: BTreeSet<String> = (0..64)
        .map(|i| format!("{i:02}{}", "t".repeat(254)))
        .collect();

    // Eight at once: each fails, and the store is read back once for them all (one `Lagged`).
    let at_once: Vec<_> = (0..8u16)
        .map(|i| {
            let registry = registry.clone();
            let tags = tags.clone();
            tokio::spawn(async move {
                registry
                    .register(&format!("burst.{i}"), uri(200 + i), false, tags, None)
                    .await
            })
        })
        .collect();
    for register in at_once {
        let err = register.await.unwrap().unwrap_err();
        assert!(err.message.contains("could not store"), "{err}");
    }
    let mut lagged = 0;
    while let Ok(Some(change)) =
        tokio::time::timeout(Duration::from_millis(500), watch.next()).await
    {
        lagged += usize::from(matches!(change, Change::Lagged { .. }));
    }
    assert_eq!(
        lagged, 1,
        "the store was read back {lagged} times for one full disk"
    );
    for i in 0..8 {
        assert!(registry.lookup(&format!("burst.{i}")).await.is_err());
    }
    let mut failure = None;
    for i in 0..64u16 {
        let name = format!("heavy.{i}");
        if let Err(e) = registry
            .register(&name, uri(100 + i), false, tags.clone(), None)
            .await
        {
            failure = Some((name, e));
            break;
        }
    }
    let (failed, error) = failure.expect("a write past the file size limit failed");
    assert!(error.message.contains("could not store"), "{error}");
    // Not in memory either: lookups answer what the file holds.
    let lookup = registry.lookup(&failed).await;
    assert!(
        lookup.is_err(),
        "{failed} stayed in memory: {:?}",
        lookup.map(|e| e.uri)
    );
    // Watchers heard of the registration, so they are told to read again.
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(change) = watch.next().await {
            if matches!(change, Change::Lagged { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(told, Ok(true), "the watch was not told it lagged");

    // The disk has room again: writes go through, without a restart.
    file_size_limit("unlimited");
    registry
        .register("after", uri(2), false, BTreeSet::new(), None)
        .await
        .unwrap();
    registry
        .register(&failed, uri(3), false, BTreeSet::new(), None)
        .await
        .unwrap();

    // And the file holds what the store answered.
    drop(registry);
    drop(watch);
    drop(store);
    let reopened = SqliteStore::open(&path, Limits::default()).await.unwrap();
    let registry = Registry::new(Arc::new(reopened), Limits::default());
    for (name, port) in [("before", 1), ("after", 2), (failed.as_str(), 3)] {
        assert_eq!(
            registry.lookup(name).await.unwrap().uri,
            uri(port),
            "{name}"
        );
    }
    println!("DISK FULL CHILD PASSED (the write of {failed} failed: {error})");
}

/// Environment variable that makes the lease child run: the directory of its store.
const LEASE_CHILD: &str = "RMI_TEST_DISK_FULL_LEASE_CHILD";

/// A lease that cannot be renewed while the store cannot write (every write past the file
/// size limit fails) comes back each time the store reads its file back after the failed
/// expiry: it is expired again only after a backoff, not at once, in a loop. (Before, the
/// store read its file back hundreds of times a second for as long as the fault lasted, each
/// time telling every watcher it lagged; found by a review, helper-105.)
#[tokio::test]
async fn a_lease_that_cannot_expire_on_a_full_disk_is_not_expired_in_a_tight_loop() {
    if std::env::var_os(CHILD).is_some() || std::env::var_os(LEASE_CHILD).is_some() {
        return;
    }
    if prlimit_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = run_child("lease_loop_child", LEASE_CHILD, dir.path()).await;
    assert!(
        text.contains("LEASE CHILD PASSED"),
        "the child's checks failed:\n{text}"
    );
    eprintln!(
        "{}",
        text.lines().find(|l| l.contains("PASSED")).unwrap_or("")
    );
}

/// The lease child: runs only with [`LEASE_CHILD`] set.
#[tokio::test]
async fn lease_loop_child() {
    let Some(dir) = std::env::var_os(LEASE_CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    let limits = Limits {
        min_lease_ttl: Duration::from_millis(10),
        ..Limits::default()
    };
    let store = Arc::new(
        SqliteStore::open(&dir.join("names.db"), limits.clone())
            .await
            .unwrap(),
    );
    let registry = Registry::new(store.clone(), limits);
    let lease = registry.grant(Duration::from_millis(200)).await.unwrap();
    registry
        .register("leased", uri(1), false, BTreeSet::new(), Some(lease))
        .await
        .unwrap();
    let mut watch = registry.watch();
    // No write can land any more: every file write past its first byte fails.
    file_size_limit("1");
    let mut lagged = 0;
    let window = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(change)) = tokio::time::timeout_at(window, watch.next()).await {
        lagged += usize::from(matches!(change, Change::Lagged { .. }));
    }
    file_size_limit("unlimited");
    assert!(lagged >= 1, "the expiry never failed to be written");
    assert!(
        lagged <= 10,
        "the store was read back {lagged} times in 2 s for one lease"
    );
    println!("LEASE CHILD PASSED (read back {lagged} times in 2 s)");
}
