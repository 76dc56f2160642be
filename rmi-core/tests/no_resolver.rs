//! rmi-core alone knows no name server: a `PYRONAME:` proxy made through it, with no resolver
//! installed, fails with an error that says how to make one that resolves.

/// `rmi::Proxy::builder` is this crate's: a user who reaches for it with a `PYRONAME:` URI
/// is told of `rmi::proxy_builder` and the default resolver, not to "connect through the `rmi`
/// crate", which `rmi::Proxy` already is (helper-126 #2).
#[tokio::test]
async fn a_pyroname_proxy_without_a_resolver_says_how_to_get_one() {
    let uri: rmi_core::Uri = "PYRONAME:server@127.0.0.1:9".parse().unwrap();
    let err = rmi_core::Proxy::builder(uri)
        .connect::<rmi_core::Proxy>()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rmi::proxy_builder") && text.contains("default_resolver()"),
        "{text}"
    );
}
