//! [`ServeSimple`]: Pyro's `Daemon.serveSimple` (Pyro5's `serve`), objects served and named in
//! one statement.

use std::future::Future;

use rmi_core::{Daemon, Dispatch, Error, Registration, Uri};

use crate::{LeasedNames, NsLocator, DEFAULT_LEASE_TTL};

/// Pyro's `Daemon.serveSimple` (Pyro5's `serve`): registers objects in a daemon and, under
/// the names given, in the name server, prints their URIs, serves until `shutdown`, then
/// removes the names (Pyro's leaves them).
///
/// As Pyro's: the daemon binds `127.0.0.1` on a free port unless given one
/// ([`daemon`](Self::daemon)) or told where ([`host`](Self::host), [`port`](Self::port));
/// the name server is found as [`NsLocator::new`] finds it unless told
/// ([`name_server`](Self::name_server)), and without one
/// ([`without_name_server`](Self::without_name_server)) each name is its object's id. Unlike
/// Pyro's, the names are held by a lease ([`NameServerProxy::lease`](crate::NameServerProxy::lease)):
/// kept alive while the daemon serves, registered again if the name server restarts, gone if
/// the process dies, and removed when it stops. (A name server without leases, Pyro's own,
/// gets them registered plainly: they are removed at the stop, but outlive a process that
/// dies.)
///
/// ```no_run
/// # async fn run(
/// #     greeter: impl rmi_core::Dispatch,
/// #     stop: tokio::sync::oneshot::Receiver<()>,
/// # ) -> Result<(), rmi_core::Error> {
/// // Until `stop` (`tokio::signal::ctrl_c()` in a program: Pyro's loop ends on Ctrl-C).
/// rmi_naming::ServeSimple::new()
///     .object(greeter, "example.greeting")
///     .run_until(async {
///         stop.await.ok();
///     })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct ServeSimple {
    objects: Vec<(Registration, Option<String>)>,
    daemon: Option<Daemon>,
    host: String,
    port: u16,
    locator: Option<NsLocator>,
    verbose: bool,
}

impl Default for ServeSimple {
    fn default() -> Self {
        Self::new()
    }
}

impl ServeSimple {
    /// Nothing to serve yet, on `127.0.0.1` and a free port, with the name server
    /// [`NsLocator::new`] finds, printing what it does.
    pub fn new() -> Self {
        ServeSimple {
            objects: Vec::new(),
            daemon: None,
            host: rmi_core::daemon::DEFAULT_HOST.to_owned(),
            port: 0,
            locator: Some(NsLocator::new()),
            verbose: true,
        }
    }

    /// Serves `object`, named `name` in the name server (without one, `name` is its id); an
    /// empty name is no name, as in Pyro.
    pub fn object(self, object: impl Dispatch, name: impl Into<String>) -> Self {
        let name = name.into();
        let name = (!name.is_empty()).then_some(name);
        self.registration(Registration::instance(object), name)
    }

    /// Serves `object` under an id of the daemon's choosing, with no name (Pyro's
    /// `{obj: None}`).
    pub fn unnamed(self, object: impl Dispatch) -> Self {
        self.registration(Registration::instance(object), None)
    }

    /// Serves a registration (a factory of per-connection or per-call instances, say), named
    /// `name` if given.
    pub fn registration(mut self, registration: Registration, name: Option<String>) -> Self {
        self.objects.push((registration, name));
        self
    }

    /// Serves on `daemon` (Pyro's `daemon=`) rather than one bound here; it is shut down when
    /// serving ends.
    pub fn daemon(mut self, daemon: Daemon) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// The host the daemon binds (default `127.0.0.1`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The port the daemon binds (default 0: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Finds the name server with `locator`.
    pub fn name_server(mut self, locator: NsLocator) -> Self {
        self.locator = Some(locator);
        self
    }

    /// Uses no name server (Pyro's `ns=False`): each name is its object's id in the daemon.
    pub fn without_name_server(mut self) -> Self {
        self.locator = None;
        self
    }

    /// Prints nothing (Pyro's `verbose=False`).
    pub fn quiet(mut self) -> Self {
        self.verbose = false;
        self
    }

