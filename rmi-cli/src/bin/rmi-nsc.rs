//! `rmi-nsc`: name server control, like Pyro's `pyro5-nsc`.

use std::collections::BTreeSet;
use std::error::Error;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures_util::StreamExt;
use rmi::naming::registry::Change;
use rmi::naming::{NameServerProxy, NsLocator};
use rmi::Uri;
use rmi_cli::client::Security;

/// Control an rmi name server.
#[derive(Debug, Parser)]
#[command(
    name = "rmi-nsc",
    version,
    about = "Control an rmi name server (like pyro5-nsc)"
)]
struct Args {
    /// Name server host (default: localhost, then a broadcast to --bchost:--bcport).
    #[arg(short = 'n', long, env = "RMI_NS_HOST", global = true)]
    host: Option<String>,
    /// Name server port (given without --host, a name server a broadcast finds must be on it
    /// too).
    #[arg(
        short,
        long,
        env = "RMI_NS_PORT",
        default_value_t = 9090,
        global = true
    )]
    port: u16,
    /// Talk to a name server on this Unix domain socket (`rmi-ns -u PATH`); --host and
    /// --port are not used then (but given on the command line, they beat RMI_NS_UNIXSOCKET).
    #[arg(
        short = 'u',
        long,
        env = "RMI_NS_UNIXSOCKET",
        value_name = "PATH",
        global = true
    )]
    unixsocket: Option<PathBuf>,
    /// Where to broadcast GET_NSURI when no --host is given and nothing answers on localhost.
    #[arg(
        long,
        env = "RMI_NS_BCADDR",
        default_value = "127.255.255.255",
        global = true
    )]
    bchost: String,
    /// UDP port of that broadcast.
    #[arg(long, env = "RMI_NS_BCPORT", default_value_t = 9091, global = true)]
    bcport: u16,
    /// Do not broadcast. Before the command only: after it, pyro5-nsc takes `-x` for a tag
    /// (`setmeta NAME -x`), which here is refused, not read as this flag (that cleared the
    /// name's metadata); `setmeta NAME -- -x` sets the tag.
    #[arg(short = 'x', long)]
    nobc: bool,
    #[command(flatten)]
    security: rmi_cli::client::SecurityArgs,
    /// Print more.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Deadline of each call to the name server, as 500ms, 10s, 1m; 0 for none (`watch` has
    /// none): a name server that answered the handshake and then went silent ends the command
    /// with an error, where it would wait for ever.
    #[arg(long, default_value = "30s", value_parser = rmi_cli::parse_duration, global = true)]
    timeout: std::time::Duration,
    /// --port (or RMI_NS_PORT) was given, not defaulted.
    #[arg(skip)]
    port_given: bool,
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
    #[command(name = "yplookup_all", aliases = ["yplookup-all", "listmeta_all"])]
    YplookupAll {
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// List the names whose metadata has any of these tags.
    #[command(name = "yplookup_any", aliases = ["yplookup-any", "listmeta_any"])]
    YplookupAny {
        /// The tags.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Show the URI and metadata of a name (of a shared name, every daemon's).
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
    /// Remove a name; with a URI, only that daemon's entry of a shared name.
    Remove {
        /// The name.
        name: String,
        /// The PYRO: URI of the one shared entry to remove (the other daemons' stay).
        uri: Option<String>,
    },
    /// Remove the names matching a regular expression, after asking (as pyro5-nsc does).
    Removematching {
        /// The pattern.
        regex: String,
        /// Do not ask: remove at once (for scripts).
        #[arg(short, long)]
        yes: bool,
    },
    /// Replace the metadata of a name.
    Setmeta {
        /// The name.
        name: String,
        /// The new tags (none clears them; one that starts with `-` goes after `--`).
        tags: Vec<String>,
    },
    /// Check that the name server answers.
    Ping,
    /// Print changes to the names (all, or those starting with a prefix) as they happen, until
    /// the name server stops (exit status 0) or the connection to it is lost (exit status 1).
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

/// Prints a line on stdout, its control characters escaped (names and URIs come from the name
/// server, and may come from anyone: an escape sequence must not reach the terminal); an error
/// when stdout is gone (its reader quit), where `println!` would panic.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), "{}", printable(&format!($($arg)*))).map_err(rmi_cli::StdoutError)
    };
}

/// Prints a line already made safe for a terminal (metadata written as Python's `repr`
/// writes it, which escapes what [`printable`] would): not escaped a second time.
macro_rules! say_as_is {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(rmi_cli::StdoutError)
    };
}

/// [`printable`] line by line: a report's own lines (a hint) stay lines.
fn printable_lines(text: &str) -> String {
    text.lines().map(printable).collect::<Vec<_>>().join("\n")
}

