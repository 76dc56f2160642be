//! Command-line tools of [rmi](https://docs.rs/rmi): `rmi-ns`, the name server (like
//! `python -m Pyro4.naming`), `rmi-nsc`, its control tool (like `pyro5-nsc`), and
//! `rmi-httpgateway`, remote objects over HTTP and JSON (like `pyro5-httpgateway`).
//!
//! `cargo install rmi-cli` installs them. They live in a package of their own so that library
//! users never compile clap, tracing-subscriber or an HTTP server. This library holds what
//! they share, and the gateway's service ([`gateway::Gateway`]), to serve from a program of
//! one's own.

use std::error::Error;

pub mod client;
pub mod gateway;

/// An error for people: the message with its causes (`message: cause: cause`), then a hint
/// on its own line if given.
///
/// ```
/// let err = std::io::Error::other("connection refused");
/// let text = rmi_cli::report(&err, Some("is rmi-ns running?"));
/// assert_eq!(text, "connection refused\nhint: is rmi-ns running?");
/// ```
pub fn report(err: &(dyn Error + 'static), hint: Option<&str>) -> String {
    let text = rmi::error::Report(err).to_string();
    match hint {
        Some(hint) => format!("{text}\nhint: {hint}"),
        None => text,
    }
}

/// Checks the name server a locator found against the port asked for: nothing answered on
/// localhost at the port given, and the broadcast found a name server elsewhere. On another
/// port it is another name server, not the one asked for (every rmi-ns on a host answers the
/// default broadcast port); a name server on that port of another host is taken, as Pyro's
/// broadcast finds it. `port_given`: the port came from the command line or the environment;
/// `host_given`: so did a host.
pub fn found_where_asked(
    found: &rmi::Uri,
    port: u16,
    port_given: bool,
    host_given: bool,
) -> Result<(), rmi::Error> {
    let at = match found.location() {
        Some(rmi::Location::Tcp { port, .. }) => Some(*port),
        _ => None,
    };
    if port_given && !host_given && at != Some(port) {
        return Err(rmi::Error::Resolve(format!(
            "no name server on 127.0.0.1:{port}, and the broadcast found {found}, which is not \
             on port {port}: pass the host and port to talk to it, or leave the port out"
        )));
    }
    Ok(())
}

/// A duration as the tools take it: a number and a unit, `ms`, `s`, `m`, `h` or `d` (a bare
/// number is seconds; decimals are allowed).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(rmi_cli::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(rmi_cli::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(rmi_cli::parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert_eq!(rmi_cli::parse_duration("1d"), Ok(Duration::from_secs(86_400)));
/// assert!(rmi_cli::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} is not a duration (e.g. 500ms, 6s, 1h)"));
    }
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m, h or d (e.g. 500ms, 6s)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 6s, 1h)"))?;
    std::time::Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// A size in bytes as the tools take it: a number, optionally with `KiB`, `MiB` or `GiB`
/// (`K`, `M`, `G` alike; powers of 1,024).
///
/// ```
/// assert_eq!(rmi_cli::parse_size("4096"), Ok(4096));
/// assert_eq!(rmi_cli::parse_size("8MiB"), Ok(8 << 20));
/// assert_eq!(rmi_cli::parse_size("64k"), Ok(64 << 10));
/// assert!(rmi_cli::parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size: a number of bytes, optionally with KiB, MiB or GiB"
            ))
        }
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4096, 64KiB, 8MiB)"))?;
    value
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The shared secret from `--key` or `--key-file` (the file's bytes, a trailing newline
/// dropped). An empty secret is refused: it cannot be what was meant.
///
/// ```
/// assert!(rmi_cli::secret(None, None).unwrap().is_none());
/// assert!(rmi_cli::secret(Some("s3cret"), None).unwrap().is_some());
/// assert!(rmi_cli::secret(Some(""), None).is_err());
/// ```
pub fn secret(
    key: Option<&str>,
    key_file: Option<&std::path::Path>,
) -> Result<Option<rmi::SharedSecret>, String> {
    match (key, key_file) {
        (Some(_), Some(_)) => Err("give the shared secret once: --key or --key-file".into()),
        (Some(""), None) => Err("the shared secret (--key or RMI_NS_KEY) is empty".into()),
        (Some(key), None) => Ok(Some(rmi::SharedSecret::new(key))),
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
            Ok(Some(rmi::SharedSecret::new(bytes)))
        }
        (None, None) => Ok(None),
    }
}

