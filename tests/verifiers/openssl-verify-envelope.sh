#!/usr/bin/env bash
# openssl-verify-envelope.sh — check a DSSE envelope signature with plain openssl.
#
# Usage: openssl-verify-envelope.sh ENVELOPE.json PUB.pem [INDEX]
#
# ENVELOPE.json: {"payloadType", "payload" (std base64), "signatures": [{"keyid"?, "sig"
# (std base64 of a DER ECDSA signature)}]}. The DSSE PAE
#   "DSSEv1" SP len(payloadType) SP payloadType SP len(payload) SP payload
# (decimal byte lengths, raw decoded payload) is rebuilt with python3 and the
# signature at INDEX (default 0, the first) is checked with
#   openssl dgst -sha256 -verify PUB.pem -signature SIG.der PAE.bin
# or, for an Ed25519 key (a raw 64-byte signature over the PAE itself),
#   openssl pkeyutl -verify -pubin -inkey PUB.pem -rawin -in PAE.bin -sigfile SIG
# Prints "OK ..." and exits 0 on success, "FAIL <reason>" and exits 1 otherwise.
set -uo pipefail

fail() { echo "FAIL $*"; exit 1; }

[ $# -ge 2 ] && [ $# -le 3 ] || fail "usage: $0 ENVELOPE.json PUB.pem [INDEX]"
env_json=$1 pub=$2 index=${3:-0}
[ -r "$env_json" ] || fail "cannot read envelope $env_json"
[ -r "$pub" ] || fail "cannot read public key $pub"

tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

# Decode the envelope and write PAE.bin + SIG.der; prints a reason and exits 1 on bad input.
python3 - "$env_json" "$index" "$tmp" <<'EOF' || fail "$(cat "$tmp/err" 2>/dev/null || echo 'cannot decode envelope')"
import base64, binascii, json, sys
path, index, out = sys.argv[1], sys.argv[2], sys.argv[3]
def bad(msg):
    open(f"{out}/err", "w").write(msg)
    sys.exit(1)
def b64(s, what):
    if not isinstance(s, str):
        bad(f"{what} is not a string")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        bad(f"{what} is not standard base64: {e}")
try:
    env = json.load(open(path, "rb"))
except Exception as e:
    bad(f"envelope is not JSON: {e}")
if not isinstance(env, dict):
    bad("envelope is not a JSON object")
ptype = env.get("payloadType")
if not isinstance(ptype, str) or not ptype:
    bad("payloadType missing or empty")
payload = b64(env.get("payload"), "payload")
sigs = env.get("signatures")
if not isinstance(sigs, list) or not sigs:
    bad("signatures missing or empty")
if not index.isdigit() or int(index) >= len(sigs):
    bad(f"signature index {index} out of range (have {len(sigs)})")
sig = b64((sigs[int(index)] or {}).get("sig"), f"signatures[{index}].sig")
if not sig:
    bad(f"signatures[{index}].sig is empty")
t = ptype.encode("utf-8")
pae = b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)
open(f"{out}/PAE.bin", "wb").write(pae)
open(f"{out}/SIG.der", "wb").write(sig)
EOF

# An Ed25519 key (RFC 8032, no pre-hash: what an Ed25519 threshold key signs) is checked over the
# raw PAE; any other key as ECDSA over SHA-256(PAE).
if openssl pkey -pubin -in "$pub" -noout -text_pub 2>/dev/null | grep -q '^ED25519 Public-Key'; then
  check=(openssl pkeyutl -verify -pubin -inkey "$pub" -rawin -in "$tmp/PAE.bin" -sigfile "$tmp/SIG.der")
else
  check=(openssl dgst -sha256 -verify "$pub" -signature "$tmp/SIG.der" "$tmp/PAE.bin")
fi
if result=$("${check[@]}" 2>&1); then
  echo "OK signatures[$index] verified over $(wc -c <"$tmp/PAE.bin") PAE bytes"
else
  fail "openssl: signatures[$index]: $(echo "$result" | head -n 3 | tr '\n' ' ' | sed 's/ *$//')"
fi
