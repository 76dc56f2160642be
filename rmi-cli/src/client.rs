//! How the client tools (`rmi-nsc`, `rmi-httpgateway`) reach a name server and daemons that
//! want more than plain TCP: the flags, and the settings read from them.

use std::path::PathBuf;
use std::sync::Arc;

use rmi::naming::NsLocator;
use rmi::{ProxyBuilder, Uri};

/// The flags for a name server (and daemons) behind a shared secret, Pyro4's HMAC key or
/// TLS; flattened into a tool's own (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// The shared secret (`rmi-ns --key`, a daemon's `shared_secret`).
    #[arg(
        short = 'k',
        long,
        env = "RMI_NS_KEY",
        hide_env_values = true,
        global = true
    )]
    pub key: Option<String>,
    /// Read the shared secret from this file (a trailing newline dropped); beats RMI_NS_KEY.
    #[arg(long, value_name = "PATH", global = true)]
    pub key_file: Option<PathBuf>,
    /// Pyro4's HMAC key (`python -m Pyro4.naming -k`, `rmi-ns --hmac-key`).
    #[arg(
        long,
        env = "PYRO_HMAC_KEY",
        hide_env_values = true,
        value_name = "KEY",
        global = true
    )]
    pub hmac_key: Option<String>,
    /// Talk TLS, trusting the certificates in this file (PEM).
    #[arg(long, env = "RMI_NS_TLS_CA", value_name = "PEM", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: present this certificate (PEM; with --tls-key).
    #[arg(long, env = "RMI_NS_TLS_CLIENT_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"], global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "RMI_NS_TLS_CLIENT_KEY",
        value_name = "PEM",
        requires = "tls_cert",
        global = true
    )]
    pub tls_key: Option<PathBuf>,
}

/// What [`SecurityArgs`] ask for, read (the key file, the certificates) and checked.
#[derive(Clone, Default)]
pub struct Security {
    /// The shared secret.
    pub secret: Option<rmi::SharedSecret>,
    /// Pyro4's HMAC key.
    pub hmac_key: Option<rmi::HmacKey>,
    /// TLS.
    pub tls: Option<Arc<rmi::rustls::ClientConfig>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("secret", &self.secret.is_some())
            .field("hmac_key", &self.hmac_key.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl SecurityArgs {
    /// The command line over the environment: a secret or HMAC key from a variable is dropped
    /// when the command line gives one another way (`--key-file` beats `RMI_NS_KEY`), or it is
    /// empty (see [`Sources::keep`](crate::Sources::keep)).
    pub fn settle(&mut self, sources: &crate::Sources<'_>) {
        self.key = sources.keep("key", self.key.take(), &["key_file", "hmac_key"]);
        self.hmac_key = sources.keep("hmac_key", self.hmac_key.take(), &["key", "key_file"]);
    }

    /// Reads the files the flags name and checks them together: a secret and an HMAC key
    /// are refused together, an empty one is refused.
    pub fn read(&self) -> Result<Security, String> {
        let secret = crate::secret(self.key.as_deref(), self.key_file.as_deref())?;
        let hmac_key = crate::hmac_key(self.hmac_key.as_deref(), secret.is_some())?;
        let tls = match &self.tls_ca {
            Some(ca) => Some(crate::tls::client(
                ca,
                self.tls_cert.as_deref().zip(self.tls_key.as_deref()),
            )?),
            None => None,
        };
        Ok(Security {
            secret,
            hmac_key,
            tls,
        })
    }
}

impl Security {
    /// `locator` finding the name server with these settings.
    pub fn locator(&self, mut locator: NsLocator) -> NsLocator {
        if let Some(tls) = &self.tls {
            locator = locator.tls(tls.clone());
        }
        if let Some(secret) = &self.secret {
            locator = locator.shared_secret(secret.clone());
        }
        if let Some(key) = &self.hmac_key {
            locator = locator.hmac_key(key.clone());
        }
        locator
    }

    /// A proxy builder for `uri` with these settings (TLS over TCP only: a Unix socket's
    /// runs none, as the library's own dialing of received proxies does).
    pub fn proxy(&self, uri: Uri) -> ProxyBuilder {
        let unix = matches!(uri.location(), Some(rmi::Location::Unix(_)));
        let mut builder = rmi::Proxy::builder(uri);
        if let (Some(tls), false) = (&self.tls, unix) {
            builder = builder.tls(tls.clone());
        }
        if let Some(secret) = &self.secret {
            builder = builder.shared_secret(secret.clone());
        }
        if let Some(key) = &self.hmac_key {
            builder = builder.hmac_key(key.clone());
        }
        builder
    }
}
