//! `rmi-ns`: the name server process, like `python -m Pyro4.naming`.

use clap::Parser;
use rmi::naming::NameServer;

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
    let mut builder = NameServer::builder().host(args.host).port(args.port);
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
        let _ = tokio::signal::ctrl_c().await;
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
