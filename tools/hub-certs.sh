#!/usr/bin/env bash
# hub-certs.sh DIR — a local CA and a server certificate for the hub's TLS listener, valid for
# 127.0.0.1 and localhost. Writes DIR/ca.pem, DIR/server.pem (chain), DIR/server.key; keeps existing
# files (idempotent). For loopback use only: clients trust DIR/ca.pem explicitly
# (e.g. azure-eventhub's connection_verify=DIR/ca.pem).
set -euo pipefail
dir=${1:?usage: hub-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -s ca.pem ] && [ -s server.pem ] && [ -s server.key ] && exit 0
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
  -subj "/CN=quakestream local CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt \
  -days 825 -extfile ext.cnf 2>/dev/null
cat server.crt ca.pem >server.pem
chmod 644 ca.pem server.pem
rm -f server.csr ext.cnf ca.srl server.crt
