//! The HTTP gateway (`rmi-httpgateway`, Pyro's `pyro5-httpgateway`): remote objects called
//! over HTTP with JSON results, for browsers, `curl` and anything else without a Pyro client.
//!
//! `GET` (or `POST`) `/pyro/<name>/<method>?param=value&…` looks `name` up in the name server
//! and calls `method` with the query's parameters as keyword arguments (strings, as Pyro's
//! gateway passes them; a parameter given twice is a list), under Pyro's JSON serializer. The
//! answer is the result as JSON (`200`), or the exception as Pyro's JSON form of it
//! (`{"__class__": …, "__exception__": true, "args": […], "attributes": {…}}`, `500`).
//! `/pyro/<name>/$meta` answers the object's methods and attributes; a name of an attribute
//! (a property) reads it. As in Pyro:
//!
//! - only names matching the expose pattern (default `http\.`, matched from the name's
//!   start) can be reached: `403` otherwise;
//! - with a gateway key, every request must carry it (header `X-Pyro-Gateway-Key`, or
//!   parameter `$key`; the header wins when both are given): `403` otherwise (unlike Pyro's,
//!   the index page asks for it too);
//! - header `X-Pyro-Options: oneway` (or a method the object declares oneway) sends the call
//!   oneway and answers `200` with no body at once;
//! - header `X-Pyro-Correlation-Id` gives the call's correlation id (one that is no UUID is a
//!   `400`), and the answer of every call made says it in the same header;
//! - with a CORS origin, every answer carries `Access-Control-Allow-*` headers (the `X-Pyro-*`
//!   headers allowed, the correlation id exposed), and `OPTIONS` answers a preflight;
//! - `/pyro/` is a page listing the exposed names (ten at most) with their methods;
//! - parameters with an empty value are left out, as Python's `parse_qs` leaves them.
//!
//! As Pyro's, each request makes its own connection to the object, so an object with an
//! instance per connection (Pyro's `session` mode, `InstanceMode::Session`) sees every request
//! as a new client, and no request waits behind another's call; the name server connection is
//! kept. A request gets the gateway's timeout as a whole: the lookup, the connect and the call.
//! At most [`DEFAULT_MAX_CALLS`] requests (see [`Gateway::max_calls`]) are under way at once,
//! each holding a connection to a daemon; one more is answered `503` with `Retry-After` at
//! once, rather than let a burst of clients open a connection each until the gateway runs out
//! of file descriptors and can accept no one. A request runs in a task of its own, which keeps
//! its place until its call ends even when its client hangs up: the daemon runs the call on.
//!
//! A result, or an exception the method raised, is the daemon's JSON as it wrote it, passed
//! on unchanged as Pyro's gateway passes it (integers of any size, an exception's arguments
//! and attributes, its `_pyroTraceback` included), from rmi and Python daemons alike
//! ([`Proxy::call_raw_kwargs`](rmi::Proxy::call_raw_kwargs)). As with Pyro's, a float that is
//! NaN or infinite is written `NaN`, `Infinity`, as Python's `json` writes them, which
//! JavaScript's `JSON.parse` refuses. An rmi daemon's exception gets its own class and message
//! back (see `rmi_exception`). Errors of the gateway's own (the name unknown, the daemon
//! unreachable, the timeout) are Pyro's JSON exception form too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri as HttpUri};
use axum::response::{IntoResponse, Response};
use rmi::naming::NameServerProxy;
use rmi::{Error, Proxy, Serializer, Uri};
use serde_json::{json, Value};

/// The least time between two searches for a name server that does not answer (see
/// [`Gateway::relocate`]).
pub const RELOCATE_EVERY: Duration = Duration::from_secs(2);

