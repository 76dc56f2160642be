//! `rmi-ns`'s options beyond storage (pyro5-ns's `-u`, `--nathost`/`--natport`, TLS, a shared
//! secret, lease TTL bounds and the quotas as flags) and its stop on SIGTERM, each against a
//! child process, with a Rust client and `rmi-nsc`. 127.0.0.1 only; timings printed, never
//! asserted.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rmi::naming::{NameServerProxy, NsLocator};
use rmi::rustls::ClientConfig;
use rmi::{Error, HmacKey, SharedSecret, Uri};
use support::{locate, nsc, port_of, spawn_rmi_ns, spawn_rmi_ns_ignoring, spawn_rmi_ns_with};

const TCP: [&str; 5] = ["--host", "127.0.0.1", "--port", "0", "--nobc"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = TCP.to_vec();
    all.extend_from_slice(extra);
    all
}

#[tokio::test]
async fn unix_socket_serves_a_rust_client_and_rmi_nsc_and_is_removed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.sock");
    let path_text = path.to_str().unwrap();
    let (mut ns, lines) = spawn_rmi_ns_with(&["-u", path_text], &[], 1);
    let expected = format!("PYRO:Pyro.NameServer@./u:{path_text}");
    assert!(lines[0].contains(&expected), "{lines:?}");

    let names = NameServerProxy::connect(expected.as_str()).await.unwrap();
    names
        .register("over.unix", &Uri::tcp("obj", "127.0.0.1", 4000))
        .await
        .unwrap();
    assert_eq!(
        names.lookup("Pyro.NameServer").await.unwrap().to_string(),
        expected
    );
    let (ok, out) = nsc(&["-u", path_text, "list"], &[]);
    assert!(
        ok && out.contains("over.unix --> PYRO:obj@127.0.0.1:4000"),
        "{out}"
    );
    // Both from the environment, the socket and a CA: the socket, which runs no TLS (the CA
    // file is not even read). Both on the command line: refused.
    let (ok, out) = nsc(
        &["ping"],
        &[
            ("RMI_NS_UNIXSOCKET", path_text),
            ("RMI_NS_TLS_CA", "/nonexistent/ca.pem"),
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = nsc(
        &["-u", path_text, "--tls-ca", "/nonexistent/ca.pem", "ping"],
        &[],
    );
    assert!(
        !ok && out.contains("a Unix socket (-u) runs no TLS"),
        "{out}"
    );
    drop(names);

    let (status, took) = ns.terminate();
    assert!(status.success(), "{status}");
    assert!(!path.exists(), "the socket file is removed on a clean stop");
    eprintln!("rmi-ns on a unix socket stopped {took:?} after SIGTERM");
}

#[tokio::test]
async fn nathost_and_natport_are_the_address_in_the_uris_it_hands_out() {
    let (_ns, lines) = spawn_rmi_ns_with(
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--bcport",
            "0",
            "--nathost",
            "ns.example.test",
            "--natport",
            "19090",
        ],
        &[],
        4,
    );
    let advertised = Uri::tcp("Pyro.NameServer", "ns.example.test", 19090);
    assert!(
        lines[0].contains(&format!("({advertised})")),
        "the printed URI: {lines:?}"
    );
    // And pyro5-ns's last lines, which scripts written for it wait for (helper-169 #1).
    let bound = Uri::tcp("Pyro.NameServer", "127.0.0.1", port_of(&lines[0]));
    assert_eq!(
        lines[2..],
        [
            format!("internal URI = {bound}"),
            format!("external URI = {advertised}")
        ]
    );
    // Reached through where it binds, it names itself by the advertised address.
    let names = locate(port_of(&lines[0])).await;
    assert_eq!(names.lookup("Pyro.NameServer").await.unwrap(), advertised);

    // Its broadcast responder, as Pyro's, answers with where it binds: a broadcast reaches
    // only clients on this side of the address translation, which may have no route to the
    // outside address (a router without hairpin NAT).
    let bc: std::net::SocketAddr = lines[1]
        .strip_prefix("Broadcast server running on ")
        .unwrap_or_else(|| panic!("{lines:?}"))
        .parse()
        .unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_broadcast(true).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(b"GET_NSURI", bc).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        Uri::tcp("Pyro.NameServer", "127.0.0.1", port_of(&lines[0])).to_string()
    );
}

