//! With tracing's `log` feature on and no tracing subscriber, rmi's call spans reach a `log`
//! logger that takes debug records, as tracing promises. (rmi skips opening them when nothing
//! could see them; this is the case where something can.) Its own test binary: a tracing
//! subscriber set anywhere in the process, as `tests/it` does, would change the case.

use std::sync::Mutex;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

/// The object called.
#[rmi_macros::remote(crate = rmi_core)]
trait Echo {
    /// Returns `s`.
    async fn echo(&self, s: String) -> String;
    /// Does nothing; the caller waits for no reply.
    #[rmi(oneway)]
    async fn note(&self, s: String);
}

struct Impl;

impl Echo for Impl {
    async fn echo(&self, s: String) -> String {
        s
    }
    async fn note(&self, _: String) {}
}

/// Whether some record starts with the span `name` and names `method`.
fn logged(name: &str, method: &str) -> bool {
    let method = format!("method=\"{method}\"");
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.starts_with(name) && r.contains(&method))
}

#[tokio::test]
async fn call_spans_reach_a_log_logger_when_no_tracing_subscriber_is_set() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    assert_eq!(
        LevelFilter::current(),
        LevelFilter::OFF,
        "this test needs a process without a tracing subscriber"
    );

    let daemon = rmi_core::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(EchoServer::new(Impl)).unwrap();
    let serving = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });
    let proxy = EchoProxy::connect(&uri).await.unwrap();
    assert_eq!(proxy.echo("logged".into()).await.unwrap(), "logged");
    proxy.note("noted".into()).await.unwrap();
    // The oneway call's dispatch runs after its caller has moved on.
    for _ in 0..500 {
        if logged("rmi.dispatch", "note") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.shutdown();
    serving.await.unwrap().unwrap();

    let records = RECORDS.lock().unwrap().clone();
    for (span, method) in [
        ("rmi.call", "echo"),
        ("rmi.dispatch", "echo"),
        ("rmi.oneway", "note"),
        ("rmi.dispatch", "note"),
    ] {
        assert!(
            logged(span, method),
            "no {span} span for {method} in {records:#?}"
        );
    }
}