/// How a gateway finds its name server again.
#[derive(Debug)]
struct Relocate {
    locator: rmi::naming::NsLocator,
    /// Only a name server on this port is taken (see [`Gateway::name_server_port`]).
    port: Option<u16>,
    /// When it last looked.
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The expose pattern by default, as Pyro's: names starting with `http.`.
pub const DEFAULT_EXPOSE: &str = r"http\.";

/// How long a request through the gateway may take by default (lookup, connect and call).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many requests the gateway serves at once by default (see [`Gateway::max_calls`]).
pub const DEFAULT_MAX_CALLS: usize = 256;

/// Header carrying the gateway key.
pub const KEY_HEADER: &str = "x-pyro-gateway-key";
/// Header asking for call options (`oneway`).
pub const OPTIONS_HEADER: &str = "x-pyro-options";
/// Header carrying a call's correlation id, both ways.
pub const CORRELATION_HEADER: &str = "x-pyro-correlation-id";

/// The gateway's settings and what it keeps between requests; [`Gateway::router`] serves it.
pub struct Gateway {
    /// The name server, as last found.
    names: std::sync::RwLock<NameServerProxy>,
    /// How to find it again when it does not answer (see [`Gateway::relocate`]).
    relocate: Option<Relocate>,
    expose: regex::Regex,
    key: Option<String>,
    cors: Option<HeaderValue>,
    /// None: no limit.
    timeout: Option<Duration>,
    security: crate::client::Security,
    /// The requests under way (None: no limit).
    calls: Option<Arc<tokio::sync::Semaphore>>,
    max_calls: usize,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("name_server", self.names().uri())
            .field("expose", &self.expose.as_str())
            .field("key", &self.key.is_some())
            .field("cors", &self.cors)
            .field("timeout", &self.timeout)
            .field("security", &self.security)
            .field("max_calls", &self.max_calls)
            .finish()
    }
}

