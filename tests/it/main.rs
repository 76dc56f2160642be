//! Integration tests of rmi through its public API, over real loopback sockets.

mod addresses;
mod architecture;
mod autoproxy;
mod batch;
mod blocking;
mod bytes;
mod concurrency;
mod context;
mod daemon;
mod errors;
mod faults;
mod first_call;
mod hardening;
mod hooks;
mod hostile;
mod instances;
mod naming;
mod naming_multi;
mod naming_store;
mod oneway;
mod properties;
mod pyro4;
mod pyro4_hmac;
mod pyro_client;
mod python;
mod python_tools;
mod python_values;
mod reconnect;
mod security;
mod sequence;
mod streams;
mod support;
mod timeouts;
mod tracing_spans;
mod tutorial;

/// Not a test: when [`support::CHILD_DAEMON_ENV`] is set, this process is a daemon child that
/// tests spawn, attack and then check for liveness.
#[test]
fn child_daemon_entry() {
    if std::env::var_os(support::CHILD_DAEMON_ENV).is_some() {
        support::run_child_daemon();
    }
}

/// Not a test: when `RMI_TEST_BLOCKING_CHILD` is set, this process (started under a descriptor
/// limit it cannot open a runtime within) makes its first blocking call and prints what it got.
#[test]
fn blocking_child_entry() {
    if std::env::var_os("RMI_TEST_BLOCKING_CHILD").is_some() {
        let got = support::LabBlockingProxy::connect("PYRO:lab@127.0.0.1:1").map(drop);
        println!("BLOCKING {got:?}");
        let builder = rmi::Proxy::builder("PYRO:lab@127.0.0.1:1".parse().unwrap());
        let got = support::LabBlockingProxy::connect_with(builder).map(drop);
        println!("BLOCKING_WITH {got:?}");
    }
}

/// Not a test: when [`support::IDLE_FLOOD_ENV`] is set, this process holds many idle
/// connections to a daemon (a client separate from the daemon and from the test).
#[test]
fn idle_flood_entry() {
    if std::env::var_os(support::IDLE_FLOOD_ENV).is_some() {
        support::run_idle_flood();
    }
}
