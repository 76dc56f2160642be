//! The tutorial's client, a plain synchronous program like Pyro's: asks for the object's URI
//! (`PYRONAME:server` works, as does the `PYRO:` URI the server printed) and a name, then calls
//! the object through the blocking proxy. No async runtime of its own.
//!
//! Needs `cargo run -p rmi-cli --bin rmi-ns` and `cargo run --example greeting_server` running.
//! `RMI_NS_HOST`/`RMI_NS_PORT` say where the name server is.

#[path = "common/greeter.rs"]
mod greeter;

use std::io::{BufRead, Write};
use std::sync::Arc;

use greeter::{GreeterBlockingProxy, GreeterProxy};

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

fn main() -> anyhow::Result<()> {
    let uri = ask("What is the Pyro uri of the greeting object?");
    let name = ask("What is your name?");
    // Binaries may read RMI_NS_HOST/RMI_NS_PORT; the library never does on its own.
    let resolver = Arc::new(rmi::naming::NamingResolver::new(
        rmi::naming::NsLocator::from_env()?,
    ));
    let greeting_maker =
        GreeterBlockingProxy::connect_with(GreeterProxy::builder(uri)?.resolver(resolver))?;
    println!("{}", greeting_maker.welcome_message(name)?);
    Ok(())
}
