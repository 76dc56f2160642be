//! The tutorial's client: asks for the object's URI (`PYRONAME:server` works, as does the
//! `PYRO:` URI the server printed) and a name, then calls the object.

#[path = "common/greeter.rs"]
mod greeter;

use std::io::{BufRead, Write};
use std::sync::Arc;

use greeter::GreeterProxy;

fn ask(question: &str) -> String {
    print!("{question} ");
    std::io::stdout().flush().expect("flush stdout");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("read stdin");
    line.trim().to_string()
}

#[tokio::main]
async fn main() -> Result<(), rmi::Error> {
    let uri = ask("What is the Pyro uri of the greeting object?");
    let name = ask("What is your name?");
    // Binaries may read RMI_NS_HOST/RMI_NS_PORT; the library never does on its own.
    let resolver = Arc::new(rmi::naming::NamingResolver::new(rmi::naming::NsLocator::from_env()?));
    let greeter: GreeterProxy = GreeterProxy::builder(uri)?.resolver(resolver).connect().await?;
    println!("{}", greeter.welcome_message(name).await?);
    Ok(())
}
