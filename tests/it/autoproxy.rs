//! Proxies as values: returned by methods (Pyro's autoproxy) and passed in for callbacks.

use std::sync::atomic::{AtomicU32, Ordering};

use rmi::Error;

#[rmi::remote]
pub(crate) trait Account {
    /// Adds `amount`; returns the balance.
    async fn deposit(&self, amount: u32) -> u32;
}

struct AccountObject {
    balance: AtomicU32,
}

impl Account for AccountObject {
    async fn deposit(&self, amount: u32) -> u32 {
        self.balance.fetch_add(amount, Ordering::SeqCst) + amount
    }
}

#[rmi::remote]
pub(crate) trait Bank {
    /// Opens an account in this daemon and returns a proxy to it.
    async fn open(&self, initial: u32) -> AccountProxy;
    /// Closes an account given its proxy; returns whether it existed.
    async fn close(&self, account: AccountProxy) -> bool;
}

pub(crate) struct BankObject;

impl Bank for BankObject {
    async fn open(&self, initial: u32) -> AccountProxy {
        let ctx = rmi::context::current().expect("call context");
        let uri = ctx
            .daemon()
            .register(AccountServer::new(AccountObject {
                balance: AtomicU32::new(initial),
            }))
            .unwrap();
        AccountProxy::from_uri(uri).unwrap()
    }

    async fn close(&self, account: AccountProxy) -> bool {
        let ctx = rmi::context::current().expect("call context");
        let id = account
            .proxy()
            .uri()
            .object()
            .unwrap_or_default()
            .to_string();
        ctx.daemon().unregister(&id)
    }
}

#[rmi::remote]
pub(crate) trait Listener {
    /// Receives a message; returns its length, or fails for an empty one.
    async fn notify(&self, message: String) -> Result<usize, String>;
}

pub(crate) struct ListenerObject {
    heard: std::sync::Mutex<Vec<String>>,
}

impl Listener for ListenerObject {
    async fn notify(&self, message: String) -> Result<usize, String> {
        if message.is_empty() {
            return Err("empty message".into());
        }
        self.heard.lock().unwrap().push(message.clone());
        Ok(message.len())
    }
}

#[rmi::remote]
pub(crate) trait Publisher {
    /// Calls the listener back with `message`; its failure comes back as this call's error.
    async fn publish(&self, listener: ListenerProxy, message: String) -> Result<usize, String>;
}

pub(crate) struct PublisherObject;

impl Publisher for PublisherObject {
    async fn publish(&self, listener: ListenerProxy, message: String) -> Result<usize, String> {
        match listener.notify(message).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(app)) => Err(format!("listener refused: {app}")),
            Err(rmi_error) => Err(format!("listener unreachable: {rmi_error}")),
        }
    }
}

async fn serve(daemon: &rmi::Daemon) {
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
}

#[tokio::test]
async fn a_method_returns_a_proxy_to_an_object_it_registered() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let bank_uri = daemon.register(BankServer::new(BankObject)).unwrap();
    serve(&daemon).await;
    for serializer in [rmi::Serializer::Bincode, rmi::Serializer::MsgPack] {
        let bank: BankProxy = BankProxy::builder(&bank_uri)
            .unwrap()
            .serializer(serializer)
            .connect()
            .await
            .unwrap();
        let account = bank.open(10).await.unwrap();
        assert_eq!(
            account.deposit(5).await.unwrap(),
            15,
            "the returned proxy works"
        );
        let again = account.clone();
        assert_eq!(again.deposit(1).await.unwrap(), 16);

        // Passing the proxy back in lets the server find and unregister the object.
        assert!(bank.close(account.clone()).await.unwrap());
        assert!(matches!(
            account.deposit(1).await.unwrap_err(),
            Error::UnknownObject(_)
        ));
    }
    daemon.shutdown();
}

