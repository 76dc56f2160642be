//! `rmi-nsc` against Python's name server (`pyro5-ns`, Pyro5 5.17 from PyPI in the venv the
//! root's tests make under `target/tmp`): every command works there as against `rmi-ns`.
//! Without Python the test skips loudly (and fails under `CI=true` or `RMI_TEST_NO_SKIP=1`).
//! Loopback only: the name server binds 127.0.0.1 on a port it picks, without broadcast.

mod support;

use support::python::{pyro4_python, pyro5_python, start_python_name_server};

/// Runs `rmi-nsc` with `args` against the name server on 127.0.0.1:`port`.
fn run_nsc_at(port: u16, args: &[&str]) -> std::process::Output {
    support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["-n", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run rmi-nsc")
}

/// [`run_nsc_at`]: whether it succeeded, and its stdout and stderr together.
fn nsc_at(port: u16, args: &[&str]) -> (bool, String) {
    let out = run_nsc_at(port, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn rmi_nsc_works_against_pyro5_ns() {
    let Some(python) = pyro5_python() else { return };
    let (_ns, port) = start_python_name_server(python, "Pyro5.nameserver");
    let nsc = |args: &[&str]| nsc_at(port, args);
    assert_eq!(nsc(&["ping"]), (true, "Name server ping ok.\n".into()));
    let (ok, out) = nsc(&["--verbose", "ping"]);
    assert!(
        ok && out.contains(&format!(
            "Name server found: PYRO:Pyro.NameServer@127.0.0.1:{port}"
        )),
        "{out}"
    );
    assert_eq!(
        nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"]),
        (true, "Registered app.greeter\n".into())
    );
    // rmi-nsc registers safely: Python's name server refuses a taken name.
    let (ok, err) = nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4001"]);
    assert!(!ok && err.contains("already registered"), "{err}");
    assert!(nsc(&["register", "app.other", "PYRO:other@127.0.0.1:4002"]).0);
    assert_eq!(
        nsc(&["setmeta", "app.greeter", "greeting", "tutorial"]),
        (true, "Metadata updated\n".into())
    );
    assert!(nsc(&["setmeta", "app.other", "tutorial"]).0);
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert_eq!(
        (ok, out.as_str()),
        (
            true,
            "PYRO:obj@127.0.0.1:4000\nmetadata: {'greeting', 'tutorial'}\n"
        ),
        "lookup shows the URI and metadata from Python's name server"
    );
    let (ok, out) = nsc(&["list"]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "--------START LIST \n\
             Pyro.NameServer --> PYRO:Pyro.NameServer@127.0.0.1:{port}\n\
             \x20   metadata: {{'class:Pyro5.nameserver.NameServer'}}\n\
             app.greeter --> PYRO:obj@127.0.0.1:4000\n\
             \x20   metadata: {{'greeting', 'tutorial'}}\n\
             app.other --> PYRO:other@127.0.0.1:4002\n\
             \x20   metadata: {{'tutorial'}}\n\
             --------END LIST \n"
        )
    );
    assert_eq!(
        nsc(&["list", "app.g"]).1.lines().nth(1),
        Some("app.greeter --> PYRO:obj@127.0.0.1:4000")
    );
    assert_eq!(
        nsc(&["listmatching", r"app\.o.*"]).1.lines().nth(1),
        Some("app.other --> PYRO:other@127.0.0.1:4002")
    );
    let greeter =
        "app.greeter --> PYRO:obj@127.0.0.1:4000\n    metadata: {'greeting', 'tutorial'}\n";
    let (ok, out) = nsc(&["yplookup-all", "greeting", "tutorial"]);
    assert!(
        ok && out.contains(greeter) && !out.contains("app.other"),
        "{out}"
    );
    let (ok, out) = nsc(&["yplookup-any", "tutorial", "nothing.else"]);
    assert!(
        ok && out.contains(greeter)
            && out.contains("app.other --> PYRO:other@127.0.0.1:4002\n    metadata: {'tutorial'}"),
        "{out}"
    );
    let (ok, out) = nsc(&["yplookup-any", "nothing.else"]);
    assert!(ok && !out.contains("-->"), "{out}");
    assert_eq!(
        nsc(&["setmeta", "app.other"]),
        (true, "Metadata cleared\n".into())
    );
    let (ok, out) = nsc(&["yplookup-all", "tutorial"]);
    assert!(
        ok && out.contains(greeter) && !out.contains("app.other"),
        "{out}"
    );
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "Removed app.greeter\n".into())
    );
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "Nothing removed\n".into())
    );
    assert_eq!(
        nsc(&["removematching", "--yes", r"app\..*"]),
        (true, "1 items removed.\n".into())
    );
    let (ok, err) = nsc(&["lookup", "app.other"]);
    assert!(!ok && err.contains("unknown name"), "{err}");
    assert_eq!(
        nsc(&["list", "app."]),
        (
            true,
            "--------START LIST - prefix 'app.'\n--------END LIST - prefix 'app.'\n".into()
        )
    );
}

