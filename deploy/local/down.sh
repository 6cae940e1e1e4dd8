#!/usr/bin/env bash
# Stops what deploy/local/up.sh DIR started (the files stay; up.sh DIR starts afresh only in a
# new directory).
set -uo pipefail
dir=${1:-.stella-local}
for pidfile in "$dir"/*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  rm -f "$pidfile"
done