/// A certificate authority for the TLS tests, its certificate written to `dir/{name}.pem`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: std::path::PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate for `names`, written as `dir/{file}.pem` and `dir/{file}.key`.
    fn leaf(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn client_config(&self, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
        rmi_cli::tls::client(&self.pem, identity).unwrap()
    }
}

/// A key file the PEM reader cannot take says why: encrypted (openssl's default when given a
/// passphrase), or a certificate where the key should be. (Before, both were "no items
/// found"; helper-152 #2.) A good key still makes an identity.
#[test]
fn a_key_file_that_cannot_be_read_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.leaf(dir.path(), "server", &["127.0.0.1"]);
    assert!(rmi_cli::tls::server(&cert, &key, None).is_ok());
    let encrypted = dir.path().join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = rmi_cli::tls::server(&cert, &encrypted, None).unwrap_err();
    assert!(err.contains("it is encrypted"), "{err}");
    let err = rmi_cli::tls::server(&cert, &cert, None).unwrap_err();
    assert!(err.contains("it holds a certificate, not a key"), "{err}");
    for err in [
        rmi_cli::tls::client(&ca.pem, Some((&cert, &encrypted))).unwrap_err(),
        rmi_cli::tls::server(&cert, &dir.path().join("missing.key"), None).unwrap_err(),
    ] {
        assert!(err.contains("PKCS#8, PKCS#1 or SEC1"), "{err}");
    }
}

async fn locate_with(port: u16, tls: Option<Arc<ClientConfig>>) -> Result<NameServerProxy, Error> {
    let mut locator = NsLocator::new()
        .host("127.0.0.1")
        .port(port)
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        locator = locator.tls(tls);
    }
    let ns = locator.locate().await?;
    ns.ping().await?;
    Ok(ns)
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.leaf(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let (_ns, port) = spawn_rmi_ns(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let names = locate_with(port, Some(ca.client_config(None)))
        .await
        .unwrap();
    names
        .register("secure", &Uri::tcp("obj", "127.0.0.1", 4000))
        .await
        .unwrap();
    let err = locate_with(port, None).await.unwrap_err();
    eprintln!("a plaintext client of the TLS rmi-ns: {err}");
    // A client trusting another CA is refused too.
    let other = Ca::new(dir.path(), "other");
    assert!(locate_with(port, Some(other.client_config(None)))
        .await
        .is_err());
    // rmi-nsc over TLS.
    let port = port.to_string();
    let ca_pem = ca.pem.to_str().unwrap();
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "--tls-ca",
            ca_pem,
            "lookup",
            "secure",
        ],
        &[],
    );
    assert!(ok && out.contains("PYRO:obj@127.0.0.1:4000"), "{out}");
    let (ok, out) = nsc(&["-n", "127.0.0.1", "-p", &port, "ping"], &[]);
    assert!(!ok, "plaintext rmi-nsc: {out}");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let clients = Ca::new(dir.path(), "clients");
    let (cert, key) = ca.leaf(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = clients.leaf(dir.path(), "client", &["client.rmi.test"]);
    let (stranger_cert, stranger_key) = ca.leaf(dir.path(), "stranger", &["client.rmi.test"]);
    let (_ns, port) = spawn_rmi_ns(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        clients.pem.to_str().unwrap(),
    ]);
    locate_with(
        port,
        Some(ca.client_config(Some((&client_cert, &client_key)))),
    )
    .await
    .unwrap();
    assert!(locate_with(port, Some(ca.client_config(None)))
        .await
        .is_err());
    assert!(
        locate_with(
            port,
            Some(ca.client_config(Some((&stranger_cert, &stranger_key))))
        )
        .await
        .is_err(),
        "a certificate not from the client CA"
    );
    let port = port.to_string();
    let base = [
        "-n",
        "127.0.0.1",
        "-p",
        &port,
        "--tls-ca",
        ca.pem.to_str().unwrap(),
    ];
    let mut with_cert = base.to_vec();
    with_cert.extend([
        "--tls-cert",
        client_cert.to_str().unwrap(),
        "--tls-key",
        client_key.to_str().unwrap(),
        "ping",
    ]);
    assert_eq!(
        nsc(&with_cert, &[]),
        (true, "Name server ping ok.\n".into())
    );
    let mut without = base.to_vec();
    without.push("ping");
    let (ok, out) = nsc(&without, &[]);
    assert!(
        !ok && out.contains("hint: the name server refused the connection"),
        "{out}"
    );
}

