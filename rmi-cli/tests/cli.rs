//! The binaries end to end: the tutorial through a real `rmi-ns` process, and `rmi-nsc`
//! controlling one. Everything runs on 127.0.0.1 with free ports.

mod support;

/// The tutorial's contract.
#[rmi::remote]
pub trait Greeter {
    /// Pyro's tutorial method.
    #[rmi(name = "welcomeMessage")]
    async fn welcome_message(&self, name: String) -> String;
}

struct GreetingMaker;

impl Greeter for GreetingMaker {
    async fn welcome_message(&self, name: String) -> String {
        format!("Hi welcome {name}")
    }
}

#[tokio::test]
async fn tutorial_through_rmi_ns_process_and_pyroname() {
    let (mut ns_process, ns_port) = support::spawn_rmi_ns(&[]);

    // Server: daemon, object, name registration, request loop.
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(GreeterServer::new(GreetingMaker)).unwrap();
    let ns = rmi::naming::NsLocator::new()
        .host("127.0.0.1")
        .port(ns_port)
        .locate()
        .await
        .unwrap();
    ns.register("server", &uri).await.unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });

    // Client: PYRONAME:server, as the tutorial's client types it (plus where the NS is).
    let greeter = GreeterProxy::connect(format!("PYRONAME:server@127.0.0.1:{ns_port}"))
        .await
        .unwrap();
    assert_eq!(
        greeter.welcome_message("Rashmi".into()).await.unwrap(),
        "Hi welcome Rashmi"
    );

    // The PYRO: URI the server printed works too.
    let direct = GreeterProxy::connect(uri.to_string()).await.unwrap();
    assert_eq!(
        direct.welcome_message("Irmen".into()).await.unwrap(),
        "Hi welcome Irmen"
    );
    assert!(ns_process.is_alive());
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_nsc_controls_a_running_rmi_ns() {
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let port = port.to_string();
    let nsc = |args: &[&str]| {
        let mut all = vec!["--host", "127.0.0.1", "--port", &port];
        all.extend_from_slice(args);
        support::nsc(&all, &[])
    };
    assert_eq!(nsc(&["ping"]), (true, "Name server ping ok.\n".into()));
    assert!(nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"]).0);
    let (ok, err) = nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4001"]);
    assert!(!ok && err.contains("already registered"), "{err}");
    assert!(nsc(&["setmeta", "app.greeter", "greeting", "tutorial"]).0);
    // `-x` after the command is pyro5-nsc's tag, not rmi-nsc's --nobc: refused, not taken for
    // the flag, which cleared the metadata (helper-154 #5); after `--`, the tag.
    let (ok, out) = nsc(&["setmeta", "app.greeter", "-x"]);
    assert!(!ok && out.contains("'-- -x'"), "{out}");
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert!(ok && out.contains("{'greeting', 'tutorial'}"), "{out}");
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert!(
        ok && out.contains("PYRO:obj@127.0.0.1:4000") && out.contains("tutorial"),
        "{out}"
    );
    let (_, out) = nsc(&["list", "app."]);
    assert!(
        out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000"),
        "{out}"
    );
    // pyro5-nsc's spellings, and the kebab-case ones rmi-nsc took before.
    let (_, out) = nsc(&["yplookup_all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["yplookup-all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["yplookup_all", "greeting", "nothing"]);
    assert_eq!(
        out,
        "--------START LIST  - searched by metadata\n--------END LIST  - searched by metadata\n"
    );
    let (_, out) = nsc(&["yplookup_any", "nothing", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    // And pyro4-nsc's.
    let (_, out) = nsc(&["listmeta_all", "greeting", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["listmeta_any", "nothing", "tutorial"]);
    assert!(out.contains("app.greeter"), "{out}");
    let (_, out) = nsc(&["listmatching", "Pyro"]);
    assert!(out.contains("Pyro.NameServer"), "{out}");
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "Removed app.greeter\n".into())
    );
    let (ok, err) = nsc(&["lookup", "app.greeter"]);
    assert!(!ok && err.contains("unknown name"), "{err}");
    assert_eq!(
        nsc(&["remove", "Pyro.NameServer"]),
        (
            true,
            "Nothing removed: Pyro.NameServer is the name server's own entry\n".into()
        )
    );
    // A shared name: lookup shows every daemon behind it, not one at random.
    for port in [4001, 4002] {
        let uri = format!("PYRO:obj@127.0.0.1:{port}");
        assert!(nsc(&["register", "--shared", "app.multi", &uri]).0);
    }
    assert_eq!(
        nsc(&["lookup", "app.multi"]),
        (
            true,
            "PYRO:obj@127.0.0.1:4001\nPYRO:obj@127.0.0.1:4002\n".into()
        )
    );
    // And so do list and yplookup (helper-154 #4: one daemon, picked at random).
    assert!(nsc(&["setmeta", "app.multi", "many"]).0);
    let both = "app.multi --> PYRO:obj@127.0.0.1:4001\n    metadata: {'many'}\n\
                app.multi --> PYRO:obj@127.0.0.1:4002\n    metadata: {'many'}\n";
    for args in [&["list", "app.m"][..], &["yplookup_any", "many"]] {
        let (ok, out) = nsc(args);
        assert!(ok && out.contains(both), "{args:?}: {out}");
    }
    // Removing one daemon's entry leaves the other's.
    assert_eq!(
        nsc(&["remove", "app.multi", "PYRO:obj@127.0.0.1:4001"]),
        (
            true,
            "Removed PYRO:obj@127.0.0.1:4001 from app.multi\n".into()
        )
    );
    assert_eq!(
        nsc(&["remove", "app.multi", "PYRO:obj@127.0.0.1:4001"]),
        (
            true,
            "Nothing removed: app.multi has no shared entry for PYRO:obj@127.0.0.1:4001\n".into()
        )
    );
    assert_eq!(
        nsc(&["lookup", "app.multi"]),
        (true, "PYRO:obj@127.0.0.1:4002\nmetadata: {'many'}\n".into())
    );
    // A plainly registered name's URI given: nothing removed, and said how to remove it.
    assert!(nsc(&["register", "app.plain", "PYRO:obj@127.0.0.1:4003"]).0);
    let (ok, out) = nsc(&["remove", "app.plain", "PYRO:obj@127.0.0.1:4003"]);
    assert!(
        !ok && out.contains("app.plain is registered plainly, not shared")
            && out.contains("`rmi-nsc remove app.plain`"),
        "{out}"
    );
    assert_eq!(
        nsc(&["lookup", "app.plain"]),
        (true, "PYRO:obj@127.0.0.1:4003\n".into())
    );
    for i in 0..3 {
        assert!(nsc(&["register", &format!("tmp.{i}"), "PYRO:obj@127.0.0.1:4000"]).0);
    }
    assert_eq!(
        nsc(&["removematching", "--yes", "tmp\\.[01]"]),
        (true, "2 items removed.\n".into())
    );
    let (_, out) = nsc(&["list"]);
    assert!(
        out.contains("tmp.2") && !out.contains("tmp.1") && out.contains("Pyro.NameServer"),
        "{out}"
    );
}

/// Control characters never reach the terminal: rmi-ns refuses names with them, and rmi-nsc
/// prints what a name server answers (here a URI whose object id holds an escape sequence)
/// with them escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_nsc_escapes_control_characters_and_rmi_ns_refuses_them_in_names() {
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let port = port.to_string();
    let nsc = |args: &[&str]| {
        let mut all = vec!["--host", "127.0.0.1", "--port", &port];
        all.extend_from_slice(args);
        support::nsc(&all, &[])
    };
    let (ok, err) = nsc(&["register", "bad\u{1b}[2J", "PYRO:obj@127.0.0.1:4000"]);
    assert!(!ok && err.contains("control characters"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "the refusal echoed the escape: {err:?}"
    );
    assert!(nsc(&["register", "odd", "PYRO:a\u{1b}[2Jb@127.0.0.1:4000"]).0);
    for args in [&["list"][..], &["lookup", "odd"]] {
        let (ok, out) = nsc(args);
        assert!(ok, "{args:?}: {out}");
        assert!(
            !out.contains('\u{1b}'),
            "{args:?} printed an escape: {out:?}"
        );
        assert!(
            out.contains("PYRO:a\\u{1b}[2Jb@127.0.0.1:4000"),
            "{args:?}: {out}"
        );
    }
    // Characters that reorder or hide text ("Trojan Source": a right-to-left override, a
    // zero-width space) are allowed in names, as in Pyro, but shown escaped: "admin\u{202e}
    // nimda" must not print as something else.
    let spoof = "admin\u{202e}txt.exe\u{200b}";
    assert!(nsc(&["register", spoof, "PYRO:obj@127.0.0.1:4000"]).0);
    for args in [&["list"][..], &["lookup", spoof]] {
        let (ok, out) = nsc(args);
        assert!(ok, "{args:?}: {out}");
        assert!(
            !out.contains('\u{202e}') && !out.contains('\u{200b}'),
            "{args:?} printed an invisible character: {out:?}"
        );
    }
    let (_, out) = nsc(&["list"]);
    assert!(
        out.contains("admin\\u{202e}txt.exe\\u{200b} --> PYRO:obj@127.0.0.1:4000"),
        "{out}"
    );
}

/// A backslash is escaped as the hidden characters are: a name holding the text `\u{200b}`
/// does not print as one holding the character (helper-154 #6).
#[tokio::test]
async fn rmi_nsc_prints_names_that_differ_differently() {
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let port = port.to_string();
    let nsc = |args: &[&str]| {
        let mut all = vec!["-n", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        support::nsc(&all, &[])
    };
    for name in ["a\u{200b}", "a\\u{200b}"] {
        assert!(nsc(&["register", name, "PYRO:obj@127.0.0.1:4000"]).0);
    }
    let (ok, out) = nsc(&["list"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('a')).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_ne!(lines[0], lines[1], "{out}");
    assert!(out.contains("a\\\\u{200b} --> "), "{out}");
}

/// `-v` says where the name server is on stderr: with stdout's reader gone before anything was
/// printed, the command still runs (its broken pipe, taken for the end of the output, ended
/// it unrun with success; helper-154 #7).
#[tokio::test]
async fn rmi_nsc_verbose_with_its_reader_gone_still_does_what_it_was_told() {
    use std::process::Stdio;
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let mut child = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["-n", "127.0.0.1", "-p", &port.to_string(), "-v"])
        .args(["register", "app.verbose", "PYRO:obj@127.0.0.1:4000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run rmi-nsc");
    drop(child.stdout.take());
    let status = child.wait().expect("wait for rmi-nsc");
    let names = support::locate(port).await;
    assert_eq!(
        names.lookup("app.verbose").await.is_ok(),
        status.success(),
        "exit {status} against what was done"
    );
    assert!(names.lookup("app.verbose").await.is_ok(), "not registered");
}

/// A name server that answered the handshake and went silent: each call has `--timeout`
/// (default 30 s), and rmi-nsc fails with the timeout where it waited for ever (helper-154 #2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_nsc_gives_up_on_a_name_server_that_does_not_answer() {
    #[rmi::remote]
    pub(crate) trait Silent {
        /// Never answers (an hour).
        async fn ping(&self);
    }
    struct Stalled;
    impl Silent for Stalled {
        async fn ping(&self) {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    daemon
        .register_with_id(
            SilentServer::new(Stalled),
            rmi::naming::NAME_SERVER_OBJECT_ID,
        )
        .unwrap();
    let serving = daemon.clone();
    tokio::spawn(async move { serving.serve().await });
    let port = daemon.local_addr().unwrap().port().to_string();
    let started = std::time::Instant::now();
    let (ok, out) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            support::nsc(
                &["-n", "127.0.0.1", "-p", &port, "--timeout", "1s", "ping"],
                &[],
            )
        }),
    )
    .await
    .expect("rmi-nsc waited for ever")
    .unwrap();
    assert!(!ok && out.contains("timed out"), "{out}");
    println!("rmi-nsc gave up after {:?}", started.elapsed());
    daemon.shutdown();
}

/// As pyro5-nsc's `removeregex`: a pattern can match every name, so rmi-nsc says which names
/// and asks; anything but `y` removes nothing and fails, and `--yes` skips the question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removematching_asks_before_it_removes() {
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let port = port.to_string();
    let nsc = |args: &[&str], answer: Option<&str>| {
        let mut all = vec!["-n", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        support::nsc_answering(&all, &[], answer)
    };
    for name in ["tmp.a", "tmp.b", "keep"] {
        assert!(nsc(&["register", name, "PYRO:obj@127.0.0.1:4000"], None).0);
    }
    let names = |n: &str| nsc(&["list"], None).1.matches(n).count();
    for answer in [Some("n\n"), Some("\n"), None] {
        let (ok, out) = nsc(&["removematching", "tmp.*"], answer);
        assert!(!ok, "{answer:?}: {out}");
        assert!(
            out.contains("Remove 2 names matching tmp.*: tmp.a, tmp.b? (y/n)"),
            "the question names what would go: {out}"
        );
        assert!(out.contains("nothing removed"), "{out}");
        assert_eq!(names("tmp."), 2, "{answer:?} removed something");
    }
    // The name server's own entry, never removed, is not in the question.
    let (ok, out) = nsc(&["removematching", ".*"], Some("n\n"));
    assert!(
        !ok && out.contains("Remove 3 names matching .*: keep, tmp.a, tmp.b? (y/n)"),
        "{out}"
    );
    let (ok, out) = nsc(&["removematching", "Pyro.*"], None);
    assert!(ok && out == "0 items removed.\n", "{out}");
    let (ok, out) = nsc(&["removematching", "nothing.*"], None);
    assert!(ok && out == "0 items removed.\n", "{out}");
    let (ok, out) = nsc(&["removematching", "tmp.*"], Some("y\n"));
    assert!(ok && out.starts_with("2 items removed.\n"), "{out}");
    assert_eq!((names("tmp."), names("keep")), (0, 1));
    let (ok, out) = nsc(&["removematching", "-y", "kee."], None);
    assert_eq!((ok, out.as_str()), (true, "1 items removed.\n"));

    // What was shown goes by name: a name of 512 characters, whose escaped pattern was longer
    // than the name server's `max_regex_len`, stopped the removal half done (helper-154 #1).
    let long = format!("z{}", ".".repeat(511));
    for name in ["t.x", long.as_str()] {
        assert!(nsc(&["register", name, "PYRO:obj@127.0.0.1:4000"], None).0);
    }
    let (ok, out) = nsc(&["removematching", "[tz]"], Some("y\n"));
    assert!(ok && out.contains("2 items removed.\n"), "{out}");
    assert_eq!((names("t.x"), names("zzz"), names("z...")), (0, 0, 0));
    // An empty pattern listed every name, and removed them all when asked, none with --yes:
    // it is refused both ways (helper-154 #3).
    assert!(nsc(&["register", "kept", "PYRO:obj@127.0.0.1:4000"], None).0);
    for (args, answer) in [
        (&["removematching", ""][..], Some("y\n")),
        (&["removematching", "--yes", ""][..], None),
    ] {
        let (ok, out) = nsc(args, answer);
        assert!(!ok && out.contains("needs a pattern"), "{args:?}: {out}");
    }
    assert_eq!(names("kept"), 1);
}

/// The answer is about the names the question showed: a name registered while it waited
/// matches too, but was never shown, and stays. (It was removed with the others.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removematching_removes_only_the_names_it_asked_about() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let names = support::locate(port).await;
    let uri = rmi::Uri::tcp("obj", "127.0.0.1", 4000);
    names.register("tmp.shown", &uri).await.unwrap();
    let mut child = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args([
            "-n",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "removematching",
            "tmp.*",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rmi-nsc");
    let mut stderr = child.stderr.take().unwrap();
    let asked = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("(y/n)") {
            if stderr.read(&mut byte).unwrap_or(0) == 0 {
                break;
            }
            seen.push(byte[0]);
        }
        (String::from_utf8_lossy(&seen).into_owned(), stderr)
    })
    .await
    .unwrap();
    let (asked, mut stderr) = asked;
    assert!(
        asked.contains("Remove 1 name matching tmp.*: tmp.shown?"),
        "{asked}"
    );
    names.register("tmp.late", &uri).await.unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"y\n").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(
        out.status.success() && stdout == "1 items removed.\n",
        "{stdout}; stderr: {rest}"
    );
    assert!(names.lookup("tmp.shown").await.is_err());
    assert_eq!(names.lookup("tmp.late").await.unwrap(), uri);
}

/// Options may follow the command (`rmi-nsc list -n HOST`), as pyro5-nsc's do.
#[test]
fn rmi_nsc_takes_options_after_the_command() {
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let (ok, out) = support::nsc(&["ping", "-n", "127.0.0.1", "-p", &port.to_string()], &[]);
    assert_eq!((ok, out.as_str()), (true, "Name server ping ok.\n"));
    let (ok, out) = support::nsc(
        &["-n", "127.0.0.1", "list", "--port", &port.to_string()],
        &[],
    );
    assert!(ok && out.contains("Pyro.NameServer"), "{out}");
}

/// `rmi-nsc watch | head -1`: when the reader quits, rmi-nsc stops at its next line, quietly
/// and with success, as a Unix tool does on SIGPIPE (Rust ignores SIGPIPE, so an unchecked
/// `println!` panicked with exit code 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_nsc_stops_quietly_when_its_reader_quits() {
    let (_ns, port) = support::spawn_rmi_ns(&[]);
    let names = support::locate(port).await;
    let mut watch = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["-n", "127.0.0.1", "-p", &port.to_string(), "watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rmi-nsc watch");
    let mut stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "watching all names\n");
    drop(stdout);
    let uri = rmi::Uri::tcp("obj", "127.0.0.1", 4000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut i = 0;
    let status = loop {
        // Each registration is a line to write; the first one after the close fails.
        names.register(&format!("n{i}"), &uri).await.unwrap();
        i += 1;
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rmi-nsc watch went on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "nothing said on the way out");
}

