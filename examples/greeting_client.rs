//! The tutorial's client, a plain synchronous program like Pyro's: asks for the object's URI
//! (`PYRONAME:server` works, as does the `PYRO:` URI the server printed) and a name, then calls
//! the object through the blocking proxy. No async runtime of its own.
//!
//! Needs a name server (`cargo run -p rmi-cli --bin rmi-ns`, or Python's `python -m
//! Pyro4.naming` or `pyro5-ns`) and `cargo run --example greeting_server` running.
//! `RMI_NS_HOST`/`RMI_NS_PORT` say where the name server is.

#[path = "common/greeter.rs"]
mod greeter;

use std::io::{BufRead, Write};
use std::sync::Arc;

use greeter::{GreeterBlockingProxy, GreeterProxy};
use rmi::naming::{NamingResolver, NsLocator};

fn ask(question: &str) -> String {
    print!("{question} ");
    std::io::stdout().flush().expect("flush stdout");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read stdin");
    line.trim().to_string()
}

/// Calls the greeting object at `uri` (a `PYRONAME:` is looked up in the name server that
/// `locator` finds) for `name`, and returns the greeting. Blocking: not for async code.
pub(crate) fn greet(locator: NsLocator, uri: String, name: String) -> anyhow::Result<String> {
    let resolver = Arc::new(NamingResolver::new(locator));
    let greeting_maker =
        GreeterBlockingProxy::connect_with(GreeterProxy::builder(uri)?.resolver(resolver))?;
    Ok(greeting_maker.welcome_message(name)?)
}

fn main() -> anyhow::Result<()> {
    let uri = ask("What is the Pyro uri of the greeting object?");
    let name = ask("What is your name?");
    // Binaries may read RMI_NS_HOST/RMI_NS_PORT; the library never does on its own.
    println!("{}", greet(NsLocator::from_env()?, uri, name)?);
    Ok(())
}