#[tokio::test]
async fn a_shared_secret_is_required_of_every_client() {
    let dir = tempfile::tempdir().unwrap();
    // From the environment, as PYRO_HMAC_KEY was for pyro4-ns.
    let (_ns, lines) = spawn_rmi_ns_with(&TCP, &[("RMI_NS_KEY", "s3cret")], 1);
    let port = port_of(&lines[0]);
    let with = |secret: Option<&str>| {
        let mut locator = NsLocator::new().host("127.0.0.1").port(port);
        if let Some(secret) = secret {
            locator = locator.shared_secret(SharedSecret::new(secret));
        }
        async move {
            let ns = locator.locate().await?;
            ns.ping().await?;
            Ok::<_, Error>(ns)
        }
    };
    let names = with(Some("s3cret")).await.unwrap();
    names
        .register("guarded", &Uri::tcp("obj", "127.0.0.1", 4000))
        .await
        .unwrap();
    let err = with(None).await.unwrap_err();
    assert!(err.to_string().contains("shared secret"), "{err}");
    assert!(with(Some("guess")).await.is_err());

    let port = port.to_string();
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "-k",
            "s3cret",
            "lookup",
            "guarded",
        ],
        &[],
    );
    assert!(ok && out.contains("PYRO:obj@127.0.0.1:4000"), "{out}");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "s3cret\n").unwrap();
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "--key-file",
            key_file.to_str().unwrap(),
            "ping",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let (ok, out) = nsc(&["-n", "127.0.0.1", "-p", &port, "ping"], &[]);
    assert!(!ok && out.contains("shared secret"), "{out}");
    // A wrong key: the hint is about the key, not about starting rmi-ns.
    let (ok, out) = nsc(
        &["-n", "127.0.0.1", "-p", &port, "-k", "wrong", "ping"],
        &[],
    );
    assert!(
        !ok && out.contains("hint: the name server refused the connection: check --key"),
        "{out}"
    );
    assert!(!out.contains("Start it with"), "{out}");
    // Found on localhost without -n: the same hint.
    let (ok, out) = nsc(&["-p", &port, "-x", "-k", "wrong", "ping"], &[]);
    assert!(
        !ok && out.contains("hint: the name server refused the connection: check --key"),
        "{out}"
    );

    // And --key-file on rmi-ns's side.
    let (_ns, lines) =
        spawn_rmi_ns_with(&args(&["--key-file", key_file.to_str().unwrap()]), &[], 1);
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port_of(&lines[0]).to_string(),
            "-k",
            "s3cret",
            "ping",
        ],
        &[],
    );
    assert!(ok, "{out}");
}

#[tokio::test]
async fn pyro4_s_hmac_key_is_required_of_every_client() {
    // From Pyro4's own variable, as `python -m Pyro4.naming` reads it.
    let (_ns, lines) = spawn_rmi_ns_with(&TCP, &[("PYRO_HMAC_KEY", "s3cret")], 1);
    let port = port_of(&lines[0]);
    let locator = NsLocator::new().host("127.0.0.1").port(port).no_broadcast();
    let names = locator
        .clone()
        .hmac_key(HmacKey::new("s3cret"))
        .locate()
        .await
        .unwrap();
    names
        .register("guarded", &Uri::tcp("obj", "127.0.0.1", 4000))
        .await
        .unwrap();
    let err = locator.locate().await.map(drop).unwrap_err();
    assert!(
        err.to_string().contains("hmac key config not symmetric"),
        "{err}"
    );

    let port = port.to_string();
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "--hmac-key",
            "s3cret",
            "lookup",
            "guarded",
        ],
        &[],
    );
    assert!(ok && out.contains("PYRO:obj@127.0.0.1:4000"), "{out}");
    let (ok, out) = nsc(
        &["-n", "127.0.0.1", "-p", &port, "ping"],
        &[("PYRO_HMAC_KEY", "s3cret")],
    );
    assert!(ok, "{out}");
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "--hmac-key",
            "wrong",
            "ping",
        ],
        &[],
    );
    assert!(
        !ok && out.contains("message hmac mismatch") && out.contains("--hmac-key"),
        "{out}"
    );

    // A shared secret and an HMAC key together: refused before anything starts.
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(args(&["--key", "a", "--hmac-key", "b"]))
        .output()
        .expect("run rmi-ns");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not both"), "{err}");
    // The command line's --key beats PYRO_HMAC_KEY from the environment.
    let (_ns, lines) = spawn_rmi_ns_with(&args(&["--key", "s3cret"]), &[("PYRO_HMAC_KEY", "x")], 1);
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port_of(&lines[0]).to_string(),
            "-k",
            "s3cret",
            "ping",
        ],
        &[],
    );
    assert!(ok, "{out}");
}

