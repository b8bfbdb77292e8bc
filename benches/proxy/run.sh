#!/usr/bin/env bash
# Proxy overhead: kvroute's router against sglang-router and vllm-router on the
# same two stub backends, in the same run. Reports requests/s, latency
# percentiles and router CPU time per request (utime+stime of the router
# process over the timed run / requests served: what the router itself
# burns, the fairest figure on a shared 2-core machine).
#
#   benches/proxy/run.sh [SECONDS]          (default 10 s per measurement)
#
# PROMPT_SIZES (KB, default "2 8 32") sets the unique-prompt sizes; every
# size runs kvroute predicted (no tokenizer), kvroute with the Qwen3
# tokenizer in predicted and in exact mode, and each peer's cache_aware;
# the 2 KB size adds the round-robin, weighted and chat-turn rows.
# REPEATS (default 1) runs the whole set that many times; the table gives
# each row's median and range, and its CPU per request as a ratio to
# sglang-router cache_aware's in the same repeat and size.
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
SIZES=${PROMPT_SIZES:-2 8 32}
REPEATS=${REPEATS:-1}
TOK=datasets/tokenizers/qwen3/tokenizer.json.gz
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
  local script=${SCRIPT:-benches/proxy/prompt.lua}
  wrk -t1 -c32 -d2s -s "$script" "$url" > /dev/null 2>&1 || true
  for conc in 32 128; do
    local c0 r0 out reqs
    c0=$(cpu_ticks "$pid")
    out=$(wrk -t1 -c$conc -d${SECS}s --latency -s "$script" "$url")
    r0=$(cpu_ticks "$pid")
    python3 - "$label" "$conc" "$c0" "$r0" "$out" >> "$OUT" <<'PY'
import json, os, re, sys
label, conc, c0, c1, txt = sys.argv[1:]
def lat(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, txt, re.M)
    if not m: return None
    v, u = float(m.group(1)), m.group(2)
    return round(v / 1000 if u == "us" else v * 1000 if u == "s" else v, 3)
reqs = int(re.search(r"(\d+) requests in", txt).group(1))
non = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
cpu_s = (int(c1) - int(c0)) / 100.0
print(json.dumps(dict(label=label, conc=int(conc), kb=int(os.environ.get("PROMPT_KB", "2")), rep=int(os.environ.get("REP", "0")),
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

rm -f "$OUT"
for rep in $(seq 1 "$REPEATS"); do
  export REP=$rep
  for kb in $SIZES; do
    export PROMPT_KB=$kb
    if [ "$kb" = 2 ]; then
      run_kvroute "kvroute round_robin" --policy round_robin
      run_kvroute "kvroute weighted" --policy weighted
    fi
    run_kvroute "kvroute cache_affinity, predicted" --policy cache_affinity
    run_kvroute "kvroute cache_affinity, predicted + Qwen3 tokenizer" --policy cache_affinity --tokenizer $TOK
    # Exact mode: the router binds a KV-event socket per engine and records
    # no predicted blocks; the stubs publish no events, so this is the
    # request path's cost (event ingest is the directory bench's kv_ingest).
    run_kvroute "kvroute cache_affinity, exact + Qwen3 tokenizer" --policy cache_affinity --tokenizer $TOK \
      --directory-mode exact --kv-events http://127.0.0.1:18001=bind:tcp://127.0.0.1:18557 \
      --kv-events http://127.0.0.1:18002=bind:tcp://127.0.0.1:18558
    if [ "$kb" = 2 ]; then
      # Chat turns with a shared history (benches/proxy/chat_history.lua),
      # the template applied, with and without the message-piece cache.
      for cache in 0 4194304; do
        SCRIPT=benches/proxy/chat_history.lua run_kvroute \
          "kvroute cache_affinity + Qwen3 tokenizer, chat turn, tokenize cache $([ $cache = 0 ] && echo off || echo on)" \
          --policy cache_affinity --tokenizer $TOK \
          --chat-template datasets/tokenizers/qwen3/tokenizer_config.json --tokenize-cache $cache
      done
    fi
    if [ -n "$PEERS" ] && [ -x "$PEERS/venv-sgl/bin/python" ]; then
      [ "$kb" = 2 ] && run_peer "sglang-router round_robin" "$PEERS/venv-sgl/bin/python" -m sglang_router.launch_router --policy round_robin
      run_peer "sglang-router cache_aware" "$PEERS/venv-sgl/bin/python" -m sglang_router.launch_router --policy cache_aware
    fi
    if [ -n "$PEERS" ] && [ -x "$PEERS/venv-vllm/bin/vllm-router" ]; then
      [ "$kb" = 2 ] && run_peer "vllm-router round_robin" "$PEERS/venv-vllm/bin/vllm-router" --policy round_robin
      run_peer "vllm-router cache_aware" "$PEERS/venv-vllm/bin/vllm-router" --policy cache_aware
    fi
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ref = {(r["rep"], r["kb"], r["conc"]): r["router_cpu_us_per_req"]
       for r in rows if r["label"] == "sglang-router cache_aware"}
def cell(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals: return "–"
    m = statistics.median(vals)
    return fmt(m) if len(vals) == 1 else f"{fmt(m)} [{fmt(min(vals))}–{fmt(max(vals))}]"
print("| prompt | router / policy | req/s c=32 | p50/p99 ms c=32 | req/s c=128 | p50/p99 ms c=128 | router CPU µs/req c=32 / c=128 | CPU ÷ sglang-router cache_aware c=32 / c=128 |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
keys = []
for r in rows:
    if (r["kb"], r["label"]) not in keys: keys.append((r["kb"], r["label"]))
for kb, label in keys:
    out = [f"{kb} KB", label]
    ps, cpus, ratios = [], [], []
    for conc in (32, 128):
        rs = [r for r in rows if r["kb"] == kb and r["label"] == label and r["conc"] == conc]
        out.append(cell([r["rps"] for r in rs], lambda v: f"{v:.0f}"))
        out.append(cell([r["p50_ms"] for r in rs], lambda v: f"{v:.2f}") + "/" + cell([r["p99_ms"] for r in rs], lambda v: f"{v:.2f}"))
        cpus.append(cell([r["router_cpu_us_per_req"] for r in rs], lambda v: f"{v:.0f}"))
        ratios.append(cell([r["router_cpu_us_per_req"] / ref[(r["rep"], kb, conc)] for r in rs
                            if ref.get((r["rep"], kb, conc)) and r["router_cpu_us_per_req"]], lambda v: f"{v:.2f}"))
    out += [" / ".join(cpus), " / ".join(ratios)]
    print("| " + " | ".join(out) + " |")
PY