impl Gateway {
    /// A gateway to the names of `names`, with Pyro's defaults: names matching
    /// [`DEFAULT_EXPOSE`], no gateway key, no CORS headers, calls of at most
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(names: NameServerProxy) -> Self {
        Gateway {
            names: std::sync::RwLock::new(names),
            relocate: None,
            expose: anchored(DEFAULT_EXPOSE).expect("the default pattern compiles"),
            key: None,
            cors: None,
            timeout: Some(DEFAULT_TIMEOUT),
            security: crate::client::Security::default(),
            calls: Some(Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CALLS))),
            max_calls: DEFAULT_MAX_CALLS,
        }
    }

    /// Looks for the name server again with `locator` (its broadcast included) when it does not
    /// answer, at most once every [`RELOCATE_EVERY`], as Pyro's gateway locates it at each
    /// request until it answers: a gateway started before its name server, or whose name
    /// server moved to another host or port, finds it. A name server that refuses the
    /// gateway's secret is not asked again until then.
    pub fn relocate(mut self, locator: rmi::naming::NsLocator) -> Self {
        self.relocate = Some(Relocate {
            locator,
            port: None,
            last: std::sync::Mutex::new(None),
        });
        self
    }

    /// Takes, when it [relocates](Self::relocate), only a name server on `port`: one its
    /// locator's broadcast finds on another port is another name server (every rmi-ns on a
    /// host answers the default broadcast port), and is refused as at start-up
    /// ([`found_where_asked`](crate::found_where_asked); `rmi-httpgateway --nsport` without
    /// `--nshost`). Otherwise, once its name server stopped answering, a gateway would take
    /// whichever answered the broadcast first, and serve its names (helper-147 #3).
    pub fn name_server_port(mut self, port: u16) -> Self {
        if let Some(relocate) = &mut self.relocate {
            relocate.port = Some(port);
        }
        self
    }

    /// The name server, as last found.
    fn names(&self) -> NameServerProxy {
        self.names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After the name server did not answer (`failed`): finds it again, if the gateway
    /// [relocates](Self::relocate) and has not tried within [`RELOCATE_EVERY`]; true when it
    /// found one, to be asked again.
    async fn found_again(&self, failed: &Error) -> bool {
        let Some(relocate) = &self.relocate else {
            return false;
        };
        if !failed.is_communication() && !matches!(failed, Error::ConnectFailed(_)) {
            return false;
        }
        {
            let mut last = relocate
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < RELOCATE_EVERY) {
                return false;
            }
            *last = Some(now);
        }
        let found = relocate.locator.locate().await.and_then(|found| {
            match relocate.port {
                Some(port) => crate::found_where_asked(found.uri(), port, true, false),
                None => Ok(()),
            }
            .map(|()| found)
        });
        match found {
            Ok(found) => {
                tracing::info!(name_server = %found.uri(), "gateway: found the name server");
                *self
                    .names
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = found;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "gateway: the name server is still not found");
                false
            }
        }
    }

    /// What `ask` gets of the name server (as last found); asked once more of the one found
    /// again when it did not answer.
    async fn ask_names<T, F, Fut>(&self, ask: F) -> Result<T, Error>
    where
        F: Fn(NameServerProxy) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        match ask(self.names()).await {
            Err(e) if self.found_again(&e).await => ask(self.names()).await,
            other => other,
        }
    }

    /// How many requests (calls, and index pages) may be under way at once: each holds a
    /// connection to a daemon (the index page, one at a time) for as long as it takes. One more
    /// is answered at once with `503 Service Unavailable`, `Retry-After: 1` and a Pyro
    /// `CommunicationError` saying the gateway is busy. Zero is no limit, and so is a number
    /// beyond what a semaphore counts (about 2^61). Default [`DEFAULT_MAX_CALLS`].
    pub fn max_calls(mut self, max: usize) -> Self {
        self.max_calls = max;
        self.calls = (max > 0 && max <= tokio::sync::Semaphore::MAX_PERMITS)
            .then(|| Arc::new(tokio::sync::Semaphore::new(max)));
        self
    }

    /// A place among the requests under way (`Some(None)`: no limit), or `None` when there is
    /// none left.
    fn admit(&self) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        match &self.calls {
            None => Some(None),
            Some(calls) => calls.clone().try_acquire_owned().ok().map(Some),
        }
    }

    /// The answer to a request that found no place: `503`, to be tried again.
    fn busy(&self) -> Response {
        tracing::debug!(max_calls = self.max_calls, "gateway busy: request refused");
        let message = format!(
            "the gateway is busy: {} requests under way (its limit); try again",
            self.max_calls
        );
        let body = exception("Pyro5.errors.CommunicationError", &message).to_string();
        let mut response = self.answer(StatusCode::SERVICE_UNAVAILABLE, JSON, body);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    /// Connects to every object's daemon with `security`: TLS (over TCP), a shared secret or
    /// Pyro4's HMAC key. All of them alike, as Pyro4's gateway sets its one HMAC key on every
    /// proxy: a daemon without the secret refuses a client that brings one. (The name server's
    /// proxy, given to [`new`](Self::new), has its own.)
    pub fn security(mut self, security: crate::client::Security) -> Self {
        self.security = security;
        self
    }

    /// Exposes the names that `pattern` (a regular expression) matches from their start, as
    /// Python's `re.match`; an empty pattern exposes every name.
    pub fn expose(mut self, pattern: &str) -> Result<Self, regex::Error> {
        self.expose = anchored(pattern)?;
        Ok(self)
    }

    /// Requires every request to carry `key` (header `X-Pyro-Gateway-Key` or parameter
    /// `$key`).
    pub fn gateway_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Answers with CORS headers allowing `origin` (`*` for any), and answers preflights.
    pub fn cors(mut self, origin: &str) -> Result<Self, axum::http::header::InvalidHeaderValue> {
        self.cors = Some(HeaderValue::from_str(origin)?);
        Ok(self)
    }

    /// How long a request may take: the lookup, the connect and the call (whose deadline goes
    /// to the daemon too). Zero is no limit, as Pyro's gateway takes a timeout of 0 (the
    /// connect then has the proxy's own connect timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// The HTTP service: `/` redirects to `/pyro/`, `/pyro/…` is the gateway.
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(Arc::new(self))
    }

    /// A proxy of its own (its own connection) to the object `name` is registered under. A
    /// name several daemons share (rmi's name server) is answered with one of them at random:
    /// when that one does not answer, the others are tried in turn, as a `PYRONAME:` proxy
    /// passes over a daemon it cannot reach.
    ///
    /// Each connect gets a quarter of the request's timeout: a daemon that accepts and never
    /// answers (a host gone mid-handshake, a stopped process) would otherwise take all of it,
    /// and the others would never be tried.
    async fn proxy(&self, name: &str) -> Result<Proxy, Error> {
        let first = self
            .ask_names(|names| async move { names.lookup(name).await })
            .await?;
        let dial = |uri: Uri| {
            let builder = self.security.proxy(uri).serializer(Serializer::Json);
            match self.timeout {
                Some(timeout) => builder
                    .timeout(timeout)
                    .connect_timeout(timeout / CONNECT_SHARE)
                    .reconnect_attempts(0),
                None => builder,
            }
            .connect()
        };
        let failed = match dial(first.clone()).await {
            Ok(proxy) => return Ok(proxy),
            Err(e) if e.is_communication() => e,
            Err(e) => return Err(e),
        };
        // (A name server without `lookup_all`, Pyro's, has one daemon per name.)
        let Ok(all) = self.names().lookup_all(name).await else {
            return Err(failed);
        };
        for (uri, _) in all.into_iter().filter(|(uri, _)| *uri != first) {
            if let Ok(proxy) = dial(uri).await {
                return Ok(proxy);
            }
        }
        Err(failed)
    }

    /// The expose pattern as given.
    fn expose_pattern(&self) -> &str {
        let anchored = self.expose.as_str();
        anchored
            .strip_prefix("^(?:")
            .and_then(|p| p.strip_suffix(')'))
            .unwrap_or(anchored)
    }

    /// Whether the request carries the gateway key, if one is required.
    fn key_given(&self, headers: &HeaderMap, params: &[(String, String)]) -> bool {
        let Some(key) = &self.key else {
            return true;
        };
        let given = headers
            .get(KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .or_else(|| {
                params
                    .iter()
                    .find(|(k, _)| k == "$key")
                    .map(|(_, v)| v.as_str())
            })
            .unwrap_or_default();
        // Digests of equal length, compared in constant time: neither the key nor its length
        // shows in how long a refusal takes.
        use sha2::Digest as _;
        let (given, key) = (sha2::Sha256::digest(given), sha2::Sha256::digest(key));
        subtle::ConstantTimeEq::ct_eq(given.as_slice(), key.as_slice()).into()
    }

    /// An answer with the CORS headers, if any.
    fn answer(
        &self,
        status: StatusCode,
        content_type: &str,
        body: impl Into<axum::body::Body>,
    ) -> Response {
        let mut response = (status, body.into()).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        // The body is what a daemon wrote: never to be taken for anything but its type.
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(origin) = &self.cors {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "Content-Type, X-Pyro-Gateway-Key, X-Pyro-Options, X-Pyro-Correlation-Id",
                ),
            );
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("X-Pyro-Correlation-Id"),
            );
        }
        response
    }

    fn text(&self, status: StatusCode, body: &str) -> Response {
        self.answer(status, "text/plain", body.to_owned())
    }

    /// A JSON answer of a call, with its correlation id.
    fn json(&self, status: StatusCode, body: &Value, correlation_id: rmi::uuid::Uuid) -> Response {
        self.called(status, body.to_string(), correlation_id)
    }

    /// The answer of a call: `body` (JSON), with the call's correlation id.
    fn called(
        &self,
        status: StatusCode,
        body: impl Into<axum::body::Body>,
        correlation_id: rmi::uuid::Uuid,
    ) -> Response {
        let mut response = self.answer(status, JSON, body);
        if let Ok(value) = HeaderValue::from_str(&correlation_id.to_string()) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        response
    }
}

