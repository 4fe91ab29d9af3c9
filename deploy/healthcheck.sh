#!/bin/bash
# The container image's HEALTHCHECK: GET /healthz on this host, healthy on 200. It needs bash and
# nothing else (bash's /dev/tcp; the runtime image has no curl or wget). The port is the one in
# HOLDFAST_LISTEN (the image sets 0.0.0.0:7700), else 7700. Exit 0: healthy; 1: not.
#
# A port with tls_cert set answers plain HTTP with `400 plain_http_on_tls_port` (README, "TLS"):
# counted as healthy, since the process accepted and answered, but that only says it is alive.
set -u
port=${HOLDFAST_LISTEN:-127.0.0.1:7700}
port=${port##*:}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 2 status <&3 || { echo "holdfast-healthcheck: no answer on port $port" >&2; exit 1; }
status=${status%$'\r'}
case $status in
  "HTTP/1.1 200 "*) exit 0 ;;
  "HTTP/1.1 400 "*) timeout 2 cat <&3 | grep -q plain_http_on_tls_port && exit 0 ;;
esac
echo "holdfast-healthcheck: /healthz answered: $status" >&2
exit 1