#[tokio::test]
async fn the_server_calls_back_a_client_object() {
    let server = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let publisher_uri = server
        .register(PublisherServer::new(PublisherObject))
        .unwrap();
    serve(&server).await;

    // The client runs its own daemon for the callback object.
    let client_daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let listener = std::sync::Arc::new(ListenerObject {
        heard: Default::default(),
    });
    let listener_uri = client_daemon
        .register(ListenerServer::from_arc(listener.clone()))
        .unwrap();
    serve(&client_daemon).await;

    let publisher = PublisherProxy::connect(&publisher_uri).await.unwrap();
    let me = ListenerProxy::from_uri(&listener_uri).unwrap();
    assert_eq!(
        publisher.publish(me.clone(), "hello".into()).await.unwrap(),
        Ok(5)
    );
    assert_eq!(*listener.heard.lock().unwrap(), ["hello"]);

    // A failing callback is reported to the server's caller, not lost.
    let refused = publisher
        .publish(me.clone(), String::new())
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("empty message"), "{refused}");
    client_daemon.shutdown();
    let unreachable = publisher
        .publish(me, "anyone?".into())
        .await
        .unwrap()
        .unwrap_err();
    assert!(unreachable.contains("unreachable"), "{unreachable}");
    server.shutdown();
}

#[tokio::test]
async fn a_received_proxy_dials_only_when_first_used() {
    // The daemon counts the connections that reach it (each is one handshake).
    let handshakes = std::sync::Arc::new(AtomicU32::new(0));
    let daemon = rmi::Daemon::builder()
        .validator({
            let handshakes = handshakes.clone();
            move |_: &rmi::daemon::HandshakeInfo<'_>| {
                handshakes.fetch_add(1, Ordering::SeqCst);
                Ok("hello".into())
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let bank_uri = daemon.register(BankServer::new(BankObject)).unwrap();
    serve(&daemon).await;
    let bank = BankProxy::connect(&bank_uri).await.unwrap();
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        1,
        "the bank's connection"
    );
    let account = bank.open(10).await.unwrap();
    assert!(
        account.proxy().connected_uri().is_none(),
        "a received proxy is not connected"
    );
    // Another round trip, and another proxy received: still no dial.
    let spare = bank.open(0).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        1,
        "receiving proxies dialed the daemon"
    );
    // The first call dials.
    assert_eq!(account.deposit(5).await.unwrap(), 15);
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        2,
        "the first call dialed"
    );
    assert_eq!(
        account.proxy().connected_uri().as_ref(),
        Some(account.proxy().uri())
    );
    assert!(spare.proxy().connected_uri().is_none());
    daemon.shutdown();
}

#[rmi::remote]
pub(crate) trait Relay {
    /// Gives back the proxy it was given, as it received it.
    async fn pass(&self, account: AccountProxy) -> AccountProxy;
}

struct RelayObject;

impl Relay for RelayObject {
    async fn pass(&self, account: AccountProxy) -> AccountProxy {
        account
    }
}

/// Credentials as a handshake value (a dict to Python).
#[derive(serde::Serialize)]
struct Credentials {
    user: String,
    token: u32,
}

/// A proxy carries its handshake through Pyro's proxy state, in Pyro5's 6 fields and Pyro4's
/// 9, and under bincode, both ways: a relay receives it and hands it back, and the proxy that
/// comes back greets the account's daemon as the original would. (Under bincode, and for a
/// handshake that is not a string, it greeted it with the default "hello".)
#[tokio::test]
async fn a_proxys_handshake_travels_with_it_in_pyro5_and_pyro4_state_and_bincode() {
    use rmi::protocol::frame::Protocol;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let accounts = rmi::Daemon::builder()
        .validator({
            let seen = seen.clone();
            move |info: &rmi::daemon::HandshakeInfo<'_>| {
                seen.lock().unwrap().push(format!("{:?}", info.data));
                Ok("hello".into())
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let account_uri = accounts
        .register(AccountServer::new(AccountObject {
            balance: AtomicU32::new(0),
        }))
        .unwrap();
    serve(&accounts).await;
    let relays = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let relay_uri = relays.register(RelayServer::new(RelayObject)).unwrap();
    serve(&relays).await;

    let credentials = Credentials {
        user: "ada".into(),
        token: 42,
    };
    for (serializer, protocol, as_value) in [
        (rmi::Serializer::Serpent, Protocol::Pyro5, false),
        (rmi::Serializer::Serpent, Protocol::Pyro4, false),
        (rmi::Serializer::Bincode, Protocol::Pyro5, false),
        (rmi::Serializer::Serpent, Protocol::Pyro5, true),
        (rmi::Serializer::MsgPack, Protocol::Pyro5, true),
    ] {
        let at = format!("{serializer:?} {protocol:?}");
        let relay: RelayProxy = rmi::Proxy::builder(relay_uri.clone())
            .serializer(serializer)
            .protocol(protocol)
            .connect()
            .await
            .unwrap();
        let token = format!("token for {at}");
        let builder = rmi::Proxy::builder(account_uri.clone());
        let builder = match as_value {
            true => builder.handshake_value(&credentials).unwrap(),
            false => builder.handshake(token.as_str()),
        };
        let account: AccountProxy = builder.build().into();
        let back = relay.pass(account).await.unwrap();
        assert!(back.deposit(1).await.unwrap() > 0, "{at}");
        let expected = match as_value {
            true => "{'user': 'ada', 'token': 42}".to_owned(),
            false => format!("{token:?}"),
        };
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&expected),
            "{at}: the handshake came back with the proxy"
        );
    }
    accounts.shutdown();
    relays.shutdown();
}