#[tokio::test]
async fn sigterm_stops_rmi_ns_promptly_with_exit_code_0_even_with_a_watch_open() {
    let (mut ns, port) = spawn_rmi_ns(&[]);
    let names = locate(port).await;
    let mut watch = names.watch(None).await.unwrap();
    names
        .register("x", &Uri::tcp("obj", "127.0.0.1", 4000))
        .await
        .unwrap();
    assert!(watch.next().await.is_some());
    let (status, took) = tokio::task::spawn_blocking(move || ns.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    eprintln!("rmi-ns exited with {status} {took:?} after SIGTERM, a watch open");
    // The watch ended with the name server.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the watch did not end");
}

#[tokio::test]
async fn quotas_and_lease_bounds_are_flags() {
    let (mut ns, port) = spawn_rmi_ns(&[
        "--max-entries",
        "3",
        "--max-reply-bytes",
        "150",
        "--max-tags",
        "2",
        "--min-lease-ttl",
        "1s",
        "--max-lease-ttl",
        "10s",
        "--max-message-size",
        "128KiB",
    ]);
    let names = locate(port).await;
    let uri = Uri::tcp("obj", "127.0.0.1", 4000);
    let tags = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<BTreeSet<_>>();
    let refused = |err: Error, setting: &str| {
        assert!(
            matches!(&err, Error::Resolve(m) if m.contains(setting)),
            "expected a refusal naming {setting}: {err}"
        );
    };
    refused(
        names
            .register_with("tagged", &uri, false, tags(3))
            .await
            .unwrap_err(),
        "max_tags",
    );
    names.register("a", &uri).await.unwrap();
    names.register("b", &uri).await.unwrap();
    refused(names.register("c", &uri).await.unwrap_err(), "max_entries");
    refused(names.list().await.unwrap_err(), "max_reply_bytes");
    refused(
        names.api().lease_grant(500).await.unwrap_err(),
        "min_lease_ttl",
    );
    refused(
        names.api().lease_grant(60_000).await.unwrap_err(),
        "max_lease_ttl",
    );
    names.api().lease_grant(2_000).await.unwrap();
    assert!(ns.is_alive());
    assert_eq!(names.count().await.unwrap(), 3);
}

/// A request over `--max-message-size` is refused from its header, and the refusal names the
/// setting; nothing else refuses it here (no quota it would break is set low), so this shows
/// the flag reaches the daemon. A value too small to carry a request the quotas allow is
/// refused at start.
#[tokio::test]
async fn max_message_size_is_the_daemons_limit() {
    let (mut ns, port) = spawn_rmi_ns(&["--max-message-size", "128KiB"]);
    let names = locate(port).await;
    let uri = Uri::tcp("obj", "127.0.0.1", 4000);
    // 40 tags of 4 KiB: 160 KiB, within --max-tags and --max-tag-len were they raised, but
    // over the message size (the defaults would refuse them by max_tag_len after decoding).
    let big: BTreeSet<String> = (0..40)
        .map(|i| format!("{i:04}{}", "x".repeat(4092)))
        .collect();
    let err = names
        .register_with("big", &uri, false, big)
        .await
        .unwrap_err();
    eprintln!("a 160 KiB register to rmi-ns --max-message-size 128KiB: {err:?}");
    assert!(err.to_string().contains("max_message_size"), "{err}");
    assert!(!err.to_string().contains("max_tag"), "{err}");
    assert!(ns.is_alive());
    let names = locate(port).await;
    names.register("small", &uri).await.unwrap();
}

/// `--autoclean` (Pyro's `NS_AUTOCLEAN`): a name whose daemon's port refuses is removed once
/// unreachable for `--autoclean-after`; a live daemon's name stays.
#[tokio::test]
async fn autoclean_removes_the_names_of_daemons_that_are_gone() {
    let (mut ns, port) = spawn_rmi_ns(&["--autoclean", "3s", "--autoclean-after", "1s"]);
    let names = locate(port).await;
    let ns_uri = names.lookup("Pyro.NameServer").await.unwrap();
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    names
        .register("gone", &Uri::tcp("obj", "127.0.0.1", gone))
        .await
        .unwrap();
    // rmi-ns's own port answers: a name pointing there is a live daemon's.
    names.register("alive", &ns_uri).await.unwrap();
    let started = std::time::Instant::now();
    // Removed at the round after it has been unreachable for 1 s (about 6 s in): well before
    // the 20 s a default `--autoclean-after` would take (21 s at the earliest).
    while names.lookup("gone").await.is_ok() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the name was not removed within 15 s: --autoclean-after not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!(
        "rmi-ns --autoclean 3s --autoclean-after 1s removed a dead daemon's name after {:?}",
        started.elapsed()
    );
    assert_eq!(names.lookup("alive").await.unwrap(), ns_uri);
    assert!(ns.is_alive());
}

#[test]
fn inconsistent_flags_are_refused_with_what_to_change() {
    let run = |extra: &[&str]| {
        let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
            .args(args(extra))
            .output()
            .expect("run rmi-ns");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (out.status.success(), err)
    };
    let (ok, err) = run(&["--max-reply-bytes", "16MiB"]);
    assert!(
        !ok && err.contains("--max-reply-bytes") && err.contains("raise --max-message-size"),
        "{err}"
    );
    // Bytes where KiB or MiB was meant: refused at start, not every request after.
    let (ok, err) = run(&["--max-message-size", "8"]);
    assert!(
        !ok && err.contains("--max-message-size (8 bytes) is below 4096 bytes"),
        "{err}"
    );
    let (ok, err) = run(&["--min-lease-ttl", "2h", "--max-lease-ttl", "1h"]);
    assert!(!ok && err.contains("--min-lease-ttl"), "{err}");
    let (ok, err) = run(&["--min-lease-ttl", "soon"]);
    assert!(!ok && err.contains("not a duration"), "{err}");
    // The largest size there is: refused, not an overflow.
    let (ok, err) = run(&["--max-reply-bytes", &usize::MAX.to_string()]);
    assert!(!ok && err.contains("raise --max-message-size"), "{err}");
    let (ok, err) = run(&["--natport", "1234"]);
    assert!(!ok && err.contains("--nathost"), "{err}");
    // As Pyro's daemon: a Unix socket's URIs have no host to translate.
    let (ok, err) = run(&["--nathost", "ns.example.test", "-u", "/tmp/unused.sock"]);
    assert!(
        !ok && err.contains("--nathost cannot be used with a Unix socket"),
        "{err}"
    );
    // No client could connect: rmi's proxies run TLS over TCP only.
    let (ok, err) = run(&[
        "--tls-cert",
        "/tmp/unused.pem",
        "--tls-key",
        "/tmp/unused.key",
        "-u",
        "/tmp/unused.sock",
    ]);
    assert!(
        !ok && err.contains("--tls-cert cannot be used with a Unix socket"),
        "{err}"
    );
    let (ok, err) = run(&["--key", ""]);
    assert!(!ok && err.contains("empty"), "{err}");
    // As Pyro's NS_AUTOCLEAN: each round connects to every daemon named.
    let (ok, err) = run(&["--autoclean", "1s"]);
    assert!(
        !ok && err.contains("--autoclean must be 3s or more"),
        "{err}"
    );
    let (ok, err) = run(&["--autoclean-after", "5s"]);
    assert!(!ok && err.contains("--autoclean"), "{err}");
    // Limits its own entry does not fit: said so, and the port is not blamed.
    for limit in [
        ["--max-tags", "0"],
        ["--max-entries", "0"],
        ["--max-name-len", "8"],
        ["--max-tag-len", "5"],
    ] {
        let (ok, err) = run(&limit);
        assert!(
            !ok && err.contains("cannot register itself as Pyro.NameServer"),
            "{limit:?}: {err}"
        );
        assert!(!err.contains("--port"), "{limit:?}: {err}");
    }
    let (ok, err) = run(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(!ok && err.contains("/nonexistent/cert.pem"), "{err}");
}

/// Pyro's `natport` 0: the bound port, not a URI with port 0 that no one can dial.
#[tokio::test]
async fn natport_0_advertises_the_bound_port() {
    let (_ns, lines) =
        spawn_rmi_ns_with(&args(&["--nathost", "localhost", "--natport", "0"]), &[], 1);
    let port = port_of(&lines[0]);
    let advertised = Uri::tcp("Pyro.NameServer", "localhost", port);
    assert!(lines[0].contains(&format!("({advertised})")), "{lines:?}");
    assert_eq!(
        locate(port).await.lookup("Pyro.NameServer").await.unwrap(),
        advertised
    );
}

/// A small --max-message-size leaves list replies half of it (below 128 KiB), not 1 byte.
#[tokio::test]
async fn a_small_max_message_size_still_lists() {
    let (_ns, port) = spawn_rmi_ns(&["--max-message-size", "32KiB"]);
    let names = locate(port).await;
    names
        .register("a", &Uri::tcp("obj", "127.0.0.1", 4000))
        .await
        .unwrap();
    assert_eq!(names.list().await.unwrap().len(), 2);
}

/// A flag on the command line beats an `RMI_NS_*` variable for the same thing, and an empty
/// variable counts as unset, for both tools.
#[tokio::test]
async fn the_command_line_beats_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    let stale = stale.to_str().unwrap();
    // rmi-ns: --port beats RMI_NS_UNIXSOCKET, and --key-file beats RMI_NS_KEY.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "right\n").unwrap();
    let (_ns, lines) = spawn_rmi_ns_with(
        &args(&["--key-file", key_file.to_str().unwrap()]),
        &[("RMI_NS_UNIXSOCKET", stale), ("RMI_NS_KEY", "wrong")],
        1,
    );
    assert!(
        lines[0].starts_with("NS running on 127.0.0.1:"),
        "{lines:?}"
    );
    let port = port_of(&lines[0]).to_string();
    let key_path = key_file.to_str().unwrap();
    // rmi-nsc: the same two, and an empty RMI_NS_HOST.
    let env = [("RMI_NS_UNIXSOCKET", stale), ("RMI_NS_KEY", "wrong")];
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port,
            "--key-file",
            key_path,
            "ping",
        ],
        &env,
    );
    assert!(ok, "{out}");
    let (ok, out) = nsc(&["-n", "127.0.0.1", "-p", &port, "ping"], &env);
    assert!(
        !ok && out.contains("wrong secret"),
        "RMI_NS_KEY is used without a flag: {out}"
    );
    // (The right one in it, alone: used, not just a key of some kind.)
    let (ok, out) = nsc(
        &["-n", "127.0.0.1", "-p", &port, "ping"],
        &[("RMI_NS_KEY", "right")],
    );
    assert!(ok, "RMI_NS_KEY is the key without a flag: {out}");
    // Either of -p and -n alone beats RMI_NS_UNIXSOCKET too.
    let stale_only = [("RMI_NS_UNIXSOCKET", stale)];
    let (ok, out) = nsc(&["-p", &port, "-x", "-k", "right", "ping"], &stale_only);
    assert!(ok, "-p alone left RMI_NS_UNIXSOCKET in force: {out}");
    let (ok, out) = nsc(
        &["-n", "127.0.0.1", "-x", "-k", "right", "ping"],
        &[stale_only[0], ("RMI_NS_PORT", &port)],
    );
    assert!(ok, "-n alone left RMI_NS_UNIXSOCKET in force: {out}");
    // And rmi-ns's --port alone.
    let (_tcp, lines) = spawn_rmi_ns_with(&["--port", "0", "--nobc"], &stale_only, 1);
    assert!(
        lines[0].starts_with("NS running on 127.0.0.1:"),
        "--port alone left RMI_NS_UNIXSOCKET in force: {lines:?}"
    );
    let (ok, out) = nsc(
        &["-p", &port, "-x", "-k", "right", "ping"],
        &[("RMI_NS_HOST", ""), ("RMI_NS_KEY", "")],
    );
    assert!(
        ok,
        "an empty RMI_NS_HOST is unset (localhost is tried): {out}"
    );
    // Every empty variable is unset, for a port or a path too (clap refused those: "a value
    // is required", "invalid value ''"), and RMI_NS_TLS_CA is not for a Unix socket.
    let empty = [
        ("RMI_NS_HOST", ""),
        ("RMI_NS_PORT", ""),
        ("RMI_NS_UNIXSOCKET", ""),
        ("RMI_NS_BCPORT", ""),
        ("RMI_NS_BCADDR", ""),
        ("RMI_NS_TLS_CA", ""),
        ("RMI_NS_KEY", ""),
    ];
    let (ok, out) = nsc(&["-p", &port, "-k", "right", "ping"], &empty);
    assert!(ok, "empty variables are unset: {out}");
    let sock = dir.path().join("ns.sock");
    let sock = sock.to_str().unwrap();
    let (_unix, _) = spawn_rmi_ns_with(&["-u", sock], &empty, 1);
    let (ok, out) = nsc(&["-u", sock, "ping"], &[("RMI_NS_TLS_CA", "/no/such.pem")]);
    assert!(ok, "RMI_NS_TLS_CA is for TCP name servers: {out}");
    // An empty RMI_NS_KEY is unset for rmi-ns too.
    let (_open, lines) = spawn_rmi_ns_with(&TCP, &[("RMI_NS_KEY", "")], 1);
    let (ok, out) = nsc(
        &[
            "-n",
            "127.0.0.1",
            "-p",
            &port_of(&lines[0]).to_string(),
            "ping",
        ],
        &[],
    );
    assert!(ok, "{out}");
}

