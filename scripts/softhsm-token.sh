#!/usr/bin/env bash
# Creates a fresh SoftHSM2 token for the test suite and prints the environment that points the
# tests at it:   eval "$(bash scripts/softhsm-token.sh DIR)"
# DIR gets softhsm2.conf and the token store; the token is labelled `stella-test`.
set -euo pipefail
dir="${1:?usage: softhsm-token.sh DIR}"
rm -rf "$dir"
mkdir -p "$dir/tokens"
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
module=""
for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
  [ -e "$candidate" ] && module="$candidate" && break
done
[ -n "$module" ] || { echo "softhsm2 is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label stella-test \
  --pin 1234 --so-pin 5678 >/dev/null
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
echo "export STELLA_TEST_PKCS11_MODULE=$module"
echo "export STELLA_TEST_PKCS11_TOKEN=stella-test"
echo "export STELLA_TEST_PKCS11_PIN=1234"