const JSON: &str = "application/json; charset=utf-8";

/// `pattern` anchored at the start of the text, as Python's `re.match` matches. The pattern
/// must compile on its own first: `a)|(.*` would otherwise escape the anchor.
fn anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(pattern)?;
    regex::Regex::new(&format!("^(?:{pattern})"))
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    method: Method,
    uri: HttpUri,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.is_empty() {
        let mut response = gateway.text(StatusCode::FOUND, "");
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/pyro/"));
        return response;
    }
    let Some(path) = path.strip_prefix("pyro/") else {
        return gateway.text(StatusCode::NOT_FOUND, "Error 404: Not Found");
    };
    match method {
        Method::OPTIONS => gateway.text(StatusCode::OK, "200 OK"),
        Method::GET | Method::POST => {
            if !gateway.key_given(&headers, &params) {
                return gateway.text(
                    StatusCode::FORBIDDEN,
                    "403 Forbidden - incorrect gateway api key",
                );
            }
            let Some(place) = gateway.admit() else {
                return gateway.busy();
            };
            // The request runs in a task of its own, which holds its place until its call
            // ends: a client that goes away drops this handler, not the call it began, which a
            // daemon runs on (a Python daemon to its end, an rmi one to its deadline). Were
            // the place given back with the handler, clients that ask and hang up would have
            // any number of calls running at once (helper-147 #1).
            let path = path.to_owned();
            let serving = gateway.clone();
            let served = tokio::spawn(async move {
                let _place = place;
                match path.as_str() {
                    "" => homepage(&serving).await,
                    path => call(&serving, path, &headers, params).await,
                }
            });
            served.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "gateway: a request's task failed");
                gateway.text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error",
                )
            })
        }
        _ => gateway.text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Error 405: Method Not Allowed",
        ),
    }
}

