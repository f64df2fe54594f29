#!/usr/bin/env bash
# bench/hub/run.sh [events] [bytes] [window] — start a hub (release build, default group-commit
# fsync) on a free port with a fresh data directory, run hub_ingest against it three times and
# print every run (compare the medians), then stop the hub.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
events=${1:-200000} bytes=${2:-500} window=${3:-2000}
work=$(mktemp -d)
trap 'kill "$hub" 2>/dev/null || true; wait "$hub" 2>/dev/null || true; rm -rf "$work"' EXIT
ADMIN_PORT=0 AMQP_PORT=0 DATA_DIR="$work/data" CAPTURE_DIR="$work/capture" LOG_LEVEL=info \
  "$root/build/services/hub/hub" 2>"$work/hub.log" &
hub=$!
port=""
for _ in $(seq 1 100); do  # the hub names its port in its first log lines
  port=$(grep -o '"amqp_port":[0-9]*' "$work/hub.log" | head -1 | cut -d: -f2 || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/hub.log" >&2; echo "hub did not start" >&2; exit 1; }
for run in 1 2 3; do
  echo "run $run (partition $((run - 1)))"
  "$root/build/bench/hub/hub_ingest" 127.0.0.1 "$port" SAS_KEY_VALUE "$events" "$bytes" "$window" $((run - 1))
done
