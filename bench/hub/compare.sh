#!/usr/bin/env bash
# bench/hub/compare.sh [events] [bytes] [window] — the hub side by side with RabbitMQ 3.10's
# AMQP 1.0 plugin (Debian's rabbitmq-server; installed here if missing), same client
# (hub_ingest), same machine, runs interleaved; prints the medians of 3 and the ratios.
# Debian's ActiveMQ 5.17 ships without its AMQP module, so RabbitMQ is the peer.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
events=${1:-200000} bytes=${2:-500} window=${3:-2000}
bin="$root/build/bench/hub/hub_ingest"
if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
fi
work=$(mktemp -d)
cleanup() {
  kill "${hub:-}" 2>/dev/null || true
  kill -TERM -- "-${rmq:-0}" 2>/dev/null || true  # rabbitmq-server and its Erlang VM
  epmd -kill >/dev/null 2>&1 || true             # the Erlang port mapper it started
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ADMIN_PORT=0 AMQP_PORT=0 DATA_DIR="$work/hub" CAPTURE_DIR="$work/capture" \
  "$root/build/services/hub/hub" 2>"$work/hub.log" &
hub=$!
rport=$(free_port)
mkdir -p "$work/rmq"
echo "[rabbitmq_amqp1_0]." >"$work/rmq/plugins"
HOME="$work/rmq" RABBITMQ_MNESIA_BASE="$work/rmq" RABBITMQ_LOG_BASE="$work/rmq" \
  RABBITMQ_NODE_PORT="$rport" RABBITMQ_DIST_PORT="$(free_port)" RABBITMQ_NODENAME="qsbench-$$@localhost" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$work/rmq/plugins" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$work/rmq.log" 2>&1 &
rmq=$!
hport=""
for _ in $(seq 1 600); do  # both name or open their ports when ready
  hport=${hport:-$(grep -o '"amqp_port":[0-9]*' "$work/hub.log" | head -1 | cut -d: -f2 || true)}
  if [ -n "$hport" ] && (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null; then break; fi
  sleep 0.1
done
[ -n "$hport" ] || { echo "hub did not start" >&2; exit 1; }

run() { "$bin" 127.0.0.1 "$1" "$2" "$events" "$bytes" "$window" "$3"; }
for i in 0 1 2; do
  run "$hport" SAS_KEY_VALUE "$i" >"$work/hub.$i"
  run "$rport" plain:guest:guest "$i" >"$work/rmq.$i"
done
median() { sort -g | sed -n 2p; }
field() { grep "$2" "$1" | grep -oE '[0-9.]+ ('"$3"')' | head -1 | cut -d' ' -f1; }
report() {  # report NAME PATTERN UNIT
  local h r
  h=$(for i in 0 1 2; do field "$work/hub.$i" "$2" "$3"; done | median)
  r=$(for i in 0 1 2; do field "$work/rmq.$i" "$2" "$3"; done | median)
  printf '%-28s hub %12s   rabbitmq %12s   hub/rabbitmq %s\n' "$1" "$h" "$r" \
    "$(/usr/bin/python3 -c "print(round($h/$r, 2))")"
}
echo "$events events of $bytes bytes, window $window, medians of 3 interleaved runs"
report "send (acked, durable) /s" "send" "events/s"
report "consume from earliest /s" "consume" "events/s"
p50() { for i in 0 1 2; do grep latency "$1.$i" | grep -oE 'p50 [0-9.]+' | cut -d' ' -f2; done | median; }
p99() { for i in 0 1 2; do grep latency "$1.$i" | grep -oE 'p99 [0-9.]+' | cut -d' ' -f2; done | median; }
printf '%-28s hub %9s ms   rabbitmq %9s ms\n' "publish->ack p50" "$(p50 "$work/hub")" "$(p50 "$work/rmq")"
printf '%-28s hub %9s ms   rabbitmq %9s ms\n' "publish->ack p99" "$(p99 "$work/hub")" "$(p99 "$work/rmq")"
