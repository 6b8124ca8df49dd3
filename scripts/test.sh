#!/usr/bin/env bash
# Sets up the machine and runs Warden's whole test suite: unit tests, the
# real-jail integration and security suites (they need root or user
# namespaces, and run for real), and the policy parser's fuzz corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --locked
