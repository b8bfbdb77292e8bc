#!/usr/bin/env bash
# Offline checks of the deployment files (Dockerfile, deploy/): the Helm
# chart's values against its schema, deploy/k8s and the chart's renders
# against the Kubernetes JSON schemas, `helm lint`/`helm template` (helm if
# on PATH, else Helm's Go SDK from PyPI), every router.toml through the real
# router, the image's HEALTHCHECK script against a running router, and the
# systemd unit with systemd-analyze when it is installed. No cluster, no
# Docker engine. Details: scripts/check_deploy.py.
#
#   scripts/check-deploy.sh          # from anywhere; a few seconds once set up
#
# The Python tools go into a venv under ~/.cache/kvroute (KVROUTE_DEPLOY_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KVROUTE_DEPLOY_VENV:-$HOME/.cache/kvroute/deploy-check}
REQS=(jsonschema==4.26.0 kubernetes-validate==1.37.0 PyYAML==6.0.4 helm-python-sdk==0.2.2 dockerfile==3.4.0)
if [ "$(cat "$VENV/.kvroute-reqs" 2>/dev/null)" != "${REQS[*]}" ]; then
  echo "installing ${REQS[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${REQS[@]}"
  echo "${REQS[*]}" > "$VENV/.kvroute-reqs"
fi

# The router under test: this tree's debug build.
cargo build --locked -q --bin router
router="$(cargo metadata --locked --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/router"

"$VENV/bin/python" scripts/check_deploy.py "$router"

unit=deploy/systemd/kvroute-router.service
if command -v systemd-analyze > /dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at the one just built.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  sed "s|^ExecStart=/usr/local/bin/router |ExecStart=$router |" "$unit" > "$tmp/kvroute-router.service"
  # verify reports unknown keys and bad values on stderr but exits 0 for them.
  if ! out=$(systemd-analyze verify "$tmp/kvroute-router.service" 2>&1) || [ -n "$out" ]; then
    echo "FAIL systemd-analyze verify $unit:"; echo "$out"; exit 1
  fi
  echo "ok   systemd-analyze verify $unit"
  # Exposure 0 (locked down) .. 10 (unprotected); fail above 2.0.
  if ! out=$(systemd-analyze security --offline=yes --threshold=20 "$tmp/kvroute-router.service" 2>&1); then
    echo "FAIL systemd-analyze security $unit:"; echo "$out" | tail -n 3; exit 1
  fi
  echo "ok   systemd-analyze security $unit: $(echo "$out" | grep -o 'exposure level.*' | head -n 1)"
else
  echo "skip systemd-analyze (not installed): $unit not checked"
fi
echo "deployment checks passed"
