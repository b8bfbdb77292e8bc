#!/bin/bash
# The container's HEALTHCHECK: exit 0 when the router's GET /health answers
# 200, i.e. at least one engine is healthy (503 while none is). Plain bash
# (/dev/tcp), so the image needs no HTTP client.
#
# Address: $KVROUTE_HEALTH_ADDR, else the router's $KVROUTE_LISTEN (a
# wildcard host is probed on loopback), else 127.0.0.1:8000.
set -u
addr=${KVROUTE_HEALTH_ADDR:-${KVROUTE_LISTEN:-127.0.0.1:8000}}
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
case $host in '' | 0.0.0.0 | '::') host=127.0.0.1 ;; esac
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3 || exit 1
IFS=' ' read -r -t 4 _version code _rest <&3 || exit 1
[ "$code" = 200 ]
