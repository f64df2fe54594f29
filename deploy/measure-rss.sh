#!/usr/bin/env bash
# deploy/measure-rss.sh [EVENTS] — the numbers behind the Kubernetes resource requests and limits:
# starts the local stack (./quakestream up --detach) on ports of its own with a throw-away data
# directory, samples each part's resident memory (VmRSS) and peak (VmHWM) and CPU time idle, then
# again after sending EVENTS events of 500 bytes to the hub with bench/hub's hub_ingest (earthquake-
# events, partition 0, Capture on), prints one table and stops the stack.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
events=${1:-200000}
work=$(mktemp -d)
export QS_VAR_DIR="$work/var" QS_REDIS_PORT=${QS_REDIS_PORT:-16379} QS_PORT_BASE=${QS_PORT_BASE:-18090} \
  QS_API_PORT=${QS_API_PORT:-18080} QS_AMQP_PORT=${QS_AMQP_PORT:-15672}
cleanup() { "$root/quakestream" down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$root/quakestream" up --detach >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }

parts=(redis hub ingestor speed-aggregator batch-worker serving-api)
field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }  # kB
cpu_ms() { awk '{ printf "%d", ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }
declare -A idle_rss idle_cpu
for p in "${parts[@]}"; do
  pid=$(cat "$QS_VAR_DIR/run/$p.pid")
  idle_rss[$p]=$(field "$pid" VmRSS)
  idle_cpu[$p]=$(cpu_ms "$pid")
done
if [ "$events" -gt 0 ]; then
  "$root/build/bench/hub/hub_ingest" 127.0.0.1 "$QS_AMQP_PORT" SAS_KEY_VALUE "$events" 500 2000 0 >"$work/ingest.log" 2>&1 \
    || { cat "$work/ingest.log" >&2; exit 1; }
fi
printf '%-17s %10s %10s %10s %12s\n' part "idle_rss" "load_rss" "peak_rss" "load_cpu_ms"
for p in "${parts[@]}"; do
  pid=$(cat "$QS_VAR_DIR/run/$p.pid")
  printf '%-17s %8sKB %8sKB %8sKB %12s\n' "$p" "${idle_rss[$p]}" "$(field "$pid" VmRSS)" "$(field "$pid" VmHWM)" \
    "$(( $(cpu_ms "$pid") - ${idle_cpu[$p]} ))"
done
echo "(load: $events events x 500 B into earthquake-events/0; $(tail -1 "$work/ingest.log"))"
