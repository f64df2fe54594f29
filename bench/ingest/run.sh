#!/usr/bin/env bash
# bench/ingest/run.sh [events] — ingest throughput end to end, side by side with the official SDK.
# 1. makes a large feed by repeating vega-datasets' real USGS week with new ids (gen_feed.py);
# 2. three times: a fresh hub, `ingestor replay FEED --speed 0` (parse + classify + encode + send,
#    every event acknowledged durable): events/s, and the split between parsing and sending;
# 3. the same events (read back from the hub: body and partition key) sent by @azure/event-hubs
#    6.0.4 (sdk_producer.cjs) into a fresh hub, three times; prints the medians and the ratio.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
events=${1:-200000}
work=$(mktemp -d)
hub=""
stop_hub() { [ -n "$hub" ] && { kill "$hub" 2>/dev/null || true; wait "$hub" 2>/dev/null || true; }; hub=""; }
trap 'stop_hub; rm -rf "$work"' EXIT
start_hub() {  # fresh data dir each run; sets $port
  rm -rf "$work/data" "$work/capture"; : >"$work/hub.log"
  ADMIN_PORT=0 AMQP_PORT=0 DATA_DIR="$work/data" CAPTURE_DIR="$work/capture" \
    "$root/build/services/hub/hub" 2>"$work/hub.log" &
  hub=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(grep -o '"amqp_port":[0-9]*' "$work/hub.log" | head -1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$work/hub.log" >&2; echo "hub did not start" >&2; exit 1; }
  conn="Endpoint=sb://127.0.0.1:$port;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
}
field() { grep -o "\"$1\":[0-9.e+-]*" <<<"$2" | head -1 | cut -d: -f2; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

src="$root/tests/node/node_modules/vega-datasets/data/earthquakes.json"
[ -f "$src" ] || { echo "run ./quakestream deps first (vega-datasets)" >&2; exit 1; }
/usr/bin/python3 "$root/bench/ingest/gen_feed.py" "$src" "$events" "$work/feed.geojson"
echo "feed: $events events, $(du -m "$work/feed.geojson" | cut -f1) MB"

: >"$work/ours"; : >"$work/ours_e2e"
for run in 1 2 3; do
  start_hub
  EVENTHUBS_CONNECTION_STRING=$conn ADMIN_PORT=0 SOURCES='' "$root/build/services/ingestor/ingestor" \
    replay "$work/feed.geojson" --speed 0 2>"$work/replay.log"
  line=$(grep '"replay done"' "$work/replay.log")
  eps=$(field events_per_s "$line") parse=$(field parse_s "$line") send=$(field send_s "$line")
  e2e=$(echo "$events / ($parse + $send)" | bc -l)
  printf 'quakestream run %d: %.0f events/s end to end (parse+classify+encode %.2f s = %.0f%%, send %.2f s = %.0f%%); send phase %.0f events/s\n' \
    "$run" "$e2e" "$parse" "$(echo "100 * $parse / ($parse + $send)" | bc -l)" "$send" \
    "$(echo "100 * $send / ($parse + $send)" | bc -l)" "$eps"
  echo "$eps" >>"$work/ours"
  echo "$e2e" >>"$work/ours_e2e"
  if [ "$run" = 3 ]; then  # the peer's input: the very events as they reached the hub
    for p in 0 1 2 3; do
      n=$(field last_sequence "$(EVENTHUBS_CONNECTION_STRING=$conn "$root/build/tools/qs-eh" props earthquake-events $p)")
      [ "$n" -ge 0 ] || continue
      EVENTHUBS_CONNECTION_STRING=$conn "$root/build/tools/qs-eh" receive earthquake-events $p \
        --count $((n + 1))
    done | /usr/bin/python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    print(json.dumps({"key": e["partition_key"], "body": e["body"]}))' >"$work/events.ndjson"
  fi
  stop_hub
done

: >"$work/sdk"
for run in 1 2 3; do
  start_hub
  out=$(EH_CONNECTION_STRING=$conn EH_NAME=earthquake-events NODE_PATH="$root/tests/node/node_modules" \
    node "$root/bench/ingest/sdk_producer.cjs" "$work/events.ndjson")
  eps=$(field events_per_s "$out")
  printf '@azure/event-hubs run %d: %.0f events/s\n' "$run" "$eps"
  echo "$eps" >>"$work/sdk"
  stop_hub
done
ours=$(median <"$work/ours"); e2e=$(median <"$work/ours_e2e"); sdk=$(median <"$work/sdk")
printf 'median: quakestream end to end %.0f events/s; sending prepared events: quakestream %.0f vs @azure/event-hubs %.0f events/s, ratio %.2f (end to end vs the SDK sending only: %.2f)\n' \
  "$e2e" "$ours" "$sdk" "$(echo "$ours / $sdk" | bc -l)" "$(echo "$e2e / $sdk" | bc -l)"
