#!/bin/bash
# quakestream-healthcheck: exit 0 when the service's /healthz answers 200 on its admin port
# (ADMIN_PORT, 8090 in the image). bash's /dev/tcp keeps curl out of the runtime image.
set -u
port=${ADMIN_PORT:-8090}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r -t 3 status <&3 || exit 1
case $status in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) exit 1 ;;
esac
