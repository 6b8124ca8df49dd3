#!/usr/bin/env bash
# Installs what Warden's jail, tests and benchmarks need on a Debian machine
# with Rust: interpreters the tests run inside the jail, and bubblewrap and
# hyperfine for the benchmarks. Safe to run again; installs only what is missing.
set -euo pipefail

need=()
command -v python3 >/dev/null 2>&1 && [ -x /usr/bin/python3 ] || need+=(python3)
[ -x /usr/bin/node ] || need+=(nodejs)
[ -x /usr/bin/php ] || need+=(php-cli)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# Everyday tools the jail's tests run (tests/jail/everyday.rs).
command -v ps >/dev/null 2>&1 && command -v top >/dev/null 2>&1 || need+=(procps)
command -v git >/dev/null 2>&1 || need+=(git)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
# The gVisor backend's tests run programs under runsc.
[ -x /usr/bin/runsc ] || command -v runsc >/dev/null 2>&1 || need+=(runsc)
# warden-oci's tests run containers under a private containerd, beside
# Debian's runc (the differential test), on a rootfs of static busybox.
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || need+=(containerd)
[ -x /usr/sbin/runc ] || command -v runc >/dev/null 2>&1 || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# The signature tests check Warden's envelopes with OpenSSL, a verifier nobody here wrote.
command -v openssl >/dev/null 2>&1 || need+=(openssl)

# The service's API fuzz run (schemathesis, from PyPI) lives in a venv of
# Debian's own Python, which needs ensurepip (python3-venv).
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

# The dynamic-secrets tests start a private PostgreSQL cluster (initdb, pg_ctl).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

# Guest programs of the WASM backend's tests are built for these targets.
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed)
  for t in wasm32-wasip1 wasm32-wasip2; do
    echo "$installed" | grep -qx "$t" || rustup target add "$t"
  done
fi

if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# schemathesis for the API fuzz test of `warden serve`
# (crates/warden-server/tests/serve.rs), in target/tools/venv.
tools="$(cd "$(dirname "$0")/.." && pwd)/target/tools"
if [ ! -x "$tools/venv/bin/schemathesis" ]; then
  echo "setup: installing schemathesis into $tools/venv"
  /usr/bin/python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