#[test]
fn rmi_nsc_has_pyro5_nscs_commands_and_watch() {
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .arg("--help")
        .output()
        .expect("run rmi-nsc");
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "list",
        "listmatching",
        "lookup",
        "register",
        "remove",
        "removematching",
        "yplookup_all",
        "yplookup_any",
        "setmeta",
        "ping",
        "watch",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{help}"
        );
    }
}

#[test]
fn rmi_nsc_finds_rmi_ns_by_the_broadcast_settings_in_the_environment() {
    // rmi-ns on 127.0.0.2 (so nothing answers rmi-nsc's first try, 127.0.0.1 at that port),
    // its responder on a free UDP port.
    let (_ns, lines) = support::spawn_rmi_ns_with(
        &["--host", "127.0.0.2", "--port", "0", "--bcport", "0"],
        &[],
        2,
    );
    let bcport = lines[1]
        .rsplit(':')
        .next()
        .unwrap_or_else(|| panic!("{lines:?}"))
        .to_owned();
    let ns_port = support::port_of(&lines[0]).to_string();
    let env = [
        ("RMI_NS_PORT", ns_port.as_str()),
        ("RMI_NS_BCADDR", "127.255.255.255"),
        ("RMI_NS_BCPORT", bcport.as_str()),
    ];
    let (ok, out) = support::nsc(&["-v", "ping"], &env);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("PYRO:Pyro.NameServer@127.0.0.2:{ns_port}")),
        "found by broadcast: {out}"
    );
    // The same as flags.
    let (ok, out) = support::nsc(&["-p", &ns_port, "--bcport", &bcport, "-v", "ping"], &[]);
    assert!(ok, "{out}");
    // The same by Pyro's name for the broadcast port (the address is the default).
    let (ok, out) = support::nsc(
        &["-v", "ping"],
        &[
            ("RMI_NS_PORT", ns_port.as_str()),
            ("PYRO_NS_BCPORT", bcport.as_str()),
        ],
    );
    assert!(
        ok && out.contains(&format!("PYRO:Pyro.NameServer@127.0.0.2:{ns_port}")),
        "PYRO_NS_BCPORT unread: {out}"
    );
    // Without the broadcast, nothing answers there.
    let (ok, out) = support::nsc(&["-x", "ping"], &env);
    assert!(!ok && out.contains("hint: Start it with `rmi-ns`"), "{out}");
    assert_eq!(
        out.matches("is rmi-ns running?").count(),
        1,
        "asked once: {out}"
    );
    // A port asked for where nothing answers: the name server the broadcast finds, on another
    // port, is not the one asked for. (Before, `rmi-nsc -p 9999 remove x` removed x from it.)
    let unused = support::unused_port().to_string();
    for given in [
        vec!["-p", &unused, "--bcport", &bcport, "ping"],
        vec!["--port", &unused, "ping"],
    ] {
        let env = [("RMI_NS_BCPORT", bcport.as_str())];
        let (ok, out) = support::nsc(&given, &env);
        assert!(!ok, "{given:?}: {out}");
        assert!(
            out.contains(&format!("which is not on port {unused}"))
                && out.contains(&format!("127.0.0.2:{ns_port}")),
            "{given:?}: {out}"
        );
        // The error says what to do: no hint that contradicts it.
        assert!(!out.contains("Start it with"), "{given:?}: {out}");
    }
}

#[test]
fn rmi_nsc_without_a_name_server_says_so_with_a_hint() {
    // A port nothing listens on: bind one, read it, close it.
    let port = support::unused_port();
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "ping"])
        .output()
        .expect("run rmi-nsc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("hint: is rmi-ns running?"), "{err}");
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "the cause once: {err}"
    );
}