/// A shell set up for Pyro works as it is: where an `RMI_NS_*` variable is unset (or empty),
/// the tools read Pyro's name for it (`PYRO_NS_HOST`, `PYRO_NS_PORT`, `PYRO_NS_BCPORT`,
/// `PYRO_NS_AUTOCLEAN`); the `RMI_NS_*` one wins where both are set.
#[tokio::test]
async fn the_tools_read_pyros_environment_variables_too() {
    let unused_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let port = unused_port();
    // rmi-ns takes its host and port from Pyro's variables (a loopback address that is not
    // the default, so that the host is seen to be read).
    let (_ns, lines) = spawn_rmi_ns_with(
        &["--nobc"],
        &[("PYRO_NS_HOST", "127.0.0.2"), ("PYRO_NS_PORT", &port)],
        1,
    );
    assert!(
        lines[0].starts_with(&format!("NS running on 127.0.0.2:{port}")),
        "{lines:?}"
    );
    // rmi-nsc finds it through them, with no flag (nothing listens on 127.0.0.1 there).
    let pyro = [
        ("PYRO_NS_HOST", "127.0.0.2"),
        ("PYRO_NS_PORT", port.as_str()),
    ];
    let (ok, out) = nsc(&["-x", "ping"], &pyro);
    assert!(ok, "rmi-nsc through PYRO_NS_HOST/PYRO_NS_PORT: {out}");
    // An empty RMI_NS_PORT is unset: Pyro's is read.
    let (ok, out) = nsc(&["-x", "ping"], &[pyro[0], pyro[1], ("RMI_NS_PORT", "")]);
    assert!(ok, "an empty RMI_NS_PORT left PYRO_NS_PORT unread: {out}");
    // RMI_NS_PORT beats PYRO_NS_PORT.
    let elsewhere = unused_port();
    let (ok, out) = nsc(
        &["-x", "ping"],
        &[pyro[0], pyro[1], ("RMI_NS_PORT", &elsewhere)],
    );
    assert!(!ok, "PYRO_NS_PORT beat RMI_NS_PORT: {out}");
    // A value that is not a port is refused, as from RMI_NS_PORT.
    let (ok, out) = nsc(&["-x", "ping"], &[pyro[0], ("PYRO_NS_PORT", "ninety")]);
    assert!(!ok && out.contains("invalid value 'ninety'"), "{out}");
    // PYRO_NS_AUTOCLEAN turns autoclean on, as --autoclean does (it is below the 3 s floor).
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(TCP)
        .env("PYRO_NS_AUTOCLEAN", "1")
        .output()
        .expect("run rmi-ns");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--autoclean must be 3s or more"),
        "PYRO_NS_AUTOCLEAN unread: {err}"
    );
}

