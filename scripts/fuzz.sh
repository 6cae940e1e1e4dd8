#!/usr/bin/env bash
# Fuzzes everything the signer parses from outside with cargo-fuzz / libFuzzer: the admission
# parsers (OpTok, DPoP proof, PoE), the sign request body, in-toto statements and predicates,
# DSSE envelopes and Sigstore bundles (the verify path), OCI indexes and manifests, RFC 3161
# responses and Fulcio answers.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every target)
# Installs cargo-fuzz if it is missing. The machine's toolchain is stable; cargo-fuzz needs
# nightly-only flags (sanitizers), which RUSTC_BOOTSTRAP=1 unlocks on the same compiler.
# Each target starts from the committed seeds in fuzz/seeds/<target>/ (real outputs; the corpus
# test in `cargo test` runs them and their mutations on every CI run) and grows its corpus in
# fuzz/corpus/<target>/; crashes land in fuzz/artifacts/<target>/. Prints executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(optok dpop poe sign_request statement envelope oci tsa fulcio)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stella-signer/target}-fuzz"
summary=""
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  echo "fuzzing $target for ${seconds}s"
  log="$(mktemp)"
  cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1 | tee "$log" | grep -E "^(#[0-9]+\s+DONE|==|SUMMARY|Done)" || true
  execs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)"
  rate="$(grep -oE 'exec/s: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)"
  if grep -q "SUMMARY: libFuzzer\|panicked" "$log"; then
    echo "fuzz target $target failed; see fuzz/artifacts/$target/"
    rm -f "$log"
    exit 1
  fi
  summary+="$(printf '%-13s %10s executions  %7s exec/s\n' "$target" "${execs:-?}" "${rate:-?}")"$'\n'
  rm -f "$log"
done
echo "== executions per target (${seconds}s each)"
printf '%s' "$summary"
