//! Every call is a tracing span on both sides, carrying object/method and correlation id.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::support::start_daemon;

/// Every span made: its name and fields, and how many times it was entered.
#[derive(Clone, Default)]
struct Spans(
    Arc<Mutex<Vec<(String, String)>>>,
    Arc<Mutex<Vec<(Id, usize)>>>,
);

impl Spans {
    /// How many times the `at`th span made was entered.
    fn entered(&self, at: usize) -> usize {
        self.1.lock().unwrap()[at].1
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields.0));
        self.1.lock().unwrap().push((id.clone(), 0));
    }

    fn on_enter(&self, id: &Id, _: Context<'_, S>) {
        // (The last span made with this id: ids are reused once a span closes.)
        if let Some((_, n)) = self
            .1
            .lock()
            .unwrap()
            .iter_mut()
            .rev()
            .find(|(i, _)| i == id)
        {
            *n += 1;
        }
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

    let made = spans.0.lock().unwrap().clone();
    let at = |span: &str| {
        made.iter()
            .position(|(name, f)| name == span && f.contains("method=\"echo\""))
            .unwrap_or_else(|| panic!("no {span} span: {made:?}"))
    };
    let (client, server) = (at("rmi.call"), at("rmi.dispatch"));
    let corr = corr.to_string();
    // The fields a reader of the logs looks for (helper-150 #3: only the correlation id was
    // checked), and the spans entered, so that what runs in them is in them.
    let (client_fields, server_fields) = (&made[client].1, &made[server].1);
    assert!(
        client_fields.contains(&corr) && client_fields.contains(&format!("uri={lab}")),
        "{client_fields}"
    );
    assert!(
        server_fields.contains(&corr)
            && server_fields.contains(lab.object().unwrap())
            && server_fields.contains("peer=127.0.0.1:"),
        "{server_fields}"
    );
    assert!(
        spans.entered(client) > 0,
        "the call's span was never entered"
    );
    assert!(
        spans.entered(server) > 0,
        "the dispatch span was never entered"
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

#[rmi::remote]
pub(crate) trait Fire {
    /// Does nothing, oneway.
    #[rmi(oneway)]
    async fn fire(&self, n: u32);
    /// Panics, oneway.
    #[rmi(oneway)]
    async fn fire_and_panic(&self, message: String);
    /// Panics, answered with an error.
    async fn panic_now(&self, message: String) -> u32;
    /// How many `fire` calls ran.
    async fn fired(&self) -> u32;
}

#[derive(Default)]
struct FireObject(std::sync::atomic::AtomicU32);

impl Fire for FireObject {
    async fn fire(&self, _n: u32) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    async fn fire_and_panic(&self, message: String) {
        panic!("{message}")
    }

    async fn panic_now(&self, message: String) -> u32 {
        panic!("{message}")
    }

    async fn fired(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn serve_fire(registration: rmi::Registration) -> (rmi::Daemon, rmi::Uri) {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register_entry(registration).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

#[tokio::test]
async fn a_oneway_call_is_an_rmi_oneway_span_joined_to_its_dispatch() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(
        spans
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let (daemon, uri) = serve_fire(rmi::Registration::instance(FireServer::new(
        FireObject::default(),
    )))
    .await;
    let proxy = FireProxy::connect(&uri).await.unwrap();
    let corr = rmi::uuid::Uuid::from_u128(0x0e_0a_0e);
    let typed = FireProxy::from_proxy(proxy.proxy().with_correlation_id(corr));
    typed.fire(1).await.unwrap();
    // The untyped form too.
    typed.proxy().call_oneway("fire", &(2u32,)).await.unwrap();
    for _ in 0..500 {
        if proxy.fired().await.unwrap() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.fired().await.unwrap(), 2, "the oneway calls ran");
    daemon.shutdown();

    let spans = spans.0.lock().unwrap().clone();
    let corr = corr.to_string();
    let oneway: Vec<_> = spans
        .iter()
        .filter(|(name, f)| name == "rmi.oneway" && f.contains("method=\"fire\""))
        .collect();
    assert_eq!(
        oneway.len(),
        2,
        "one rmi.oneway span per oneway call: {spans:?}"
    );
    for (_, fields) in &oneway {
        assert!(fields.contains(&corr), "{fields}");
        assert!(fields.contains(&uri.to_string()), "the URI: {fields}");
    }
    assert!(
        !spans
            .iter()
            .any(|(name, f)| name == "rmi.call" && f.contains("method=\"fire\"")),
        "a oneway call is not an rmi.call span: {spans:?}"
    );
    let dispatched = spans
        .iter()
        .filter(|(name, f)| name == "rmi.dispatch" && f.contains("method=\"fire\""))
        .filter(|(_, f)| f.contains(&corr))
        .count();
    assert_eq!(
        dispatched, 2,
        "the daemon's spans carry the same id: {spans:?}"
    );
}

#[tokio::test]
async fn panicking_methods_and_factories_are_logged_as_errors() {
    let events = Events::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let (daemon, uri) = serve_fire(rmi::Registration::instance(FireServer::new(
        FireObject::default(),
    )))
    .await;
    let proxy = FireProxy::connect(&uri).await.unwrap();
    let err = proxy.panic_now("answered panic".into()).await.unwrap_err();
    assert!(matches!(err, rmi::Error::Panicked(_)), "{err}");
    proxy.fire_and_panic("oneway panic".into()).await.unwrap();
    let has_error = |text: &str| {
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("ERROR") && e.contains(text))
    };
    for _ in 0..500 {
        if has_error("oneway panic") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A panicking session factory is logged the same way.
    let (factory_daemon, factory_uri) =
        serve_fire(rmi::Registration::session(|| -> FireServer<FireObject> {
            panic!("factory panic")
        }))
        .await;
    let factory = FireProxy::connect(&factory_uri).await.unwrap();
    assert!(matches!(
        factory.fired().await.unwrap_err(),
        rmi::Error::Panicked(_)
    ));
    daemon.shutdown();
    factory_daemon.shutdown();

    let events = events.0.lock().unwrap().clone();
    for text in ["answered panic", "oneway panic", "factory panic"] {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("ERROR") && e.contains(text)),
            "no error logged for {text:?}: {events:?}"
        );
    }
}

/// The exposure warning of a daemon bound beyond loopback without TLS or a secret.
const EXPOSED: &str = "reachable beyond this machine";

async fn warnings_when_bound_on(addr: &str) -> Vec<String> {
    let events = Events::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let daemon = rmi::Daemon::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    drop(daemon);
    let events = events.0.lock().unwrap().clone();
    events
        .into_iter()
        .filter(|e| e.starts_with("WARN"))
        .collect()
}

// The warning itself shows only when a daemon binds a non-loopback address, which these tests
// may not do (they stay on 127.0.0.0/8 and ::1): what is checked here is that loopback binds
// raise no false alarm.
#[tokio::test]
async fn a_daemon_bound_on_loopback_is_not_warned_about() {
    for addr in ["127.0.0.1:0", "127.0.0.2:0", "[::1]:0"] {
        let warnings = warnings_when_bound_on(addr).await;
        assert!(
            !warnings.iter().any(|w| w.contains(EXPOSED)),
            "{addr}: {warnings:?}"
        );
    }
}

// ::ffff:127.0.0.1 is 127.0.0.1 reached through an IPv6 socket: loopback only.
#[tokio::test]
async fn a_daemon_bound_on_ipv4_mapped_loopback_is_not_warned_about() {
    let warnings = warnings_when_bound_on("[::ffff:127.0.0.1]:0").await;
    assert!(
        !warnings.iter().any(|w| w.contains(EXPOSED)),
        "a daemon bound on ::ffff:127.0.0.1 (loopback only) was warned about: {warnings:?}"
    );
}
