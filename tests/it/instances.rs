//! Instance modes: single, session (per connection) and percall, and one call at a time.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rmi::{Daemon, InstanceMode, Registration};

use crate::support::eventually;

#[rmi::remote]
pub(crate) trait Counter {
    /// Adds one to this instance's count and returns it.
    async fn incr(&self) -> u32;
    /// Which instance answered.
    async fn instance(&self) -> usize;
    /// Holds the call for a moment; returns the most calls seen inside at once.
    async fn overlap(&self) -> usize;
}

#[derive(Default)]
struct Stats {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

struct CounterObject {
    id: usize,
    count: AtomicU32,
    inside: AtomicUsize,
    most: AtomicUsize,
    stats: Arc<Stats>,
}

impl CounterObject {
    fn new(stats: &Arc<Stats>) -> Self {
        let id = stats.made.fetch_add(1, Ordering::SeqCst) + 1;
        CounterObject {
            id,
            count: AtomicU32::new(0),
            inside: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            stats: stats.clone(),
        }
    }
}

impl Drop for CounterObject {
    fn drop(&mut self) {
        self.stats.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter for CounterObject {
    async fn incr(&self) -> u32 {
        self.count.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn instance(&self) -> usize {
        self.id
    }

    async fn overlap(&self) -> usize {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        self.most.load(Ordering::SeqCst)
    }
}

async fn serve(reg: Registration) -> (Daemon, rmi::Uri) {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register_entry(reg).unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

/// A session registration replaced under its id while a connection holds an instance of it:
/// that connection's next call gets an instance of the new registration (the old one goes).
/// Before, the connection kept calling its old instance, of the old factory, for its life.
#[tokio::test]
async fn a_session_registration_replaced_under_its_id_gives_connections_new_instances() {
    let (old, new) = (Arc::new(Stats::default()), Arc::new(Stats::default()));
    let made_by = old.clone();
    let (daemon, uri) = serve(
        Registration::session(move || CounterServer::new(CounterObject::new(&made_by)))
            .id("counter"),
    )
    .await;
    let counter = CounterProxy::connect(&uri).await.unwrap();
    assert_eq!(counter.incr().await.unwrap(), 1);
    assert_eq!(counter.incr().await.unwrap(), 2);
    let made_by = new.clone();
    daemon
        .register_entry(
            Registration::session(move || CounterServer::new(CounterObject::new(&made_by)))
                .id("counter")
                .replace(),
        )
        .unwrap();
    assert_eq!(counter.incr().await.unwrap(), 1, "a new instance");
    assert_eq!(new.made.load(Ordering::SeqCst), 1);
    eventually("the old instance dropped", || {
        old.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    daemon.shutdown();
}

#[tokio::test]
async fn session_instances_live_as_long_as_their_connection() {
    let stats = Arc::new(Stats::default());
    let factory_stats = stats.clone();
    let (daemon, uri) = serve(Registration::session(move || {
        CounterServer::new(CounterObject::new(&factory_stats))
    }))
    .await;
    assert_eq!(
        stats.made.load(Ordering::SeqCst),
        0,
        "no instance before the first call"
    );

    let a = CounterProxy::connect(&uri).await.unwrap();
    let b = CounterProxy::connect(&uri).await.unwrap();
    // Connected, and answering pings, but not called: still none.
    a.proxy().ping().await.unwrap();
    b.proxy().ping().await.unwrap();
    assert_eq!(
        stats.made.load(Ordering::SeqCst),
        0,
        "no instance before the connection's first call"
    );
    assert_eq!(
        (a.incr().await.unwrap(), a.incr().await.unwrap()),
        (1, 2),
        "one instance per connection"
    );
    assert_eq!(
        b.incr().await.unwrap(),
        1,
        "another connection, another instance"
    );
    assert_ne!(a.instance().await.unwrap(), b.instance().await.unwrap());
    // Clones share the connection, so they share the session instance.
    assert_eq!(a.clone().incr().await.unwrap(), 3);
    assert_eq!(stats.made.load(Ordering::SeqCst), 2);

    // Closing a connection drops its instance, and only its.
    a.proxy().close();
    eventually("session instance dropped", || {
        stats.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(b.incr().await.unwrap(), 2);

    // Shutting the daemon down drops the rest.
    daemon.shutdown();
    eventually("all session instances dropped", || {
        stats.dropped.load(Ordering::SeqCst) == 2
    })
    .await;
}

#[tokio::test]
async fn percall_instances_are_fresh_for_every_call() {
    let stats = Arc::new(Stats::default());
    let factory_stats = stats.clone();
    let (daemon, uri) = serve(Registration::percall(move || {
        CounterServer::new(CounterObject::new(&factory_stats))
    }))
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    for _ in 0..3 {
        assert_eq!(p.incr().await.unwrap(), 1);
    }
    assert_eq!(stats.made.load(Ordering::SeqCst), 3);
    eventually("percall instances dropped", || {
        stats.dropped.load(Ordering::SeqCst) == 3
    })
    .await;
    // The handshake's metadata came from the type, without making an instance.
    assert_eq!(
        p.proxy().metadata().await.unwrap().methods,
        ["incr", "instance", "overlap"]
    );
    // A batch is served by one instance, made for it, as in Pyro: its calls see each other's
    // state. (rmi's format under bincode, Pyro's under msgpack.)
    for serializer in [rmi::Serializer::Bincode, rmi::Serializer::MsgPack] {
        let p: CounterProxy = CounterProxy::builder(&uri)
            .unwrap()
            .serializer(serializer)
            .connect()
            .await
            .unwrap();
        let made = stats.made.load(Ordering::SeqCst);
        let mut batch = p.batch();
        let counts: Vec<_> = (0..3).map(|_| batch.incr()).collect();
        let results = batch.send().await.unwrap();
        let counts: Vec<u32> = counts.iter().map(|c| results.get(c).unwrap()).collect();
        assert_eq!(counts, [1, 2, 3], "{serializer:?}");
        assert_eq!(
            stats.made.load(Ordering::SeqCst),
            made + 1,
            "{serializer:?}"
        );
    }
    daemon.shutdown();
}

#[tokio::test]
async fn a_single_instance_is_shared_by_every_client() {
    let stats = Arc::new(Stats::default());
    let (daemon, uri) = serve(Registration::instance(CounterServer::new(
        CounterObject::new(&stats),
    )))
    .await;
    let a = CounterProxy::connect(&uri).await.unwrap();
    let b = CounterProxy::connect(&uri).await.unwrap();
    assert_eq!(a.incr().await.unwrap(), 1);
    assert_eq!(b.incr().await.unwrap(), 2);
    daemon.shutdown();
}

#[tokio::test]
async fn one_at_a_time_serializes_an_instances_calls() {
    let stats = Arc::new(Stats::default());
    let (daemon, uri) = serve(
        Registration::instance(CounterServer::new(CounterObject::new(&stats))).one_at_a_time(),
    )
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    let most = join_all((0..6).map(|_| p.overlap())).await;
    assert!(
        most.into_iter().all(|m| m.unwrap() == 1),
        "calls overlapped"
    );
    daemon.shutdown();

    // Without the opt-in the same calls run together.
    let (daemon, uri) = serve(Registration::instance(CounterServer::new(
        CounterObject::new(&stats),
    )))
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    let most = join_all((0..6).map(|_| p.overlap())).await;
    assert!(
        most.into_iter().map(|m| m.unwrap()).max().unwrap() > 1,
        "calls never overlapped"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_panicking_instance_factory_is_an_error_for_that_caller() {
    let (daemon, uri) = serve(Registration::session(|| -> CounterServer<CounterObject> {
        panic!("no instance today")
    }))
    .await;
    let p = CounterProxy::connect(&uri).await.unwrap();
    let err = p.incr().await.unwrap_err();
    assert!(
        matches!(&err, rmi::Error::Panicked(e) if e.message.contains("no instance today")),
        "{err}"
    );
    // The connection and the daemon carry on.
    assert!(p.proxy().ping().await.is_ok());
    daemon.shutdown();
}

#[tokio::test]
async fn a_lazy_single_instance_is_made_on_the_first_call_and_shared_by_every_client() {
    let stats = Arc::new(Stats::default());
    let factory_stats = stats.clone();
    let (daemon, uri) = serve(Registration::factory(InstanceMode::Single, move || {
        CounterServer::new(CounterObject::new(&factory_stats))
    }))
    .await;
    let a = CounterProxy::connect(&uri).await.unwrap();
    let b = CounterProxy::connect(&uri).await.unwrap();
    // Registered and connected to (the handshake's metadata comes from the type): no instance
    // yet.
    assert_eq!(
        a.proxy().metadata().await.unwrap().methods,
        ["incr", "instance", "overlap"]
    );
    assert_eq!(
        stats.made.load(Ordering::SeqCst),
        0,
        "made before the first call"
    );
    // First calls from two connections at once: one instance, made once, shared.
    let firsts = join_all([a.incr(), b.incr()]).await;
    let mut firsts: Vec<u32> = firsts.into_iter().map(Result::unwrap).collect();
    firsts.sort();
    assert_eq!(firsts, [1, 2], "one count shared by both clients");
    assert_eq!(stats.made.load(Ordering::SeqCst), 1);
    assert_eq!(a.instance().await.unwrap(), b.instance().await.unwrap());
    let c = CounterProxy::connect(&uri).await.unwrap();
    assert_eq!(c.incr().await.unwrap(), 3);
    // It outlives its clients' connections.
    a.proxy().close();
    b.proxy().close();
    assert_eq!(c.incr().await.unwrap(), 4);
    assert_eq!(stats.made.load(Ordering::SeqCst), 1, "made exactly once");
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
    daemon.shutdown();
}

/// First calls on several threads at once, while the factory is still making the instance:
/// one instance all the same, which every caller gets. (On one thread the first calls cannot
/// overlap a synchronous factory, which the test above runs on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lazy_single_instance_is_made_once_when_first_calls_overlap_on_threads() {
    let stats = Arc::new(Stats::default());
    let factory_stats = stats.clone();
    let (daemon, uri) = serve(Registration::factory(InstanceMode::Single, move || {
        // Slow, so that the other first calls arrive while it runs.
        std::thread::sleep(Duration::from_millis(100));
        CounterServer::new(CounterObject::new(&factory_stats))
    }))
    .await;
    let mut proxies = Vec::new();
    for _ in 0..6 {
        proxies.push(CounterProxy::connect(&uri).await.unwrap());
    }
    let firsts = join_all(proxies.iter().map(|p| {
        let p = p.clone();
        tokio::spawn(async move { p.incr().await.unwrap() })
    }))
    .await;
    let mut counts: Vec<u32> = firsts.into_iter().map(Result::unwrap).collect();
    counts.sort();
    assert_eq!(
        counts,
        [1, 2, 3, 4, 5, 6],
        "one count shared by every caller"
    );
    assert_eq!(stats.made.load(Ordering::SeqCst), 1, "made exactly once");
    for p in &proxies {
        assert_eq!(p.instance().await.unwrap(), 1);
    }
    daemon.shutdown();
}

/// What an instance factory saw of the call it was made for.
type Seen = Arc<std::sync::Mutex<Vec<Option<(String, String, u64)>>>>;

/// A factory that notes the call context it runs in (as Pyro's instance creators see
/// `current_context`), then makes a counter.
fn noting(seen: &Seen, stats: &Arc<Stats>) -> impl Fn() -> CounterServer<CounterObject> {
    let (seen, stats) = (seen.clone(), stats.clone());
    move || {
        let ctx = rmi::CallContext::current()
            .map(|c| (c.object().to_owned(), c.method().to_owned(), c.connection()));
        seen.lock().unwrap().push(ctx);
        CounterServer::new(CounterObject::new(&stats))
    }
}

#[tokio::test]
async fn instance_factories_run_inside_the_call_they_serve() {
    for mode in [
        InstanceMode::Session,
        InstanceMode::PerCall,
        InstanceMode::Single,
    ] {
        let seen = Seen::default();
        let stats = Arc::new(Stats::default());
        let (daemon, uri) = serve(Registration::factory(mode, noting(&seen, &stats))).await;
        let p = CounterProxy::connect(&uri).await.unwrap();
        assert_eq!(p.incr().await.unwrap(), 1, "{mode:?}");
        p.instance().await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let first = seen[0].clone();
        let (object, method, _) =
            first.unwrap_or_else(|| panic!("{mode:?}: the factory ran outside any call's context"));
        assert_eq!(Some(object.as_str()), uri.object(), "{mode:?}");
        assert_eq!(method, "incr", "{mode:?}: made for the first call");
        let expected = if matches!(mode, InstanceMode::PerCall) {
            2
        } else {
            1
        };
        assert_eq!(seen.len(), expected, "{mode:?}: {seen:?}");
        if let Some(second) = seen.get(1) {
            assert_eq!(second.as_ref().map(|s| s.1.as_str()), Some("instance"));
        }
        daemon.shutdown();
    }
}

#[rmi::remote]
pub(crate) trait Turns {
    /// Notes `value` on entry, then holds the call for `ms` milliseconds.
    async fn take_turn(&self, value: u32, ms: u64);
    /// The values in the order their calls started, and the most calls inside at once.
    async fn order(&self) -> (Vec<u32>, usize);
}

#[derive(Default)]
struct TurnsObject {
    entered: std::sync::Mutex<Vec<u32>>,
    inside: AtomicUsize,
    most: AtomicUsize,
}

impl Turns for TurnsObject {
    async fn take_turn(&self, value: u32, ms: u64) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.entered.lock().unwrap().push(value);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    async fn order(&self) -> (Vec<u32>, usize) {
        (
            self.entered.lock().unwrap().clone(),
            self.most.load(Ordering::SeqCst),
        )
    }
}

// Multi-threaded, as daemons usually run: calls are spawned as tasks, and several worker
// threads may pick them up in any order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_runs_calls_in_arrival_order() {
    use rmi::protocol::codec::encode_invoke;
    use rmi::protocol::frame::{Message, MessageType, HEADER_SIZE};
    use rmi::Serializer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CALLS: u32 = 8;
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_entry(
            Registration::instance(TurnsServer::new(TurnsObject::default())).one_at_a_time(),
        )
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let object = uri.object().unwrap();
    // Eight calls in one write on one connection, so their arrival order is certain: the
    // first holds its turn longest, so calls started out of turn would show.
    let mut s = tokio::net::TcpStream::connect(daemon.local_addr().unwrap())
        .await
        .unwrap();
    crate::support::connect_handshake(&mut s, object).await;
    let mut all = Vec::new();
    for value in 1..=CALLS {
        let ms = u64::from(CALLS + 1 - value) * 10;
        let payload =
            encode_invoke(Serializer::Bincode, object, "take_turn", &(value, ms)).unwrap();
        all.extend_from_slice(
            &Message::new(
                MessageType::Invoke,
                Serializer::BINCODE_ID,
                0,
                value as u16,
                payload,
            )
            .to_bytes(),
        );
    }
    s.write_all(&all).await.unwrap();
    // All eight answered.
    for _ in 0..CALLS {
        let mut head = [0u8; HEADER_SIZE];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut head))
            .await
            .expect("a call was not answered")
            .unwrap();
        let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize
            + u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.unwrap();
    }
    let proxy = TurnsProxy::connect(&uri).await.unwrap();
    let (entered, most) = proxy.order().await.unwrap();
    assert_eq!(most, 1, "calls overlapped");
    assert_eq!(
        entered,
        (1..=CALLS).collect::<Vec<_>>(),
        "calls ran out of arrival order"
    );
    daemon.shutdown();
}

/// A daemon on 127.0.0.1:0 serving a fresh lab object `one_at_a_time`, and a proxy to it.
async fn serial_lab() -> (Daemon, crate::support::LabProxy) {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_entry(
            Registration::instance(crate::support::LabServer::new(
                crate::support::LabObject::default(),
            ))
            .one_at_a_time(),
        )
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let lab = crate::support::LabProxy::connect(&uri).await.unwrap();
    (daemon, lab)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_turns_skip_calls_that_need_none() {
    // A call to the daemon object on the same connection takes a turn and gives it up at
    // once; the calls after it must still get theirs.
    let (daemon, lab) = serial_lab().await;
    let slow = tokio::spawn({
        let lab = lab.clone();
        async move { lab.sleep(3_000).await }
    });
    // Let the slow call take its turn first (if it had not, the ping would pass regardless:
    // this wait only gives the check its teeth, it cannot make a correct daemon fail).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A call to another object needs no turn: it runs while the slow call holds its turn.
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        lab.proxy().call_daemon::<_, ()>("ping", &[(); 0]),
    )
    .await
    .expect("a call to the daemon object waited for the one-at-a-time object's turn")
    .unwrap();
    assert!(
        !slow.is_finished(),
        "the slow call ended before the ping was answered"
    );
    let after = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        lab.echo(1, 2, "after".into()),
    )
    .await
    .expect("a call after a turn given up early never ran")
    .unwrap();
    assert_eq!(after.2, "after");
    assert_eq!(slow.await.unwrap().unwrap(), 3_000);
    daemon.shutdown();
}

/// A read of a one-at-a-time object's stream is a call to the daemon object: it gives its turn
/// up at once, so a call to the object behind it runs while the read waits for its item.
#[tokio::test]
async fn a_waiting_stream_read_does_not_hold_a_one_at_a_time_objects_turn() {
    let (daemon, lab) = serial_lab().await;
    // The opening call returns at once; each item comes 3 s after it is asked for.
    let mut items = lab.ticking(3_000, 1).await.unwrap();
    let reading = tokio::spawn(async move {
        use futures_util::StreamExt;
        items.next().await
    });
    // Time for the read to reach the daemon first (without it the echo could go first and
    // pass regardless: this wait gives the check its teeth, it cannot fail a correct daemon).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let echoed = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        lab.echo(1, 2, "beside".into()),
    )
    .await
    .expect("a call waited behind a stream read for the object's turn")
    .unwrap();
    assert_eq!(echoed.2, "beside");
    assert!(!reading.is_finished(), "the item came before the echo");
    assert_eq!(reading.await.unwrap().unwrap().unwrap(), 0);
    daemon.shutdown();
}

/// A caller's deadline counts from the request's arrival: a call to a one-at-a-time object
/// whose deadline passes while it waits for its turn is never started.
#[tokio::test]
async fn one_at_a_time_never_starts_a_call_whose_deadline_passed_in_the_queue() {
    use crate::support::{LabObject, LabProxy, LabServer};
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_entry(
            Registration::instance(LabServer::new(LabObject::default())).one_at_a_time(),
        )
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let lab = LabProxy::connect(&uri).await.unwrap();
    let hurried = LabProxy::from(lab.proxy().with_timeout(Duration::from_millis(100)));
    let first = tokio::spawn({
        let lab = lab.clone();
        async move { lab.sleep(600).await }
    });
    // (Sent after the first: behind it on the one connection, for the object's next turn.)
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        hurried.sleep(0).await.unwrap_err(),
        rmi::Error::Timeout(_)
    ));
    assert_eq!(first.await.unwrap().unwrap(), 600);
    assert_eq!(
        lab.calls().await.unwrap(),
        1,
        "the call whose deadline passed in the queue ran"
    );
    daemon.shutdown();
}

/// A call queued for a one-at-a-time object's turn waits no longer than its caller: at its
/// deadline it gives up its turn and its in-flight slot, so the connection is read again while
/// the object is still busy. Raw frames, so that one connection carries calls to two objects.
#[tokio::test]
async fn a_call_whose_deadline_passes_in_the_queue_gives_its_slot_back() {
    use crate::support::{
        connect_handshake, dial, invoke_frame, invoke_message, LabObject, LabServer,
    };
    use rmi::protocol::frame::{Header, HEADER_SIZE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::builder()
        .max_in_flight(3)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let busy = daemon
        .register_entry(
            Registration::instance(LabServer::new(LabObject::default())).one_at_a_time(),
        )
        .unwrap();
    let other = daemon
        .register(LabServer::new(LabObject::default()))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let (busy_id, other_id) = (busy.object().unwrap(), other.object().unwrap());
    let mut s = dial(&busy).await;
    connect_handshake(&mut s, busy_id).await;
    // 1: holds the object's turn for 20 s. 2, 3: queued behind it, each with a 100 ms
    // deadline; with 1 they take all three slots. 4: to another object, read only once a slot
    // is free.
    let mut frames = invoke_frame(busy_id, "sleep", &(20_000u64,), 1, 0);
    for seq in [2, 3] {
        let mut hurried = invoke_message(busy_id, "sleep", &(0u64,), seq, 0);
        hurried.annotations.push((
            *b"DDLN",
            bytes::Bytes::copy_from_slice(&100u64.to_be_bytes()),
        ));
        frames.extend_from_slice(&hurried.to_bytes());
    }
    frames.extend(invoke_frame(other_id, "sleep", &(0u64,), 4, 0));
    s.write_all(&frames).await.unwrap();
    let mut answered = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while answered.len() < 3 {
            let mut head = [0u8; HEADER_SIZE];
            s.read_exact(&mut head).await.unwrap();
            let header = Header::parse(&head, usize::MAX).expect("a header");
            let mut rest = vec![0u8; header.total_len() - head.len()];
            s.read_exact(&mut rest).await.unwrap();
            answered.push(header.seq);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("calls queued past their deadline kept their slots: answered only {answered:?} while the object was busy")
    });
    answered.sort_unstable();
    assert_eq!(answered, [2, 3, 4], "answered before the 20 s call");
    daemon.shutdown();
}
