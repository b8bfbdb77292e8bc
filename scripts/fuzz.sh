#!/usr/bin/env bash
# Bounded fuzz runs of what reaches the router from the network: request
# bodies, KV-event payloads, engine /metrics pages (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 45 s, all targets)
#
# libFuzzer through cargo-fuzz (installed if missing), without a sanitizer so
# it builds on the stable toolchain; every run starts from the committed seeds
# (fuzz/seeds/TARGET) and keeps what it finds in a temporary corpus. A crash
# stops the script and leaves the input under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-45}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_parser kv_event_decoder metrics_parser)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
cargo fuzz build -s none -O
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  echo "== fuzz $t for ${secs}s"
  status=0
  cargo fuzz run -s none -O "$t" "$work/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    > "$work/$t.log" 2>&1 || status=$?
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs' "$work/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$work/$t.log"
    echo "fuzz target $t failed (input under fuzz/artifacts/$t/)" >&2
    exit "$status"
  fi
done
