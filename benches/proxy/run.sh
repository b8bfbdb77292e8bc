#!/usr/bin/env bash
# Proxy overhead: kvroute's router against sglang-router and vllm-router on the
# same two stub backends, in the same run. Reports requests/s, latency
# percentiles and router CPU time per request (utime+stime of the router
# process over the timed run / requests served: what the router itself
# burns, the fairest figure on a shared 2-core machine).
#
#   benches/proxy/run.sh [SECONDS]          (default 10 s per measurement)
#
# Needs wrk (apt-get install wrk). Peer routers are used when their venvs
# exist under $KVROUTE_PEERS_HOME (venv-sgl with sglang-router==0.3.2,
# venv-vllm with vllm-router==0.1.17). Results: results/proxy-bench.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
PEERS=${KVROUTE_PEERS_HOME:-}
OUT=results/proxy-bench.jsonl
mkdir -p results
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p kvroute-router-bin -q
cargo build --release --locked --example stub_backend -q
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for port in 18001 18002; do
  target/release/examples/stub_backend $port & PIDS+=($!)
done
sleep 0.5
URLS="http://127.0.0.1:18001 http://127.0.0.1:18002"

cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }

wait_ready() {
  for _ in $(seq 1 200); do
    code=$(curl -s -o /dev/null -w "%{http_code}" -XPOST "$1/v1/completions" -H 'content-type: application/json' \
      -d '{"model":"fake-model","prompt":"ping","max_tokens":1}' || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  echo "router at $1 not ready" >&2; return 1
}

measure() { # label pid url
  local label=$1 pid=$2 url=$3
  local script=${SCRIPT:-benches/proxy/post2k.lua}
  wrk -t1 -c32 -d2s -s "$script" "$url" > /dev/null 2>&1 || true
  for conc in 32 128; do
    local c0 r0 out reqs
    c0=$(cpu_ticks "$pid")
    out=$(wrk -t1 -c$conc -d${SECS}s --latency -s "$script" "$url")
    r0=$(cpu_ticks "$pid")
    python3 - "$label" "$conc" "$c0" "$r0" "$out" >> "$OUT" <<'PY'
import json, re, sys
label, conc, c0, c1, txt = sys.argv[1:]
def lat(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, txt, re.M)
    if not m: return None
    v, u = float(m.group(1)), m.group(2)
    return round(v / 1000 if u == "us" else v * 1000 if u == "s" else v, 3)
reqs = int(re.search(r"(\d+) requests in", txt).group(1))
non = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
cpu_s = (int(c1) - int(c0)) / 100.0
print(json.dumps(dict(label=label, conc=int(conc),
    rps=float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1)),
    p50_ms=lat(50), p99_ms=lat(99), requests=reqs, non2xx=int(non.group(1)) if non else 0,
    router_cpu_us_per_req=round(cpu_s * 1e6 / reqs, 1) if reqs else None)))
PY
    tail -1 "$OUT"
  done
}

run_kvroute() { # label extra-args...
  local label=$1; shift
  target/release/router --listen 127.0.0.1:30000 --instance http://127.0.0.1:18001 --instance http://127.0.0.1:18002 \
    --health-interval 0 --metrics-interval 0 --log warn "$@" & local pid=$!
  PIDS+=($pid)
  wait_ready http://127.0.0.1:30000
  measure "$label" "$pid" http://127.0.0.1:30000
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_peer() { # label program args...
  local label=$1; shift
  "$@" --host 127.0.0.1 --port 30001 --worker-urls $URLS --prometheus-host 127.0.0.1 --prometheus-port 29001 \
    > /dev/null 2>&1 & local pid=$!
  PIDS+=($pid)
  wait_ready http://127.0.0.1:30001
  measure "$label" "$pid" http://127.0.0.1:30001
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

: > "$OUT"
run_kvroute "kvroute round_robin" --policy round_robin
run_kvroute "kvroute cache_affinity" --policy cache_affinity
run_kvroute "kvroute weighted" --policy weighted
run_kvroute "kvroute cache_affinity + Qwen3 tokenizer" --policy cache_affinity \
  --tokenizer datasets/tokenizers/qwen3/tokenizer.json.gz
# Chat turns with a shared history (benches/proxy/chat_history.lua), the
# template applied, with and without the router's message-piece cache.
for cache in 0 4194304; do
  SCRIPT=benches/proxy/chat_history.lua run_kvroute \
    "kvroute cache_affinity + Qwen3 tokenizer, chat turn, tokenize cache $([ $cache = 0 ] && echo off || echo on)" \
    --policy cache_affinity --tokenizer datasets/tokenizers/qwen3/tokenizer.json.gz \
    --chat-template datasets/tokenizers/qwen3/tokenizer_config.json --tokenize-cache $cache
done
if [ -n "$PEERS" ] && [ -x "$PEERS/venv-sgl/bin/python" ]; then
  run_peer "sglang-router round_robin" "$PEERS/venv-sgl/bin/python" -m sglang_router.launch_router --policy round_robin
  run_peer "sglang-router cache_aware" "$PEERS/venv-sgl/bin/python" -m sglang_router.launch_router --policy cache_aware
fi
if [ -n "$PEERS" ] && [ -x "$PEERS/venv-vllm/bin/vllm-router" ]; then
  run_peer "vllm-router round_robin" "$PEERS/venv-vllm/bin/vllm-router" --policy round_robin
  run_peer "vllm-router cache_aware" "$PEERS/venv-vllm/bin/vllm-router" --policy cache_aware
fi
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| router / policy | req/s c=32 | p50/p99 ms c=32 | req/s c=128 | p50/p99 ms c=128 | router CPU µs/req c=32 / c=128 |")
print("|---|---:|---:|---:|---:|---:|")
labels = []
for r in rows:
    if r["label"] not in labels: labels.append(r["label"])
for l in labels:
    a = next(r for r in rows if r["label"] == l and r["conc"] == 32)
    b = next(r for r in rows if r["label"] == l and r["conc"] == 128)
    print(f"| {l} | {a['rps']:.0f} | {a['p50_ms']}/{a['p99_ms']} | {b['rps']:.0f} | {b['p50_ms']}/{b['p99_ms']} | {a['router_cpu_us_per_req']} / {b['router_cpu_us_per_req']} |")
PY