/// A proxy that comes back from a daemon behind a shared secret, to another daemon (one that
/// has none): the secret was the relay daemon's, and the returned proxy does not bring it to
/// the other, which a daemon naming a third party's address in a reply would otherwise make
/// the client offer there (a guess at the secret, for whoever answers). It dials as a plain
/// proxy does, and works (helper-149 #4).
#[tokio::test]
async fn a_proxy_returned_from_a_secret_daemon_to_another_does_not_bring_the_secret() {
    let secret = rmi::SharedSecret::new("correct horse battery staple");
    let accounts = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let account_uri = accounts
        .register(AccountServer::new(AccountObject {
            balance: AtomicU32::new(0),
        }))
        .unwrap();
    serve(&accounts).await;
    let relays = rmi::Daemon::builder()
        .shared_secret(secret.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let relay_uri = relays.register(RelayServer::new(RelayObject)).unwrap();
    serve(&relays).await;
    let relay: RelayProxy = rmi::Proxy::builder(relay_uri)
        .shared_secret(secret)
        .connect()
        .await
        .unwrap();
    let account: AccountProxy = rmi::Proxy::builder(account_uri).build().into();
    let back = relay.pass(account).await.unwrap();
    assert_eq!(back.deposit(3).await.unwrap(), 3);
    accounts.shutdown();
    relays.shutdown();
}

/// A bank's returned account and a publisher's callback, where every daemon requires what
/// `secure` gives a proxy (a shared secret, TLS): the account proxy, received in a reply, dials
/// as the bank's proxy does; the listener proxy, received in an argument, dials with the
/// server daemon's settings (`server`). Returns the deposit's and the callback's results.
pub(crate) async fn proxies_in_values_under(
    server: rmi::DaemonBuilder,
    callbacks: rmi::DaemonBuilder,
    secure: impl Fn(rmi::ProxyBuilder) -> rmi::ProxyBuilder,
) -> (Result<u32, Error>, Result<Result<usize, String>, Error>) {
    let daemon = server.bind("127.0.0.1:0").await.unwrap();
    let bank_uri = daemon.register(BankServer::new(BankObject)).unwrap();
    let publisher_uri = daemon
        .register(PublisherServer::new(PublisherObject))
        .unwrap();
    serve(&daemon).await;
    let client_daemon = callbacks.bind("127.0.0.1:0").await.unwrap();
    let listener_uri = client_daemon
        .register(ListenerServer::new(ListenerObject {
            heard: Default::default(),
        }))
        .unwrap();
    serve(&client_daemon).await;

    let bank: BankProxy = secure(BankProxy::builder(&bank_uri).unwrap())
        .connect()
        .await
        .unwrap();
    let deposited = match bank.open(10).await {
        Ok(account) => account.deposit(5).await,
        Err(e) => Err(e),
    };
    let publisher: PublisherProxy = secure(PublisherProxy::builder(&publisher_uri).unwrap())
        .connect()
        .await
        .unwrap();
    let me = ListenerProxy::from_uri(&listener_uri).unwrap();
    let called_back = publisher.publish(me, "hello".into()).await;
    daemon.shutdown();
    client_daemon.shutdown();
    (deposited, called_back)
}

/// A publisher on a daemon built by `server`, reached as `secure` says, calls back a listener
/// on a plain daemon on a Unix socket; returns the callback's result.
pub(crate) async fn called_back_over_a_unix_socket(
    server: rmi::DaemonBuilder,
    secure: impl Fn(rmi::ProxyBuilder) -> rmi::ProxyBuilder,
) -> Result<Result<usize, String>, Error> {
    let daemon = server.bind("127.0.0.1:0").await.unwrap();
    let publisher_uri = daemon
        .register(PublisherServer::new(PublisherObject))
        .unwrap();
    serve(&daemon).await;
    let dir = tempfile::tempdir().unwrap();
    let client_daemon = rmi::Daemon::builder()
        .bind_unix(dir.path().join("callbacks.sock"))
        .await
        .unwrap();
    let listener_uri = client_daemon
        .register(ListenerServer::new(ListenerObject {
            heard: Default::default(),
        }))
        .unwrap();
    serve(&client_daemon).await;
    let publisher: PublisherProxy = secure(PublisherProxy::builder(&publisher_uri).unwrap())
        .connect()
        .await
        .unwrap();
    let me = ListenerProxy::from_uri(&listener_uri).unwrap();
    let called_back = publisher.publish(me, "hello".into()).await;
    daemon.shutdown();
    client_daemon.shutdown();
    called_back
}

/// A bank served on 127.0.0.1 by a daemon that requires a shared secret: the secret, the
/// daemon and the bank's URI.
async fn secret_bank() -> (rmi::SharedSecret, rmi::Daemon, rmi::Uri) {
    let secret = rmi::SharedSecret::new("correct horse battery staple");
    let daemon = rmi::Daemon::builder()
        .shared_secret(secret.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let bank_uri = daemon.register(BankServer::new(BankObject)).unwrap();
    serve(&daemon).await;
    (secret, daemon, bank_uri)
}

/// The tutorial's way in, `PYRONAME:`, to a bank whose daemon requires a shared secret: the
/// account proxy it returns (to the daemon the name resolved to) proves the secret too. (A
/// logical URI names no address, so before, the returned proxy matched none and dialed without
/// the secret: refused by the daemon, or, to an impostor on the path, sent in the clear.)
#[tokio::test]
async fn a_proxy_returned_through_a_pyroname_proxy_proves_its_receivers_secret() {
    let (secret, daemon, bank_uri) = secret_bank().await;
    let (ns, names) = crate::naming::name_server().await;
    names.register("secret.bank", &bank_uri).await.unwrap();
    let port = ns.daemon().local_addr().unwrap().port();
    let bank: BankProxy = BankProxy::builder(format!("PYRONAME:secret.bank@127.0.0.1:{port}"))
        .unwrap()
        .shared_secret(secret.clone())
        .connect()
        .await
        .unwrap();
    let account = bank.open(10).await.unwrap();
    assert_eq!(account.deposit(5).await.unwrap(), 15);
    daemon.shutdown();
}

/// A client that reaches a daemon as `localhost` receives proxies whose URIs carry the address
/// the daemon bound (`127.0.0.1`): they are to the same daemon, and prove the secret too.
/// Before, the locations differed as text, and the account proxy dialed without the secret.
#[tokio::test]
async fn a_proxy_returned_to_a_client_that_said_localhost_proves_its_receivers_secret() {
    let (secret, daemon, bank_uri) = secret_bank().await;
    let port = daemon.local_addr().unwrap().port();
    let object = bank_uri.object().unwrap();
    let bank: BankProxy = BankProxy::builder(format!("PYRO:{object}@localhost:{port}"))
        .unwrap()
        .shared_secret(secret.clone())
        .connect()
        .await
        .unwrap();
    let account = bank.open(10).await.unwrap();
    assert!(
        account.proxy().uri().to_string().contains("@127.0.0.1:"),
        "{}",
        account.proxy().uri()
    );
    assert_eq!(account.deposit(5).await.unwrap(), 15);
    daemon.shutdown();
}

#[tokio::test]
async fn proxies_received_in_values_prove_the_shared_secret_of_their_receiver() {
    let secret = rmi::SharedSecret::new("correct horse battery staple");
    let builder = || rmi::Daemon::builder().shared_secret(secret.clone());
    let server = builder().callback_secret(secret.clone());
    let (deposited, called_back) =
        proxies_in_values_under(server, builder(), |b| b.shared_secret(secret.clone())).await;
    assert_eq!(deposited.unwrap(), 15, "the returned account proxy works");
    assert_eq!(called_back.unwrap(), Ok(5), "the server called back");

    // A server with a secret calls back a client daemon without one: its callback proxies
    // prove no secret unless told to (callback_secret).
    let (deposited, called_back) =
        proxies_in_values_under(builder(), rmi::Daemon::builder(), |b| {
            b.shared_secret(secret.clone())
        })
        .await;
    assert_eq!(deposited.unwrap(), 15);
    assert_eq!(called_back.unwrap(), Ok(5), "called back without a secret");
}

/// The same with Pyro4's HMAC key: the returned proxy signs with its receiver's key, and a
/// callback with the server's `callback_hmac_key`; without it the callback is refused.
#[tokio::test]
async fn proxies_received_in_values_sign_with_the_hmac_key_of_their_receiver() {
    let key = rmi::HmacKey::new("pyro4 hmac key");
    let builder = || rmi::Daemon::builder().hmac_key(key.clone());
    let server = builder().callback_hmac_key(key.clone());
    let (deposited, called_back) =
        proxies_in_values_under(server, builder(), |b| b.hmac_key(key.clone())).await;
    assert_eq!(deposited.unwrap(), 15, "the returned account proxy works");
    assert_eq!(called_back.unwrap(), Ok(5), "the server called back");

    let (deposited, called_back) =
        proxies_in_values_under(builder(), builder(), |b| b.hmac_key(key.clone())).await;
    assert_eq!(deposited.unwrap(), 15);
    let refused = called_back.unwrap().unwrap_err();
    assert!(
        refused.contains("hmac key config not symmetric"),
        "{refused}"
    );
}

/// Hands out a proxy to another object of its daemon.
#[rmi::remote]
pub(crate) trait Hands {
    /// A proxy to the lab object.
    async fn lab(&self) -> rmi::Proxy;
}

struct HandsObject(rmi::Uri);

impl Hands for HandsObject {
    async fn lab(&self) -> rmi::Proxy {
        rmi::Proxy::builder(self.0.clone()).build()
    }
}

/// A proxy received from a daemon dials with the decoding limits of the proxy that received
/// it, wherever it points (here: another daemon): a client that lowered `max_message_size`
/// against that daemon keeps it on the proxies the daemon hands out (helper-168 #4: they had
/// the 64 MiB default, whatever the receiver set).
#[tokio::test]
async fn a_received_proxy_decodes_within_the_limits_of_its_receiver() {
    use crate::support::LabProxy;
    let (daemon, _, _) = crate::support::start_daemon().await;
    let (elsewhere, lab, _) = crate::support::start_daemon().await;
    let hands = daemon
        .register(HandsServer::new(HandsObject(lab.clone())))
        .unwrap();
    let small = rmi::DecodeLimits {
        max_message_size: 1 << 20,
        ..Default::default()
    };
    let wary: HandsProxy = HandsProxy::builder(&hands)
        .unwrap()
        .limits(small)
        .connect()
        .await
        .unwrap();
    let handed = LabProxy::from_proxy(wary.lab().await.unwrap());
    let err = handed.make_blob(2 << 20).await.unwrap_err();
    assert!(err.to_string().contains("max_message_size"), "{err}");
    // A proxy of its own, with the default limits, takes the same result.
    let own = LabProxy::connect(&lab).await.unwrap();
    assert_eq!(own.make_blob(2 << 20).await.unwrap().0.len(), 2 << 20);
    daemon.shutdown();
    elsewhere.shutdown();
}
