#!/usr/bin/env bash
# The whole test suite: unit, golden-vector and RFC 8785 tests, integration tests against the
# real binaries (independent verification with sigstore-js and openssl included), the verifier
# self-test, and a short smoke run of the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stella-signer/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The independent BIP-340 verifier (libsecp256k1 via coincurve) that install-deps.sh set up.
export STELLA_BIP340_PYTHON="${STELLA_VENV:-$HOME/.cache/stella-signer/venv}/bin/python"

echo "== verifier self-test (sigstore-js and openssl against independently made material)"
bash tests/verifiers/selftest.sh

echo "== the published API contract (docs/openapi.json) against the OpenAPI 3.1 schemas"
node tests/verifiers/openapi-check.mjs docs/openapi.json

echo "== format and lints"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== structure: no module import cycles, doc links resolve inside the repository"
python3 scripts/module-cycles.py
python3 scripts/doc-links.py

echo "== build"
cargo build --locked --workspace --bins

echo "== deployment files (promtool, systemd-analyze)"
bash deploy/check.sh "$CARGO_TARGET_DIR/debug/stella-signer"

echo "== load generator smoke run (numbers from a debug build are not benchmarks)"
"$CARGO_TARGET_DIR/debug/stella-load" --quick

echo "== cargo test (with a fresh SoftHSM2 token for the PKCS#11 back-end)"
hsm_dir="${TMPDIR:-/tmp}/stella-softhsm-$$"
trap 'rm -rf "$hsm_dir"' EXIT
eval "$(bash scripts/softhsm-token.sh "$hsm_dir")"
cargo test --locked --workspace --all-targets
# Doc tests: among them the compile-fail proofs that signing nonces cannot be copied or reused.
cargo test --locked --workspace --doc
