#!/usr/bin/env bash
# The whole test suite: formatting, lints, the dependency rule, unit,
# property and integration tests. Run from anywhere: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Two cores: keep the build from starving the tests that start servers.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "library crates stay free of tokio/hyper/tower"
for crate in kvroute-core kvroute-policy kvroute-directory kvroute-routing; do
  if cargo tree -p "$crate" -e normal --prefix none --locked 2>/dev/null | grep -Eq '^(tokio|hyper|tower) '; then
    echo "error: $crate depends on an async runtime or HTTP stack:" >&2
    cargo tree -p "$crate" -e normal -i tokio --locked >&2 || true
    exit 1
  fi
done

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
fi