/// Pyro4's HMAC key from `--hmac-key` (or `PYRO_HMAC_KEY`), refused with a shared secret
/// (`--key`, `--key-file`): both sign in the `HMAC` annotation.
pub fn hmac_key(key: Option<&str>, secret: bool) -> Result<Option<rmi::HmacKey>, String> {
    match key {
        Some(_) if secret => Err(
            "give --hmac-key (Pyro4's HMAC key) or --key/--key-file (the shared secret), not both"
                .into(),
        ),
        Some("") => Err("the HMAC key (--hmac-key or PYRO_HMAC_KEY) is empty".into()),
        Some(key) => Ok(Some(rmi::HmacKey::new(key))),
        None => Ok(None),
    }
}

/// Pyro's environment variables for the settings the tools read as `RMI_*`, beyond the
/// locator's ([`rmi::naming::PYRO_ENV`]): where the `RMI_*` one is unset (or empty), the Pyro
/// one is read, so a shell set up for Pyro (`export PYRO_NS_HOST=…`) works as it is.
pub const PYRO_ENV: &[(&str, &str)] = &[("RMI_NS_AUTOCLEAN", "PYRO_NS_AUTOCLEAN")];

/// `command` reading the environment as the tools document it:
/// - a variable set but empty is taken off its option: `RMI_NS_PORT= rmi-ns` runs as without
///   the variable (clap would read the empty value, and a port or a path refuses it), as
///   Pyro's configuration takes an empty setting;
/// - an option whose `RMI_*` variable is unset or empty reads Pyro's name for it instead
///   ([`rmi::naming::PYRO_ENV`], [`PYRO_ENV`]), when that is set and not empty.
pub fn environment(mut command: clap::Command) -> clap::Command {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let changes: Vec<(clap::Id, Option<&'static str>)> = command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_str()?;
            if set(name).is_some() {
                return None;
            }
            let pyro = rmi::naming::PYRO_ENV
                .iter()
                .chain(PYRO_ENV)
                .find(|(ours, _)| *ours == name)
                .map(|(_, pyro)| *pyro)
                .filter(|pyro| set(pyro).is_some());
            let empty = std::env::var_os(name).is_some();
            (pyro.is_some() || empty).then(|| (arg.get_id().clone(), pyro))
        })
        .collect();
    for (id, pyro) in changes {
        command = command.mut_arg(id, |arg| arg.env(pyro));
    }
    command
}

/// Command-line flags over the environment: an option set by an `RMI_NS_*` variable is
/// dropped when it is empty (`RMI_NS_KEY= rmi-ns` unsets it, as in Pyro's configuration), or
/// when a flag given on the command line stands for the same thing (`-n HOST` beats
/// `RMI_NS_UNIXSOCKET`, `--key-file` beats `RMI_NS_KEY`).
#[derive(Debug)]
pub struct Sources<'a>(pub &'a clap::ArgMatches);

impl Sources<'_> {
    /// True when the option `id` was given on the command line.
    pub fn on_command_line(&self, id: &str) -> bool {
        self.0.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    }

    /// `value`, unless it came from the environment and is empty, or came from the environment
    /// while one of `overridden_by` is on the command line.
    pub fn keep<T: AsRef<std::ffi::OsStr>>(
        &self,
        id: &str,
        value: Option<T>,
        overridden_by: &[&str],
    ) -> Option<T> {
        let value = value?;
        if self.0.value_source(id) != Some(clap::parser::ValueSource::EnvVariable) {
            return Some(value);
        }
        let empty = value.as_ref().is_empty();
        let overridden = overridden_by.iter().any(|o| self.on_command_line(o));
        (!empty && !overridden).then_some(value)
    }
}

