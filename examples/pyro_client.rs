//! A Rust client of a Python Pyro server, with nothing configured: the proxy finds out that the
//! daemon is Python's (and whether Pyro5 or Pyro4), and speaks serpent to it. The Python half is
//! `examples/python/server.py`; run, each in its own terminal:
//!
//! ```text
//! python -m Pyro5.nameserver          # or: cargo run -p rmi-cli --bin rmi-ns
//! python examples/python/server.py
//! cargo run --example pyro_client
//! ```
//!
//! `RMI_NS_HOST`/`RMI_NS_PORT` say where the name server is (default 127.0.0.1:9090).

/// The Python class `GreetingMaker`, as a Rust contract: Python's method names are the wire
/// names.
#[rmi::remote]
pub trait PythonGreeter {
    /// "Hi welcome " + name.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
    /// a / b; Python raises `ZeroDivisionError` when `b` is 0.
    async fn divide(&self, a: f64, b: f64) -> f64;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ns = rmi::naming::NsLocator::from_env()?.locate().await?;
    for line in talk_to_python(&ns).await? {
        println!("{line}");
    }
    Ok(())
}

/// Looks the Python greeter up in `ns` and calls it every way: typed, untyped, and into a
/// Python exception. Returns what `main` prints.
pub async fn talk_to_python(ns: &rmi::naming::NameServerProxy) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let uri = ns.lookup("example.python.greeter").await?;
    let greeter = PythonGreeterProxy::connect(&uri).await?;
    out.push(greeter.welcome_message("Rashmi".into()).await?);
    out.push(format!(
        "(spoken in {:?} over {:?})",
        greeter.proxy().serializer(),
        greeter.proxy().protocol().unwrap_or_default()
    ));
    // Any method, untyped.
    let third: f64 = greeter.proxy().call("divide", &(1.0, 3.0)).await?;
    out.push(format!("1 / 3 = {third}"));
    // Python's exceptions arrive with their class, message and traceback.
    match greeter.divide(1.0, 0.0).await {
        Err(rmi::Error::Remote(e)) => {
            out.push(format!("Python raised {}: {}", e.type_name, e.message));
            out.extend(e.chain.iter().map(|line| format!("  | {line}")));
        }
        other => out.push(format!("unexpected: {other:?}")),
    }
    Ok(out)
}
