//! `rmi-httpgateway`: remote objects over HTTP and JSON, like `pyro5-httpgateway` (see
//! [`rmi_cli::gateway`]).

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use rmi::naming::NsLocator;
use rmi_cli::gateway::{Gateway, DEFAULT_EXPOSE};

/// Default `--max-connections`: with `--max-calls`' 256 connections to daemons, within the
/// 1,024 file descriptors a process commonly gets.
const DEFAULT_MAX_CONNECTIONS: usize = 512;

#[derive(Debug, Parser)]
#[command(
    name = "rmi-httpgateway",
    version,
    about = "Call remote objects over HTTP and JSON (like pyro5-httpgateway)"
)]
struct Args {
    /// Host to bind (`localhost` is 127.0.0.1, as Pyro's gateway binds it, whatever the
    /// system's resolver lists first).
    #[arg(short = 'H', long, default_value = "localhost")]
    host: String,
    /// Port to bind (0: any free port).
    #[arg(short, long, default_value_t = 8080)]
    port: u16,
    /// Expose the names this regular expression matches from their start.
    #[arg(short, long, default_value = DEFAULT_EXPOSE)]
    expose: String,
    /// Require this key of every request (header X-Pyro-Gateway-Key, or parameter $key).
    #[arg(
        short = 'g',
        long,
        env = "RMI_GATEWAY_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    gatewaykey: Option<String>,
    /// Deadline of each request (the lookup, the connect and the call), as 500ms, 10s, 1m; 0
    /// for none, as Pyro's gateway takes 0.
    #[arg(short, long, default_value = "10s", value_parser = rmi_cli::parse_duration)]
    timeout: Duration,
    /// How long a client may take to send a request's header, as 500ms, 10s, 1m (0 for no
    /// limit): a client that sends part of one and goes silent is closed on then.
    #[arg(long, default_value = "30s", value_parser = rmi_cli::parse_duration)]
    header_timeout: Duration,
    /// How long a write to a client may wait for the client to take it, as 500ms, 10s, 1m (0
    /// for no limit): a client that stops reading is closed on then, and the answers it left
    /// unread are let go.
    #[arg(long, default_value = "30s", value_parser = rmi_cli::parse_duration)]
    write_timeout: Duration,
    /// How many clients may be connected at once (each costs a file descriptor); one more
    /// waits to be accepted until one leaves. 0 for no limit.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// How many requests may be under way at once (each holds a connection to a daemon); one
    /// more is answered 503 with Retry-After at once. 0 for no limit.
    #[arg(long, default_value_t = rmi_cli::gateway::DEFAULT_MAX_CALLS)]
    max_calls: usize,
    /// Allow cross-origin requests from this origin (CORS headers on every answer).
    #[arg(short, long, default_value = "*")]
    cors: String,
    /// The name server's host (default: localhost, then a broadcast on 127.255.255.255).
    #[arg(short = 'n', long, env = "RMI_NS_HOST")]
    nshost: Option<String>,
    /// The name server's port. Given without --nshost, a name server the broadcast finds on
    /// another port is refused: it is another name server.
    #[arg(long, env = "RMI_NS_PORT", default_value_t = 9090)]
    nsport: u16,
    /// Set from where `nsport` came: the command line or the environment.
    #[arg(skip)]
    nsport_given: bool,
    /// Where to broadcast GET_NSURI when no --nshost is given and nothing answers on
    /// localhost.
    #[arg(long, env = "RMI_NS_BCADDR", default_value = "127.255.255.255")]
    bchost: String,
    /// UDP port of that broadcast.
    #[arg(long, env = "RMI_NS_BCPORT", default_value_t = 9091)]
    bcport: u16,
    /// Do not broadcast.
    #[arg(short = 'x', long)]
    nobc: bool,
    /// TLS, a shared secret or Pyro4's HMAC key: for the name server and every object's
    /// daemon alike (one deployment, one secret, as Pyro4's gateway takes one HMAC key).
    #[command(flatten)]
    security: rmi_cli::client::SecurityArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // As the other tools read the environment: empty variables unset, Pyro's names read too.
    let matches = rmi_cli::environment(Args::command()).get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.security.settle(&rmi_cli::Sources(&matches));
    args.nsport_given = matches!(
        matches.value_source("nsport"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    );
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((err, hint)) => {
            eprintln!("rmi-httpgateway: {}", rmi_cli::report(&*err, hint));
            ExitCode::FAILURE
        }
    }
}

