//! `rmi-nsc`: name server control, like Pyro's `pyro5-nsc`.

use std::collections::BTreeSet;
use std::path::PathBuf;
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
    /// Name server host (default: localhost, then a broadcast to --bchost:--bcport).
    #[arg(short = 'n', long, env = "RMI_NS_HOST")]
    host: Option<String>,
    /// Name server port.
    #[arg(short, long, env = "RMI_NS_PORT", default_value_t = 9090)]
    port: u16,
    /// Talk to a name server on this Unix domain socket (`rmi-ns -u PATH`); --host and
    /// --port are not used then.
    #[arg(short = 'u', long, env = "RMI_NS_UNIXSOCKET", value_name = "PATH")]
    unixsocket: Option<PathBuf>,
    /// Where to broadcast GET_NSURI when no --host is given and nothing answers on localhost.
    #[arg(long, env = "RMI_NS_BCADDR", default_value = "127.255.255.255")]
    bchost: String,
    /// UDP port of that broadcast.
    #[arg(long, env = "RMI_NS_BCPORT", default_value_t = 9091)]
    bcport: u16,
    /// Do not broadcast.
    #[arg(short = 'x', long)]
    nobc: bool,
    /// The name server's shared secret (`rmi-ns --key`).
    #[arg(short = 'k', long, env = "RMI_NS_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Read the shared secret from this file (a trailing newline dropped).
    #[arg(long, value_name = "PATH", conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// Talk TLS, trusting the certificates in this file (PEM).
    #[arg(long, env = "RMI_NS_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: present this certificate (PEM; with --tls-key).
    #[arg(long, env = "RMI_NS_TLS_CLIENT_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "RMI_NS_TLS_CLIENT_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
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
    #[command(name = "yplookup_all", alias = "yplookup-all")]
    YplookupAll {
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// List the names whose metadata has any of these tags.
    #[command(name = "yplookup_any", alias = "yplookup-any")]
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

/// The shared secret from `--key` or `--key-file`.
fn secret(args: &Args) -> Result<Option<rmi::SharedSecret>, String> {
    match (&args.key, &args.key_file) {
        (Some(key), _) => Ok(Some(rmi::SharedSecret::new(key))),
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read --key-file {}: {e}", path.display()))?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            Ok(Some(rmi::SharedSecret::new(bytes)))
        }
        (None, None) => Ok(None),
    }
}

/// Finds the name server as the flags say: a Unix socket, a host, or localhost then the
/// broadcast; over TLS and with a shared secret if given.
async fn connect(args: &Args) -> Result<NameServerProxy, Box<dyn std::error::Error>> {
    let secret = secret(args)?;
    let tls = match &args.tls_ca {
        Some(ca) => Some(rmi_cli::tls::client(
            ca,
            args.tls_cert.as_deref().zip(args.tls_key.as_deref()),
        )?),
        None => None,
    };
    if let Some(path) = &args.unixsocket {
        let uri = Uri::Pyro {
            object: rmi::naming::NAME_SERVER_OBJECT_ID.into(),
            location: rmi::Location::Unix(path.to_string_lossy().into_owned()),
        };
        let mut builder = rmi::Proxy::builder(uri);
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        if let Some(secret) = secret {
            builder = builder.shared_secret(secret);
        }
        return Ok(NameServerProxy::from_proxy(builder.connect().await?));
    }
    let mut locator = NsLocator::new().port(args.port);
    locator = if args.nobc {
        locator.no_broadcast()
    } else {
        locator.broadcast(args.bchost.clone(), args.bcport)
    };
    if let Some(host) = &args.host {
        locator = locator.host(host.clone());
    }
    if let Some(tls) = tls {
        locator = locator.tls(tls);
    }
    if let Some(secret) = secret {
        locator = locator.shared_secret(secret);
    }
    Ok(locator.locate().await?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let ns = match connect(&args).await {
        Ok(ns) => ns,
        Err(e) => {
            let hint = "is rmi-ns running? Start it with `rmi-ns`, or pass its --host and --port \
                        (or -u PATH), and --key or --tls-ca if it needs them";
            eprintln!("rmi-nsc: {}", rmi_cli::report(e.as_ref(), Some(hint)));
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
