//! The etcd store (feature `etcd`): names kept in an etcd cluster, so several name servers over
//! one cluster serve the same names and a name server that goes away loses nothing.
//!
//! # Layout
//!
//! Under a root prefix (default [`DEFAULT_ROOT`], `/rmi/`):
//!
//! - `{root}names/{name}`: one key per name; the value is JSON, readable with `etcdctl get`:
//!   `{"uri":"PYRO:obj@127.0.0.1:4000","metadata":["red"]}`. A name bound to a lease is put
//!   with that etcd lease, so etcd deletes it when the lease expires or is revoked.
//! - `{root}names/{name} {uri}`: one key per entry of a shared name (several daemons behind
//!   one name), the name and URI separated by a space (names have no whitespace); the value is
//!   the entry's JSON with `"shared":true`. A plain registration deletes them; a shared one is
//!   refused while the plain key exists.
//! - `{root}leases/{id:016x}`: one record per lease granted through rmi, put with the lease
//!   itself (it goes with the lease): `{"ttl_ms":6000,"revoking":false}`. It lets the store
//!   count leases for [`Limits::max_leases`] without listing every lease of the cluster, and it
//!   lets watchers tell a revoke from an expiry: [`revoke`](super::Store::revoke) first marks
//!   the record `"revoking":true`; etcd deletes a lease's keys in key order in one revision, so a
//!   watcher sees the record's delete (with its previous value) before the names' deletes.
//!
//! The name server's own entry ([`NAME_SERVER_NAME`]) is never written to etcd: each name
//! server keeps its own in this store, so a lookup of `Pyro.NameServer` answers with the name
//! server asked, whichever of several over one cluster that is.
//!
//! # Leases
//!
//! Leases are etcd leases. etcd counts them in whole seconds and raises a TTL below its minimum
//! (about 1.5 × its election timeout, 2 s with the defaults) to that minimum; a keep-alive
//! answers the TTL in force. Only leases with rmi's record are the store's: a keep-alive,
//! revoke or registration naming another program's lease on the same cluster is answered as
//! for an unknown lease, and leaves that lease and its keys alone.
//!
//! # Watch
//!
//! [`watch`](super::Store::watch) is an etcd watch of every key under the root, with previous
//! values: puts of names become [`Change::Registered`], deletes [`Change::Removed`], or
//! [`Change::Expired`] when etcd deleted the name with its lease's record in one revision
//! without a revoke mark. It starts after the newest revision this store has seen in any
//! answer (or, before any, the current revision read first) and resumes on another member from
//! the last event it delivered when its stream breaks, so no change is lost or repeated. A
//! watcher that stops reading has the etcd stream closed once its queue is full, and opened
//! again from where it was once it has read half of it: what etcd sent meanwhile would
//! otherwise sit unread in the HTTP/2 flow-control window every call to that member shares.
//! Answers come in fragments of etcd's request limit.
//! Starting from the last revision seen, rather than from one read after `watch` returns, means
//! no change made after the call is missed; a store idle while others write may deliver some
//! changes from just before the call too. A start revision etcd compacted away is reported as
//! [`Change::Lagged`]. So is an answer too large to receive all the same (over the client's
//! 4 MiB: a cluster whose `--max-request-bytes` is larger), after which the watch goes on from
//! the current revision. A watch cut off from every member for longer than the retry budget says
//! `Lagged { missed: 0 }` (a cache it feeds cannot be vouched for), and again once it is back;
//! so does every watch after a read answered without quorum (its answer may be older than
//! what the watch goes on from). The watch runs as a task of the current tokio runtime until
//! the stream is dropped.
//!
//! A store's watchers share one etcd watch (N cached resolvers would otherwise have etcd send
//! each change N times, and read its history N times whenever the streams resume): it starts
//! with the first watcher, a later one gets every change after where it has got to, and it
//! ends with the last. A watcher whose queue fills leaves it for an etcd watch of its own,
//! which goes on from the last change it was given, as above, so one slow watcher holds up no
//! other and loses nothing.
//!
//! # Endpoint health
//!
//! etcd-client's balancer keeps sending requests to a dead member (etcdv3/etcd-client#39), so
//! the store holds one client per endpoint and its own health list: every operation goes to
//! the member that answered last, and on a transport failure, a timeout or an "unavailable"
//! answer (no leader, leader changed) that member is passed over for a while and the operation
//! is tried on the next, round after round with a short backoff, for at most
//! [`EtcdOptions::retry_budget`]. Losing one member of three (even the leader) costs a
//! retry and an election, not a failed operation. Reads that still fail (quorum lost) are
//! answered once more from any member as serializable reads: possibly stale, but answered.
//!
//! # Limits
//!
//! `max_entries` and `max_leases` are checked by counting keys before the write; registrations
//! or grants made at the same moment (through one name server or several) may pass one check
//! together and exceed a limit by as many as ran at once (etcd offers no conditional on a
//! count): the limits bound a runaway client, not an exact total. `max_reply_bytes` is enforced while listing,
//! page by page, so a huge registry is refused without being read whole.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::engine::reply_size;
use super::{
    Change, Entry, LeaseId, Limits, MetaFilter, NameFilter, Store, Watch, NAME_SERVER_NAME,
};
use crate::NamingError;

/// The root prefix of the keys when none is given.
pub const DEFAULT_ROOT: &str = "/rmi/";

/// Keys listed per request when scanning (a page).
const PAGE: i64 = 512;

/// Deletes per transaction when removing by regex, and entries per transaction when setting a
/// shared name's metadata (etcd's `--max-txn-ops` defaults to 128).
const DELETES_PER_TXN: usize = 64;

/// Changes a watcher may have queued before the watch waits for it to read.
const WATCH_BACKLOG: usize = 1024;

/// Bytes of changes (as [`change_bytes`] counts them) a watcher may have queued before the
/// watch waits for it to read, however few they are. Each watch has a queue of its own (the
/// other stores' watchers share one ring), and a change of an entry at the limits is 18 KB:
/// 1,024 of them queued for a watcher that does not read were 18 MB per watch, and a client
/// may open 100 watches per connection.
const WATCH_BACKLOG_BYTES: usize = 256 * 1024;

/// How far behind the cluster (in revisions) a watch whose watcher stopped reading may be when
/// the watcher reads again, and still go on from where it was; further behind, it says
/// `Lagged` and goes on from now. Each reopening reads etcd's history from where it was to the
/// newest revision: a backlog caught up a queue at a time costs etcd that read again and again.
const CATCH_UP_REVISIONS: i64 = 16 * WATCH_BACKLOG as i64;

/// How often `set_metadata` tries again when the entry changed under it.
const CAS_ATTEMPTS: usize = 16;

/// Settings of an [`EtcdStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Root prefix of every key (default [`DEFAULT_ROOT`]): names under `{root}names/`, lease
    /// records under `{root}leases/`. Name servers sharing names use the same root.
    pub root: String,
    /// Longest wait for one attempt on one member (default 2 s); a slower member is passed over.
    pub attempt_timeout: Duration,
    /// Longest an operation is tried, over every member, before it fails (default 10 s): long
    /// enough for an election after the leader is lost.
    pub retry_budget: Duration,
    /// How long a member that failed is tried only after the others (default 1 s).
    pub down_for: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            root: DEFAULT_ROOT.to_owned(),
            attempt_timeout: Duration::from_secs(2),
            retry_budget: Duration::from_secs(10),
            down_for: Duration::from_secs(1),
        }
    }
}

/// A name's value in etcd.
#[derive(Debug, Serialize, Deserialize)]
struct StoredEntry {
    uri: String,
    #[serde(default)]
    metadata: BTreeSet<String>,
    /// An entry of a shared name (left out for a plain one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
}

/// A lease record's value in etcd.
#[derive(Debug, Serialize, Deserialize)]
struct StoredLease {
    ttl_ms: u64,
    #[serde(default)]
    revoking: bool,
}

/// The key layout under one root.
#[derive(Debug, Clone)]
struct Keys {
    root: String,
    names: String,
    leases: String,
}

impl Keys {
    fn new(root: &str) -> Self {
        Keys {
            root: root.to_owned(),
            names: format!("{root}names/"),
            leases: format!("{root}leases/"),
        }
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.names)
    }

    /// The key of the shared entry of `name` for `uri`.
    fn shared(&self, name: &str, uri: &rmi_core::Uri) -> String {
        format!("{}{name} {uri}", self.names)
    }

    /// The prefix of every shared entry of `name`.
    fn shared_prefix(&self, name: &str) -> String {
        format!("{}{name} ", self.names)
    }

    /// The range holding every key of `name`, plain or shared (and, between them, names that
    /// start with `name` and a control character: filter by [`Keys::name_of`]).
    fn name_range(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        (
            self.name(name).into_bytes(),
            prefix_end(self.shared_prefix(name).as_bytes()),
        )
    }

    /// The name a key under `names/` is about (a shared entry's key carries its URI after a
    /// space).
    fn name_of<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = std::str::from_utf8(key.strip_prefix(self.names.as_bytes())?).ok()?;
        Some(rest.split_once(' ').map_or(rest, |(name, _)| name))
    }

    fn lease(&self, id: i64) -> String {
        format!("{}{id:016x}", self.leases)
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

fn unknown_lease(id: LeaseId) -> NamingError {
    NamingError::new(format!(
        "unknown lease {id}: it expired or was revoked; grant a new one and register again"
    ))
}

fn unknown_name(name: &str) -> NamingError {
    NamingError::new(format!("unknown name: {name}"))
}

/// An etcd lease id for `lease`, if it can be one.
fn etcd_lease(lease: LeaseId) -> Option<i64> {
    i64::try_from(lease.0).ok().filter(|&id| id > 0)
}

/// Whether etcd said the lease does not exist.
/// `ttl` in whole seconds, rounded up (etcd counts leases in seconds; a name must not vanish
/// before its TTL).
fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

fn lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::NotFound && s.message().contains("lease")
        }
        etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// Whether `e` says the member (or the path to it) failed, rather than that the request was
/// refused: the request may go to another member.
fn retryable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // A stream that ended before its first answer (watch, keep-alive).
        etcd_client::Error::WatchError(_) => true,
        // "Resource exhausted" is a busy member ("too many requests": another may answer)
        // or a full database (its quota alarm: every member refuses until an operator acts).
        etcd_client::Error::GRpcStatus(s) if s.code() == Code::ResourceExhausted => {
            s.message().contains("too many requests")
        }
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::Internal
        ),
        _ => false,
    }
}

