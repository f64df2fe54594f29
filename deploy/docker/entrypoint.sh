#!/bin/sh
# quakestream-entrypoint SERVICE [ARGS...]: runs one service of the image as PID 1 (exec, so SIGTERM
# reaches it directly and its exit status is the container's). No argument or --help lists them.
set -eu

SERVICES="hub ingestor speed-aggregator batch-worker serving-api"

usage() {
  echo "usage: quakestream-entrypoint SERVICE [ARGS...]"
  echo "services: $SERVICES (each prints its environment variables with --help)"
  echo "also: redis-tls-proxy (the TLS sidecar for Azure Cache for Redis)"
}

[ $# -gt 0 ] || { usage; exit 0; }
name=$1
shift
case $name in
  hub | ingestor | speed-aggregator | batch-worker | serving-api) exec "/usr/local/bin/$name" "$@" ;;
  redis-tls-proxy) exec /usr/local/bin/quakestream-redis-tls-proxy "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; echo "unknown service: $name" >&2; exit 2 ;;
esac
