#!/usr/bin/env python3
"""bip340_verify.py — check BIP-340 signatures with libsecp256k1 (through coincurve).

An independent check of threshold (FROST) signatures: coincurve wraps libsecp256k1, the
reference BIP-340 implementation, and shares no code with the Rust signer.

Usage:
  bip340_verify.py X_ONLY_HEX MESSAGE_HEX SIGNATURE_HEX
  bip340_verify.py --json VECTOR.json      # {"x_only_hex", "message_hex", "signature_hex"}
  bip340_verify.py < LINES                 # lines "X_ONLY_HEX MESSAGE_HEX SIGNATURE_HEX"

MESSAGE_HEX is the 32-byte message as signed (SHA-256 of the DSSE PAE), not the PAE.
Prints "OK" or "FAIL <reason>" per signature; exits 0 iff every signature is valid.
Needs: pip install coincurve (checked with coincurve 21.0.0).
"""

import json
import sys

from coincurve import PublicKeyXOnly


def check(x_only_hex: str, message_hex: str, signature_hex: str) -> str | None:
    """Returns None when valid, else the reason."""
    try:
        x_only = bytes.fromhex(x_only_hex)
        message = bytes.fromhex(message_hex)
        signature = bytes.fromhex(signature_hex)
    except ValueError as e:
        return f"bad hex: {e}"
    if len(x_only) != 32:
        return f"x-only key is {len(x_only)} bytes, expected 32"
    if len(message) != 32:
        return f"message is {len(message)} bytes, expected 32"
    if len(signature) != 64:
        return f"signature is {len(signature)} bytes, expected 64"
    try:
        key = PublicKeyXOnly(x_only)
    except ValueError as e:
        return f"not a valid x-only key: {e}"
    if not key.verify(signature, message):
        return "signature does not verify"
    return None


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] != "--json":
        triples = [tuple(argv)]
    elif len(argv) == 2 and argv[0] == "--json":
        with open(argv[1], "rb") as f:
            v = json.load(f)
        triples = [(v["x_only_hex"], v["message_hex"], v["signature_hex"])]
    elif not argv:
        triples = [tuple(line.split()) for line in sys.stdin if line.strip()]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if not triples:
        print("FAIL no signatures given")
        return 1
    ok = True
    for triple in triples:
        if len(triple) != 3:
            print(f"FAIL expected 3 fields, got {len(triple)}")
            ok = False
            continue
        reason = check(*triple)
        if reason is None:
            print("OK")
        else:
            print(f"FAIL {reason}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