/// A call: `path` is `<name>/<method>` (the name may hold slashes; the method is what follows
/// the last).
async fn call(
    gateway: &Gateway,
    path: &str,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
) -> Response {
    let path = percent_decode(path);
    let Some((name, method)) = path
        .rsplit_once('/')
        .filter(|(n, m)| !n.is_empty() && !m.is_empty())
    else {
        return gateway.text(StatusCode::NOT_FOUND, "Error 404: Not Found");
    };
    if !gateway.expose.is_match(name) {
        return gateway.text(
            StatusCode::FORBIDDEN,
            "403 Forbidden - access to the requested object has been denied",
        );
    }
    // (Empty is absent, as for Pyro's gateway, which makes one then.)
    let given = headers
        .get(CORRELATION_HEADER)
        .filter(|id| !id.as_bytes().is_empty());
    let correlation_id = match given {
        None => rmi::uuid::Uuid::new_v4(),
        Some(text) => match text.to_str().ok().and_then(|t| t.parse().ok()) {
            Some(id) => id,
            None => {
                let err = exception("builtins.ValueError", "badly formed X-Pyro-Correlation-Id");
                return gateway.json(StatusCode::BAD_REQUEST, &err, rmi::uuid::Uuid::nil());
            }
        },
    };
    let oneway_asked = headers
        .get(OPTIONS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|o| o.trim() == "oneway"));
    let kwargs = keyword_arguments(params);
    let outcome = async {
        let proxy = gateway.proxy(name).await?;
        let proxy = proxy.with_correlation_id(correlation_id);
        let meta = proxy.metadata().await?;
        if method == "$meta" {
            let answer = json!({"methods": meta.methods, "attributes": meta.attrs});
            return Ok(Called::Json(answer));
        }
        if meta.attrs.iter().any(|a| a == method) {
            if !kwargs.is_empty() {
                return Err(remote(
                    "builtins.AssertionError",
                    "attribute lookup can't have query parameters".into(),
                ));
            }
            let value = proxy
                .call_raw_kwargs("__getattr__", &(method,), &kwargs)
                .await?;
            // (Pyro's gateway answers nothing for an attribute asked for oneway.)
            return Ok(match oneway_asked {
                true => Called::Nothing,
                false => Called::Raw(value),
            });
        }
        if !meta.methods.iter().any(|m| m == method) {
            // Pyro's proxy refuses a method the object does not expose before sending it.
            return Err(remote(
                "builtins.AttributeError",
                format!("remote object '{name}' has no exposed attribute or method '{method}'"),
            ));
        }
        if oneway_asked || meta.oneway.iter().any(|m| m == method) {
            proxy.call_oneway_kwargs(method, &[(); 0], &kwargs).await?;
            return Ok(Called::Nothing);
        }
        // The daemon's JSON as it wrote it, as Pyro's gateway passes it on.
        proxy
            .call_raw_kwargs(method, &[(); 0], &kwargs)
            .await
            .map(Called::Raw)
    };
    let outcome = match gateway.timeout {
        Some(limit) => tokio::time::timeout(limit, outcome)
            .await
            .unwrap_or(Err(Error::Timeout(limit))),
        None => outcome.await,
    };
    match outcome {
        Ok(Called::Json(value)) => gateway.json(StatusCode::OK, &value, correlation_id),
        Ok(Called::Raw(reply)) if reply.serializer != Serializer::Json => {
            // (Pyro's proxy refuses a reply in a serializer it did not ask for.)
            let message = format!(
                "the daemon answered in {}, not json",
                reply.serializer.name()
            );
            let err = exception("Pyro5.errors.SerializeError", &message);
            gateway.json(StatusCode::INTERNAL_SERVER_ERROR, &err, correlation_id)
        }
        Ok(Called::Raw(reply)) if reply.exception => {
            let body = match rmi_exception(&reply.payload) {
                Some(restored) => restored.to_string().into(),
                None => reply.payload,
            };
            gateway.called(StatusCode::INTERNAL_SERVER_ERROR, body, correlation_id)
        }
        Ok(Called::Raw(reply)) => gateway.called(StatusCode::OK, reply.payload, correlation_id),
        Ok(Called::Nothing) => gateway.called(StatusCode::OK, "", correlation_id),
        Err(err) => {
            tracing::debug!(%name, %method, error = %err, "call through the gateway failed");
            let (class, message) = exception_of(&err);
            gateway.json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &exception(&class, &message),
                correlation_id,
            )
        }
    }
}

