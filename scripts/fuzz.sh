#!/usr/bin/env bash
# Fuzzes the admission parsers (OpTok, DPoP proof, PoE) with cargo-fuzz / libFuzzer.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Installs cargo-fuzz if it is missing. The machine's toolchain is stable; cargo-fuzz needs
# nightly-only flags (sanitizers), which RUSTC_BOOTSTRAP=1 unlocks on the same compiler.
# Crashes land in fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stella-signer/target}-fuzz"
for target in optok dpop poe; do
  mkdir -p "fuzz/corpus/$target"
  echo "fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -max_len=8192
done