/// The name server goes on serving when no one reads its stdout (a pipe whose reader is gone:
/// `rmi-ns | head -1`); an unchecked `println!` made it panic at its first line.
#[tokio::test]
async fn rmi_ns_serves_when_its_stdout_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ns.sock");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["-u", sock.to_str().unwrap()])
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rmi-ns");
    let mut ns = support::ChildGuard(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !sock.exists() {
        assert!(ns.is_alive(), "rmi-ns exited");
        assert!(std::time::Instant::now() < deadline, "no socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ok, out) = nsc(&["-u", sock.to_str().unwrap(), "ping"], &[]);
    assert!(ok, "{out}");
    // It ends as asked, not by a panic (exit code 101) that a grace period could hide.
    let (status, _) = ns.terminate();
    assert!(status.success(), "{status}");
}

/// Ctrl-C (SIGINT) and a closed terminal (SIGHUP) stop rmi-ns as SIGTERM does: exit code 0,
/// and its Unix socket file removed, so the next start finds the path free.
#[test]
fn sigint_and_sighup_stop_rmi_ns_cleanly() {
    for signal in ["INT", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ns.sock");
        let (mut ns, _) = spawn_rmi_ns_with(&["-u", sock.to_str().unwrap()], &[], 1);
        assert!(sock.exists());
        let (status, took) = ns.signal(signal);
        assert!(status.success(), "SIG{signal}: {status}");
        assert!(!sock.exists(), "SIG{signal} left the socket file");
        eprintln!("rmi-ns stopped {took:?} after SIG{signal}");
    }
}

/// Started with SIGHUP and SIGINT ignored (`nohup rmi-ns &`, or `rmi-ns &` in a script), rmi-ns
/// leaves them ignored: a closed terminal or a Ctrl-C meant for the script does not stop it;
/// SIGTERM, even ignored at start, still does, cleanly (a service manager's stop). (Before,
/// its handlers replaced the inherited ignore.)
#[test]
fn signals_ignored_when_rmi_ns_starts_stay_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ns.sock");
    let sock = sock.to_str().unwrap();
    let (mut ns, _) = spawn_rmi_ns_ignoring("HUP INT TERM", &["-u", sock]);
    for signal in ["HUP", "INT"] {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &ns.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            ns.is_alive(),
            "SIG{signal} stopped rmi-ns started with it ignored"
        );
        let (ok, out) = nsc(&["-u", sock, "ping"], &[]);
        assert!(ok, "after SIG{signal}: {out}");
    }
    let (status, _) = ns.signal("TERM");
    assert!(status.success(), "SIGTERM: {status}");
    assert!(!std::path::Path::new(sock).exists());
}

/// rmi-ns prints pyro5-ns's lines, which scripts written for it wait for: `URI = ...` once it
/// serves, and `NS shut down.` when it stops (helper-169 #1: neither was printed).
#[test]
fn rmi_ns_prints_its_uri_and_its_stop_as_pyro5_ns_does() {
    use std::io::BufRead;
    let mut child = support::tool(env!("CARGO_BIN_EXE_rmi-ns"))
        .args(["-n", "127.0.0.1", "-p", "0", "-x"])
        .env("RMI_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rmi-ns");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("a line").expect("read rmi-ns");
    let first = next();
    let port = support::port_of(&first);
    assert_eq!(
        next(),
        format!("URI = PYRO:Pyro.NameServer@127.0.0.1:{port}")
    );
    let mut ns = support::ChildGuard(child);
    let (status, _) = ns.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(next(), "NS shut down.");
}
