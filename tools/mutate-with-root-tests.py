"""Mutation testing of a member crate against the root package's integration tests.

cargo-mutants 27.1 runs the mutated package's own tests only (`--test-package` is not honoured:
see TESTING.md), so this applies each mutant it lists, by its span, in a separate worktree,
builds the root package's `it` test binary and runs the given filters. Outcomes go to OUT, one
line a mutant (MISSED, caught, TIMEOUT, UNVIABLE).

    git worktree add --detach /tmp/wt HEAD
    cargo mutants -p rmi-naming --file rmi-naming/src/lease.rs --list --json > /tmp/m.json
    python3 tools/mutate-with-root-tests.py /tmp/wt /tmp/m.json /tmp/out.log naming_store::
"""
import json, subprocess, sys, time
wt, listing, out = sys.argv[1], sys.argv[2], sys.argv[3]
filters = sys.argv[4:]
mutants = json.load(open(listing))
log = open(out, "w")
def run(args, timeout):
    try:
        return subprocess.run(args, cwd=wt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timeout"
base = run(["cargo", "test", "-q", "-p", "rmi", "--test", "it", "--", *filters], 900)
print("baseline", base, file=log, flush=True)
if base != 0:
    sys.exit(1)
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
        if run(["cargo", "test", "-q", "-p", "rmi", "--test", "it", "--no-run"], 600) != 0:
            outcome = "UNVIABLE"
        else:
            rc = run(["cargo", "test", "-q", "-p", "rmi", "--test", "it", "--", *filters], 120)
            outcome = "MISSED" if rc == 0 else ("TIMEOUT" if rc == "timeout" else "caught")
    finally:
        open(path, "w", encoding="utf-8").write(orig)
    print(f"{outcome:8} {m['name']} ({time.time()-t:.0f}s)", file=log, flush=True)
