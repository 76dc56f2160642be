//! Every call is a tracing span on both sides, carrying object/method and correlation id.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::support::start_daemon;

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields.0));
    }
}

#[tokio::test]
async fn calls_are_spans_on_both_sides_with_the_same_correlation_id() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(
        spans
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let (daemon, lab, _) = start_daemon().await;
    let proxy = crate::support::LabProxy::connect(&lab).await.unwrap();
    let corr = rmi::uuid::Uuid::from_u128(42);
    let typed = crate::support::LabProxy::from_proxy(proxy.proxy().with_correlation_id(corr));
    typed.echo(1, 2, "traced".into()).await.unwrap();
    daemon.shutdown();

    let spans = spans.0.lock().unwrap().clone();
    let client = spans
        .iter()
        .find(|(name, f)| name == "rmi.call" && f.contains("method=\"echo\""))
        .expect("client span");
    let server = spans
        .iter()
        .find(|(name, f)| name == "rmi.dispatch" && f.contains("method=\"echo\""))
        .expect("server span");
    let corr = corr.to_string();
    assert!(client.1.contains(&corr), "{client:?}");
    assert!(
        server.1.contains(&corr) && server.1.contains(lab.object().unwrap()),
        "{server:?}"
    );
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", event.metadata().level(), fields.0));
    }
}

#[tokio::test]
async fn advertising_an_unspecified_address_is_warned_about() {
    let events = Events::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    // Bound on loopback, but the URIs would say 0.0.0.0, which no client can dial.
    let daemon = rmi::Daemon::builder()
        .advertise("0.0.0.0", None)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    assert!(daemon.uri_for("x").to_string().contains("@0.0.0.0:"));
    let events = events.0.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("WARN") && e.contains("unspecified address")),
        "no warning: {events:?}"
    );
}
