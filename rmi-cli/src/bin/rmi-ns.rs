//! `rmi-ns`: the name server process, like `python -m Pyro4.naming` / `pyro5-ns`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rmi::naming::{Limits, NameServer, Storage};
use rmi::{DecodeLimits, SharedSecret};

/// Room kept in a message for what a reply carries besides the listed entries (annotations,
/// the shared secret's MAC, encoding overhead).
const REPLY_HEADROOM: usize = 64 << 10;

/// Start the rmi name server.
#[derive(Debug, Parser)]
#[command(
    name = "rmi-ns",
    version,
    about = "Start the rmi name server (like `python -m Pyro4.naming` or pyro5-ns)"
)]
struct Args {
    /// Hostname or address to bind on.
    #[arg(short = 'n', long, env = "RMI_NS_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind on (0 picks a free one).
    #[arg(short, long, env = "RMI_NS_PORT", default_value_t = 9090)]
    port: u16,
    /// Listen on this Unix domain socket instead of TCP (no broadcast responder then); the
    /// URI reads `PYRO:Pyro.NameServer@./u:PATH`.
    #[arg(short = 'u', long, env = "RMI_NS_UNIXSOCKET", value_name = "PATH")]
    unixsocket: Option<PathBuf>,
    /// Host put in the URIs the name server hands out, when clients reach it through another
    /// address than it binds (NAT, container port mapping).
    #[arg(long, env = "RMI_NS_NATHOST")]
    nathost: Option<String>,
    /// Port put in those URIs (default: the bound port).
    #[arg(long, env = "RMI_NS_NATPORT", requires = "nathost")]
    natport: Option<u16>,
    /// Address the broadcast responder binds (a LAN broadcast address must be asked for).
    #[arg(long, env = "RMI_NS_BCADDR", default_value = "127.255.255.255")]
    bchost: String,
    /// UDP port of the broadcast responder (0 picks a free one).
    #[arg(long, env = "RMI_NS_BCPORT", default_value_t = 9091)]
    bcport: u16,
    /// Do not start a broadcast responder.
    #[arg(short = 'x', long)]
    nobc: bool,
    /// Where names are kept: `memory` (gone when the process is), `sql:PATH` (an SQLite file
    /// that survives restarts and crashes) or `etcd:HOST:PORT[,HOST:PORT…]` (an etcd cluster
    /// that several rmi-ns share; needs rmi-cli built with `--features etcd`).
    #[arg(short = 's', long, env = "RMI_NS_STORAGE", default_value = "memory", value_parser = parse_storage)]
    storage: Storage,

    /// Serve TLS with this certificate chain (PEM); clients must use TLS too.
    #[arg(
        long,
        env = "RMI_NS_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "RMI_NS_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require client certificates signed by a CA in this file (PEM).
    #[arg(
        long,
        env = "RMI_NS_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// Require clients to prove this shared secret, and sign every message with it (rmi's
    /// SPAKE2 handshake; prefer the environment variable or --key-file to keep it out of `ps`).
    #[arg(short = 'k', long, env = "RMI_NS_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Read the shared secret from this file (its bytes, a trailing newline dropped).
    #[arg(long, value_name = "PATH", conflicts_with = "key")]
    key_file: Option<PathBuf>,

    /// Shortest lease TTL a daemon may ask for (e.g. 500ms, 2s).
    #[arg(long, value_parser = rmi_cli::parse_duration, value_name = "DURATION", default_value = "100ms")]
    min_lease_ttl: Duration,
    /// Longest lease TTL a daemon may ask for (e.g. 60s, 1h).
    #[arg(long, value_parser = rmi_cli::parse_duration, value_name = "DURATION", default_value = "1d")]
    max_lease_ttl: Duration,
    /// Most names registered at once, the name server's own included.
    #[arg(long, default_value_t = Limits::default().max_entries)]
    max_entries: usize,
    /// Most leases granted at once.
    #[arg(long, default_value_t = Limits::default().max_leases)]
    max_leases: usize,
    /// Longest name, in bytes.
    #[arg(long, default_value_t = Limits::default().max_name_len)]
    max_name_len: usize,
    /// Most metadata tags on one entry and in one yplookup query.
    #[arg(long, default_value_t = Limits::default().max_tags)]
    max_tags: usize,
    /// Longest metadata tag, in bytes.
    #[arg(long, default_value_t = Limits::default().max_tag_len)]
    max_tag_len: usize,
    /// Largest list or yplookup reply (e.g. 4MiB); a bigger one is refused, asking for a prefix
    /// or regex. Default: --max-message-size less 64 KiB.
    #[arg(long, value_parser = rmi_cli::parse_size, value_name = "SIZE")]
    max_reply_bytes: Option<usize>,
    /// Longest regex given to list or remove, in bytes.
    #[arg(long, default_value_t = Limits::default().max_regex_len)]
    max_regex_len: usize,
    /// Largest compiled regex (e.g. 1MiB).
    #[arg(long, value_parser = rmi_cli::parse_size, value_name = "SIZE", default_value = "1MiB")]
    regex_size_limit: usize,
    /// Largest message (request or reply) the name server's daemon takes, checked on its
    /// header before the body is read. A name server's requests are small (a name, a URI, a few
    /// tags), so a few MiB bound what one request makes it allocate while decoding, before any
    /// quota is checked; replies must fit too (see --max-reply-bytes).
    #[arg(long, value_parser = rmi_cli::parse_size, value_name = "SIZE", default_value = "8MiB")]
    max_message_size: usize,
}

