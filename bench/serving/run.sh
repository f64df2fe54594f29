#!/usr/bin/env bash
# bench/serving/run.sh [seconds=10] [ws_clients=10000] — serving-api on loopback:
#  1. wrk (100 connections, 2 threads) against /api/v1/summary/regions, side by side with Debian's
#     nginx serving the same JSON bytes as a static file (one worker process: serving-api runs one
#     event loop), runs interleaved; prints requests/s and p99 of each and the ratio;
#  2. ws_fanout: ws_clients WebSocket subscribers, 20 updates, publish-to-delivery latency.
# Needs ./quakestream build; installs Debian's nginx-light and wrk here if missing (bench-only peers,
# as bench/hub/compare.sh does with RabbitMQ).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
secs=${1:-10} wsn=${2:-10000}
api_bin="$root/build/services/serving-api/serving-api"
fan="$root/build/bench/serving/ws_fanout"
if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }; then
  apt-get install -y -qq --no-install-recommends nginx-light wrk >/dev/null
fi
if ! [ -x "$api_bin" ] || ! [ -x "$fan" ]; then echo "build first: ./quakestream build" >&2; exit 1; fi
work=$(mktemp -d)
cleanup() {
  kill "${api:-}" "${redis:-}" 2>/dev/null || true
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
redis=$!
until redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
/usr/bin/python3 "$root/bench/serving/load.py" "$rport"

aport=$(free_port)
REDIS_URL="redis://127.0.0.1:$rport/0" API_PORT="$aport" ADMIN_PORT=0 LOG_LEVEL=warn \
  RATE_LIMIT_RPS=0 STATIC_DIR="" VENDOR_DIR="" "$api_bin" 2>"$work/api.log" &
api=$!
until curl -fsS -o "$work/summary.json" "http://127.0.0.1:$aport/api/v1/summary/regions" 2>/dev/null; do
  kill -0 "$api" || { cat "$work/api.log"; exit 1; }
  sleep 0.05
done

nport=$(free_port)
mkdir -p "$work/www"
chmod 755 "$work" "$work/www"  # nginx's workers run as www-data
cp "$work/summary.json" "$work/www/summary.json"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nport;
    root $work/www;
    location = /summary.json { etag on; add_header Cache-Control "public, max-age=1"; }
  }
}
CONF
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
"$nginx_bin" -c "$work/nginx.conf" -p "$work" -e "$work/nginx.err"
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$nport/summary.json" && break
  sleep 0.05
done
curl -fsS -o /dev/null "http://127.0.0.1:$nport/summary.json" || { cat "$work/nginx.err" >&2; exit 1; }

echo "body: $(wc -c <"$work/summary.json") bytes of JSON; wrk -t2 -c100 -d${secs}s, 3 interleaved runs each"
measure() {  # measure URL -> "rps p99_ms"
  local out rps p99
  out=$(wrk -t2 -c100 -d"${secs}s" --latency "$1")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p99"
}
declare -a qs_r qs_p ng_r ng_p
for _ in 1 2 3; do
  read -r r p < <(measure "http://127.0.0.1:$aport/api/v1/summary/regions"); qs_r+=("$r"); qs_p+=("$p")
  read -r r p < <(measure "http://127.0.0.1:$nport/summary.json"); ng_r+=("$r"); ng_p+=("$p")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
qr=$(median "${qs_r[@]}") qp=$(median "${qs_p[@]}") nr=$(median "${ng_r[@]}") np=$(median "${ng_p[@]}")
printf 'serving-api /api/v1/summary/regions  %10.0f req/s  p99 %7.2f ms\n' "$qr" "$qp"
printf 'nginx static file (1 worker)         %10.0f req/s  p99 %7.2f ms\n' "$nr" "$np"
awk -v a="$qr" -v b="$nr" 'BEGIN { printf "ratio serving-api / nginx: %.2f (goal >= 0.5)\n", a / b }'

echo "WebSocket fan-out: $wsn subscribers"
"$fan" "$aport" "$rport" "$wsn" 20
