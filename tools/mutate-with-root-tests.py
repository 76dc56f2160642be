"""Mutation testing of a member crate against its own unit tests and the root package's integration tests.

cargo-mutants 27.1 runs the mutated package's own tests only (`--test-package` is not honoured:
see TESTING.md), so this applies each mutant it lists, by its span, in a separate worktree.
Each mutant is first tried against the mutated crate's own unit tests (`cargo test -p CRATE
--lib`, which are quick); only a mutant they miss goes on to the root package's `it` test binary,
run with the given filters. Outcomes go to OUT, one line a mutant (MISSED, caught, TIMEOUT,
UNVIABLE), with `(lib)` after a mutant the unit tests caught. `--no-lib` skips the unit tests.

    git worktree add --detach /tmp/wt HEAD
    cargo mutants -p rmi-naming --file rmi-naming/src/lease.rs --list --json > /tmp/m.json
    python3 tools/mutate-with-root-tests.py /tmp/wt /tmp/m.json /tmp/out.log naming_store::
"""
import json, subprocess, sys, time

args = sys.argv[1:]
use_lib = "--no-lib" not in args
args = [a for a in args if a != "--no-lib"]
wt, listing, out = args[0], args[1], args[2]
filters = args[3:]
mutants = json.load(open(listing))
log = open(out, "w")


def run(cmd, timeout):
    try:
        return subprocess.run(cmd, cwd=wt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def it(*extra, timeout):
    return run(["cargo", "test", "-q", "-p", "rmi", "--test", "it", *extra], timeout)


def lib(package, *extra, timeout):
    return run(["cargo", "test", "-q", "-p", package, "--lib", *extra], timeout)


packages = sorted({m["package"] for m in mutants})
base = it("--", *filters, timeout=900)
if use_lib:
    for package in packages:
        base = base or lib(package, timeout=900)
print("baseline", base, file=log, flush=True)
if base != 0:
    sys.exit(1)


def outcome_of(m):
    if use_lib:
        if lib(m["package"], "--no-run", timeout=600) != 0:
            return "UNVIABLE"
        rc = lib(m["package"], timeout=60)
        if rc != 0:
            return "TIMEOUT (lib)" if rc == "timeout" else "caught (lib)"
    if it("--no-run", timeout=600) != 0:
        return "UNVIABLE"
    rc = it("--", *filters, timeout=120)
    return "MISSED" if rc == 0 else ("TIMEOUT" if rc == "timeout" else "caught")


for m in mutants:
    path = f"{wt}/{m['file']}"
    orig = open(path, encoding="utf-8").read()
    lines = orig.split("\n")
    sp = m["span"]
    (l1, c1), (l2, c2) = (sp["start"]["line"], sp["start"]["column"]), (sp["end"]["line"], sp["end"]["column"])
    before = "\n".join(lines[: l1 - 1] + [lines[l1 - 1][: c1 - 1]])
    after = "\n".join([lines[l2 - 1][c2 - 1 :]] + lines[l2:])
    open(path, "w", encoding="utf-8").write(before + m["replacement"] + after)
    t = time.time()
    try:
        outcome = outcome_of(m)
    finally:
        open(path, "w", encoding="utf-8").write(orig)
    print(f"{outcome:13} {m['name']} ({time.time()-t:.0f}s)", file=log, flush=True)
