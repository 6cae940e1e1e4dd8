#!/usr/bin/env bash
# Checks the deployment files with the real tools (run by scripts/test.sh):
#   promtool check/test rules, promtool check config, the dashboard's queries parsed by promtool,
#   systemd-analyze verify on the unit (against the built binary), and the Kubernetes manifests
#   against the Kubernetes schemas (kubernetes-validate --strict, from the venv install-deps.sh
#   made).
# Usage: deploy/check.sh STELLA_SIGNER_BINARY
set -euo pipefail
cd "$(dirname "$0")"
bin=${1:?usage: deploy/check.sh path/to/stella-signer}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- promtool: alert rules, their unit tests, the scrape configuration"
promtool check rules prometheus/stella-signer.rules.yml
(cd prometheus && promtool test rules stella-signer.rules.test.yml)
cp prometheus/prometheus.yml prometheus/stella-signer.rules.yml "$work/"
promtool check config "$work/prometheus.yml"

echo "-- promtool: every dashboard query parses (as a recording rule)"
python3 - grafana/stella-signer.json > "$work/dashboard.rules.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for panel in dash["panels"]:
    for target in panel.get("targets", []):
        print(f"      - record: dashboard:panel_{panel['id']}_{target['refId']}")
        print(f"        expr: {json.dumps(target['expr'])}")
PY
promtool check rules "$work/dashboard.rules.yml"

echo "-- systemd-analyze verify (the unit, pointed at the built binary)"
sed "s|/usr/local/bin/stella-signer|$(realpath "$bin")|" systemd/stella-signer.service > "$work/stella-signer.service"
out=$(systemd-analyze verify --man=no "$work/stella-signer.service" 2>&1 || true)
if [ -n "$out" ]; then
  echo "$out" >&2
  exit 1
fi
echo "-- kubernetes-validate --strict (offline, the schemas ship with it)"
venv=${STELLA_VENV:-$HOME/.cache/stella-signer/venv}
"$venv/bin/kubernetes-validate" --strict --quiet kubernetes/*.yaml

echo "deploy files: OK"
