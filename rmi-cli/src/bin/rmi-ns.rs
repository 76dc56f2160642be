//! `rmi-ns`: the name server process, like `python -m Pyro4.naming` / `pyro5-ns`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use rmi::naming::{Limits, NameServer, Storage};
use rmi::DecodeLimits;
use tokio::sync::mpsc;

/// Room kept in a message for what a reply carries besides the listed entries (annotations,
/// the shared secret's MAC, encoding overhead).
const REPLY_HEADROOM: usize = 64 << 10;

/// The smallest `--max-message-size` taken: below it, not even a register of a name and a
/// URI at their longest fits (a value in bytes where KiB or MiB was meant, say).
const MIN_MESSAGE_SIZE: usize = 4 << 10;

/// Start the rmi name server.
#[derive(Debug, Parser)]
#[command(
    name = "rmi-ns",
    version,
    about = "Start the rmi name server (like `python -m Pyro4.naming` or pyro5-ns)"
)]
struct Args {
    /// Hostname or address to bind on; a hostname is what the URIs it hands out carry, as in
    /// Pyro (see --nathost to put another there).
    #[arg(short = 'n', long, env = "RMI_NS_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind on (0 picks a free one).
    #[arg(short, long, env = "RMI_NS_PORT", default_value_t = 9090)]
    port: u16,
    /// Listen on this Unix domain socket instead of TCP (no broadcast responder then); the
    /// URI reads `PYRO:Pyro.NameServer@./u:PATH`. --host or --port on the command line beat
    /// RMI_NS_UNIXSOCKET.
    #[arg(short = 'u', long, env = "RMI_NS_UNIXSOCKET", value_name = "PATH")]
    unixsocket: Option<PathBuf>,
    /// Host put in the URIs the name server hands out, when clients reach it through another
    /// address than it binds (NAT, container port mapping).
    #[arg(long, env = "RMI_NS_NATHOST")]
    nathost: Option<String>,
    /// Port put in those URIs (default, or 0: the bound port).
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
    /// Read the shared secret from this file (its bytes, a trailing newline dropped); beats
    /// RMI_NS_KEY.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Pyro4's HMAC key (`python -m Pyro4.naming -k`): sign every message with it and refuse
    /// clients without it, for Pyro4 programs that set `_pyroHmacKey` or
    /// `locateNS(hmac_key=…)`. Weaker than --key, and not with it: a message captured on the
    /// network lets the key be guessed offline, so use a long random one.
    #[arg(
        long,
        env = "PYRO_HMAC_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    hmac_key: Option<String>,

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
    /// Longest registered URI, in bytes.
    #[arg(long, default_value_t = Limits::default().max_uri_len)]
    max_uri_len: usize,
    /// Most metadata tags on one entry and in one yplookup query.
    #[arg(long, default_value_t = Limits::default().max_tags)]
    max_tags: usize,
    /// Longest metadata tag, in bytes.
    #[arg(long, default_value_t = Limits::default().max_tag_len)]
    max_tag_len: usize,
    /// Most tags one set_metadata may write: a shared name's entries times the tags given.
    #[arg(long, default_value_t = Limits::default().max_metadata_writes)]
    max_metadata_writes: usize,
    /// Largest list or yplookup reply (e.g. 4MiB); a bigger one is refused, asking for a prefix
    /// or regex. Default: --max-message-size less 64 KiB (less half of it, below 128 KiB).
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
    /// Every DURATION (3s or more), probe where each name points and remove those no daemon
    /// has answered at for --autoclean-after: Pyro's NS_AUTOCLEAN. Names held by a lease are
    /// left to it. Off unless given (0 is off too, as Pyro's).
    #[arg(long, env = "RMI_NS_AUTOCLEAN", value_parser = rmi_cli::parse_duration, value_name = "DURATION")]
    autoclean: Option<Duration>,
    /// How long a name's daemon must stay unreachable before --autoclean removes the name.
    #[arg(long, value_parser = rmi_cli::parse_duration, value_name = "DURATION", default_value = "20s", requires = "autoclean")]
    autoclean_after: Duration,
}

fn parse_storage(s: &str) -> Result<Storage, String> {
    s.parse().map_err(|e: rmi::naming::NamingError| e.message)
}