type Failure = (Box<dyn std::error::Error>, Option<&'static str>);

/// The next client, once there is a place for it among `places` (`--max-connections`): a
/// client beyond them waits in the listener's backlog.
async fn accept(
    listener: &tokio::net::TcpListener,
    places: Option<&std::sync::Arc<tokio::sync::Semaphore>>,
) -> std::io::Result<(
    tokio::net::TcpStream,
    Option<tokio::sync::OwnedSemaphorePermit>,
)> {
    let place = match places {
        Some(places) => Some(
            places
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed"),
        ),
        None => None,
    };
    let (stream, _) = listener.accept().await?;
    Ok((stream, place))
}

async fn run(args: Args) -> Result<(), Failure> {
    let security = args.security.read().map_err(|e| (e.into(), None))?;
    let mut locator = NsLocator::new().port(args.nsport);
    locator = if args.nobc {
        locator.no_broadcast()
    } else {
        locator.broadcast(args.bchost.clone(), args.bcport)
    };
    if let Some(host) = &args.nshost {
        locator = locator.host(host.clone());
    }
    let hint = "is rmi-ns running? (--nshost, --nsport; --key, --hmac-key, --tls-ca for one \
                that wants them)";
    let locator = security.locator(locator);
    let mut connected = true;
    let names = match locator.locate().await {
        Ok(names) => {
            rmi_cli::found_where_asked(
                names.uri(),
                args.nsport,
                args.nsport_given,
                args.nshost.is_some(),
            )
            .map_err(|e| (e.into(), Some(hint)))?;
            names
        }
        // Not there yet (started before it, as a service manager may): as Pyro's gateway,
        // serve, and ask for it at each request until it answers. (A name server that refused
        // this client is an error now.)
        Err(e) if e.is_communication() || matches!(e, rmi::Error::Resolve(_)) => {
            let host = args.nshost.clone().unwrap_or_else(|| "localhost".into());
            let uri = rmi::Uri::tcp("Pyro.NameServer", host, args.nsport);
            eprintln!(
                "rmi-httpgateway: not yet connected to a name server ({}); asking {uri}, and \
                 looking for it again while it does not answer",
                rmi_cli::report(&e, None)
            );
            connected = false;
            rmi::naming::NameServerProxy::from_proxy(security.proxy(uri).build())
        }
        Err(e) => return Err((e.into(), Some(hint))),
    };
    // Found again when it does not answer, as Pyro's gateway locates it at each request.
    let gateway = Gateway::new(names.clone()).relocate(locator);
    // (As at start-up: the port asked for, without a host, is that name server's.)
    let gateway = match args.nsport_given && args.nshost.is_none() {
        true => gateway.name_server_port(args.nsport),
        false => gateway,
    };
    let gateway = gateway
        .security(security)
        .expose(&args.expose)
        .map_err(|e| (e.into(), Some("--expose takes a regular expression")))?
        .timeout(args.timeout)
        .max_calls(args.max_calls);
    let gateway = match args.gatewaykey {
        Some(key) => gateway.gateway_key(key),
        None => gateway,
    };
    let gateway = if args.cors.is_empty() {
        gateway
    } else {
        gateway
            .cors(&args.cors)
            .map_err(|e| (e.into(), Some("--cors takes an origin, or *")))?
    };
    let reaches_name_server = regex::Regex::new(&format!("^(?:{})", args.expose))
        .is_ok_and(|re| re.is_match("Pyro.NameServer"));
    if reaches_name_server {
        eprintln!(
            "rmi-httpgateway: warning: --expose {:?} exposes Pyro.NameServer: anyone who can \
             reach the gateway can register and remove names",
            args.expose
        );
    }
    let host = match args.host.as_str() {
        "localhost" => "127.0.0.1",
        host => host,
    };
    let listener = tokio::net::TcpListener::bind((host, args.port))
        .await
        .map_err(|e| (e.into(), None))?;
    let address = listener.local_addr().map_err(|e| (e.into(), None))?;
    // The stop signals' handlers are in place before the banner says it serves: a script that
    // stops it as soon as it has read the banner stops it cleanly.
    #[cfg(unix)]
    let (mut term, mut interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).expect("SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("SIGINT handler"),
        )
    };
    // Pyro's lines, in Pyro's order: scripts written for pyro5-httpgateway wait for the last.
    println!("Exposing objects with names matching:  {}", args.expose);
    match connected {
        true => println!("Connected to name server at:  {}", names.uri()),
        false => println!("Not yet connected to a name server."),
    }
    println!("rmi HTTP gateway running on http://{address}/pyro/");
    // Told to stop, the gateway finishes the requests under way, for at most `STOP_WITHIN`: a
    // client that sent half a request and went silent does not keep it running.
    let shutdown = async {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    };
    // Each connection is served by hyper with a timer, so its header read timeout holds: a
    // client that sent half a request and went silent does not keep its connection (axum's
    // `serve` gives hyper no timer, and the timeout did nothing). Hyper has no write timeout:
    // the stream has one of its own, or a client that sends requests and never reads the
    // answers would hold its connection, and the answers, for ever (helper-147 #2). A client
    // that half-closes after its request is answered (`half_close`), as Pyro's gateway
    // answers `nc -N` (helper-147 #4); a request's call does not end with its client anyway.
    let router = gateway.router();
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let places = (args.max_connections > 0)
        .then(|| {
            args.max_connections
                .min(tokio::sync::Semaphore::MAX_PERMITS)
        })
        .map(|n| std::sync::Arc::new(tokio::sync::Semaphore::new(n)));
    let write_timeout = (!args.write_timeout.is_zero()).then_some(args.write_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, places.as_ref()) => accepted,
            () = &mut shutdown => break,
        };
        let (stream, place) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(write_timeout);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout((!args.header_timeout.is_zero()).then_some(args.header_timeout))
            .half_close(true)
            .serve_connection(
                hyper_util::rt::TokioIo::new(Box::pin(stream)),
                hyper_util::service::TowerToHyperService::new(router.clone()),
            );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            let _place = place;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => Ok(()),
        () = tokio::time::sleep(STOP_WITHIN) => {
            eprintln!("rmi-httpgateway: requests still open after {STOP_WITHIN:?}; stopping");
            Ok(())
        }
    }
}

/// How long the gateway waits, once told to stop, for the requests under way.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
