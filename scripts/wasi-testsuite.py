#!/usr/bin/env python3
"""Runs the official WASI test suite's preview-1 tests through `warden run`.

Usage: scripts/wasi-testsuite.py WARDEN SUITE_DIR...

SUITE_DIR is a directory of a wasi-testsuite checkout holding built tests
(the `prod/testsuite-base` branch: e.g. tests/rust/testsuite/wasm32-wasip1),
each a `NAME.wasm` with an optional `NAME.json` spec: `args`, `env`,
`exit_code` (default 0), `stdout`, and `root`, a directory the test expects
to be preopened as `/` (given as `--allow fs:write:COPY --at /` on a fresh
copy, since tests write into it). Clocks and randomness, which Warden
denies unless granted, are granted (`clock:read`, `random:read`). Prints one line per test and a total;
exits 1 if any failed. The suite is not part of this repository: fetch it
yourself.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def run_one(warden, wasm, spec, scratch):
    # Warden gates clocks and randomness behind capabilities (deny by
    # default); the suite expects WASI's usual host, which has both.
    cmd = [warden, "run", "--quiet", "--wall-time", "30s"]
    cmd += ["--allow", "clock:read", "--allow", "random:read"]
    root = spec.get("root")
    cwd = scratch
    if root:
        copy = os.path.join(scratch, "root")
        shutil.copytree(os.path.join(os.path.dirname(wasm), root), copy, symlinks=True)
        cmd += ["--allow", f"fs:write:{copy}", "--at", "/"]
    for name, value in spec.get("env", {}).items():
        cmd += ["--env", f"{name}={value}"]
    cmd += ["--", wasm] + spec.get("args", [])
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=120)
    want = spec.get("exit_code", 0)
    if p.returncode != want:
        return f"exit {p.returncode}, expected {want}: {p.stderr.decode(errors='replace').strip()[-300:]}"
    if "stdout" in spec and p.stdout.decode(errors="replace") != spec["stdout"]:
        return f"stdout {p.stdout[:200]!r}, expected {spec['stdout'][:200]!r}"
    return None


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    warden = os.path.abspath(sys.argv[1])
    passed = failed = 0
    for suite in sys.argv[2:]:
        for name in sorted(os.listdir(suite)):
            if not name.endswith(".wasm"):
                continue
            wasm = os.path.abspath(os.path.join(suite, name))
            spec_path = wasm[: -len(".wasm")] + ".json"
            spec = {}
            if os.path.exists(spec_path):
                with open(spec_path) as f:
                    spec = json.load(f)
            with tempfile.TemporaryDirectory() as scratch:
                why = run_one(warden, wasm, spec, scratch)
            label = os.path.join(os.path.basename(os.path.dirname(os.path.dirname(suite))), name)
            if why is None:
                passed += 1
                print(f"ok   {label}")
            else:
                failed += 1
                print(f"FAIL {label}: {why}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