/// An rmi daemon's exception, in Pyro's JSON form, as the browser should see it: under its
/// own class and message (an rmi daemon sends a class Python could not rebuild as a
/// `builtins.RuntimeError` whose message starts with the class, for Pyro clients that would
/// otherwise fail to read it), without rmi's own attributes (`_rmiKind`, `_rmiCall`,
/// `_rmiClass`); `_pyroTraceback` stays, as Pyro's daemons send theirs. `None` for anything
/// else (a Python daemon's exception goes on as it came).
fn rmi_exception(payload: &[u8]) -> Option<Value> {
    let mut exception: Value = serde_json::from_slice(payload).ok()?;
    let attributes = exception.get_mut("attributes")?.as_object_mut()?;
    attributes.get("_rmiKind")?;
    let class = attributes
        .get("_rmiClass")
        .and_then(Value::as_str)
        .map(str::to_owned);
    attributes.retain(|name, _| !name.starts_with("_rmi"));
    if let Some(class) = class {
        let prefix = format!("{class}: ");
        if let Some(Value::String(message)) = exception.pointer_mut("/args/0") {
            if let Some(own) = message.strip_prefix(&prefix) {
                *message = own.to_owned();
            }
        }
        exception["__class__"] = Value::String(class);
    }
    Some(exception)
}

/// What a call through the gateway answered.
enum Called {
    /// The gateway's own JSON (`$meta`).
    Json(Value),
    /// The daemon's reply, JSON as it wrote it: a result, or an exception.
    Raw(rmi::RawReply),
    /// Nothing: a oneway call.
    Nothing,
}

/// An exception raised by the gateway itself, as a remote one.
fn remote(class: &str, message: String) -> Error {
    Error::Remote(Box::new(rmi::RemoteError::new(
        rmi::RemoteErrorKind::Other,
        class,
        message,
    )))
}

/// The query's parameters as keyword arguments: a string each, a list for one given more than
/// once (as Pyro's gateway reads them); `$key` is the gateway's, not the method's, and an
/// empty value is no parameter (Python's `parse_qs`).
fn keyword_arguments(params: Vec<(String, String)>) -> BTreeMap<String, Value> {
    let mut kwargs: BTreeMap<String, Value> = BTreeMap::new();
    let given = params
        .into_iter()
        .filter(|(n, v)| n != "$key" && !v.is_empty());
    for (name, value) in given {
        match kwargs.get_mut(&name) {
            None => {
                kwargs.insert(name, Value::String(value));
            }
            Some(Value::Array(values)) => values.push(Value::String(value)),
            Some(first) => {
                let first = first.take();
                kwargs.insert(name, Value::Array(vec![first, Value::String(value)]));
            }
        }
    }
    kwargs
}

/// Pyro's JSON form of an exception (its serializer's `class_to_dict`).
fn exception(class: &str, message: &str) -> Value {
    json!({
        "__class__": class,
        "__exception__": true,
        "args": [message],
        "attributes": {},
    })
}

/// The Python class and message of a failed call, as a Pyro client would raise it.
fn exception_of(err: &Error) -> (String, String) {
    match err.cause() {
        Error::Remote(e) | Error::BadArguments(e) | Error::Panicked(e) => {
            (e.type_name.clone(), e.message.clone())
        }
        Error::Resolve(message) => ("Pyro5.errors.NamingError".into(), message.clone()),
        Error::Timeout(_) => (
            "Pyro5.errors.TimeoutError".into(),
            "receiving: timeout".into(),
        ),
        other => {
            let class = match other {
                Error::UnknownObject(_) => "Pyro5.errors.DaemonError",
                Error::UnknownMethod { .. } => "builtins.AttributeError",
                Error::Protocol(_) => "Pyro5.errors.ProtocolError",
                Error::Codec(_) => "Pyro5.errors.SerializeError",
                Error::ConnectFailed(_) => "Pyro5.errors.CommunicationError",
                _ if other.is_communication() => "Pyro5.errors.CommunicationError",
                _ => "Pyro5.errors.PyroError",
            };
            (class.to_owned(), other.to_string())
        }
    }
}

