#!/usr/bin/env bash
# Runs every test suite of Natter: Rust (unit, store conformance, integration, delivery checker),
# then the JavaScript SDK and browser tests (a missing browser or service fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets 2>&1 | tee /tmp/natter-cargo-test.log
echo "== JavaScript SDK and browser tests"
scripts/test-js.sh
