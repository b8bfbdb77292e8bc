#!/usr/bin/env bash
# Stop the vLLM instances launch.sh started (only those: by recorded pid).
set -u
HOME_DIR=${KVROUTE_VLLM_HOME:-$HOME/.cache/kvroute/vllm-cpu}
RUN_DIR=${RUN_DIR:-$HOME_DIR/run}
for pidfile in "$RUN_DIR"/*/pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped pid $pid ($(dirname "$pidfile"))"
  fi
  rm -f "$pidfile"
done
