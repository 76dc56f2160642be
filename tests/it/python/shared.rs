//! Python helpers that need nothing but std, shared by the root's integration tests (a module
//! of `tests/it/python.rs`) and rmi-cli's (`rmi-cli/tests/support/mod.rs` includes this file):
//! virtual environments with Pyro from PyPI under `CARGO_TARGET_TMPDIR` (the workspace's
//! `target/tmp`, so both test crates share them), and Python processes killed when dropped.
//!
//! Where Python or PyPI cannot be had, the tests say so loudly and skip; under CI (`CI=true`,
//! or `RMI_TEST_NO_SKIP=1`) that is a failure instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

/// The venv's python with Pyro5 5.17, msgpack and serpent; made on first use, `None` (after a
/// loud message) where it cannot be made and this is not CI.
pub(crate) fn pyro5_python() -> Option<&'static PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            make_venv(
                "pyro5-venv",
                &["Pyro5==5.17", "msgpack", "serpent"],
                "import Pyro5, msgpack, serpent; assert Pyro5.__version__ == '5.17'",
            )
        })
        .as_ref()
}

/// The venv's python with Pyro4 4.82, serpent and msgpack; as [`pyro5_python`].
pub(crate) fn pyro4_python() -> Option<&'static PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            make_venv(
                "pyro4-venv",
                &["Pyro4==4.82", "serpent", "msgpack"],
                "import Pyro4, msgpack, serpent; assert Pyro4.__version__ == '4.82'",
            )
        })
        .as_ref()
}

/// Environment variables to run a Python with.
pub(crate) type PythonEnv = Vec<(&'static str, String)>;

/// Python 2.7 with Pyro4 4.82 and serpent 1.28 installed from PyPI into `target/tmp/py2-pyro4`
/// (Python 2 has no `venv`): its python and the environment to run it with. Python 2 is
/// optional, even under CI (a fresh machine may not have it): where it or PyPI is missing, a
/// loud skip.
pub(crate) fn python2_pyro4() -> Option<&'static (PathBuf, PythonEnv)> {
    static PYTHON: OnceLock<Option<(PathBuf, PythonEnv)>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let skip = |why: String| {
                eprintln!("*** SKIPPED: the Python 2 tests need python2.7 with pip: {why} ***");
                None
            };
            // python2.7 on the PATH, else a pyenv install of 2.7.
            let pyenv = Command::new("pyenv")
                .arg("root")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("versions"));
            let mut candidates = vec![PathBuf::from("python2.7")];
            if let Some(versions) = pyenv.and_then(|v| std::fs::read_dir(v).ok()) {
                candidates.extend(versions.flatten().filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with("2.7")
                        .then(|| e.path().join("bin").join("python2.7"))
                }));
            }
            let works = |p: &PathBuf| {
                Command::new(p)
                    .args(["-c", "import sys; assert sys.version_info[:2] == (2, 7)"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let Some(python) = candidates.into_iter().find(works) else {
                return skip("no python2.7 found (on the PATH or in pyenv)".into());
            };
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py2-pyro4");
            // Only what is installed here: not the user's own site-packages.
            let env = vec![
                ("PYTHONPATH", dir.display().to_string()),
                ("PYTHONNOUSERSITE", "1".to_owned()),
            ];
            let check = "import Pyro4, serpent; assert Pyro4.__version__ == '4.82'";
            let ready = || {
                Command::new(&python)
                    .args(["-c", check])
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if !ready() {
                let out = Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .arg("--target")
                    .arg(&dir)
                    .args(["Pyro4==4.82", "serpent==1.28"])
                    .output();
                match out {
                    Ok(o) if o.status.success() && ready() => {}
                    Ok(o) => return skip(String::from_utf8_lossy(&o.stderr).into_owned()),
                    Err(e) => return skip(e.to_string()),
                }
            }
            Some((python, env))
        })
        .as_ref()
}

/// A virtual environment `target/tmp/<name>` with `packages` from PyPI, made unless `check`
/// (Python code) already succeeds in it; returns its python. Where it cannot be made: a loud
/// skip (`None`), or a panic under CI (`CI`, `RMI_TEST_NO_SKIP`).
pub(crate) fn make_venv(name: &str, packages: &[&str], check: &str) -> Option<PathBuf> {
    // One venv made at a time: modules sharing a venv never run pip into the same directory
    // at once. (Test binaries run one after another, so this process is the only one.)
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = dir.join("bin").join("python");
    let ready = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let steps: [(&str, Vec<String>); 2] = [
        (
            "python3",
            vec!["-m".into(), "venv".into(), dir.display().to_string()],
        ),
        (
            python.to_str().expect("utf-8 path"),
            ["-m", "pip", "install", "--quiet"]
                .iter()
                .map(|s| s.to_string())
                .chain(packages.iter().map(|s| s.to_string()))
                .collect(),
        ),
    ];
    for (program, args) in steps {
        let out = Command::new(program).args(&args).output();
        let failure = match out {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!(
                "`{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("cannot run {program}: {e}"),
        };
        let message = format!("Python tests need a venv with {packages:?}: {failure}");
        if std::env::var_os("CI").is_some() || std::env::var_os("RMI_TEST_NO_SKIP").is_some() {
            panic!("{message}");
        }
        eprintln!("*** SKIPPED: {message} ***");
        return None;
    }
    assert!(
        ready(&python),
        "the venv at {} lacks {packages:?}",
        dir.display()
    );
    Some(python)
}

/// A Python process a test started, killed by its own handle when dropped.
pub(crate) struct PythonProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl PythonProcess {
    /// Starts `python -u <args>` with `env` added, stdout piped, stderr inherited.
    pub(crate) fn start(python: &Path, args: &[&str], env: &[(&str, String)]) -> PythonProcess {
        let mut child = Command::new(python)
            .arg("-u")
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        PythonProcess { child, stdout }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it, trimmed. Bounded by
    /// the process: if it exits first, the read ends and this panics.
    pub(crate) fn wait_for(&mut self, prefix: &str) -> String {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read python output");
            assert!(
                n > 0,
                "python exited before printing {prefix:?}; it said:\n{seen}"
            );
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
            seen.push_str(&line);
        }
    }
}

impl Drop for PythonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Python's name server (`module` is `Pyro5.nameserver` or `Pyro4.naming`) on
/// 127.0.0.1, on a port it picks (`-p 0`), without a broadcast server; returns it and its
/// port, read from the `URI = …` line it prints. Blocking.
pub(crate) fn start_python_name_server(python: &Path, module: &str) -> (PythonProcess, u16) {
    let mut ns = PythonProcess::start(
        python,
        &["-m", module, "-n", "127.0.0.1", "-p", "0", "-x"],
        &[],
    );
    let uri = ns.wait_for("URI = ");
    let port = uri
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a name server uri with a port: {uri:?}"));
    (ns, port)
}

/// Runs `python <args>` with `env` added; returns whether it succeeded and its stdout and
/// stderr together. Blocking.
pub(crate) fn python_output(
    python: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> (bool, String) {
    let out = Command::new(python)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