/// Which members may answer a read.
#[derive(Debug, Clone, Copy)]
enum Consistency {
    /// A quorum (linearizable reads only).
    Quorum,
    /// A quorum if one answers, else any member (serializable reads: possibly stale).
    AnyMember,
}

/// Why an operation failed.
#[derive(Debug)]
enum Failure {
    /// etcd refused it (the same on every member).
    Refused(etcd_client::Error),
    /// No member answered within the retry budget; the last failure.
    Unavailable(String),
}

/// One etcd member: its clients and health.
struct Member {
    endpoint: String,
    /// Requests carry "require leader": a member cut off from the leader refuses at once.
    client: Client,
    /// Without "require leader", for serializable reads when no quorum is left.
    relaxed: Client,
    /// Until when the member is tried only after the others.
    down_until: Mutex<Option<Instant>>,
}

/// The members, their health, and the newest revision seen.
struct Cluster {
    members: Vec<Member>,
    /// The member that answered last: tried first.
    preferred: AtomicUsize,
    /// The newest etcd revision any answer carried (0: none yet).
    revision: AtomicI64,
    /// Attempts that failed over to another member or round.
    retries: AtomicU64,
    /// How many reads were answered serializably (possibly stale) because no quorum answered:
    /// each watch says `Lagged` for them (a cache may hold what they answered).
    relaxed_reads: tokio::sync::watch::Sender<u64>,
    /// Until when reads go straight to any member: no quorum answered a read lately (see
    /// [`read`](Self::read)).
    no_quorum_until: Mutex<Option<Instant>>,
    options: EtcdOptions,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.endpoints())
            .field("healthy", &self.healthy())
            .field("revision", &self.revision.load(Ordering::Relaxed))
            .finish()
    }
}

impl Cluster {
    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    fn healthy(&self) -> Vec<String> {
        let now = Instant::now();
        self.members
            .iter()
            .filter(|m| m.down_until.lock().is_none_or(|t| t <= now))
            .map(|m| m.endpoint.clone())
            .collect()
    }

    /// Member indexes in the order to try them: healthy ones from the preferred one on, then
    /// the ones marked down, soonest back first.
    fn order(&self) -> Vec<usize> {
        let n = self.members.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let now = Instant::now();
        let (mut up, mut down) = (Vec::with_capacity(n), Vec::new());
        for k in 0..n {
            let i = (start + k) % n;
            match *self.members[i].down_until.lock() {
                Some(until) if until > now => down.push((until, i)),
                _ => up.push(i),
            }
        }
        down.sort();
        up.extend(down.into_iter().map(|(_, i)| i));
        up
    }

    fn mark_down(&self, i: usize, why: &dyn fmt::Display) {
        let member = &self.members[i];
        let mut until = member.down_until.lock();
        if until.is_none_or(|t| t <= Instant::now()) {
            tracing::warn!(endpoint = %member.endpoint, error = %why, "etcd member failed; trying another");
        }
        *until = Some(Instant::now() + self.options.down_for);
    }

    fn mark_up(&self, i: usize) {
        *self.members[i].down_until.lock() = None;
        self.preferred.store(i, Ordering::Relaxed);
    }

    fn saw(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(h) = header {
            self.revision.fetch_max(h.revision(), Ordering::Relaxed);
        }
    }