/// `text` with its control characters escaped as Rust escapes them (`\u{1b}`, `\n`), and so
/// are the invisible characters that reorder or hide text on a terminal: bidirectional
/// overrides and isolates (the "Trojan Source" characters), zero-width characters, line and
/// paragraph separators, and the byte-order mark. A name or URI cannot then pass for another:
/// a backslash is written `\\`, so a name that holds the text `\u{200b}` does not print as one
/// that holds the character (helper-154 #6).
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| hidden(c) || c == '\\') {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if hidden(c) || c == '\\' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Whether Python's `str.isprintable` would call `c` printable, as near as std can tell
/// without Unicode's category tables: not a control or format character ([`hidden`], the soft
/// hyphen and the other format characters of the BMP's common scripts, the tag characters),
/// not white space other than a space, not private-use. (Unassigned code points, which
/// Python escapes too, go as they are.)
fn python_printable(c: char) -> bool {
    !(hidden(c)
        || (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{AD}'
                | '\u{600}'..='\u{605}'
                | '\u{6DD}'
                | '\u{70F}'
                | '\u{8E2}'
                | '\u{E000}'..='\u{F8FF}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
                | '\u{F0000}'..='\u{10FFFF}'
        ))
}

/// Whether `c` is a control character, or a format character that changes how the text
/// around it shows without showing itself.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

fn tags(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

/// Entries as pyro5-nsc prints them, so that scripts written for it read them: between
/// `--------START LIST {title}` and `--------END LIST {title}`, a `name --> uri` line each, and
/// under one with metadata `    metadata: {'a', 'b'}`.
fn show(
    title: &str,
    entries: impl IntoIterator<Item = (String, Uri, BTreeSet<String>)>,
) -> Result<(), rmi_cli::StdoutError> {
    // (The title is the user's own prefix or pattern, written as given, as pyro5-nsc writes
    // it: not escaped as what comes from the name server is.)
    let frame = |edge: &str| {
        writeln!(std::io::stdout(), "--------{edge} LIST {title}").map_err(rmi_cli::StdoutError)
    };
    frame("START")?;
    for (name, uri, metadata) in entries {
        say!("{name} --> {uri}")?;
        if !metadata.is_empty() {
            say_as_is!("    metadata: {}", py_set(&metadata))?;
        }
    }
    frame("END")
}

/// Metadata as Python prints a set of str, `{'a', 'b'}` (sorted: Python's order is its hash's).
fn py_set(metadata: &BTreeSet<String>) -> String {
    let tags: Vec<String> = metadata.iter().map(|t| py_str(t)).collect();
    format!("{{{}}}", tags.join(", "))
}

/// A str as Python's `repr` writes it: in single quotes, unless it holds one and no double;
/// a backslash and that quote escaped, and what does not print ([`python_printable`]) as
/// `\n`, `\xNN`, `\uNNNN`, so what reaches the terminal is safe.
fn py_str(text: &str) -> String {
    use std::fmt::Write as _;
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if !python_printable(c) => {
                let _ = match u32::from(c) {
                    n @ ..=0xff => write!(out, "\\x{n:02x}"),
                    n @ ..=0xffff => write!(out, "\\u{n:04x}"),
                    n => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Asks on stderr and reads the answer from stdin; true for `y` or `yes`.
async fn confirm(question: String) -> std::io::Result<bool> {
    tokio::task::spawn_blocking(move || {
        eprint!("{} (y/n) ", printable(&question));
        let mut answer = String::new();
        let stdin = std::io::stdin();
        stdin.read_line(&mut answer)?;
        if !stdin.is_terminal() {
            // The answer was not typed, so nothing ended the question's line.
            eprintln!();
        }
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn run(ns: &NameServerProxy, command: Command, verbose: bool) -> Result<(), Box<dyn Error>> {
    if verbose {
        // (On stderr: were stdout's reader gone, its broken pipe, taken for the end of the
        // output, would end the command unrun with success; helper-154 #7.)
        eprintln!("{}", printable(&format!("Name server found: {}", ns.uri())));
    }
    // (Titles and words as pyro5-nsc's: its users' scripts look for them.)
    match command {
        // Every entry: a shared name once per daemon, not one of them picked.
        Command::List { prefix: None } => show("", ns.list_entries(None, None).await?)?,
        Command::List { prefix: Some(p) } => show(
            &format!("- prefix '{p}'"),
            ns.list_entries(Some(&p), None).await?,
        )?,
        Command::Listmatching { regex } => show(
            &format!("- regex '{regex}'"),
            ns.list_entries(None, Some(&regex)).await?,
        )?,
        Command::YplookupAll { tags } => show(
            " - searched by metadata",
            ns.yplookup_entries(Some(tags.into_iter().collect()), None)
                .await?,
        )?,
        Command::YplookupAny { tags } => show(
            " - searched by metadata",
            ns.yplookup_entries(None, Some(tags.into_iter().collect()))
                .await?,
        )?,
        Command::Lookup { name } => {
            // (Of a Python name server, which has no shared names, its one entry.)
            let entries = ns.lookup_all(&name).await?;
            if let [(uri, meta)] = &entries[..] {
                say!("{uri}")?;
                if !meta.is_empty() {
                    say_as_is!("metadata: {}", py_set(meta))?;
                }
            } else {
                // A shared name: one line a daemon.
                for (uri, meta) in entries {
                    match meta.is_empty() {
                        true => say!("{uri}")?,
                        false => say_as_is!(
                            "{}  metadata: {}",
                            printable(&uri.to_string()),
                            py_set(&meta)
                        )?,
                    }
                }
            }
        }
        Command::Register {
            name,
            uri,
            shared: false,
        } => {
            let uri: Uri = uri.parse()?;
            ns.register_with(&name, &uri, true, BTreeSet::new()).await?;
            say!("Registered {name}")?;
        }
        Command::Register {
            name,
            uri,
            shared: true,
        } => {
            let uri: Uri = uri.parse()?;
            ns.register_shared(&name, &uri, BTreeSet::new()).await?;
            say!("Registered {name} (shared)")?;
        }
        Command::Watch { prefix } => {
            let mut changes = ns.watch(prefix.as_deref()).await?;
            match &prefix {
                Some(p) => say!("watching names starting with {p}")?,
                None => say!("watching all names")?,
            }
            while let Some(change) = changes.next().await {
                match change {
                    Ok(change) => say!("{}", describe(&change))?,
                    // The name server crashed, was killed, or the network between went:
                    // a script waiting on us must not take that for a clean stop. (A name
                    // server stopped in the moment between two pulls, right after a change,
                    // closes the connection too, and is reported so: the one case that
                    // cannot be told apart from a crash without a protocol change.)
                    Err(e) if e.is_connection() => {
                        return Err(format!(
                            "lost the name server while watching ({e}); changes after this \
                             were not seen"
                        )
                        .into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            say!("the name server stopped")?;
        }
        Command::Remove {
            name,
            uri: Some(uri),
        } => {
            let uri: Uri = uri.parse()?;
            if ns.remove_shared(&name, &uri).await? {
                say!("Removed {uri} from {name}")?;
            } else if ns
                .lookup_all(&name)
                .await
                .is_ok_and(|all| all.iter().any(|(u, _)| *u == uri))
            {
                // There, but not as a shared entry (which `remove_shared` would have taken):
                // registered plainly. The user meant to remove it: say how, and fail.
                return Err(format!(
                    "{name} is registered plainly, not shared: nothing removed (`rmi-nsc \
                     remove {name}` removes it)"
                )
                .into());
            } else {
                say!("Nothing removed: {name} has no shared entry for {uri}")?;
            }
        }
        Command::Remove { name, uri: None } => {
            let removed = ns.remove(&name).await?;
            if removed {
                say!("Removed {name}")?;
            } else if name == rmi::naming::NAME_SERVER_NAME {
                say!("Nothing removed: {name} is the name server's own entry")?;
            } else {
                say!("Nothing removed")?;
            }
        }
        Command::Removematching { regex, yes } => {
            // An empty pattern lists every name but removes none (Pyro's `remove` takes an
            // empty regex for none given): asking would remove all, `--yes` nothing. Say so
            // instead (helper-154 #3).
            if regex.is_empty() {
                return Err("removematching needs a pattern: '.*' matches every name".into());
            }
            // Asked first: the names the answer was about, and no other (one registered while
            // the question waited matches too, and was never shown).
            let mut confirmed = None;
            if !yes {
                // The name server's own entry is never removed: not asked about either.
                let names: Vec<String> = ns
                    .list_regex(&regex)
                    .await?
                    .into_keys()
                    .filter(|n| n != rmi::naming::NAME_SERVER_NAME)
                    .collect();
                if names.is_empty() {
                    say!("0 items removed.")?;
                    return Ok(());
                }
                let question = format!(
                    "Remove {} name{} matching {regex}: {}?",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                );
                if !confirm(question).await? {
                    return Err(
                        "nothing removed: not confirmed (--yes removes without asking)".into(),
                    );
                }
                confirmed = Some(names);
            }
            // The count is of entries: a shared name counts once per daemon.
            let removed = match confirmed {
                None => ns.remove_regex(&regex).await?,
                Some(names) => {
                    // By name: a regex per name made the name server compile it and scan
                    // every name for each, and a long name's escaped pattern could pass
                    // `max_regex_len`, stopping the removal half done (helper-154 #1).
                    let mut removed = 0;
                    for name in names {
                        removed += ns.api().remove(Some(name), None, None).await?;
                    }
                    removed
                }
            };
            say!("{removed} items removed.")?;
        }
        Command::Setmeta { name, tags: t } => {
            ns.set_metadata(&name, tags(&t)).await?;
            match t.is_empty() {
                true => say!("Metadata cleared")?,
                false => say!("Metadata updated")?,
            }
        }
        Command::Ping => {
            ns.ping().await?;
            say!("Name server ping ok.")?;
        }
    }
    Ok(())
}

/// Finds the name server as the flags say: a Unix socket, a host, or localhost then the
/// broadcast; over TLS and with a shared secret or an HMAC key if given.
async fn connect(args: &Args, security: Security) -> Result<NameServerProxy, rmi::Error> {
    if let Some(path) = &args.unixsocket {
        let uri = Uri::Pyro {
            object: rmi::naming::NAME_SERVER_OBJECT_ID.into(),
            location: rmi::Location::Unix(path.to_string_lossy().into_owned()),
        };
        // No TLS over a Unix socket (`parse` leaves none with `-u`).
        let builder = security.proxy(uri);
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
    let ns = security.locator(locator).locate().await?;
    rmi_cli::found_where_asked(ns.uri(), args.port, args.port_given, args.host.is_some())?;
    Ok(ns)
}

/// The flags, with the command line beating the environment (see [`rmi_cli::Sources`]).
fn parse() -> Args {
    let matches = rmi_cli::environment(Args::command()).get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sources = rmi_cli::Sources(&matches);
    args.port_given = matches!(
        matches.value_source("port"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    );
    args.host = sources.keep("host", args.host.take(), &[]);
    args.unixsocket = sources.keep(
        "unixsocket",
        args.unixsocket.take(),
        &["host", "port", "tls_ca"],
    );
    args.security.settle(&sources);
    // A Unix socket runs no TLS: the variable is for TCP name servers.
    let tls_ca = args.security.tls_ca.take();
    args.security.tls_ca = sources.keep("tls_ca", tls_ca, &["unixsocket"]);
    if args.unixsocket.is_some() && args.security.tls_ca.is_some() {
        if sources.on_command_line("unixsocket") && sources.on_command_line("tls_ca") {
            let mut cmd = Args::command();
            cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tls-ca is for a name server over TCP: a Unix socket (-u) runs no TLS",
            )
            .exit();
        }
        // Both from the environment: the socket, without TLS.
        args.security.tls_ca = None;
    }
    args
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = parse();
    let settings = match args.security.read() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("rmi-nsc: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ns = match connect(&args, settings).await {
        // (A watch waits for changes as long as they take.)
        Ok(ns) if !args.timeout.is_zero() && !matches!(args.command, Command::Watch { .. }) => {
            NameServerProxy::from_proxy(ns.api().proxy().with_timeout(args.timeout))
        }
        Ok(ns) => ns,
        Err(e) => {
            let text = rmi_cli::report(&e, None);
            // It answered, and refused us (said so directly, or inside the locator's account
            // of where it looked).
            let lower = text.to_ascii_lowercase();
            let refused = matches!(e.cause(), rmi::Error::ConnectFailed(_))
                || lower.contains("connection refused by daemon")
                || lower.contains("certificate")
                || lower.contains("fatal alert");
            let hint = if refused {
                "\nhint: the name server refused the connection: check --key (or --key-file, \
                 or --hmac-key) and --tls-ca (and --tls-cert) against its settings"
                    .to_owned()
            } else if text.contains("pass the host and port") {
                // Our own error says what to do.
                String::new()
            } else {
                // The locator's own error may ask already.
                let ask = if text.contains("is rmi-ns running?") {
                    ""
                } else {
                    "is rmi-ns running? "
                };
                format!(
                    "\nhint: {ask}Start it with `rmi-ns`, or pass its --host and --port (or -u \
                     PATH), and --key or --tls-ca if it needs them"
                )
            };
            eprintln!("rmi-nsc: {}{hint}", printable_lines(&text));
            return ExitCode::FAILURE;
        }
    };
    match run(&ns, args.command, args.verbose).await {
        Ok(()) => ExitCode::SUCCESS,
        // Our reader quit (`rmi-nsc watch | head -1`): stop quietly, as on SIGPIPE.
        Err(e) if rmi_cli::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            let report = rmi_cli::report(e.as_ref(), None);
            eprintln!("rmi-nsc: {}", printable_lines(&report));
            ExitCode::FAILURE
        }
    }
}