    /// Registers the objects and their names, serves until `shutdown` completes, then removes
    /// the names (while the daemon still answers, so nobody who looked one up meanwhile is
    /// refused) and shuts the daemon down gracefully: calls still running get its grace
    /// period, and this returns once they are done. A failure to bind, to find the name
    /// server or to register a name is returned before anything is served, with the names
    /// registered so far removed and a daemon bound here shut down. `shutdown` completing
    /// before serving starts (a Ctrl-C while the name server is being found) stops the setup
    /// the same way, and returns `Ok`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let (daemon, owned) = match self.daemon {
            Some(daemon) => (daemon, false),
            None => (Daemon::bind((self.host.as_str(), self.port)).await?, true),
        };
        // A daemon bound here is shut down when this ends before serving.
        let unbind = || {
            if owned {
                daemon.shutdown();
            }
        };
        tokio::pin!(shutdown);
        let mut names = None;
        let setup = async {
            if let Some(locator) = &self.locator {
                let ns = locator.locate().await?;
                names = Some(ns.lease(DEFAULT_LEASE_TTL).await?);
            }
            register(&daemon, self.objects, names.as_ref(), self.verbose).await
        };
        let set_up = tokio::select! {
            // A setup that ends in the same turn as the stop is taken as ended: its error is
            // not lost, and without a name server a stop already given still serves nothing.
            biased;
            set_up = setup => set_up.map(|()| true),
            // Stopped before serving: what is set up so far is taken down as on a failure, and
            // the daemon shut down as at the end of serving.
            () = &mut shutdown => Ok(false),
        };
        match set_up {
            Ok(true) => {}
            Ok(false) => {
                remove(names).await;
                daemon.shutdown();
                return Ok(());
            }
            Err(e) => {
                remove(names).await;
                unbind();
                return Err(e);
            }
        }
        if self.verbose {
            say(format_args!("Pyro daemon running."));
        }
        let serving = daemon.serve();
        tokio::pin!(serving);
        tokio::select! {
            // The daemon stopped by itself (shut down elsewhere, or already served).
            served = &mut serving => {
                remove(names).await;
                served
            }
            () = shutdown => {
                // The names first, while the daemon still answers: it goes on accepting and
                // serving while they go (a slow name server can take `REMOVE_WITHIN`), so a
                // client that looked a name up meanwhile is served. Then the daemon, whose
                // running calls get its grace period.
                let removing = remove(names);
                tokio::pin!(removing);
                tokio::select! {
                    () = &mut removing => {
                        daemon.shutdown();
                        serving.await
                    }
                    // (Stopped elsewhere meanwhile.)
                    served = &mut serving => {
                        removing.await;
                        served
                    }
                }
            }
        }
    }
}

/// Prints a line of the verbose report; a reader gone (`| head -1`, a closed pipe) loses the
/// rest of it, where `println!` would panic and take the server down.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// How long removing the names may take at the end before they are left to their lease.
const REMOVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Removes `names`, if any, within [`REMOVE_WITHIN`].
async fn remove(names: Option<LeasedNames>) {
    let Some(names) = names else {
        return;
    };
    match tokio::time::timeout(REMOVE_WITHIN, names.revoke()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove the names"),
        Err(_) => tracing::warn!("the name server did not remove the names in time"),
    }
}

/// Registers `objects` in `daemon` and their names through `names` (without a name server,
/// each name is its object's id, as in Pyro), printing them if `verbose`.
async fn register(
    daemon: &Daemon,
    objects: Vec<(Registration, Option<String>)>,
    names: Option<&LeasedNames>,
    verbose: bool,
) -> Result<(), Error> {
    for (registration, name) in objects {
        let registration = match (&name, names) {
            (Some(name), None) => registration.id(name.clone()),
            _ => registration,
        };
        let uri: Uri = daemon.register_entry(registration)?;
        if verbose {
            say(format_args!(
                "Object {}:\n    uri = {uri}",
                uri.object().unwrap_or_default()
            ));
        }
        if let (Some(name), Some(names)) = (&name, names) {
            names.register(name, &uri).await?;
            if verbose {
                say(format_args!("    name = {name}"));
            }
        }
    }
    Ok(())
}
