//! Oneway calls: sent and forgotten, listed in the metadata, never holding up other calls.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

#[rmi::remote]
pub(crate) trait Recorder {
    /// Records `value` after `gate` opens (oneway).
    #[rmi(oneway)]
    async fn record_after_gate(&self, value: u32);
    /// Records `value` (oneway).
    #[rmi(oneway)]
    async fn record(&self, value: u32);
    /// Panics (oneway): logged on the server, never seen by the caller.
    #[rmi(oneway)]
    async fn explode(&self);
    /// Opens the gate.
    async fn open_gate(&self);
    /// What was recorded so far.
    async fn recorded(&self) -> Vec<u32>;
}

#[derive(Default)]
struct RecorderObject {
    values: Mutex<Vec<u32>>,
    gate: Notify,
}

impl Recorder for RecorderObject {
    async fn record_after_gate(&self, value: u32) {
        self.gate.notified().await;
        self.values.lock().unwrap().push(value);
    }

    async fn record(&self, value: u32) {
        self.values.lock().unwrap().push(value);
    }

    async fn explode(&self) {
        panic!("oneway panic");
    }

    async fn open_gate(&self) {
        self.gate.notify_waiters();
    }

    async fn recorded(&self) -> Vec<u32> {
        self.values.lock().unwrap().clone()
    }
}

async fn recorded_eventually(proxy: &RecorderProxy, expected: &[u32]) {
    for _ in 0..300 {
        let mut got = proxy.recorded().await.unwrap();
        got.sort();
        if got == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "never recorded {expected:?}: {:?}",
        proxy.recorded().await.unwrap()
    );
}

#[tokio::test]
async fn oneway_calls_return_at_once_and_do_not_hold_up_the_connection() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(RecorderServer::new(RecorderObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = RecorderProxy::connect(&uri).await.unwrap();

    let meta = proxy.proxy().metadata().await.unwrap();
    let mut oneway = meta.oneway.clone();
    oneway.sort();
    assert_eq!(oneway, ["explode", "record", "record_after_gate"]);
    assert!(meta.methods.contains(&"recorded".to_string()));

    // Returns although the method blocks until the gate opens...
    tokio::time::timeout(Duration::from_secs(30), proxy.record_after_gate(1))
        .await
        .expect("oneway waited")
        .unwrap();
    // ...and the same connection keeps serving calls meanwhile.
    proxy.record(2).await.unwrap();
    recorded_eventually(&proxy, &[2]).await;
    proxy.open_gate().await.unwrap();
    recorded_eventually(&proxy, &[1, 2]).await;

    // A panicking oneway call is logged on the server; the caller and the connection carry on.
    proxy.explode().await.unwrap();
    proxy.record(3).await.unwrap();
    recorded_eventually(&proxy, &[1, 2, 3]).await;
    daemon.shutdown();
}