/// The part of a request's timeout each connect gets (see `Gateway::proxy`).
const CONNECT_SHARE: u32 = 4;

/// The page at `/pyro/`: the exposed names (ten at most), their methods and attributes.
async fn homepage(gateway: &Gateway) -> Response {
    let within = match gateway.timeout {
        Some(limit) => tokio::time::timeout(limit, homepage_within(gateway)).await,
        None => Ok(homepage_within(gateway).await),
    };
    match within {
        Ok(page) => page,
        Err(_) => gateway.text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The name server or an object did not answer in time. Refresh the page to retry.",
        ),
    }
}

async fn homepage_within(gateway: &Gateway) -> Response {
    // Only the exposed names are asked for (the name server matches from the start too).
    let pattern = gateway.expose_pattern();
    let listed = gateway
        .ask_names(|names| async move {
            if pattern.is_empty() {
                names.list().await
            } else {
                names.list_regex(pattern).await
            }
        })
        .await;
    let names = match listed {
        Ok(names) => names,
        Err(e) => {
            let text = format!("Cannot reach the name server: {e}. Refresh the page to retry.");
            return gateway.text(StatusCode::INTERNAL_SERVER_ERROR, &text);
        }
    };
    let mut rows = String::new();
    for name in names.keys().filter(|n| gateway.expose.is_match(n)).take(10) {
        let (methods, attributes) = match gateway.proxy(name).await {
            Ok(proxy) => match proxy.metadata().await {
                Ok(meta) => (meta.methods.join(" "), meta.attrs.join(" ")),
                Err(e) => (format!("??error: {e}??"), String::new()),
            },
            Err(e) => (format!("??error: {e}??"), String::new()),
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"{href}/$meta\">{name}</a></td><td>{methods}</td><td>{attributes}</td></tr>\n",
            href = escape(&percent_encode(name)),
            name = escape(name),
            methods = escape(&methods),
            attributes = escape(&attributes),
        ));
    }
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rmi HTTP gateway</title></head><body>\n\
         <h1>rmi HTTP gateway</h1>\n<p>Call <code>/pyro/&lt;name&gt;/&lt;method&gt;?param=value</code>; \
         <code>/pyro/&lt;name&gt;/$meta</code> lists an object's methods.</p>\n\
         <p>Exposed names (pattern <code>{pattern}</code>, ten at most):</p>\n\
         <table><tr><th>name</th><th>methods</th><th>attributes</th></tr>\n{rows}</table>\n</body></html>\n",
        pattern = escape(gateway.expose.as_str()),
    );
    gateway.answer(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// `text` with HTML's special characters escaped (names come from the name server, not from
/// us).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment with everything but unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL path with its `%XX` escapes decoded (an escape that is not one, or bytes that are
/// not UTF-8, are kept as they came).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expose_pattern_matches_from_the_start_as_python_s_re_match() {
        let re = anchored(DEFAULT_EXPOSE).unwrap();
        assert!(re.is_match("http.greeter"));
        assert!(!re.is_match("other.http.greeter"));
        assert!(!re.is_match("httpXgreeter"));
        assert!(anchored("").unwrap().is_match("anything"));
        // An alternation is anchored as a whole.
        let re = anchored("a|b").unwrap();
        assert!(re.is_match("b.thing") && !re.is_match("c.b"));
    }

    #[test]
    fn parameters_given_twice_are_a_list_and_the_key_is_not_one() {
        let kwargs = keyword_arguments(vec![
            ("name".into(), "Rashmi".into()),
            ("tag".into(), "a".into()),
            ("$key".into(), "secret".into()),
            ("tag".into(), "b".into()),
            ("tag".into(), "c".into()),
        ]);
        assert_eq!(
            Value::Object(kwargs.into_iter().collect()),
            json!({"name": "Rashmi", "tag": ["a", "b", "c"]})
        );
    }

    #[test]
    fn paths_are_percent_decoded_and_names_escaped_in_html() {
        assert_eq!(percent_decode("http.a%20b/m%C3%A9thod"), "http.a b/méthod");
        assert_eq!(percent_decode("100%/x%zz"), "100%/x%zz");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