/// A write to stdout that failed; what [`is_broken_pipe`] looks for.
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl Error for StdoutError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// True when `err` is, or was caused by, the reader of our stdout going away (`rmi-nsc watch
/// | head -1`): then the tools stop quietly, as Unix tools do on SIGPIPE. Only a
/// [`StdoutError`] counts: a socket's broken pipe (the name server went away while a request
/// was written) is a failure like any other.
pub fn is_broken_pipe(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(out) = e.downcast_ref::<StdoutError>() {
            return out.0.kind() == std::io::ErrorKind::BrokenPipe;
        }
        next = e.source();
    }
    false
}

/// TLS configurations from PEM files, for `rmi-ns` (server) and `rmi-nsc` (client).
pub mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rmi::rustls::pki_types::pem::PemObject;
    use rmi::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rmi::rustls::{ClientConfig, RootCertStore, ServerConfig};

    fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "no PEM certificate in the {what} {}",
                path.display()
            ));
        }
        Ok(certs)
    }

    /// The key in `path`, PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`), unencrypted. An encrypted key, or a file with none of these, is
    /// said to be one (the PEM reader's own word was "no items found"; helper-152 #2).
    fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_file(path).map_err(|e| {
            let text = std::fs::read(path).unwrap_or_default();
            let has = |label: &[u8]| text.windows(label.len()).any(|w| w == label);
            let why = if has(b"ENCRYPTED") {
                "it is encrypted: decrypt it first (`openssl pkey -in KEY -out KEY.plain`)"
                    .to_owned()
            } else if has(b"-----BEGIN CERTIFICATE-----") && !has(b"PRIVATE KEY-----") {
                "it holds a certificate, not a key".to_owned()
            } else {
                e.to_string()
            };
            format!(
                "cannot read the private key {}: {why} (a PEM key, PKCS#8, PKCS#1 or SEC1, \
                 unencrypted, is wanted)",
                path.display()
            )
        })
    }

    fn roots(path: &Path, what: &str) -> Result<Arc<RootCertStore>, String> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(path, what)? {
            roots
                .add(cert)
                .map_err(|e| format!("bad certificate in the {what} {}: {e}", path.display()))?;
        }
        Ok(Arc::new(roots))
    }

    /// A server configuration: its certificate chain and key and, with `client_ca`, mutual TLS
    /// (clients must present a certificate signed by one of those).
    pub fn server(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder();
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                rmi::rustls::server::WebPkiClientVerifier::builder(roots(ca, "client CA file")?)
                    .build()
                    .map_err(|e| format!("client CA file {}: {e}", ca.display()))?,
            ),
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certificates(cert, "certificate file")?, private_key(key)?)
            .map_err(|e| {
                format!(
                    "the certificate {} and key {} do not make a TLS identity: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        Ok(Arc::new(config))
    }

    /// A client configuration trusting the certificates in `ca` and, with `identity` (a
    /// certificate and its key), presenting it for mutual TLS.
    pub fn client(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Arc<ClientConfig>, String> {
        let builder = ClientConfig::builder().with_root_certificates(roots(ca, "CA file")?);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert, "certificate file")?, private_key(key)?)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod broken_pipe_tests {
    use super::*;

    /// Only stdout's broken pipe is the reader going away; a socket's, inside an rmi error (a
    /// name server that went away while a request was written), is a failure to report.
    #[test]
    fn only_a_broken_stdout_counts_as_the_reader_gone() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let stdout: Box<dyn Error> = Box::new(StdoutError(pipe()));
        assert!(is_broken_pipe(stdout.as_ref()));
        let other: Box<dyn Error> = Box::new(StdoutError(std::io::Error::other("disk full")));
        assert!(!is_broken_pipe(other.as_ref()));
        let socket = rmi::Error::Io {
            context: "writing a request".into(),
            source: pipe(),
        };
        assert!(!is_broken_pipe(&socket));
        let unsent = rmi::Error::NotSent(Box::new(rmi::Error::Io {
            context: "writing a request".into(),
            source: pipe(),
        }));
        assert!(!is_broken_pipe(&unsent));
    }
}