    /// Runs `f` on a healthy member, failing over to the next on a transport or unavailable
    /// failure, round after round with a backoff, for at most `budget`.
    ///
    /// `f` may run more than once, and an attempt that timed out or lost its connection may
    /// still have been applied: operations are written to be safe to repeat (see `register`
    /// and `remove` for where a repeat could change the answer).
    async fn attempt<T, F, Fut>(
        &self,
        budget: Duration,
        relaxed: bool,
        f: &mut F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + budget;
        let mut backoff = Duration::from_millis(25);
        let mut last = String::from("no attempt made");
        loop {
            for i in self.order() {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Failure::Unavailable(last));
                }
                let member = &self.members[i];
                let client = if relaxed {
                    member.relaxed.clone()
                } else {
                    member.client.clone()
                };
                let wait = self.options.attempt_timeout.min(deadline - now);
                match tokio::time::timeout(wait, f(client)).await {
                    Ok(Ok(value)) => {
                        self.mark_up(i);
                        return Ok(value);
                    }
                    Ok(Err(e)) if retryable(&e) => {
                        last = format!("{}: {e}", member.endpoint);
                        self.mark_down(i, &e);
                    }
                    Ok(Err(e)) => return Err(Failure::Refused(e)),
                    Err(_) => {
                        last = format!("{}: no answer within {wait:?}", member.endpoint);
                        self.mark_down(i, &"timed out");
                    }
                }
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Unavailable(last));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// A write (or a read that must see the latest state), with failover.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let done = self.attempt(self.options.retry_budget, false, &mut f).await;
        if done.is_ok() {
            // A quorum answered: reads ask for one again.
            *self.no_quorum_until.lock() = None;
        }
        done
    }

    /// A read: linearizable with failover for half the budget; if no member could answer so
    /// (no quorum), serializable from any member that answers, for the other half. Such an
    /// answer older than a revision already seen is counted in `relaxed_reads` (each watch
    /// then says `Lagged`: what a cache took from it may be older than what the watch goes on
    /// from); one as new is not (the watch reports every change after it).
    ///
    /// Once no quorum answered, reads go straight to any member for a `retry_budget` (or until
    /// a write finds a quorum again): each would otherwise spend half the budget asking for
    /// one first, a listing that half for each of its pages, and a lookup would outlast its
    /// caller's patience.
    async fn read<F, Fut>(&self, mut f: F) -> Result<etcd_client::GetResponse, Failure>
    where
        F: FnMut(Client, bool) -> Fut,
        Fut: Future<Output = Result<etcd_client::GetResponse, etcd_client::Error>>,
    {
        let half = self.options.retry_budget / 2;
        let no_quorum = self
            .no_quorum_until
            .lock()
            .is_some_and(|until| Instant::now() < until);
        if !no_quorum {
            match self.attempt(half, false, &mut |c| f(c, false)).await {
                Err(Failure::Unavailable(why)) => {
                    tracing::warn!(error = %why, "etcd has no quorum; reading from any member");
                    *self.no_quorum_until.lock() = Some(Instant::now() + self.options.retry_budget);
                }
                other => return other,
            }
        }
        let read = self.attempt(half, true, &mut |c| f(c, true)).await;
        if let Ok(resp) = &read {
            let at = resp.header().map_or(0, |h| h.revision());
            if at < self.revision.load(Ordering::Relaxed) {
                self.relaxed_reads.send_modify(|n| *n += 1);
            }
        }
        read
    }

    /// Opens a watch of every key under `root` from `revision`, on the first member that
    /// accepts it; returns the member's index with the stream.
    async fn open_watch(&self, root: &str, revision: i64) -> Option<(usize, WatchStream)> {
        for i in self.order() {
            let member = &self.members[i];
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision)
                .with_prev_key()
                .with_progress_notify()
                .with_fragment();
            let mut client = member.client.clone();
            let opened = tokio::time::timeout(
                self.options.attempt_timeout,
                client.watch(root, Some(options)),
            )
            .await;
            match opened {
                Ok(Ok(stream)) => return Some((i, stream)),
                Ok(Err(e)) => self.mark_down(i, &e),
                Err(_) => self.mark_down(i, &"timed out opening a watch"),
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

/// Names, entries and leases in an etcd cluster, with failover between its members.
pub struct EtcdStore {
    cluster: Arc<Cluster>,
    keys: Keys,
    limits: Limits,
    /// This name server's own entry: never shared through etcd.
    local: Mutex<Option<Entry>>,
    /// The one etcd watch the store's watchers share, while it has any.
    hub: Arc<HubSlot>,
    /// Tests: awaited once between a registration's probe and its write, to force a race.
    #[cfg(test)]
    pub(super) between_probe_and_write: Mutex<Option<futures_util::future::BoxFuture<'static, ()>>>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.keys.root)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// How often the store's connections to a member ping it (HTTP/2 PING), only while a call or
/// watch is open. etcd takes a ping at most every 5 s (`--grpc-keepalive-min-time`), and none
/// on a connection with nothing open: a client that pings more often, or while idle, is sent
/// GOAWAY "too_many_pings" and cut off after a few. With 2 s while idle, an idle store's
/// member was marked down every few seconds and its watch reopened.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`HOST:PORT` each) under the default root,
    /// enforcing `limits`' totals. Fails if no member answers within the retry budget.
    pub async fn connect(endpoints: &[String], limits: Limits) -> Result<Self, NamingError> {
        EtcdStore::connect_with(endpoints, limits, EtcdOptions::default()).await
    }

    /// [`connect`](Self::connect) with `options` (root prefix, timeouts).
    pub async fn connect_with(
        endpoints: &[String],
        limits: Limits,
        options: EtcdOptions,
    ) -> Result<Self, NamingError> {
        if endpoints.is_empty() {
            return Err(NamingError::new("etcd storage needs at least one endpoint"));
        }
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let url = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            let base = ConnectOptions::new()
                .with_connect_timeout(options.attempt_timeout)
                .with_keep_alive(KEEP_ALIVE_INTERVAL, options.attempt_timeout)
                .with_keep_alive_while_idle(false);
            let refused =
                |e: etcd_client::Error| NamingError::new(format!("etcd endpoint {endpoint}: {e}"));
            // Channels connect lazily: a member down now is simply tried later.
            let client =
                Client::connect([url.as_str()], Some(base.clone().with_require_leader(true)))
                    .await
                    .map_err(refused)?;
            let relaxed = Client::connect([url.as_str()], Some(base))
                .await
                .map_err(refused)?;
            members.push(Member {
                endpoint: endpoint.clone(),
                client,
                relaxed,
                down_until: Mutex::new(None),
            });
        }
        let store = EtcdStore {
            cluster: Arc::new(Cluster {
                members,
                preferred: AtomicUsize::new(0),
                revision: AtomicI64::new(0),
                retries: AtomicU64::new(0),
                relaxed_reads: tokio::sync::watch::Sender::new(0),
                no_quorum_until: Mutex::new(None),
                options: options.clone(),
            }),
            keys: Keys::new(&options.root),
            limits,
            local: Mutex::new(None),
            hub: Arc::new(HubSlot::default()),
            #[cfg(test)]
            between_probe_and_write: Mutex::new(None),
        };
        store.current_revision().await.map_err(|e| {
            NamingError::new(format!(
                "cannot reach etcd at {}: {}",
                endpoints.join(","),
                e.message
            ))
        })?;
        Ok(store)
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// The endpoints not marked down now.
    pub fn healthy_endpoints(&self) -> Vec<String> {
        self.cluster.healthy()
    }

    /// How many attempts failed over to another member (or another round) so far.
    pub fn retries(&self) -> u64 {
        self.cluster.retries.load(Ordering::Relaxed)
    }

    /// The root prefix of the keys.
    pub fn root(&self) -> &str {
        &self.keys.root
    }

    fn fail(&self, what: &str, failure: Failure) -> NamingError {
        match failure {
            Failure::Refused(e) => NamingError::new(format!("etcd refused {what}: {e}")),
            Failure::Unavailable(last) => NamingError::unavailable(format!(
                "the etcd cluster ({}) did not answer {what} within {:?}; last failure: {last}",
                self.cluster.endpoints().join(","),
                self.cluster.options.retry_budget
            )),
        }
    }

    /// The cluster's current revision.
    async fn current_revision(&self) -> Result<i64, NamingError> {
        let root = self.keys.root.clone();
        let resp = self
            .cluster
            .read(|mut c, serializable| {
                let root = root.clone();
                async move {
                    let mut o = GetOptions::new().with_prefix().with_count_only();
                    if serializable {
                        o = o.with_serializable();
                    }
                    c.get(root, Some(o)).await
                }
            })
            .await
            .map_err(|f| self.fail("a revision read", f))?;
        self.cluster.saw(resp.header());
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// How many keys start with `prefix`.
    async fn count_keys(&self, prefix: &str, what: &str) -> Result<usize, NamingError> {
        let prefix = prefix.to_owned();
        let resp = self
            .cluster
            .read(|mut c, serializable| {
                let prefix = prefix.clone();
                async move {
                    let mut o = GetOptions::new().with_prefix().with_count_only();
                    if serializable {
                        o = o.with_serializable();
                    }
                    c.get(prefix, Some(o)).await
                }
            })
            .await
            .map_err(|f| self.fail(what, f))?;
        self.cluster.saw(resp.header());
        Ok(usize::try_from(resp.count()).unwrap_or(usize::MAX))
    }

    fn local_count(&self) -> usize {
        usize::from(self.local.lock().is_some())
    }

    fn encode(entry: &Entry) -> Vec<u8> {
        let stored = StoredEntry {
            uri: entry.uri.to_string(),
            metadata: entry.metadata.clone(),
            shared: entry.shared,
        };
        serde_json::to_vec(&stored).expect("an entry serializes")
    }

    /// The name and entry a key-value holds, if it is a well-formed name.
    fn decode(&self, kv: &KeyValue) -> Option<(String, Entry)> {
        let name = self.keys.name_of(kv.key())?.to_owned();
        let entry = decode_entry(kv);
        if entry.is_none() {
            tracing::warn!(%name, "etcd holds a malformed entry; skipped");
        }
        Some((name, entry?))
    }

    /// Visits every key-value in `[start, end)`, page by page, all read at one revision.
    async fn scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        what: &str,
        read: Consistency,
        mut visit: impl FnMut(&KeyValue) -> Result<(), NamingError>,
    ) -> Result<(), NamingError> {
        let mut from = start;
        let mut revision = 0;
        let mut page = PAGE;
        // Pages that fit since the last one too large: four make the page twice as large.
        let mut fitted = 0;
        loop {
            let (key, range_end) = (from.clone(), end.clone());
            let get = |mut c: Client, serializable: bool| {
                let (key, range_end) = (key.clone(), range_end.clone());
                async move {
                    let mut o = GetOptions::new().with_range(range_end).with_limit(page);
                    if revision > 0 {
                        o = o.with_revision(revision);
                    }
                    if serializable {
                        o = o.with_serializable();
                    }
                    c.get(key, Some(o)).await
                }
            };
            let answer = match read {
                Consistency::Quorum => self.cluster.call(|c| get(c, false)).await,
                Consistency::AnyMember => self.cluster.read(get).await,
            };
            let resp = match answer {
                // A page too large for the client to receive (over its 4 MiB: entries with much
                // metadata): the same keys in smaller pages.
                Err(Failure::Refused(etcd_client::Error::GRpcStatus(s)))
                    if s.code() == tonic::Code::OutOfRange
                        && s.message().contains("message length too large")
                        && page > 1 =>
                {
                    page = (page / 4).max(1);
                    fitted = 0;
                    continue;
                }
                answer => answer.map_err(|f| self.fail(what, f))?,
            };
            // Back to full pages, slowly, once they fit again.
            fitted += 1;
            if fitted == 4 {
                page = (page * 2).min(PAGE);
                fitted = 0;
            }
            self.cluster.saw(resp.header());
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            // A visitor may match a regex against each name, at up to milliseconds a name:
            // other tasks get their turn every slice (see `Slicer`).
            let mut slicer = super::Slicer::default();
            for kv in resp.kvs() {
                visit(kv)?;
                slicer.tick().await;
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Entries passing `keep` among the names `filter` selects, in name order, within the
    /// reply limit for a reply to `what` (none without one: for the name server's own use);
    /// the local name server entry included where it belongs.
    async fn select(
        &self,
        filter: &NameFilter,
        keep: impl Fn(&Entry) -> bool,
        what: Option<&str>,
    ) -> Result<Vec<(String, Entry)>, NamingError> {
        let mut size = 0;
        let mut out = Vec::new();
        let mut take = |name: String, entry: Entry| -> Result<(), NamingError> {
            if !filter.matches(&name) || !keep(&entry) {
                return Ok(());
            }
            if let Some(what) = what {
                size += reply_size(&name, &entry);
                if size > self.limits.max_reply_bytes {
                    return Err(self.limits.reply_too_large(what));
                }
            }
            out.push((name, entry));
            Ok(())
        };
        if let Some(local) = self.local.lock().clone() {
            take(NAME_SERVER_NAME.to_owned(), local)?;
        }
        let (start, end) = match filter {
            NameFilter::Name(n) => self.keys.name_range(n),
            NameFilter::Prefix(p) => {
                let key = self.keys.name(p).into_bytes();
                let end = prefix_end(&key);
                (key, end)
            }
            NameFilter::Regex(_) | NameFilter::All => {
                let key = self.keys.names.clone().into_bytes();
                let end = prefix_end(&key);
                (key, end)
            }
        };
        self.scan(
            start,
            end,
            "a listing",
            Consistency::AnyMember,
            |kv| match self.decode(kv) {
                Some((name, _)) if name == NAME_SERVER_NAME => Ok(()),
                Some((name, entry)) => take(name, entry),
                None => Ok(()),
            },
        )
        .await?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes `keys` (names of this store), a batch per transaction; returns how many went.
    async fn delete_keys(&self, keys: Vec<String>) -> Result<u32, NamingError> {
        let mut removed = 0;
        for chunk in keys.chunks(DELETES_PER_TXN) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::delete(k.as_str(), None))
                .collect();
            let resp = self
                .cluster
                .call(|mut c| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { c.txn(txn).await }
                })
                .await
                .map_err(|f| self.fail("a remove", f))?;
            self.cluster.saw(resp.header());
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = op {
                    removed += u32::try_from(d.deleted()).unwrap_or(u32::MAX);
                }
            }
        }
        Ok(removed)
    }
}

fn decode_entry(kv: &KeyValue) -> Option<Entry> {
    let stored: StoredEntry = serde_json::from_slice(kv.value()).ok()?;
    let uri = stored.uri.parse().ok()?;
    let lease = u64::try_from(kv.lease())
        .ok()
        .filter(|&l| l != 0)
        .map(LeaseId);
    Some(Entry {
        uri,
        metadata: stored.metadata,
        lease,
        shared: stored.shared,
    })
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn register(&self, name: String, entry: Entry, safe: bool) -> Result<(), NamingError> {
        if name == NAME_SERVER_NAME {
            // This name server's own entry, kept here: a safe registration does not replace
            // it, as the other stores' (and Pyro's) do not.
            let mut local = self.local.lock();
            if safe && local.is_some() {
                return Err(NamingError::new(format!("name already registered: {name}")));
            }
            *local = Some(entry);
            return Ok(());
        }
        let plain_key = self.keys.name(&name);
        let key = if entry.shared {
            self.keys.shared(&name, &entry.uri)
        } else {
            plain_key.clone()
        };
        let shared_prefix = self.keys.shared_prefix(&name);
        let value = EtcdStore::encode(&entry);
        let lease = match entry.lease {
            Some(id) => etcd_lease(id).ok_or_else(|| unknown_lease(id))?,
            None => 0,
        };
        let refuse = |f: Failure| match f {
            Failure::Refused(e) if lease_not_found(&e) => {
                unknown_lease(entry.lease.unwrap_or(LeaseId(0)))
            }
            f => self.fail("a registration", f),
        };
        // Whether the key exists, whether the name has shared entries, how many entries there
        // are, and whether the lease is one rmi granted (it has a record), read together.
        let names = self.keys.names.clone();
        let lease_key = self.keys.lease(lease);
        let probe = self
            .cluster
            .call(|mut c| {
                let txn = Txn::new().and_then([
                    TxnOp::get(key.as_str(), Some(GetOptions::new().with_count_only())),
                    TxnOp::get(
                        shared_prefix.as_str(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    ),
                    TxnOp::get(
                        names.as_str(),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    ),
                    TxnOp::get(
                        lease_key.as_str(),
                        Some(GetOptions::new().with_count_only()),
                    ),
                ]);
                async move { c.txn(txn).await }
            })
            .await
            .map_err(refuse)?;
        self.cluster.saw(probe.header());
        let counts: Vec<i64> = probe
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(g) => g.count(),
                _ => 0,
            })
            .collect();
        let exists = counts.first().is_some_and(|&c| c > 0);
        let shared_exist = counts.get(1).is_some_and(|&c| c > 0);
        let total = counts
            .get(2)
            .map_or(0, |&c| usize::try_from(c).unwrap_or(usize::MAX));
        // Another program's lease on the same cluster is not ours to bind names to.
        if lease != 0 && counts.get(3).is_none_or(|&c| c == 0) {
            return Err(unknown_lease(entry.lease.unwrap_or(LeaseId(0))));
        }
        if safe && !entry.shared && (exists || shared_exist) {
            return Err(NamingError::new(format!("name already registered: {name}")));
        }
        let max_entries = self.limits.max_entries;
        // A shared entry's key is its own (name and URI): a new URI adds an entry even when the
        // name has others. A plain registration replaces whatever the name had.
        let adds = !exists && (entry.shared || !shared_exist);
        if adds && total + self.local_count() >= max_entries {
            return Err(NamingError::new(format!(
                "the name server holds its max_entries ({max_entries}) names; remove some first"
            )));
        }
        let put = TxnOp::put(
            key.as_str(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        // A plain registration replaces the shared entries too.
        let drop_shared = TxnOp::delete(
            shared_prefix.as_str(),
            Some(DeleteOptions::new().with_prefix()),
        );
        #[cfg(test)]
        {
            let pause = self.between_probe_and_write.lock().take();
            if let Some(pause) = pause {
                pause.await;
            }
        }
        let resp = self
            .cluster
            .call(|mut c| {
                let txn = if entry.shared {
                    // Only while the name is not registered plainly.
                    Txn::new()
                        .when([Compare::create_revision(
                            plain_key.as_str(),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then([put.clone()])
                } else if safe {
                    // Pyro's `safe`: put only if the name has no entry, plain or shared (an
                    // empty range compares as a key never created). The probe's answer may be
                    // old: the dropped shared entries would be another's, made since.
                    Txn::new()
                        .when([
                            Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                            Compare::create_revision(shared_prefix.as_str(), CompareOp::Equal, 0)
                                .with_prefix(),
                        ])
                        .and_then([drop_shared.clone(), put.clone()])
                        .or_else([TxnOp::get(key.as_str(), None)])
                } else {
                    Txn::new().and_then([drop_shared.clone(), put.clone()])
                };
                async move { c.txn(txn).await }
            })
            .await
            .map_err(refuse)?;
        self.cluster.saw(resp.header());
        if resp.succeeded() {
            return Ok(());
        }
        if entry.shared {
            return Err(super::engine::not_shared(&name));
        }
        // The name exists now. NOTE: a safe registration retried after an attempt that was
        // applied but whose answer was lost (the member died after committing) finds its own
        // entry here. An existing entry identical to ours (URI, metadata and lease) is taken
        // as ours, so the retry does not misreport "already registered"; an identical
        // registration made by someone else at the same moment is then reported as ours,
        // which is harmless (the name maps to the same object).
        let ours = resp.op_responses().into_iter().any(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .is_some_and(|kv| kv.value() == value.as_slice() && kv.lease() == lease),
            _ => false,
        });
        if ours {
            Ok(())
        } else {
            Err(NamingError::new(format!("name already registered: {name}")))
        }
    }

    async fn lookup_all(&self, name: &str) -> Result<Vec<Entry>, NamingError> {
        if name == NAME_SERVER_NAME {
            return self
                .local
                .lock()
                .clone()
                .map(|e| vec![e])
                .ok_or_else(|| unknown_name(name));
        }
        // In pages, as a listing: a shared name's entries may be more than one answer holds.
        let (key, end) = self.keys.name_range(name);
        let mut all = Vec::new();
        self.scan(key, end, "a lookup", Consistency::AnyMember, |kv| {
            if self.keys.name_of(kv.key()) == Some(name) {
                all.push(decode_entry(kv).ok_or_else(|| {
                    NamingError::new(format!("the entry of {name} in etcd is malformed"))
                })?);
            }
            Ok(())
        })
        .await?;
        if all.is_empty() {
            return Err(unknown_name(name));
        }
        Ok(all)
    }

    async fn list(&self, filter: &NameFilter) -> Result<Vec<(String, Entry)>, NamingError> {
        self.select(filter, |_| true, Some("list")).await
    }

    async fn all_entries(&self) -> Result<Vec<(String, Entry)>, NamingError> {
        self.select(&NameFilter::All, |_| true, None).await
    }

    async fn remove(&self, filter: &NameFilter) -> Result<u32, NamingError> {
        // NOTE: a remove retried after an attempt that was applied but whose answer was lost
        // counts only what the retry removed (possibly 0); the names are gone either way.
        // No name holds whitespace or a control character; a shared entry's key does (a space
        // before its URI): a name or prefix with one matches no name, and must not reach them.
        if let NameFilter::Name(text) | NameFilter::Prefix(text) = filter {
            if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Ok(0);
            }
        }
        let range = match filter {
            NameFilter::Name(n) if n == NAME_SERVER_NAME => return Ok(0),
            NameFilter::Name(n) => {
                // The plain key and the shared ones, in one transaction.
                let (plain, shared) = (self.keys.name(n), self.keys.shared_prefix(n));
                let resp = self
                    .cluster
                    .call(|mut c| {
                        let txn = Txn::new().and_then([
                            TxnOp::delete(plain.as_str(), None),
                            TxnOp::delete(
                                shared.as_str(),
                                Some(DeleteOptions::new().with_prefix()),
                            ),
                        ]);
                        async move { c.txn(txn).await }
                    })
                    .await
                    .map_err(|f| self.fail("a remove", f))?;
                self.cluster.saw(resp.header());
                let mut removed = 0;
                for op in resp.op_responses() {
                    if let TxnOpResponse::Delete(d) = op {
                        removed += u32::try_from(d.deleted()).unwrap_or(u32::MAX);
                    }
                }
                return Ok(removed);
            }
            NameFilter::Prefix(p) => Some((self.keys.name(p), Some(()))),
            NameFilter::All => Some((self.keys.names.clone(), Some(()))),
            NameFilter::Regex(_) => None,
        };
        if let Some((key, prefix)) = range {
            let resp = self
                .cluster
                .call(|mut c| {
                    let key = key.clone();
                    let o = prefix.map(|()| DeleteOptions::new().with_prefix());
                    async move { c.delete(key, o).await }
                })
                .await
                .map_err(|f| self.fail("a remove", f))?;
            self.cluster.saw(resp.header());
            return Ok(u32::try_from(resp.deleted()).unwrap_or(u32::MAX));
        }
        let mut doomed = Vec::new();
        let start = self.keys.names.clone().into_bytes();
        let end = prefix_end(&start);
        // With quorum: a member behind could miss a name registered since.
        self.scan(start, end, "a listing", Consistency::Quorum, |kv| {
            if let Some(name) = self.keys.name_of(kv.key()) {
                if name != NAME_SERVER_NAME && filter.matches(name) {
                    if let Ok(key) = std::str::from_utf8(kv.key()) {
                        doomed.push(key.to_owned());
                    }
                }
            }
            Ok(())
        })
        .await?;
        self.delete_keys(doomed).await
    }

    async fn remove_shared(&self, name: &str, uri: &rmi_core::Uri) -> Result<bool, NamingError> {
        // NOTE: a remove retried after an attempt that was applied but whose answer was lost
        // answers false; the entry is gone either way.
        let key = self.keys.shared(name, uri);
        let resp = self
            .cluster
            .call(|mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await
            .map_err(|f| self.fail("a remove", f))?;
        self.cluster.saw(resp.header());
        Ok(resp.deleted() > 0)
    }

    async fn remove_plain_at(&self, name: &str, uri: &rmi_core::Uri) -> Result<bool, NamingError> {
        if name == NAME_SERVER_NAME || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Ok(false);
        }
        // Read with quorum, then deleted only if the key is unchanged since (its mod revision):
        // a daemon registering the name again in between keeps it.
        let key = self.keys.name(name);
        let resp = self
            .cluster
            .call(|mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(|f| self.fail("a lookup", f))?;
        self.cluster.saw(resp.header());
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        let wanted = uri.to_string();
        let there = decode_entry(kv)
            .is_some_and(|e| !e.shared && e.lease.is_none() && e.uri.to_string() == wanted);
        if !there {
            return Ok(false);
        }
        let revision = kv.mod_revision();
        let resp = self
            .cluster
            .call(|mut c| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|f| self.fail("a remove", f))?;
        self.cluster.saw(resp.header());
        // NOTE: a remove retried after an attempt that was applied but whose answer was lost
        // answers false (the key changed: it is gone); the name is gone either way.
        Ok(resp.succeeded())
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: BTreeSet<String>,
    ) -> Result<(), NamingError> {
        if name == NAME_SERVER_NAME {
            let mut local = self.local.lock();
            let entry = local.as_mut().ok_or_else(|| unknown_name(name))?;
            entry.metadata = metadata;
            return Ok(());
        }
        let (key, end) = self.keys.name_range(name);
        'attempt: for _ in 0..CAS_ATTEMPTS {
            // Every entry of the name (one, or one per daemon of a shared name), read in pages,
            // put only if nobody changed it since, each keeping its lease: in transactions of
            // at most `DELETES_PER_TXN` entries and about 1 MiB (etcd refuses more than 128
            // operations, or 1.5 MiB, in one). One that finds an entry changed reads them all
            // again; what the others put is the same metadata, put again. So a shared name of
            // more entries than one transaction holds is not set atomically: an error part way
            // (the cluster gone, or entries changing for every attempt) leaves some entries
            // with the new metadata, and setting it again finishes the job.
            let mut updates: Vec<(Compare, TxnOp, usize)> = Vec::new();
            // Read with quorum: a member behind could miss an entry registered since.
            let (from, to) = (key.clone(), end.clone());
            self.scan(from, to, "a metadata update", Consistency::Quorum, |kv| {
                if self.keys.name_of(kv.key()) != Some(name) {
                    return Ok(());
                }
                let mut entry = decode_entry(kv).ok_or_else(|| {
                    NamingError::new(format!("the entry of {name} in etcd is malformed"))
                })?;
                self.limits
                    .check_metadata_writes(name, updates.len() + 1, metadata.len())?;
                entry.metadata = metadata.clone();
                let value = EtcdStore::encode(&entry);
                let size = kv.key().len() + value.len();
                updates.push((
                    Compare::mod_revision(kv.key(), CompareOp::Equal, kv.mod_revision()),
                    TxnOp::put(
                        kv.key(),
                        value,
                        Some(PutOptions::new().with_lease(kv.lease())),
                    ),
                    size,
                ));
                Ok(())
            })
            .await?;
            if updates.is_empty() {
                return Err(unknown_name(name));
            }
            let mut rest = updates.as_slice();
            while !rest.is_empty() {
                let mut bytes = 0;
                let n = rest
                    .iter()
                    .take(DELETES_PER_TXN)
                    .take_while(|(_, _, size)| {
                        bytes += size;
                        bytes <= 1 << 20
                    })
                    .count()
                    .max(1);
                let (chunk, after) = rest.split_at(n);
                rest = after;
                let compares: Vec<Compare> = chunk.iter().map(|(c, _, _)| c.clone()).collect();
                let puts: Vec<TxnOp> = chunk.iter().map(|(_, p, _)| p.clone()).collect();
                let result = self
                    .cluster
                    .call(|mut c| {
                        let txn = Txn::new().when(compares.clone()).and_then(puts.clone());
                        async move { c.txn(txn).await }
                    })
                    .await;
                match result {
                    Ok(resp) => {
                        self.cluster.saw(resp.header());
                        if !resp.succeeded() {
                            continue 'attempt;
                        }
                    }
                    // The lease ended under us: so did the name.
                    Err(Failure::Refused(e)) if lease_not_found(&e) => {
                        return Err(unknown_name(name))
                    }
                    Err(f) => return Err(self.fail("a metadata update", f)),
                }
            }
            return Ok(());
        }
        Err(NamingError::new(format!(
            "the entry of {name} kept changing; set its metadata again"
        )))
    }

    async fn yplookup(&self, filter: &MetaFilter) -> Result<Vec<(String, Entry)>, NamingError> {
        self.select(
            &NameFilter::All,
            |e| filter.matches(&e.metadata),
            Some("yplookup"),
        )
        .await
    }

    async fn count(&self) -> Result<u32, NamingError> {
        let names = self.count_keys(&self.keys.names, "a count").await?;
        Ok(u32::try_from(names + self.local_count()).unwrap_or(u32::MAX))
    }

    fn watch(&self) -> Watch {
        let (tx, watch) = WatchTx::channel();
        let start = self.cluster.revision.load(Ordering::Relaxed);
        // Stale reads are counted from now, not from when the task first runs.
        let relaxed = self.cluster.relaxed_reads.subscribe();
        if start == 0 {
            // No revision seen yet (a store always has one once connected): a watch of its own,
            // which reads the current one first.
            tokio::spawn(watch_loop(
                self.cluster.clone(),
                self.keys.clone(),
                Start::After(0),
                relaxed,
                tx,
            ));
            return watch;
        }
        let mut hub = self.hub.hub.lock();
        match hub.as_mut() {
            Some(hub) => {
                let at = hub.at;
                hub.watchers.push(Watcher { tx, at });
            }
            None => {
                let at = Position::at(start + 1);
                let id = self.hub.next_id.fetch_add(1, Ordering::Relaxed);
                *hub = Some(Hub {
                    id,
                    watchers: vec![Watcher { tx, at }],
                    at,
                });
                let (feed, fed) = WatchTx::queue();
                tokio::spawn(watch_loop(
                    self.cluster.clone(),
                    self.keys.clone(),
                    Start::After(start),
                    relaxed,
                    feed,
                ));
                tokio::spawn(fan_out(
                    self.cluster.clone(),
                    self.keys.clone(),
                    self.hub.clone(),
                    id,
                    fed,
                    self.cluster.relaxed_reads.subscribe(),
                ));
            }
        }
        Box::pin(Leaving {
            watch: Some(watch),
            slot: self.hub.clone(),
        })
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, NamingError> {
        let max_leases = self.limits.max_leases;
        if self.count_keys(&self.keys.leases, "a lease count").await? >= max_leases {
            return Err(NamingError::new(format!(
                "the name server holds its max_leases ({max_leases}) leases; revoke some first"
            )));
        }
        // etcd counts whole seconds.
        let secs = i64::try_from(whole_seconds(ttl)).unwrap_or(i64::MAX).max(1);
        // NOTE: a grant retried after an attempt that was applied but whose answer was lost
        // leaves that first lease unused; it expires by itself after its TTL.
        let resp = self
            .cluster
            .call(|mut c| async move { c.lease_grant(secs, None).await })
            .await
            .map_err(|f| self.fail("a lease grant", f))?;
        self.cluster.saw(resp.header());
        let id = resp.id();
        let record = serde_json::to_vec(&StoredLease {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            revoking: false,
        })
        .expect("a lease record serializes");
        let key = self.keys.lease(id);
        let put = self
            .cluster
            .call(|mut c| {
                let (key, record) = (key.clone(), record.clone());
                async move {
                    c.put(key, record, Some(PutOptions::new().with_lease(id)))
                        .await
                }
            })
            .await;
        match put {
            Ok(resp) => self.cluster.saw(resp.header()),
            Err(f) => {
                let err = self.fail("a lease record", f);
                let _ = self
                    .cluster
                    .call(|mut c| async move { c.lease_revoke(id).await })
                    .await;
                return Err(err);
            }
        }
        u64::try_from(id)
            .map(LeaseId)
            .map_err(|_| NamingError::new(format!("etcd granted an invalid lease id {id}")))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, NamingError> {
        let id = etcd_lease(lease).ok_or_else(|| unknown_lease(lease))?;
        // Only a lease rmi granted (it has a record, not marked as being revoked): another
        // program's lease on the same cluster is not ours to keep alive. Then one keep-alive
        // round on a fresh stream (etcd-client reads its answer: an expired lease is refused).
        // The TTL comes from the record, as granted (rounded up to whole seconds, as etcd
        // counts): two round trips, not three with a `time_to_live` after.
        let key = self.keys.lease(id);
        let record = self
            .cluster
            .call(|mut c| {
                let key = key.clone();
                async move {
                    let record = c.get(key, None).await?;
                    let Some(kv) = record.kvs().first() else {
                        return Ok(None);
                    };
                    let stored = serde_json::from_slice::<StoredLease>(kv.value()).ok();
                    if stored.as_ref().is_some_and(|l| l.revoking) {
                        return Ok(None);
                    }
                    c.lease_keep_alive(id).await?;
                    Ok(Some((record.header().cloned(), stored)))
                }
            })
            .await
            .map_err(|f| match f {
                Failure::Refused(e) if lease_not_found(&e) => unknown_lease(lease),
                f => self.fail("a lease keep-alive", f),
            })?
            .ok_or_else(|| unknown_lease(lease))?;
        let (header, stored) = record;
        self.cluster.saw(header.as_ref());
        // A record another version wrote without a readable TTL: ask etcd.
        let ttl_ms = match stored {
            Some(stored) => stored.ttl_ms,
            None => {
                let resp = self
                    .cluster
                    .call(|mut c| async move { c.lease_time_to_live(id, None).await })
                    .await
                    .map_err(|f| self.fail("a lease keep-alive", f))?;
                self.cluster.saw(resp.header());
                u64::try_from(resp.granted_ttl())
                    .unwrap_or(0)
                    .saturating_mul(1000)
            }
        };
        Ok(Duration::from_secs(
            whole_seconds(Duration::from_millis(ttl_ms)).max(1),
        ))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<u32, NamingError> {
        let Some(id) = etcd_lease(lease) else {
            return Ok(0);
        };
        let not_found = |f: &Failure| matches!(f, Failure::Refused(e) if lease_not_found(e));
        // Mark the lease record first, so watchers report its names as removed, not expired;
        // only if it has one: a lease without is another program's, not ours to revoke.
        let key = self.keys.lease(id);
        let record = serde_json::to_vec(&StoredLease {
            ttl_ms: 0,
            revoking: true,
        })
        .expect("a lease record serializes");
        match self
            .cluster
            .call(|mut c| {
                let put = TxnOp::put(
                    key.as_str(),
                    record.clone(),
                    Some(PutOptions::new().with_lease(id)),
                );
                let txn = Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Greater, 0)])
                    .and_then([put]);
                async move { c.txn(txn).await }
            })
            .await
        {
            Ok(resp) if resp.succeeded() => self.cluster.saw(resp.header()),
            Ok(_) => return Ok(0),
            Err(f) if not_found(&f) => return Ok(0),
            Err(f) => return Err(self.fail("a lease revoke", f)),
        }
        let names = self.keys.names.clone();
        let bound = match self
            .cluster
            .call(|mut c| async move {
                c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                    .await
            })
            .await
        {
            Ok(resp) if resp.ttl() >= 0 => resp
                .keys()
                .iter()
                .filter(|k| k.starts_with(names.as_bytes()))
                .count(),
            Ok(_) => return Ok(0),
            Err(f) if not_found(&f) => return Ok(0),
            Err(f) => return Err(self.fail("a lease revoke", f)),
        };
        // NOTE: a revoke retried after an attempt that was applied finds no lease; its names
        // are gone all the same, and the count read above is answered.
        match self
            .cluster
            .call(|mut c| async move { c.lease_revoke(id).await })
            .await
        {
            Ok(resp) => self.cluster.saw(resp.header()),
            Err(f) if not_found(&f) => {}
            Err(f) => return Err(self.fail("a lease revoke", f)),
        }
        Ok(u32::try_from(bound).unwrap_or(u32::MAX))
    }
}

/// Follows every key under the root from revision `start + 1` (or from now, if no revision is
/// known yet) and sends the changes to `tx`, until its receiver is dropped. When the stream
/// breaks, it is opened again on another member from the last revision seen + 1, so no change
/// is lost or repeated.
async fn watch_loop(
    cluster: Arc<Cluster>,
    keys: Keys,
    start: Start,
    mut relaxed: tokio::sync::watch::Receiver<u64>,
    tx: WatchTx,
) {
    let mut backoff = Duration::from_millis(50);
    let mut at = match start {
        Start::After(seen) if seen > 0 => Position::at(seen + 1),
        Start::After(_) => match current_revision(&cluster, &keys, &tx).await {
            Some(revision) => Position::at(revision + 1),
            None => return,
        },
        Start::Resume { mut at, lagged } => {
            if !room_again(&cluster, &tx, &mut at, 0).await {
                return;
            }
            if lagged && tx.send(Change::Lagged { missed: 0 }).await.is_err() {
                return;
            }
            at
        }
    };
    // Leases whose record was deleted without a revoke mark, by the revision: their names,
    // deleted in that same revision, expired.
    let mut expired: HashMap<i64, i64> = HashMap::new();
    // While the watch is down, the changes it would report wait in etcd's history, but a
    // watcher's cache cannot be vouched for: a change made meanwhile is reported only once the
    // watch is back. So a watch down for longer than the retry budget says `Lagged` (a cache
    // reads again rather than answering from what it had), and again once it is back if it
    // did. A read answered from a member without quorum (possibly older than revisions the
    // watch goes on after) is followed by `Lagged` too, whether the watch is up or down: a
    // cache that held its answer reads again (one whose lookup was still under way when the
    // `Lagged` came does not keep the answer).
    let mut down: Option<Down> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        if let Some(down) = down.as_mut().filter(|d| !d.told) {
            if down.since.elapsed() >= cluster.options.retry_budget {
                down.told = true;
                tracing::warn!("the etcd watch is down; watchers are told they lagged");
                if tx.send(Change::Lagged { missed: 0 }).await.is_err() {
                    return;
                }
            }
        }
        if relaxed.has_changed().unwrap_or(false) {
            relaxed.mark_unchanged();
            if tx.send(Change::Lagged { missed: 0 }).await.is_err() {
                return;
            }
        }
        let Some((member, stream)) = cluster.open_watch(&keys.root, at.revision).await else {
            down.get_or_insert_with(Down::new);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        // `None` once closed because the watcher stopped reading.
        let mut stream = Some(stream);
        // The newest revision of the cluster its answers said.
        let mut latest = 0;
        // The revision of the last event this stream gave, and how many it gave of it.
        let mut seen = (0, 0);
        // Whether the stream ended on an answer too large to receive, which every member would
        // send again.
        let mut too_large = false;
        while let Some(open) = stream.as_mut() {
            let message = tokio::select! {
                _ = tx.closed() => return,
                _ = relaxed.changed() => {
                    relaxed.mark_unchanged();
                    if !deliver(&tx, Change::Lagged { missed: 0 }, None, &mut stream).await {
                        return;
                    }
                    continue;
                }
                m = open.message() => m,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    cluster.mark_down(member, &"the watch stream ended");
                    break;
                }
                Err(e) => {
                    too_large = matches!(&e, etcd_client::Error::GRpcStatus(s)
                        if s.code() == tonic::Code::OutOfRange
                            && s.message().contains("message length too large"));
                    if too_large {
                        tracing::warn!(error = %e, "an etcd watch answer is too large to receive");
                    } else {
                        cluster.mark_down(member, &e);
                    }
                    break;
                }
            };
            if resp.canceled() {
                let compacted = resp.compact_revision();
                if compacted > 0 {
                    // The history from `at` is gone: say so, and go on from what is left.
                    let missed = u64::try_from(compacted - at.revision).unwrap_or(0);
                    if !deliver(&tx, Change::Lagged { missed }, None, &mut stream).await {
                        return;
                    }
                    at = Position::at(compacted);
                } else {
                    cluster.mark_down(member, &format!("watch canceled: {}", resp.cancel_reason()));
                }
                break;
            }
            // The watch is back once it answers (etcd's first answer says it was created): not
            // when it opens, since a stream that breaks at once is still down.
            if down.take().is_some_and(|down| down.told)
                && !deliver(&tx, Change::Lagged { missed: 0 }, None, &mut stream).await
            {
                return;
            }
            backoff = Duration::from_millis(50);
            cluster.saw(resp.header());
            latest = latest.max(resp.header().map_or(0, |h| h.revision()));
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                seen = if seen.0 == revision {
                    (revision, seen.1 + 1)
                } else {
                    (revision, 1)
                };
                if !at.pass(revision, seen.1) {
                    // Given before this stream was opened; but a lease's record among them
                    // still says that the names deleted with it in this revision expired.
                    if kv.key().starts_with(keys.leases.as_bytes()) {
                        map_event(&keys, event, kv, revision, &mut expired);
                    }
                    continue;
                }
                if let Some(change) = map_event(&keys, event, kv, revision, &mut expired) {
                    if !deliver(&tx, change, Some(at), &mut stream).await {
                        return;
                    }
                }
            }
            // etcd cuts an answer between revisions unless it sends it in fragments: after
            // the last fragment, or an answer that is whole, its last revision is done.
            if !resp.events().is_empty() && !resp.0.fragment {
                at.finish_revision();
            }
        }
        // Closed at once, whatever comes next: an open stream that is not read holds the
        // connection's flow-control window.
        let paused = stream.take().is_none();
        if paused && !too_large {
            // Closed for a watcher that stopped reading (see `deliver`): once it has read most
            // of its queue, the watch goes on from where it was, from etcd's history. Not at
            // once: a watcher reading slowly would have the watch opened again for every few
            // changes, and etcd read its history again each time.
            if !room_again(&cluster, &tx, &mut at, latest).await {
                return;
            }
            continue;
        }
        if too_large {
            // etcd sends a revision's events (and a lagging watcher up to a thousand revisions)
            // in one answer, split in fragments of its request limit (1.5 MiB unless set
            // otherwise), and the client takes at most 4 MiB: a cluster whose limit is larger
            // than that may send an answer too large, and would send it again from `at`, for
            // ever. Say what was missed (at once: how many is known only if the cluster
            // answers), and go on from now.
            let now = revision_now(&cluster, &keys).await;
            let missed = now.map_or(0, |now| u64::try_from(now + 1 - at.revision).unwrap_or(0));
            if tx.send(Change::Lagged { missed }).await.is_err() {
                return;
            }
            let now = match now {
                Some(now) => now,
                None => {
                    let Some(now) = current_revision(&cluster, &keys, &tx).await else {
                        return;
                    };
                    // A cache that read again meanwhile may have read before `now`: again.
                    if tx.send(Change::Lagged { missed: 0 }).await.is_err() {
                        return;
                    }
                    now
                }
            };
            if now + 1 > at.revision {
                at = Position::at(now + 1);
            }
        }
        down.get_or_insert_with(Down::new);
        // A stream that broke is opened again after a pause: one that breaks at once (a member
        // that accepts watches and then fails them) must not spin.
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The one etcd watch of a store, shared by its watchers (helper-106 #2): N watchers, each
/// a cached resolver or an `rmi-nsc watch` through the name server, were N etcd watches, each
/// sending every change and reading etcd's history again whenever its stream broke.
#[derive(Default)]
struct HubSlot {
    /// `None` while the store has no watcher on the shared watch.
    hub: Mutex<Option<Hub>>,
    /// The id of the next hub.
    next_id: AtomicU64,
    /// Told when a watcher goes (see [`Leaving`]).
    gone: tokio::sync::Notify,
}

/// The watchers of the shared watch.
struct Hub {
    /// Which hub of the slot this is (see [`fan_out`]'s guard).
    id: u64,
    watchers: Vec<Watcher>,
    /// Where the shared watch is in etcd's history: a watcher that joins gets every change
    /// after it.
    at: Position,
}

/// A watcher on the shared watch: its queue, and where the changes queued for it put it.
struct Watcher {
    tx: WatchTx,
    at: Position,
}

/// A watcher's end of the shared watch: tells [`fan_out`] when it goes, so that the etcd watch
/// ends with the last watcher.
struct Leaving {
    /// Taken out (dropped) before the hub is told.
    watch: Option<Watch>,
    slot: Arc<HubSlot>,
}

impl futures_util::Stream for Leaving {
    type Item = Change;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Change>> {
        match self.watch.as_mut() {
            Some(watch) => watch.as_mut().poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Leaving {
    fn drop(&mut self) {
        drop(self.watch.take());
        self.slot.gone.notify_one();
    }
}

/// Hands each change of the shared watch (`fed`) to every watcher on it. A watcher whose queue
/// is full leaves it for a watch of its own, which goes on from where the watcher was once it
/// reads again (see [`Start::Resume`]): the others are not held up, and it loses nothing. Ends,
/// and with it the etcd watch, when the last watcher goes.
async fn fan_out(
    cluster: Arc<Cluster>,
    keys: Keys,
    slot: Arc<HubSlot>,
    id: u64,
    mut fed: WatchRx,
    mut relaxed: tokio::sync::watch::Receiver<u64>,
) {
    /// Empties the slot of this hub however the task ends: dropped with the runtime it ran
    /// on, its watchers' queues go (their streams end, so they watch again), and the next
    /// `watch()` starts a hub of its own rather than join one that will never deliver.
    struct Clear<'a>(&'a HubSlot, u64);
    impl Drop for Clear<'_> {
        fn drop(&mut self) {
            let mut hub = self.0.hub.lock();
            if hub.as_ref().is_some_and(|h| h.id == self.1) {
                *hub = None;
            }
        }
    }
    let _clear = Clear(&slot, id);
    loop {
        let next = tokio::select! {
            next = fed.recv() => next,
            () = slot.gone.notified() => {
                let mut hub = slot.hub.lock();
                if let Some(h) = hub.as_mut() {
                    h.watchers.retain(|w| !w.tx.is_closed());
                    if h.watchers.is_empty() {
                        *hub = None;
                        return;
                    }
                }
                continue;
            }
        };
        let mut hub = slot.hub.lock();
        let Some(h) = hub.as_mut() else { return };
        let Some((change, at)) = next else {
            // (The shared watch ends only once this task has gone.)
            *hub = None;
            return;
        };
        if let Some(at) = at {
            h.at = at;
        }
        if change == (Change::Lagged { missed: 0 }) {
            // (The shared watch passes on each read without quorum as this.)
            relaxed.mark_unchanged();
        }
        for watcher in std::mem::take(&mut h.watchers) {
            match watcher.tx.try_send_at(change.clone(), at) {
                Offer::Queued => h.watchers.push(Watcher {
                    at: at.unwrap_or(watcher.at),
                    ..watcher
                }),
                Offer::Closed => {}
                Offer::Full(_) => {
                    // A change is read again from etcd's history. A `Lagged` first if this
                    // change was one, or one may be queued behind it (a read without quorum
                    // the shared watch has not passed on yet): it would never reach this
                    // watcher otherwise.
                    let start = Start::Resume {
                        at: watcher.at,
                        lagged: at.is_none() || relaxed.has_changed().unwrap_or(false),
                    };
                    tokio::spawn(watch_loop(
                        cluster.clone(),
                        keys.clone(),
                        start,
                        cluster.relaxed_reads.subscribe(),
                        watcher.tx,
                    ));
                }
            }
        }
        if h.watchers.is_empty() {
            *hub = None;
            return;
        }
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// After the newest revision the store has seen in an answer (0: none yet; the current
    /// revision is read first).
    After(i64),
    /// A watcher the shared watch left behind when its queue was full (see [`fan_out`]): from
    /// where it was, once it has read most of its queue; `lagged`: first a `Lagged` it was not
    /// given.
    Resume { at: Position, lagged: bool },
}

/// Waits until a watcher whose queue was full has read most of it (see [`deliver`]); then, if
/// the cluster is more than [`CATCH_UP_REVISIONS`] past `at` (`latest`, or the newest revision
/// the store has seen), says `Lagged` and moves `at` to now. `false` once the watcher is gone.
async fn room_again(cluster: &Cluster, tx: &WatchTx, at: &mut Position, latest: i64) -> bool {
    if !tx.room().await {
        return false;
    }
    let newest = latest.max(cluster.revision.load(Ordering::Relaxed));
    if newest - at.revision > CATCH_UP_REVISIONS {
        let missed = u64::try_from(newest + 1 - at.revision).unwrap_or(0);
        if tx.send(Change::Lagged { missed }).await.is_err() {
            return false;
        }
        *at = Position::at(newest + 1);
    }
    true
}

/// Queues `change` for the watcher; `false` once the watcher is gone.
///
/// A watcher whose queue is full (a paused `rmi-nsc watch`, a cache's stalled client) gets it
/// once it reads, but the etcd stream is closed first: what etcd sent meanwhile would sit
/// unread in the HTTP/2 flow-control window that every call to that member shares (5 MiB,
/// 2 MiB a stream), and three such watchers stalled every lookup and registration. The watch
/// is opened again from where it was once the watcher reads (see [`Position`]).
///
/// `at` is where the change puts the watch in etcd's history (`None` for a `Lagged`): the
/// shared watch's watchers each go on from theirs if they fall behind (see [`fan_out`]).
async fn deliver(
    tx: &WatchTx,
    change: Change,
    at: Option<Position>,
    stream: &mut Option<WatchStream>,
) -> bool {
    match tx.try_send_at(change, at) {
        Offer::Queued => true,
        Offer::Closed => false,
        Offer::Full(change) => {
            *stream = None;
            tx.send_at(change, at).await.is_ok()
        }
    }
}

/// What [`WatchTx`] counts of a change: its texts, and a little for the rest.
fn change_bytes(change: &Change) -> u32 {
    let bytes = match change {
        Change::Registered { name, entry } => {
            name.len()
                + entry.uri.to_string().len()
                + entry.metadata.iter().map(|t| t.len() + 24).sum::<usize>()
        }
        Change::Removed { name, uri } | Change::Expired { name, uri, .. } => {
            name.len() + uri.as_ref().map_or(0, |u| u.to_string().len())
        }
        Change::Lagged { .. } => 0,
    };
    // One change larger than the whole backlog still goes, alone.
    u32::try_from((bytes + 64).min(WATCH_BACKLOG_BYTES)).unwrap_or(u32::MAX)
}

/// What [`WatchTx::try_send`] did with a change.
enum Offer {
    Queued,
    /// No room now: the change, back.
    Full(Change),
    /// The watcher is gone.
    Closed,
}

/// The sending end of one watch's queue: at most [`WATCH_BACKLOG`] changes and
/// [`WATCH_BACKLOG_BYTES`] of them; the watcher's end gives the bytes back as it reads.
struct WatchTx {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<tokio::sync::Semaphore>,
}

/// A change in a watch's queue: its size as counted, and where it puts the watch.
type Queued = (Change, u32, Option<Position>);

/// The reading end of a [`WatchTx`], with where each change puts the watch.
struct WatchRx {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<tokio::sync::Semaphore>,
}

impl WatchRx {
    /// The next change and where it puts the watch (`None` for a `Lagged`); `None` once the
    /// sending end is gone.
    async fn recv(&mut self) -> Option<(Change, Option<Position>)> {
        let (change, size, at) = self.rx.recv().await?;
        self.bytes.add_permits(size as usize);
        Some((change, at))
    }
}

impl WatchTx {
    /// A queue, and the watcher's end of it.
    fn channel() -> (WatchTx, super::Watch) {
        let (tx, rx) = WatchTx::queue();
        let watch = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            let (change, _) = rx.recv().await?;
            Some((change, rx))
        }));
        (tx, watch)
    }

    /// A queue, and its reading end.
    fn queue() -> (WatchTx, WatchRx) {
        let (tx, rx) = mpsc::channel(WATCH_BACKLOG);
        let bytes = Arc::new(tokio::sync::Semaphore::new(WATCH_BACKLOG_BYTES));
        (
            WatchTx {
                tx,
                bytes: bytes.clone(),
            },
            WatchRx { rx, bytes },
        )
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Once the watcher is gone.
    async fn closed(&self) {
        self.tx.closed().await
    }

    /// Queues `change`, waiting for room; an error once the watcher is gone.
    async fn send(&self, change: Change) -> Result<(), ()> {
        self.send_at(change, None).await
    }

    /// [`send`](Self::send), with where the change puts the watch.
    async fn send_at(&self, change: Change, at: Option<Position>) -> Result<(), ()> {
        let size = change_bytes(&change);
        tokio::select! {
            permit = self.bytes.acquire_many(size) => permit.map_err(|_| ())?.forget(),
            () = self.tx.closed() => return Err(()),
        }
        if self.tx.send((change, size, at)).await.is_err() {
            return Err(());
        }
        Ok(())
    }

    /// Queues `change` if there is room for it now.
    #[cfg(test)]
    fn try_send(&self, change: Change) -> Offer {
        self.try_send_at(change, None)
    }

    /// [`try_send`](Self::try_send), with where the change puts the watch.
    fn try_send_at(&self, change: Change, at: Option<Position>) -> Offer {
        use mpsc::error::TrySendError::{Closed, Full};
        let size = change_bytes(&change);
        let Ok(permit) = self.bytes.try_acquire_many(size) else {
            return if self.is_closed() {
                Offer::Closed
            } else {
                Offer::Full(change)
            };
        };
        match self.tx.try_send((change, size, at)) {
            Ok(()) => {
                permit.forget();
                Offer::Queued
            }
            Err(Full((change, _, _))) => Offer::Full(change),
            Err(Closed(_)) => Offer::Closed,
        }
    }

    /// Waits until the watcher has read all but a sixteenth of its queue, in changes and in
    /// bytes; false once it is gone.
    async fn room(&self) -> bool {
        let Ok(changes) = self
            .tx
            .reserve_many(WATCH_BACKLOG - WATCH_BACKLOG / 16)
            .await
        else {
            return false;
        };
        let bytes = u32::try_from(WATCH_BACKLOG_BYTES - WATCH_BACKLOG_BYTES / 16).unwrap_or(0);
        let room = tokio::select! {
            permit = self.bytes.acquire_many(bytes) => permit.is_ok(),
            () = self.tx.closed() => false,
        };
        drop(changes);
        room
    }
}

/// Where a watch is in etcd's history: every event of a revision before `revision` was
/// handled, and the first `done` events of `revision`. etcd gives a revision's events in the
/// same order each time, so a watch opened again at `revision` passes over those `done`: no
/// change is lost or repeated, however the stream was cut (a broken stream, a watcher that
/// stopped reading, an answer cut in fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    revision: i64,
    done: usize,
}

impl Position {
    fn at(revision: i64) -> Self {
        Position { revision, done: 0 }
    }

    /// Past every event of its revision (an answer that etcd did not cut in fragments ended
    /// with it): a watch opened again starts at the next.
    fn finish_revision(&mut self) {
        if self.done > 0 {
            *self = Position::at(self.revision + 1);
        }
    }

    /// Whether the `nth` event (from 1) of `revision` in a stream opened at this position is
    /// new; if so, the position moves past it.
    fn pass(&mut self, revision: i64, nth: usize) -> bool {
        if revision < self.revision || (revision == self.revision && nth <= self.done) {
            return false;
        }
        *self = Position {
            revision,
            done: nth,
        };
        true
    }
}

/// Since when a store's watch has been down, and whether watchers were told.
struct Down {
    since: Instant,
    /// Whether watchers were told (`Lagged`).
    told: bool,
}

impl Down {
    fn new() -> Self {
        Down {
            since: Instant::now(),
            told: false,
        }
    }
}

/// The revision of the cluster now (read until some member answers), or `None` once the
/// watcher is gone.
async fn current_revision(cluster: &Cluster, keys: &Keys, tx: &WatchTx) -> Option<i64> {
    loop {
        if tx.is_closed() {
            return None;
        }
        match revision_now(cluster, keys).await {
            Some(revision) => return Some(revision),
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The revision of the cluster now, if a member answers within the retry budget.
async fn revision_now(cluster: &Cluster, keys: &Keys) -> Option<i64> {
    let root = keys.root.clone();
    let read = cluster
        .call(|mut c| {
            let root = root.clone();
            async move {
                let o = GetOptions::new().with_prefix().with_count_only();
                c.get(root, Some(o)).await
            }
        })
        .await
        .ok()?;
    Some(read.header().map_or(0, |h| h.revision()))
}

/// The change one watch event makes, if it is one a watcher sees.
fn map_event(
    keys: &Keys,
    event: &etcd_client::Event,
    kv: &KeyValue,
    revision: i64,
    expired: &mut HashMap<i64, i64>,
) -> Option<Change> {
    let key = kv.key();
    if let Some(id) = key.strip_prefix(keys.leases.as_bytes()) {
        if event.event_type() == EventType::Delete {
            let revoked = event
                .prev_kv()
                .and_then(|p| serde_json::from_slice::<StoredLease>(p.value()).ok())
                .is_some_and(|l| l.revoking);
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|id| i64::from_str_radix(id, 16).ok());
            if let (Some(id), false) = (id, revoked) {
                expired.retain(|_, r| *r >= revision);
                expired.insert(id, revision);
            }
        }
        return None;
    }
    let name = keys.name_of(key)?;
    if name == NAME_SERVER_NAME {
        return None;
    }
    let name = name.to_owned();
    match event.event_type() {
        EventType::Put => decode_entry(kv).map(|entry| Change::Registered { name, entry }),
        EventType::Delete => {
            let lease = event.prev_kv().map_or(0, KeyValue::lease);
            let uri = event.prev_kv().and_then(decode_entry).map(|e| e.uri);
            match expired.get(&lease) {
                Some(&r) if lease != 0 && r == revision => Some(Change::Expired {
                    name,
                    lease: LeaseId(u64::try_from(lease).unwrap_or(0)),
                    uri,
                }),
                _ => Some(Change::Removed { name, uri }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A watcher that does not read holds at most `WATCH_BACKLOG_BYTES` of large changes (before,
    /// 1,024 of them whatever their size: 18 MB of changes at the limits, per watch), and gets
    /// the room back as it reads; a change larger than the whole backlog still goes, alone.
    #[tokio::test]
    async fn a_watch_queue_holds_a_bounded_number_of_bytes() {
        let (tx, mut watch) = WatchTx::channel();
        let limits = super::super::Limits::default();
        let tags = (0..limits.max_tags)
            .map(|i| format!("{i:03}{}", "t".repeat(limits.max_tag_len - 3)))
            .collect();
        let fat = Change::Registered {
            name: "fat".into(),
            entry: Entry::new(rmi_core::Uri::tcp("obj", "127.0.0.1", 1), tags),
        };
        let size = change_bytes(&fat) as usize;
        assert!(size > 16_000, "{size}");
        let mut queued = 0;
        while matches!(tx.try_send(fat.clone()), Offer::Queued) {
            queued += 1;
        }
        assert!(
            queued * size <= WATCH_BACKLOG_BYTES,
            "{queued} of {size} bytes"
        );
        assert!(
            queued >= WATCH_BACKLOG_BYTES / size - 1,
            "{queued} of {size} bytes"
        );
        for _ in 0..queued {
            assert_eq!(watch.next().await, Some(fat.clone()));
        }
        let room = tokio::time::timeout(Duration::from_secs(5), tx.room()).await;
        assert!(room.expect("room once read"), "the watcher is there");
        let huge = Change::Removed {
            name: "n".repeat(WATCH_BACKLOG_BYTES * 2),
            uri: None,
        };
        assert!(
            matches!(tx.try_send(huge.clone()), Offer::Queued),
            "alone, it goes"
        );
        assert!(
            matches!(tx.try_send(fat.clone()), Offer::Full(_)),
            "and fills the queue"
        );
        assert_eq!(watch.next().await, Some(huge));
        // Small changes are held to the count.
        let small = Change::Lagged { missed: 1 };
        let mut queued = 0;
        while matches!(tx.try_send(small.clone()), Offer::Queued) {
            queued += 1;
        }
        assert_eq!(queued, WATCH_BACKLOG);
        drop(watch);
        assert!(tx.send(small).await.is_err(), "the watcher is gone");
    }

    #[test]
    fn a_watch_opened_again_passes_over_the_events_it_delivered() {
        let mut at = Position::at(10);
        assert!(!at.pass(9, 1), "before the start");
        assert!(at.pass(10, 1) && at.pass(10, 2));
        assert_eq!(
            at,
            Position {
                revision: 10,
                done: 2
            }
        );
        // Opened again at revision 10: its first two events were delivered, the third not.
        assert!(!at.pass(10, 1) && !at.pass(10, 2));
        assert!(at.pass(10, 3) && at.pass(12, 1));
        assert_eq!(
            at,
            Position {
                revision: 12,
                done: 1
            }
        );
        at.finish_revision();
        assert_eq!(at, Position::at(13));
        at.finish_revision();
        assert_eq!(at, Position::at(13), "nothing of 13 was seen");
    }

    #[test]
    fn prefix_ends_are_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/rmi/names/"), b"/rmi/names0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn keys_live_under_the_root() {
        let keys = Keys::new("/x/");
        assert_eq!(keys.name("app.one"), "/x/names/app.one");
        assert_eq!(keys.lease(0x2a), "/x/leases/000000000000002a");
        let uri: rmi_core::Uri = "PYRO:obj@127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            keys.shared("app.one", &uri),
            "/x/names/app.one PYRO:obj@127.0.0.1:4000"
        );
        assert_eq!(
            keys.name_of(keys.shared("app.one", &uri).as_bytes()),
            Some("app.one")
        );
        assert_eq!(keys.name_of(b"/x/names/app.one"), Some("app.one"));
    }

    #[test]
    fn values_are_readable_json() {
        let entry = Entry::new(
            "PYRO:obj@127.0.0.1:4000".parse().unwrap(),
            BTreeSet::from(["red".to_owned()]),
        );
        let json = String::from_utf8(EtcdStore::encode(&entry)).unwrap();
        assert_eq!(
            json,
            r#"{"uri":"PYRO:obj@127.0.0.1:4000","metadata":["red"]}"#
        );
    }

    /// Only ids etcd can hold are etcd leases: 0 means "no lease" there, and ids past
    /// `i64::MAX` do not exist.
    #[test]
    fn a_lease_id_is_an_etcd_lease_only_when_positive_and_within_i64() {
        assert_eq!(etcd_lease(LeaseId(0)), None);
        assert_eq!(etcd_lease(LeaseId(1)), Some(1));
        assert_eq!(etcd_lease(LeaseId(i64::MAX as u64)), Some(i64::MAX));
        assert_eq!(etcd_lease(LeaseId(i64::MAX as u64 + 1)), None);
        assert_eq!(etcd_lease(LeaseId(u64::MAX)), None);
    }

    /// What etcd's answers mean: its "lease not found" (the text is etcd's
    /// `ErrGRPCLeaseNotFound`) and nothing else is an unknown lease; a member or the path to it
    /// failing may be tried on another member, a refusal may not.
    #[test]
    fn etcds_failures_are_told_apart_as_etcd_words_them() {
        use etcd_client::Error;
        use tonic::{Code, Status};
        let status = |code, text: &str| Error::GRpcStatus(Status::new(code, text));
        assert!(lease_not_found(&status(
            Code::NotFound,
            "etcdserver: requested lease not found"
        )));
        assert!(lease_not_found(&Error::LeaseKeepAliveError(
            "lease expired or revoked".into()
        )));
        assert!(!lease_not_found(&status(
            Code::NotFound,
            "etcdserver: key not found"
        )));
        assert!(!lease_not_found(&status(
            Code::InvalidArgument,
            "etcdserver: lease is bad"
        )));
        assert!(!lease_not_found(&Error::WatchError("lease".into())));

        let io = || Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(retryable(&io()));
        assert!(retryable(&Error::WatchError("stream ended".into())));
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Aborted,
            Code::Internal,
        ] {
            assert!(
                retryable(&status(code, "etcdserver: leader changed")),
                "{code:?}"
            );
        }
        // A busy member is tried again; a full database is not (every member says it).
        assert!(retryable(&status(
            Code::ResourceExhausted,
            "etcdserver: too many requests"
        )));
        assert!(!retryable(&status(
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded"
        )));
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::OutOfRange,
        ] {
            assert!(!retryable(&status(code, "etcdserver: refused")), "{code:?}");
        }
        assert!(!retryable(&Error::InvalidArgs("bad".into())));
        assert!(!retryable(&Error::LeaseKeepAliveError("gone".into())));
    }

    /// A cluster of `n` members that nothing answers for (its clients connect lazily, and
    /// these tests make no request).
    async fn cluster(n: usize) -> Cluster {
        let mut members = Vec::new();
        for i in 0..n {
            let endpoint = format!("127.0.0.1:{}", 9 + i);
            let url = format!("http://{endpoint}");
            let client = Client::connect([url.as_str()], None).await.unwrap();
            members.push(Member {
                endpoint,
                relaxed: client.clone(),
                client,
                down_until: Mutex::new(None),
            });
        }
        Cluster {
            members,
            preferred: AtomicUsize::new(0),
            revision: AtomicI64::new(0),
            retries: AtomicU64::new(0),
            relaxed_reads: tokio::sync::watch::Sender::new(0),
            no_quorum_until: Mutex::new(None),
            options: EtcdOptions::default(),
        }
    }

    /// Members are tried from the one that answered last, round the ring; one marked down
    /// goes after every healthy one, the soonest back first, and is healthy again once its
    /// time is up or it answers.
    #[tokio::test]
    async fn members_are_tried_from_the_last_that_answered_and_failed_ones_last() {
        let c = cluster(3).await;
        let all = vec!["127.0.0.1:9", "127.0.0.1:10", "127.0.0.1:11"];
        assert_eq!(c.endpoints(), all);
        assert_eq!(c.healthy(), all);
        assert_eq!(c.order(), [0, 1, 2]);
        c.mark_up(1);
        assert_eq!(c.order(), [1, 2, 0]);
        c.mark_up(2);
        assert_eq!(c.order(), [2, 0, 1]);
        // (A preferred index past the end wraps round.)
        c.preferred.store(4, Ordering::Relaxed);
        assert_eq!(c.order(), [1, 2, 0]);

        c.mark_down(1, &"test");
        assert_eq!(c.order(), [2, 0, 1]);
        assert_eq!(c.healthy(), ["127.0.0.1:9", "127.0.0.1:11"]);
        let now = Instant::now();
        *c.members[2].down_until.lock() = Some(now + Duration::from_secs(30));
        *c.members[1].down_until.lock() = Some(now + Duration::from_secs(5));
        assert_eq!(c.order(), [0, 1, 2], "the soonest back first");
        assert_eq!(c.healthy(), ["127.0.0.1:9"]);
        // A time that is up counts as healthy; an answer clears it and is preferred.
        *c.members[2].down_until.lock() = Some(now - Duration::from_millis(1));
        assert_eq!(c.order(), [2, 0, 1]);
        assert_eq!(c.healthy(), ["127.0.0.1:9", "127.0.0.1:11"]);
        c.mark_up(1);
        assert_eq!(c.order(), [1, 2, 0]);
        assert_eq!(c.healthy(), all);
        assert_eq!(c.members[1].down_until.lock().as_ref(), None);
    }
}