impl Args {
    /// The flags, with the command line beating the environment (see [`rmi_cli::Sources`]).
    fn parse() -> Result<Args, String> {
        let matches = rmi_cli::environment(Args::command()).get_matches();
        let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let sources = rmi_cli::Sources(&matches);
        args.unixsocket = sources.keep("unixsocket", args.unixsocket.take(), &["host", "port"]);
        args.key = sources.keep("key", args.key.take(), &["key_file", "hmac_key"]);
        args.hmac_key = sources.keep("hmac_key", args.hmac_key.take(), &["key", "key_file"]);
        args.nathost = sources.keep("nathost", args.nathost.take(), &[]);
        // TLS settings from the environment are for TCP: `-u` on the command line drops them.
        args.tls_cert = sources.keep("tls_cert", args.tls_cert.take(), &["unixsocket"]);
        args.tls_key = sources.keep("tls_key", args.tls_key.take(), &["unixsocket"]);
        args.tls_client_ca =
            sources.keep("tls_client_ca", args.tls_client_ca.take(), &["unixsocket"]);
        if args.nathost.is_some() && args.unixsocket.is_some() {
            // As Pyro's daemon: a Unix socket's URIs have no host to translate.
            return Err("--nathost cannot be used with a Unix socket (-u)".into());
        }
        if args.tls_cert.is_some() && args.unixsocket.is_some() {
            // rmi's proxies (rmi-nsc among them) run TLS over TCP only: nobody could connect.
            return Err(concat!(
                "--tls-cert cannot be used with a Unix socket (-u): TLS runs over TCP; ",
                "a Unix socket is guarded by its file's permissions"
            )
            .into());
        }
        if args
            .autoclean
            .is_some_and(|every| !every.is_zero() && every < Duration::from_secs(3))
        {
            // As Pyro's NS_AUTOCLEAN: each round connects to every daemon named.
            return Err(
                "--autoclean must be 3s or more: each round connects to every daemon".into(),
            );
        }
        Ok(args)
    }

    /// The quotas from the flags; an error says which flags disagree.
    fn limits(&self) -> Result<Limits, String> {
        if self.max_message_size < MIN_MESSAGE_SIZE {
            return Err(format!(
                "--max-message-size ({} bytes) is below {MIN_MESSAGE_SIZE} bytes, too small for \
                 a register of a long name and URI: give a size such as 64KiB or 8MiB",
                self.max_message_size
            ));
        }
        let headroom = REPLY_HEADROOM.min(self.max_message_size / 2);
        let room = (self.max_message_size - headroom).max(1);
        let max_reply_bytes = match self.max_reply_bytes {
            Some(n) if n > room => {
                return Err(format!(
                    "--max-reply-bytes ({n}) must leave {headroom} bytes of \
                     --max-message-size ({}): raise --max-message-size to at least {}",
                    self.max_message_size,
                    n.saturating_add(headroom)
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
            max_uri_len: self.max_uri_len,
            max_tags: self.max_tags,
            max_tag_len: self.max_tag_len,
            max_entries: self.max_entries,
            max_leases: self.max_leases,
            max_reply_bytes,
            max_regex_len: self.max_regex_len,
            regex_size_limit: self.regex_size_limit,
            min_lease_ttl: self.min_lease_ttl,
            max_lease_ttl: self.max_lease_ttl,
            max_metadata_writes: self.max_metadata_writes,
        })
    }

    /// The daemon's settings: message size, advertised address, TLS, shared secret or HMAC key.
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
        let secret = rmi_cli::secret(self.key.as_deref(), self.key_file.as_deref())?;
        if let Some(key) = rmi_cli::hmac_key(self.hmac_key.as_deref(), secret.is_some())? {
            builder = builder.hmac_key(key);
        }
        if let Some(secret) = secret {
            builder = builder.shared_secret(secret);
        }
        Ok(builder)
    }
}

/// Stop requests as they come: Ctrl-C, and SIGTERM and SIGHUP on Unix (a closed terminal
/// stops the name server cleanly too), each by its name. The handlers are installed before
/// this returns, so a signal during start-up is a stop request, never the default action
/// (which would kill the process and leave a Unix socket's file behind). A signal the process
/// was started with ignored (`nohup` ignores SIGHUP; a shell, SIGINT for a background job) is
/// left ignored, as a handler would replace that; SIGTERM excepted.
fn stop_requests() -> mpsc::UnboundedReceiver<&'static str> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let ignored = ignored_at_start();
        // SIGTERM is always heard: it is how a service manager stops the name server, and the
        // only clean stop there would be otherwise.
        let listen = |number: u32, kind: SignalKind| -> std::io::Result<Option<Signal>> {
            if number != 15 && ignored & (1 << (number - 1)) != 0 {
                return Ok(None);
            }
            signal(kind).map(Some)
        };
        /// The next delivery of `signal`; never, for a signal not listened to.
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        if let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            listen(2, SignalKind::interrupt()),
            listen(15, SignalKind::terminate()),
            listen(1, SignalKind::hangup()),
        ) {
            tokio::spawn(async move {
                loop {
                    let name = tokio::select! {
                        () = next(&mut int) => "SIGINT",
                        () = next(&mut term) => "SIGTERM",
                        () = next(&mut hup) => "SIGHUP",
                    };
                    if tx.send(name).is_err() {
                        return;
                    }
                }
            });
            return rx;
        }
    }
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send("Ctrl-C").is_err() {
                return;
            }
        }
    });
    rx
}

