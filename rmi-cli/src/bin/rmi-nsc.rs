//! `rmi-nsc`: name server control, like Pyro's `pyro5-nsc`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use rmi::naming::registry::Change;
use rmi::naming::{NameServerProxy, NsLocator};
use rmi::Uri;

/// Control an rmi name server.
#[derive(Debug, Parser)]
#[command(
    name = "rmi-nsc",
    version,
    about = "Control an rmi name server (like pyro5-nsc)"
)]
struct Args {
    /// Name server host (default: localhost, then the loopback broadcast).
    #[arg(short = 'n', long, env = "RMI_NS_HOST")]
    host: Option<String>,
    /// Name server port.
    #[arg(short, long, env = "RMI_NS_PORT", default_value_t = 9090)]
    port: u16,
    /// Print more.
    #[arg(short, long)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List all names, or those starting with a prefix.
    List {
        /// Only names starting with this.
        prefix: Option<String>,
    },
    /// List the names matching a regular expression (anchored at the start).
    Listmatching {
        /// The pattern.
        regex: String,
    },
    /// List the names whose metadata has all these tags.
    YplookupAll {
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// List the names whose metadata has any of these tags.
    YplookupAny {
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Show the URI and metadata of a name.
    Lookup {
        /// The name.
        name: String,
    },
    /// Register a name (refused if it exists), or, with --shared, add a daemon to a shared
    /// name.
    Register {
        /// The name.
        name: String,
        /// Its PYRO: URI.
        uri: String,
        /// Add this URI to the daemons behind a shared name (PYRONAME: picks among them).
        #[arg(long)]
        shared: bool,
    },
    /// Remove a name.
    Remove {
        /// The name.
        name: String,
    },
    /// Remove the names matching a regular expression.
    Removematching {
        /// The pattern.
        regex: String,
    },
    /// Replace the metadata of a name.
    Setmeta {
        /// The name.
        name: String,
        /// The new tags (none clears them).
        tags: Vec<String>,
    },
    /// Check that the name server answers.
    Ping,
    /// Print changes to the names (all, or those starting with a prefix) as they happen, until
    /// the name server stops.
    Watch {
        /// Only names starting with this.
        prefix: Option<String>,
    },
}

/// One change as a line.
fn describe(change: &Change) -> String {
    let at = |uri: &Option<Uri>| uri.as_ref().map(|u| format!(" {u}")).unwrap_or_default();
    match change {
        Change::Registered { name, entry } => {
            let mut line = format!("registered {name} --> {}", entry.uri);
            if entry.shared {
                line.push_str(" (shared)");
            }
            if let Some(lease) = entry.lease {
                line.push_str(&format!(" lease {lease}"));
            }
            if !entry.metadata.is_empty() {
                line.push_str(&format!("  {:?}", entry.metadata));
            }
            line
        }
        Change::Removed { name, uri } => format!("removed {name}{}", at(uri)),
        Change::Expired { name, lease, uri } => {
            format!("expired {name}{} lease {lease}", at(uri))
        }
        Change::Lagged { missed } => format!("lagged: {missed} changes missed; list again"),
    }
}

fn tags(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

fn show(entries: impl IntoIterator<Item = (String, String)>) {
    let mut n = 0;
    for (name, value) in entries {
        println!("{name} --> {value}");
        n += 1;
    }
    if n == 0 {
        println!("(no names)");
    }
}

async fn run(ns: &NameServerProxy, command: Command) -> Result<(), rmi::Error> {
    match command {
        Command::List { prefix: None } => show(
            ns.list()
                .await?
                .into_iter()
                .map(|(k, u)| (k, u.to_string())),
        ),
        Command::List { prefix: Some(p) } => show(
            ns.list_prefix(&p)
                .await?
                .into_iter()
                .map(|(k, u)| (k, u.to_string())),
        ),
        Command::Listmatching { regex } => show(
            ns.list_regex(&regex)
                .await?
                .into_iter()
                .map(|(k, u)| (k, u.to_string())),
        ),
        Command::YplookupAll { tags } => show(
            ns.yplookup_all(tags)
                .await?
                .into_iter()
                .map(|(k, (u, m))| (k, format!("{u}  {m:?}"))),
        ),
        Command::YplookupAny { tags } => show(
            ns.yplookup_any(tags)
                .await?
                .into_iter()
                .map(|(k, (u, m))| (k, format!("{u}  {m:?}"))),
        ),
        Command::Lookup { name } => {
            let (uri, meta) = ns.lookup_with_metadata(&name).await?;
            println!("{uri}");
            if !meta.is_empty() {
                println!("metadata: {meta:?}");
            }
        }
        Command::Register {
            name,
            uri,
            shared: false,
        } => {
            let uri: Uri = uri.parse()?;
            ns.register_with(&name, &uri, true, BTreeSet::new()).await?;
            println!("registered {name}");
        }
        Command::Register {
            name,
            uri,
            shared: true,
        } => {
            let uri: Uri = uri.parse()?;
            ns.register_shared(&name, &uri, BTreeSet::new()).await?;
            println!("registered {name} (shared)");
        }
        Command::Watch { prefix } => {
            let mut changes = ns.watch(prefix.as_deref()).await?;
            match &prefix {
                Some(p) => println!("watching names starting with {p}"),
                None => println!("watching all names"),
            }
            while let Some(change) = changes.next().await {
                println!("{}", describe(&change?));
            }
            println!("the name server stopped");
        }
        Command::Remove { name } => {
            let removed = ns.remove(&name).await?;
            println!(
                "{}",
                if removed {
                    format!("removed {name}")
                } else {
                    format!("{name} was not registered")
                }
            );
        }
        Command::Removematching { regex } => {
            println!("removed {} names", ns.remove_regex(&regex).await?)
        }
        Command::Setmeta { name, tags: t } => {
            ns.set_metadata(&name, tags(&t)).await?;
            println!("metadata of {name} set");
        }
        Command::Ping => {
            ns.ping().await?;
            println!("name server ping ok");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut locator = NsLocator::new().port(args.port);
    if let Some(host) = &args.host {
        locator = locator.host(host.clone());
    }
    let ns = match locator.locate().await {
        Ok(ns) => ns,
        Err(e) => {
            let hint = "is rmi-ns running? Start it with `rmi-ns`, or pass its --host and --port";
            eprintln!("rmi-nsc: {}", rmi_cli::report(&e, Some(hint)));
            return ExitCode::FAILURE;
        }
    };
    if args.verbose {
        println!("name server: {}", ns.uri());
    }
    match run(&ns, args.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmi-nsc: {}", rmi_cli::report(&e, None));
            ExitCode::FAILURE
        }
    }
}
