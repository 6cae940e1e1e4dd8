#!/usr/bin/env bash
# Installs what the project needs beyond Rust on a Debian machine: openssl (independent envelope
# check, test PKI), Node.js + npm and the pinned sigstore-js verifier packages, iptables and
# Debian's OCI registry (docker-registry; the tests start their own instances), SoftHSM2, Go with
# golang.org/x/mod (the independent transparency-log verifier), Prometheus's promtool and
# systemd-analyze (deploy file checks), etcd (the G3 benchmark's baseline), and a Python venv with coincurve (libsecp256k1) as the
# independent BIP-340 verifier and moto (the AWS KMS stand-in).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every external program the scripts and tests run is either installed below or checked here.
# These come with a Rust toolchain or with every Debian system (Essential packages); nothing here
# installs them, so a missing one stops with a clear message instead of a test failing later.
missing=()
for tool in cargo rustc cc bash grep sed seq sleep mktemp id cat; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "install-deps: missing ${missing[*]}: install a Rust toolchain (rustup) and gcc first" >&2
  exit 1
fi

need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Threshold (BIP-340) signatures are checked with libsecp256k1 through coincurve, in a venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The partition test cuts peer traffic between loopback addresses with iptables.
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# libfaketime: the chaos drills' clock-skew fault (one node started with its clock off).
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# Release-provenance tests push and discover signatures in a real OCI registry.
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
# The PKCS#11 key back-end is tested against a SoftHSM2 token that scripts/softhsm-token.sh creates.
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
# The audit log's checkpoints and proofs are checked by Go's checksum-database packages
# (golang.org/x/mod/sumdb/note and sumdb/tlog) in tests/verifiers/tlog-verify.
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog ] || need+=(golang-golang-x-mod-dev)
# The alert rules and the dashboard's queries are checked and unit-tested with promtool (from
# Debian's prometheus), the systemd unit with systemd-analyze (deploy/check.sh).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The deploy test runs deploy/local/up.sh: HAProxy in front of the nodes, a real Prometheus
# scraping them (the prometheus package above), curl for its health waits.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# `stella-load --etcd` (G3) compares the cluster's committed writes with a 3-node etcd on
# loopback, the closest widely trusted Raft store; etcdctl checks its health by hand.
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need ${need[*]}, but not root and no sudo" >&2; exit 1; }
    sudo=sudo
  fi
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d tests/verifiers/node_modules/@sigstore/verify ] || [ tests/verifiers/package-lock.json -nt tests/verifiers/node_modules/.package-lock.json ]; then
  (cd tests/verifiers && npm ci --no-audit --no-fund --loglevel=error)
fi

venv="${STELLA_VENV:-$HOME/.cache/stella-signer/venv}"
if ! "$venv/bin/python" -c 'import coincurve' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check coincurve==21.0.0
fi
# The Kubernetes manifests are validated offline against the schemas this package ships.
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
# The AWS KMS key back-end is tested against moto in server mode, a KMS-protocol stand-in the
# tests and the benchmark start themselves on loopback (its boto3 makes their keys). Pinned: the
# tests rely on 5.2.5's behaviour (it ignores MessageType and always hashes the message).
if ! "$venv/bin/python" -c 'import moto, sys; sys.exit(moto.__version__ != "5.2.5")' >/dev/null 2>&1 \
   || [ ! -x "$venv/bin/moto_server" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