/// The signals this process was started with ignored, as a mask (bit `n - 1` for signal `n`):
/// Linux's `SigIgn` in `/proc/self/status`; none where that cannot be read.
#[cfg(unix)]
fn ignored_at_start() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Prints a line on stdout, for whoever reads it: the name server goes on serving when no one
/// does (its reader quit), where `println!` would panic.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A note for a name server and a broadcast responder that face different ways.
///
/// On the network with the responder on the loopback broadcast address (the default), it
/// answers this host only: Pyro's responder listens on every interface there, so a Pyro user
/// would expect `locate_ns()` on another host to find it, and it would not. On loopback with
/// the responder on the network, other hosts would be sent to their own loopback: the responder
/// leaves them unanswered (Pyro starts no responder for a name server on localhost).
fn lan_note(host: &str, responder: std::net::SocketAddr) -> Option<String> {
    let local = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    match (local, responder.ip().to_canonical().is_loopback()) {
        (false, true) => Some(format!(
            "rmi-ns: note: the name server listens on {host}, but its broadcast responder on \
             {responder} answers this host only: for clients elsewhere to find it by broadcast, \
             give --bchost 0.0.0.0 (every interface, where Pyro's clients' broadcasts to \
             255.255.255.255 arrive, as Pyro's responder listens), or the network's broadcast \
             address (such as 192.168.1.255), which takes only datagrams sent to exactly it"
        )),
        (true, false) => Some(format!(
            "rmi-ns: note: the name server listens on {host}, this host only, so its broadcast \
             responder on {responder} answers this host's clients only (other hosts would be \
             sent to their own loopback): for clients elsewhere, give --host an address of this \
             host on the network, or 0.0.0.0"
        )),
        _ => None,
    }
}

