#!/usr/bin/env bash
# deploy/measure-rss.sh [EVENTS] — the numbers behind the Kubernetes resource requests and limits:
# starts the local stack (./quakestream up --detach) on ports of its own with a throw-away data
# directory, samples each part's resident memory (VmRSS) and peak (VmHWM) and CPU time idle, then
# again after the real pipeline carried EVENTS events: a feed made of the recorded USGS week
# repeated with new ids (bench/ingest/gen_feed.py) is replayed by the ingestor into the hub, the
# speed aggregator consumes all of it into Redis, and one batch-worker run-once processes the
# Capture files the hub wrote (its peak measured with /usr/bin/time); prints one table and stops
# the stack.
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
batch_peak="-"
if [ "$events" -gt 0 ]; then
  conn="Endpoint=sb://127.0.0.1:$QS_AMQP_PORT;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
  /usr/bin/python3 "$root/bench/ingest/gen_feed.py" \
    "$root/tests/node/node_modules/vega-datasets/data/earthquakes.json" "$events" "$work/feed.geojson"
  EVENTHUBS_CONNECTION_STRING=$conn ADMIN_PORT=0 SOURCES='' "$root/build/services/ingestor/ingestor" \
    replay "$work/feed.geojson" --speed 0 2>"$work/ingest.log" || { tail -5 "$work/ingest.log" >&2; exit 1; }
  # the recorded week replayed by `up` counts too: wait for both in the aggregator
  want=$((events + 1707))
  for _ in $(seq 1 600); do
    got=$(curl -fsS "http://127.0.0.1:$((QS_PORT_BASE + 2))/metrics" |
      awk '/^quakestream_speed_events[{ ]/ { s += $NF } END { printf "%d", s }')
    [ "$got" -ge "$want" ] && break
    sleep 0.5
  done
  /usr/bin/time -o "$work/batch.time" -f "%M" env REDIS_URL="redis://127.0.0.1:$QS_REDIS_PORT/0" \
    ADMIN_PORT=0 SOURCE="$QS_VAR_DIR/capture" GOLD_DIR="$work/gold" \
    "$root/build/services/batch-worker/batch-worker" run-once >/dev/null 2>"$work/batch.log" || true
  batch_peak=$(tail -1 "$work/batch.time")
fi
printf '%-17s %10s %10s %10s %12s\n' part "idle_rss" "load_rss" "peak_rss" "load_cpu_ms"
for p in "${parts[@]}"; do
  pid=$(cat "$QS_VAR_DIR/run/$p.pid")
  printf '%-17s %8sKB %8sKB %8sKB %12s\n' "$p" "${idle_rss[$p]}" "$(field "$pid" VmRSS)" "$(field "$pid" VmHWM)" \
    "$(( $(cpu_ms "$pid") - ${idle_cpu[$p]} ))"
done
echo "batch-worker run-once over the capture: peak ${batch_peak}KB"
echo "(load: $events real events replayed through ingestor -> hub -> speed-aggregator; aggregator counted ${got:-0} of ${want:-0})"
