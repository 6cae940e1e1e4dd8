#!/usr/bin/env bash
# The main job: build, start a single-node dev signer with embedded storage, sign the sample
# SBOM, verify the bundle offline (with `stella verify` and with sigstore-js); then sign it
# keyless (the dev node's own stand-ins of Fulcio and an RFC 3161 TSA) and verify that offline
# against the node's exported trust root, again with both; stop the node.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stella-signer/target}"
cargo build --locked -p stella-node -p stella-cli
bin="$CARGO_TARGET_DIR/debug"

work=.demo
rm -rf "$work" && mkdir -p "$work/out"
"$bin/stella-signer" serve --dev --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/node.log" 2>&1 &
node_pid=$!
trap 'kill "$node_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q '"stella-signer ready"' "$work/node.log" 2>/dev/null && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log"; exit 1; }
  sleep 0.1
done
grep -q '"stella-signer ready"' "$work/node.log" || { echo "the node did not start"; cat "$work/node.log"; exit 1; }
url=$(grep -o '"url":"[^"]*"' "$work/node.log" | head -1 | cut -d'"' -f4)
echo "== dev node ready: $url"

echo "== stella sign sbom examples/sbom.cdx.json"
"$bin/stella" sign sbom examples/sbom.cdx.json --credentials "$work/data/dev" \
  --bundle "$work/out/sbom.bundle.json" --envelope "$work/out/sbom.dsse.json"

echo "== stella verify (offline, public key only)"
"$bin/stella" verify examples/sbom.cdx.json --bundle "$work/out/sbom.bundle.json" \
  --key "$work/data/dev/signing-key.pub.pem" --predicate-type stella.ops/sbom@v1

echo "== independent check: sigstore-js (@sigstore/verify)"
node tests/verifiers/verify-bundle.mjs --bundle "$work/out/sbom.bundle.json" \
  --key "$work/data/dev/signing-key.pub.pem" --artifact examples/sbom.cdx.json

# Keyless: the dev node certifies an ephemeral key with its dev Fulcio and timestamps the
# signature with its dev TSA, both dev-only stand-ins with test CAs of their own. The
# certificate names the node's identity, issued by its dev Authority.
identity=stella-signer@dev.invalid
issuer="$url/dev/authority"
echo "== stella sign sbom --mode keyless (dev Fulcio + dev TSA: dev-only stand-ins)"
"$bin/stella" sign sbom examples/sbom.cdx.json --mode keyless --credentials "$work/data/dev" \
  --bundle "$work/out/sbom.keyless.bundle.json" --envelope "$work/out/sbom.keyless.dsse.json"

echo "== stella trust export (trusted_root.json: the dev Fulcio CA and the dev TSA)"
"$bin/stella" trust export -o "$work/kit" --credentials "$work/data/dev"

echo "== stella verify --trusted-root (offline, keyless)"
"$bin/stella" verify examples/sbom.cdx.json --bundle "$work/out/sbom.keyless.bundle.json" \
  --trusted-root "$work/kit/trusted_root.json" --certificate-identity "$identity" \
  --certificate-oidc-issuer "$issuer" --predicate-type stella.ops/sbom@v1

echo "== independent check: sigstore-js (@sigstore/verify), keyless"
node tests/verifiers/verify-keyless.mjs --bundle "$work/out/sbom.keyless.bundle.json" \
  --trusted-root "$work/kit/trusted_root.json" --identity "$identity" --issuer "$issuer" \
  --artifact examples/sbom.cdx.json

kill -TERM "$node_pid"
wait "$node_pid" || true
trap - EXIT
echo "== done: bundles, envelopes, public key and trust root are in $work/"
