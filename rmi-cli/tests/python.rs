//! `rmi-nsc` against Python's name server (`pyro5-ns`, Pyro5 5.17 from PyPI in the venv the
//! root's tests make under `target/tmp`): every command works there as against `rmi-ns`.
//! Without Python the test skips loudly (and fails under `CI=true` or `RMI_TEST_NO_SKIP=1`).
//! Loopback only: the name server binds 127.0.0.1 on a port it picks, without broadcast.

mod support;

use support::python::{pyro4_python, pyro5_python, start_python_name_server};

/// Runs `rmi-nsc` with `args` against the name server on 127.0.0.1:`port`: whether it
/// succeeded, and its stdout and stderr together.
fn nsc_at(port: u16, args: &[&str]) -> (bool, String) {
    let out = support::tool(env!("CARGO_BIN_EXE_rmi-nsc"))
        .args(["-n", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run rmi-nsc");
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
    assert_eq!(nsc(&["ping"]), (true, "name server ping ok\n".into()));
    let (ok, out) = nsc(&["--verbose", "ping"]);
    assert!(
        ok && out.contains(&format!(
            "name server: PYRO:Pyro.NameServer@127.0.0.1:{port}"
        )),
        "{out}"
    );
    assert_eq!(
        nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4000"]),
        (true, "registered app.greeter\n".into())
    );
    // rmi-nsc registers safely: Python's name server refuses a taken name.
    let (ok, err) = nsc(&["register", "app.greeter", "PYRO:obj@127.0.0.1:4001"]);
    assert!(!ok && err.contains("already registered"), "{err}");
    assert!(nsc(&["register", "app.other", "PYRO:other@127.0.0.1:4002"]).0);
    assert_eq!(
        nsc(&["setmeta", "app.greeter", "greeting", "tutorial"]),
        (true, "metadata of app.greeter set\n".into())
    );
    assert!(nsc(&["setmeta", "app.other", "tutorial"]).0);
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert_eq!(
        (ok, out.as_str()),
        (
            true,
            "PYRO:obj@127.0.0.1:4000\nmetadata: {\"greeting\", \"tutorial\"}\n"
        ),
        "lookup shows the URI and metadata from Python's name server"
    );
    let (ok, out) = nsc(&["list"]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "Pyro.NameServer --> PYRO:Pyro.NameServer@127.0.0.1:{port}\n\
             app.greeter --> PYRO:obj@127.0.0.1:4000\n\
             app.other --> PYRO:other@127.0.0.1:4002\n"
        )
    );
    assert_eq!(
        nsc(&["list", "app.g"]),
        (true, "app.greeter --> PYRO:obj@127.0.0.1:4000\n".into())
    );
    assert_eq!(
        nsc(&["listmatching", r"app\.o.*"]),
        (true, "app.other --> PYRO:other@127.0.0.1:4002\n".into())
    );
    assert_eq!(
        nsc(&["yplookup-all", "greeting", "tutorial"]),
        (
            true,
            "app.greeter --> PYRO:obj@127.0.0.1:4000  {\"greeting\", \"tutorial\"}\n".into()
        )
    );
    let (ok, out) = nsc(&["yplookup-any", "tutorial", "nothing.else"]);
    assert!(
        ok && out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000")
            && out.contains("app.other --> PYRO:other@127.0.0.1:4002  {\"tutorial\"}"),
        "{out}"
    );
    assert_eq!(
        nsc(&["yplookup-any", "nothing.else"]),
        (true, "(no names)\n".into())
    );
    assert_eq!(
        nsc(&["setmeta", "app.other"]),
        (true, "metadata of app.other set\n".into())
    );
    assert_eq!(
        nsc(&["yplookup-all", "tutorial"]),
        (
            true,
            "app.greeter --> PYRO:obj@127.0.0.1:4000  {\"greeting\", \"tutorial\"}\n".into()
        )
    );
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "removed app.greeter\n".into())
    );
    assert_eq!(
        nsc(&["remove", "app.greeter"]),
        (true, "app.greeter was not registered\n".into())
    );
    assert_eq!(
        nsc(&["removematching", "--yes", r"app\..*"]),
        (true, "removed 1 entry\n".into())
    );
    let (ok, err) = nsc(&["lookup", "app.other"]);
    assert!(!ok && err.contains("unknown name"), "{err}");
    assert_eq!(nsc(&["list", "app."]), (true, "(no names)\n".into()));
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
            "app.greeter --> PYRO:obj@127.0.0.1:4000  {\"greeting\", \"tutorial\"}\n".into()
        )
    );
    let (ok, out) = nsc(&["listmeta_any", "tutorial", "nothing.else"]);
    assert!(
        ok && out.contains("app.greeter --> PYRO:obj@127.0.0.1:4000")
            && out.contains("app.other --> PYRO:other@127.0.0.1:4002  {\"tutorial\"}"),
        "{out}"
    );
    let (ok, out) = nsc(&["lookup", "app.greeter"]);
    assert_eq!(
        (ok, out.as_str()),
        (
            true,
            "PYRO:obj@127.0.0.1:4000\nmetadata: {\"greeting\", \"tutorial\"}\n"
        )
    );
}
