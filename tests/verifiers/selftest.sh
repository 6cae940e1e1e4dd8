#!/usr/bin/env bash
# selftest.sh — show that verify-bundle.mjs and openssl-verify-envelope.sh accept the
# reference keyful example and reject tampered payloads and wrong keys for the right reason.
#
# Usage: selftest.sh [EXAMPLES_DIR]   (default: fixtures/, made by an independent generator)
# Needs node (runs `npm ci` here if node_modules/ is missing), python3, openssl.
# Ends with "N passed, N failed"; exit status is non-zero if any case failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ex=${1:-$here/fixtures}
bundle=$ex/keyful.bundle.v03.json key=$ex/keyful.key.pub.pem artifact=$ex/artifact.bin
for f in "$bundle" "$key" "$artifact"; do [ -r "$f" ] || { echo "missing $f"; exit 2; }; done
[ -d "$here/node_modules/@sigstore/verify" ] || (cd "$here" && npm ci --no-audit --no-fund) || exit 2

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# check NAME WANT PATTERN CMD...: WANT is 0 (accept) or 1 (reject); the output must match PATTERN.
check() {
  local name=$1 want=$2 pattern=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  [ "$rc" -ne 0 ] && rc=1
  if [ "$rc" = "$want" ] && grep -Eq -- "$pattern" <<<"$out"; then
    passed=$((passed + 1)); echo "PASS $name: $out"
  else
    failed=$((failed + 1)); echo "XXXX $name: rc=$rc want=$want pattern=/$pattern/ got: $out"
  fi
}

# Fixtures: tampered bundle (subject digest changed, payload re-encoded), a fresh P-256 key,
# a bundle whose hint names that fresh key, and the bare DSSE envelopes.
python3 - "$bundle" "$tmp" <<'EOF'
import base64, json, sys
b = json.load(open(sys.argv[1])); out = sys.argv[2]
env = b["dsseEnvelope"]
json.dump(env, open(f"{out}/envelope.json", "w"))
st = json.loads(base64.b64decode(env["payload"]))
st["subject"][0]["digest"]["sha256"] = "0" * 64
env["payload"] = base64.b64encode(json.dumps(st, separators=(",", ":")).encode()).decode()
json.dump(b, open(f"{out}/tampered.bundle.json", "w"))
json.dump(env, open(f"{out}/tampered.envelope.json", "w"))
EOF
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/other.key.pem" 2>/dev/null
openssl pkey -in "$tmp/other.key.pem" -pubout -out "$tmp/other.pub.pem"
other_hint=$(openssl pkey -pubin -in "$tmp/other.pub.pem" -outform DER | openssl dgst -sha256 -binary | base64)
python3 - "$bundle" "$other_hint" >"$tmp/rehinted.bundle.json" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1])); b["verificationMaterial"]["publicKey"]["hint"] = sys.argv[2]
print(json.dumps(b))
EOF

vb() { node "$here/verify-bundle.mjs" "$@"; }
ov() { "$here/openssl-verify-envelope.sh" "$@"; }

echo "== verify-bundle.mjs (@sigstore/verify) on $ex"
check "bundle accepted"                0 '^OK '                           vb --bundle "$bundle" --key "$key"
check "bundle+artifact accepted"       0 '^OK .*subject-sha256='          vb --bundle "$bundle" --key "$key" --artifact "$artifact"
check "tampered payload rejected"      1 '^FAIL .*signature verification failed' vb --bundle "$tmp/tampered.bundle.json" --key "$key"
check "wrong key rejected"             1 '^FAIL .*key not found'          vb --bundle "$bundle" --key "$tmp/other.pub.pem"
check "wrong key, matching hint rejected" 1 '^FAIL .*signature verification failed' vb --bundle "$tmp/rehinted.bundle.json" --key "$tmp/other.pub.pem"
check "wrong artifact rejected"        1 '^FAIL .*not a subject'          vb --bundle "$bundle" --key "$key" --artifact "$ex/statement.json"

echo "== openssl-verify-envelope.sh (openssl dgst) on the bundle's dsseEnvelope"
check "envelope accepted"              0 '^OK '                           ov "$tmp/envelope.json" "$key"
check "tampered envelope rejected"     1 '^FAIL .*Verification failure'   ov "$tmp/tampered.envelope.json" "$key"
check "envelope wrong key rejected"    1 '^FAIL .*Verification failure'   ov "$tmp/envelope.json" "$tmp/other.pub.pem"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