fn parse_storage(s: &str) -> Result<Storage, String> {
    s.parse().map_err(|e: rmi::naming::NamingError| e.message)
}

impl Args {
    /// The quotas from the flags; an error says which flags disagree.
    fn limits(&self) -> Result<Limits, String> {
        let room = self.max_message_size.saturating_sub(REPLY_HEADROOM).max(1);
        let max_reply_bytes = match self.max_reply_bytes {
            Some(n) if n > room => {
                return Err(format!(
                    "--max-reply-bytes ({n}) must leave {REPLY_HEADROOM} bytes of \
                     --max-message-size ({}): raise --max-message-size to at least {}",
                    self.max_message_size,
                    n + REPLY_HEADROOM
                ))
            }
            Some(n) => n,
            None => room,
        };
        if self.min_lease_ttl > self.max_lease_ttl {
            return Err(format!(
                "--min-lease-ttl ({:?}) is longer than --max-lease-ttl ({:?})",
                self.min_lease_ttl, self.max_lease_ttl
            ));
        }
        Ok(Limits {
            max_name_len: self.max_name_len,
            max_tags: self.max_tags,
            max_tag_len: self.max_tag_len,
            max_entries: self.max_entries,
            max_leases: self.max_leases,
            max_reply_bytes,
            max_regex_len: self.max_regex_len,
            regex_size_limit: self.regex_size_limit,
            min_lease_ttl: self.min_lease_ttl,
            max_lease_ttl: self.max_lease_ttl,
        })
    }

    /// The daemon's settings: message size, advertised address, TLS, shared secret.
    fn daemon(&self) -> Result<rmi::DaemonBuilder, String> {
        let mut builder = rmi::Daemon::builder().limits(DecodeLimits {
            max_message_size: self.max_message_size,
            ..DecodeLimits::default()
        });
        if let Some(host) = &self.nathost {
            builder = builder.advertise(host.clone(), self.natport);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            builder = builder.tls(rmi_cli::tls::server(
                cert,
                key,
                self.tls_client_ca.as_deref(),
            )?);
        }
        if let Some(secret) = self.secret()? {
            builder = builder.shared_secret(secret);
        }
        Ok(builder)
    }

    fn secret(&self) -> Result<Option<SharedSecret>, String> {
        match (&self.key, &self.key_file) {
            (Some(key), _) if key.is_empty() => Err("the shared secret (--key) is empty".into()),
            (Some(key), _) => Ok(Some(SharedSecret::new(key))),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read --key-file {}: {e}", path.display()))?;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                if bytes.is_empty() {
                    return Err(format!("--key-file {} is empty", path.display()));
                }
                Ok(Some(SharedSecret::new(bytes)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Resolves when the process is asked to stop: Ctrl-C, or SIGTERM on Unix.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RMI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let settings = args.limits().and_then(|l| Ok((l, args.daemon()?)));
    let (limits, daemon) = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("rmi-ns: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let store = match args.storage.open(limits.clone()).await {
        Ok(store) => store,
        Err(e) => {
            let hint = match args.storage {
                Storage::Etcd(_) if cfg!(feature = "etcd") => {
                    "is etcd running and reachable at those endpoints?"
                }
                Storage::Etcd(_) => {
                    "rebuild rmi-cli with `--features etcd`, or choose --storage memory | sql:PATH"
                }
                _ => "choose the storage with --storage memory | sql:PATH | etcd:HOST:PORT[,…]",
            };
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, Some(hint)));
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut builder = NameServer::builder()
        .host(args.host.clone())
        .port(args.port)
        .daemon(daemon)
        .limits(limits)
        .store(store);
    builder = if args.nobc {
        builder.no_broadcast()
    } else {
        builder.broadcast(args.bchost.clone(), args.bcport)
    };
    if let Some(path) = &args.unixsocket {
        // After the broadcast settings: a Unix-socket name server has no responder.
        builder = builder.unix(path.clone());
    }
    let ns = match builder.start().await {
        Ok(ns) => Arc::new(ns),
        Err(e) => {
            let hint = if args.unixsocket.is_some() {
                "does the socket file exist already, or its directory not?"
            } else {
                "is another name server already on this port? Choose one with --port"
            };
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, Some(hint)));
            return std::process::ExitCode::FAILURE;
        }
    };
    // The first stdout line is where it listens and the URI it hands out, so scripts and
    // tests can read the port back.
    println!("NS running on {} ({})", ns.daemon().location(), ns.uri());
    if let Some(bc) = ns.broadcast_addr() {
        println!("Broadcast server running on {bc}");
    }
    let stop = ns.clone();
    tokio::spawn(async move {
        stop_requested().await;
        // Ends remote watches too, so open watches do not hold the grace period.
        stop.shutdown();
    });
    match ns.wait().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, None));
            std::process::ExitCode::FAILURE
        }
    }
}