/// The hint for a name server that did not start: the port only when it is taken.
fn start_hint(err: &(dyn std::error::Error + 'static), unix: bool) -> Option<&'static str> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::AddrInUse if unix => {
                    Some("is another name server on this socket, or did one leave its file?")
                }
                std::io::ErrorKind::AddrInUse => {
                    Some("is another name server already on this port? Choose one with --port")
                }
                std::io::ErrorKind::NotFound if unix => {
                    Some("does the socket file's directory exist?")
                }
                _ => None,
            };
        }
        next = e.source();
    }
    None
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
    let mut stops = stop_requests();
    let settings = Args::parse().and_then(|args| {
        let limits = args.limits()?;
        let daemon = args.daemon()?;
        Ok((args, limits, daemon))
    });
    let (args, limits, daemon) = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("rmi-ns: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let opened = tokio::select! {
        opened = args.storage.open(limits.clone()) => opened,
        Some(signal) = stops.recv() => {
            eprintln!("rmi-ns: stopped by {signal} while opening the storage");
            return std::process::ExitCode::FAILURE;
        }
    };
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            let hint = match args.storage {
                Storage::Etcd(_) if cfg!(feature = "etcd") => {
                    "is etcd running and reachable at those endpoints?"
                }
                Storage::Etcd(_) => {
                    "rebuild rmi-cli with `--features etcd`, or choose --storage memory | sql:PATH"
                }
                // (The store's own error says what to look at: the file, another rmi-ns.)
                Storage::Sql(_) => "",
                Storage::Memory => {
                    "choose the storage with --storage memory | sql:PATH | etcd:HOST:PORT[,…]"
                }
            };
            let hint = (!hint.is_empty()).then_some(hint);
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, hint));
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
    if let Some(interval) = args.autoclean {
        builder = builder.autoclean(rmi::naming::Autoclean {
            unreachable_for: args.autoclean_after,
            ..rmi::naming::Autoclean::every(interval)
        });
    }
    let started = tokio::select! {
        started = builder.start() => started,
        Some(signal) = stops.recv() => {
            eprintln!("rmi-ns: stopped by {signal} while starting");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ns = match started {
        Ok(ns) => Arc::new(ns),
        Err(e) => {
            let hint = start_hint(&e, args.unixsocket.is_some());
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, hint));
            return std::process::ExitCode::FAILURE;
        }
    };
    // The first stdout line is where it listens and the URI it hands out, so scripts and
    // tests can read the port back.
    say(format_args!(
        "NS running on {} ({})",
        ns.daemon().location(),
        ns.uri()
    ));
    if let Some(bc) = ns.broadcast_addr() {
        say(format_args!("Broadcast server running on {bc}"));
        if let Some(note) = lan_note(&args.host, bc) {
            eprintln!("{note}");
        }
    }
    // Pyro's own last lines, which scripts written for pyro5-ns wait for.
    if args.nathost.is_some() {
        let internal = rmi::Uri::Pyro {
            object: rmi::naming::NAME_SERVER_OBJECT_ID.into(),
            location: ns.daemon().location().clone(),
        };
        say(format_args!("internal URI = {internal}"));
        say(format_args!("external URI = {}", ns.uri()));
    } else {
        say(format_args!("URI = {}", ns.uri()));
    }
    let stop = ns.clone();
    tokio::spawn(async move {
        if stops.recv().await.is_none() {
            return;
        }
        // Ends remote watches too, so open watches do not hold the grace period.
        stop.shutdown();
        if let Some(signal) = stops.recv().await {
            eprintln!("rmi-ns: {signal} again: exiting without waiting for calls in progress");
            std::process::exit(1);
        }
    });
    match ns.wait().await {
        Ok(()) => {
            say(format_args!("NS shut down."));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, None));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{lan_note, Args};
    use clap::CommandFactory;

    /// The note comes for a name server on the network with its responder on loopback only.
    #[test]
    fn a_name_server_on_the_network_with_a_loopback_responder_is_told() {
        let loopback = "127.255.255.255:9091".parse().unwrap();
        let lan = "192.168.1.255:9091".parse().unwrap();
        let note = lan_note("192.168.1.5", loopback).expect("a note");
        // The flag it names is the one that sets the responder's address.
        let command = Args::command();
        let flag = command
            .get_arguments()
            .find(|a| a.get_id() == "bchost")
            .and_then(|a| a.get_long())
            .expect("the responder's address flag");
        assert!(note.contains(&format!("give --{flag} 0.0.0.0 ")), "{note}");
        assert!(lan_note("ns.example.test", loopback).is_some());
        assert!(lan_note("0.0.0.0", loopback).is_some());
        assert!(lan_note("::", loopback).is_some());
        // Both on this host only, or both on the network: nothing to say.
        assert!(lan_note("127.0.0.1", loopback).is_none());
        assert!(lan_note("localhost", loopback).is_none());
        assert!(lan_note("::1", loopback).is_none());
        assert!(lan_note("192.168.1.5", lan).is_none());
        assert!(lan_note("0.0.0.0", lan).is_none());
    }

    /// A name server on this host only with its responder on the network is told that other
    /// hosts are left unanswered, and which flag to give (helper-148 #1).
    #[test]
    fn a_name_server_on_loopback_with_a_network_responder_is_told() {
        let any = "0.0.0.0:9091".parse().unwrap();
        let lan = "192.168.1.255:9091".parse().unwrap();
        let command = Args::command();
        let flag = command
            .get_arguments()
            .find(|a| a.get_id() == "host")
            .and_then(|a| a.get_long())
            .expect("the name server's address flag");
        for host in ["127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1"] {
            for responder in [any, lan] {
                let note = lan_note(host, responder).expect("a note");
                assert!(note.contains("this host's clients only"), "{note}");
                assert!(note.contains(&format!("give --{flag} ")), "{note}");
            }
        }
    }
}