/// Against Pyro4's name server (`python -m Pyro4.naming`), which has no `yplookup` and no
/// `lookup_all`: `listmeta_all`/`listmeta_any` (pyro4-nsc's names) and `lookup` answer from
/// its `list` filtered by metadata and its `lookup`. (Before, the `listmeta_*` commands failed
/// with Python's `AttributeError`; found by a review, helper-108.)
#[test]
fn rmi_nsc_lists_by_metadata_against_pyro4_naming() {
    let Some(python) = pyro4_python() else { return };
    let (_ns, port) = start_python_name_server(python, "Pyro4.naming");
    let nsc = |args: &[&str]| nsc_at(port, args);
    assert!(nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"]).0);
    assert!(nsc(&["register", "app.other", "PYRO:other@127.0.0.1:4002"]).0);
    assert!(nsc(&["setmeta", "app.greeter", "greeting", "tutorial"]).0);
    assert!(nsc(&["setmeta", "app.other", "tutorial"]).0);
    assert_eq!(
        nsc(&["listmeta_all", "greeting", "tutorial"]),
        (
            true,
            "--------START LIST  - searched by metadata\n\
             app.greeter --> PYRO:obj@127.0.0.1:4000\n    metadata: {'greeting', 'tutorial'}\n\
             --------END LIST  - searched by metadata\n"
                .into()
        )
    );
    let (ok, out) = nsc(&["listmeta_any", "tutorial", "nothing.else"]);
    assert!(
        ok && out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000")
            && out.contains("app.other --> PYRO:other@127.0.0.1:4002\n    metadata: {'tutorial'}"),
        "{out}"
    );
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert_eq!(
        (ok, out.as_str()),
        (
            true,
            "PYRO:obj@127.0.0.1:4000\nmetadata: {'greeting', 'tutorial'}\n"
        )
    );
    // And `list` with metadata, by Pyro4's keyword `return_metadata`.
    let (ok, out) = nsc(&["list", "app.o"]);
    assert_eq!(
        (ok, out.as_str()),
        (
            true,
            "--------START LIST - prefix 'app.o'\n\
             app.other --> PYRO:other@127.0.0.1:4002\n    metadata: {'tutorial'}\n\
             --------END LIST - prefix 'app.o'\n"
        )
    );
}

/// Runs Pyro5's own `pyro5-nsc` (`python -m Pyro5.nsc`) with `args` against the name server
/// on 127.0.0.1:`port`, `input` on its stdin: whether it succeeded, and its stdout.
fn pyro5_nsc_at(python: &std::path::Path, port: u16, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .env_remove("PYRO_NS_HOST")
        .env_remove("PYRO_NS_PORT")
        .args([
            "-m",
            "Pyro5.nsc",
            "-n",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run pyro5-nsc");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("answer pyro5-nsc");
    drop(stdin);
    let out = child.wait_with_output().expect("pyro5-nsc ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// rmi-nsc prints what pyro5-nsc prints, line for line, so that a script written for Pyro's
/// tool reads rmi's (helper-169 #2, #3: its words and its list framing differed). Each command
/// runs under both tools against one Python name server: the ones that change nothing compare
/// whole; the others on names of their own (`app.p` for Pyro's tool, `app.r` for rmi's). One
/// tag a name, since Python prints a set in its hash's order.
#[test]
fn rmi_nsc_prints_what_pyro5_nsc_prints() {
    let Some(python) = pyro5_python() else { return };
    let (_ns, port) = start_python_name_server(python, "Pyro5.nameserver");
    let pyro = |args: &[&str]| pyro5_nsc_at(python, port, args, "");
    let rmi = |args: &[&str]| {
        let out = run_nsc_at(port, args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Changes, each made by both tools on its own name.
    let both = |args: &[&str]| {
        let on =
            |tool: &str| -> Vec<String> { args.iter().map(|a| a.replace("app.x", tool)).collect() };
        let (p, r) = (on("app.p"), on("app.r"));
        let p_out = pyro(&p.iter().map(String::as_str).collect::<Vec<_>>());
        let r_out = rmi(&r.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            (r_out.0, r_out.1.replace("app.r", "app.x")),
            (p_out.0, p_out.1.replace("app.p", "app.x")),
            "{args:?}"
        );
    };
    both(&["register", "app.x", "PYRO:obj@127.0.0.1:4000"]);
    both(&["setmeta", "app.x", "tutorial"]);
    both(&["setmeta", "app.x"]);
    // Tags as Python's repr writes them: quotes, backslashes, what does not print (helper-170
    // #3: escaped twice, once as Python does and again for the terminal).
    for tag in [
        "it's",
        r"a\b",
        r#"a'b"c"#,
        "x\u{202e}y\u{a0}z\u{1b}\u{ad}\u{e000}",
    ] {
        both(&["setmeta", "app.x", tag]);
        both(&["lookup", "app.x"]);
        both(&["list", "app.x"]);
    }
    both(&["setmeta", "app.x", "tutorial"]);
    both(&["remove", "app.x.none"]);
    // What changes nothing, whole.
    for args in [
        &["ping"][..],
        &["list"],
        &["list", "app."],
        &["list", "none."],
        &["listmatching", r"app\.[pr]"],
        &["lookup", "app.p"],
        &["yplookup_all", "tutorial"],
        &["yplookup_any", "nothing.else", "tutorial"],
        &["yplookup_any", "nothing.else"],
    ] {
        assert_eq!(rmi(args), pyro(args), "{args:?}");
    }
    both(&["remove", "app.x"]);
    // removematching: Pyro's asks on stdout, rmi-nsc's on stderr (or not, with --yes); the
    // count is the same words.
    for name in ["tmp.p1", "tmp.p2", "tmp.r1", "tmp.r2"] {
        assert!(rmi(&["register", name, "PYRO:obj@127.0.0.1:4000"]).0);
    }
    let (ok, said) = pyro5_nsc_at(python, port, &["removematching", r"tmp\.p.*"], "y\n");
    let counted = said.rsplit_once('?').map(|(_, count)| count.to_owned());
    assert_eq!(
        rmi(&["removematching", "--yes", r"tmp\.r.*"]),
        (ok, counted.unwrap_or(said))
    );
}
