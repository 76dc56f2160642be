//! With tracing's `log` feature on and no tracing subscriber, rmi's call spans reach a `log`
//! logger that takes debug records, as tracing promises. (rmi skips opening them when nothing
//! could see them; this is the case where something can.) Its own test binary: a tracing
//! subscriber set anywhere in the process, as `tests/it` does, would change the case.

use std::sync::Mutex;

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
#[rmi::remote]
trait Echo {
    /// Returns `s`.
    async fn echo(&self, s: String) -> String;
}

struct Impl;

impl Echo for Impl {
    async fn echo(&self, s: String) -> String {
        s
    }
}

#[tokio::test]
async fn call_spans_reach_a_log_logger_when_no_tracing_subscriber_is_set() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    assert!(
        !tracing::dispatcher::has_been_set(),
        "this test needs a process without a tracing subscriber"
    );

    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(EchoServer::new(Impl)).unwrap();
    let serving = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });
    let proxy = EchoProxy::connect(&uri).await.unwrap();
    assert_eq!(proxy.echo("logged".into()).await.unwrap(), "logged");
    daemon.shutdown();
    serving.await.unwrap().unwrap();

    let records = RECORDS.lock().unwrap().clone();
    let span = |name: &str| {
        records
            .iter()
            .any(|r| r.starts_with(name) && r.contains("method=\"echo\""))
    };
    assert!(span("rmi.call"), "no rmi.call span in {records:#?}");
    assert!(span("rmi.dispatch"), "no rmi.dispatch span in {records:#?}");
}
