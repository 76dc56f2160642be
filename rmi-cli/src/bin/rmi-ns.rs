//! `rmi-ns`: the name server process, like `python -m Pyro4.naming`.

use clap::Parser;
use rmi::naming::{Limits, NameServer, Storage};

/// Start the rmi name server.
#[derive(Debug, Parser)]
#[command(
    name = "rmi-ns",
    version,
    about = "Start the rmi name server (like `python -m Pyro4.naming`)"
)]
struct Args {
    /// Hostname or address to bind on.
    #[arg(short = 'n', long, env = "RMI_NS_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind on (0 picks a free one).
    #[arg(short, long, env = "RMI_NS_PORT", default_value_t = 9090)]
    port: u16,
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
}

fn parse_storage(s: &str) -> Result<Storage, String> {
    s.parse().map_err(|e: rmi::naming::NamingError| e.message)
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
    let limits = Limits::default();
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
        .host(args.host)
        .port(args.port)
        .limits(limits)
        .store(store);
    builder = if args.nobc {
        builder.no_broadcast()
    } else {
        builder.broadcast(args.bchost, args.bcport)
    };
    let ns = match builder.start().await {
        Ok(ns) => ns,
        Err(e) => {
            let hint = "is another name server already on this port? Choose one with --port";
            eprintln!("rmi-ns: {}", rmi_cli::report(&e, Some(hint)));
            return std::process::ExitCode::FAILURE;
        }
    };
    // The first stdout line is the URI, so scripts and tests can read the port back.
    println!("NS running on {} ({})", ns.daemon().location(), ns.uri());
    if let Some(bc) = ns.broadcast_addr() {
        println!("Broadcast server running on {bc}");
    }
    let stop = ns.daemon().clone();
    tokio::spawn(async move {
        stop_requested().await;
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
