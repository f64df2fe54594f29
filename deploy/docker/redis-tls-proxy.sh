#!/bin/sh
# quakestream-redis-tls-proxy: a TLS client tunnel for Azure Cache for Redis. The services' Redis
# client (hiredis 0.14, Debian 12) speaks plain RESP only, so in a pod this sidecar listens on
# 127.0.0.1:REDIS_TLS_LOCAL_PORT and forwards over TLS (certificate verified against the system CAs)
# to REDIS_TLS_UPSTREAM (host:port, e.g. myredis.redis.cache.windows.net:6380). The services then
# use REDIS_URL=redis://:PASSWORD@127.0.0.1:6379. The password still travels inside TLS.
# REDIS_TLS_CA names another CA bundle (a private CA; the tests use one).
set -eu
: "${REDIS_TLS_UPSTREAM:?set REDIS_TLS_UPSTREAM=host:port of the TLS Redis endpoint}"
local_port=${REDIS_TLS_LOCAL_PORT:-6379}
host=${REDIS_TLS_UPSTREAM%:*}
conf=${TMPDIR:-/tmp}/stunnel-redis.conf
cat >"$conf" <<CONF
foreground = yes
pid =
syslog = no
[redis]
client = yes
accept = 127.0.0.1:$local_port
connect = $REDIS_TLS_UPSTREAM
verifyChain = yes
CAfile = ${REDIS_TLS_CA:-/etc/ssl/certs/ca-certificates.crt}
checkHost = $host
sni = $host
CONF
exec stunnel "$conf"
