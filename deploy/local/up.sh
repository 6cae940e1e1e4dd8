#!/usr/bin/env bash
# A Stella Signer cluster on loopback behind a real load balancer, from nothing:
#   deploy/local/up.sh [DIR]      (default .stella-local; deploy/local/down.sh DIR stops it)
# Starts a dev node that stands in for the Authority and the licensing service, writes the
# plan (`stella-signer cluster plan`: PKI, keys, node configurations, HAProxy and Prometheus
# configuration, client credentials), starts three nodes, forms the cluster, then HAProxy
# (TLS passthrough, health checks on /readyz) and Prometheus (the alert rules of
# deploy/prometheus). Prints where everything is. Ports: STELLA_PORT_BASE (default 18440) is the
# balancer; +1 the identity node, +2 Prometheus, +10.. the nodes' APIs, +20.. their peers.
# Binaries: STELLA_BIN_DIR (default: target/release, else target/debug, of CARGO_TARGET_DIR).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-.stella-local}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
base=${STELLA_PORT_BASE:-18440}
nodes=${STELLA_NODES:-3}
lb=$base identity=$((base + 1)) prom=$((base + 2)) api=$((base + 10)) peer=$((base + 20))
target=${CARGO_TARGET_DIR:-$repo/target}
bins=${STELLA_BIN_DIR:-}
if [ -z "$bins" ]; then
  if [ -x "$target/release/stella-signer" ]; then bins=$target/release; else bins=$target/debug; fi
fi
signer=$bins/stella-signer
[ -x "$signer" ] || { echo "up.sh: no $signer: cargo build --release first" >&2; exit 1; }
for tool in haproxy prometheus curl; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

start() { # name, log, command...
  local name=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 < /dev/null &
  echo $! >"$dir/$name.pid"
}
wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "up.sh: $what did not come up (logs in $dir)" >&2
  exit 1
}

echo "plan: $dir"
"$signer" cluster plan --out "$dir" --nodes "$nodes" --api-port "$api" --peer-port "$peer" \
  --lb-port "$lb" --prometheus-port "$prom" --cluster-id local \
  --identity-dir "$dir/identity" --identity-url "http://127.0.0.1:$identity" >/dev/null

start identity "$dir/identity.log" "$signer" serve --dev --data-dir "$dir/identity" --listen "127.0.0.1:$identity"
wait_for "the identity node" curl -sf "http://127.0.0.1:$identity/healthz"

ca=$dir/pki/ca.pem
for i in $(seq 1 "$nodes"); do
  start "node-$i" "$dir/node-$i/node.log" "$signer" serve --config "$dir/node-$i/node.toml"
done
for i in $(seq 1 "$nodes"); do
  wait_for "node $i" curl -sf --cacert "$ca" "https://127.0.0.1:$((api + i - 1))/healthz"
done
"$signer" cluster init --config "$dir/node-1/node.toml" >/dev/null
for i in $(seq 2 "$nodes"); do
  "$signer" cluster join --config "$dir/node-$i/node.toml" --leader "https://127.0.0.1:$peer" >/dev/null
done
for i in $(seq 1 "$nodes"); do
  wait_for "node $i readiness" curl -sf --cacert "$ca" "https://127.0.0.1:$((api + i - 1))/readyz"
done

start haproxy "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg"
wait_for "the balancer" curl -sf --cacert "$ca" "https://127.0.0.1:$lb/readyz"

cp "$repo/deploy/prometheus/stella-signer.rules.yml" "$dir/prometheus/"
start prometheus "$dir/prometheus.log" prometheus --config.file="$dir/prometheus/prometheus.yml" \
  --storage.tsdb.path="$dir/prometheus/data" --web.listen-address="127.0.0.1:$prom"
wait_for "Prometheus" curl -sf "http://127.0.0.1:$prom/-/ready"

cat <<INFO
Stella Signer: https://127.0.0.1:$lb (through HAProxy; CA $ca)
  client credentials: $dir/client (stella sign sbom FILE --credentials $dir/client)
  nodes: $(for i in $(seq 1 "$nodes"); do printf 'https://127.0.0.1:%s ' $((api + i - 1)); done)
  Prometheus: http://127.0.0.1:$prom (alerts: /alerts)
  stop: deploy/local/down.sh $dir
INFO
