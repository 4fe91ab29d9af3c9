#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on Debian as root (or via sudo):
# curl, Python `requests`, `sseclient-py`, `websockets` and `prometheus-client`, Chromium, node + playwright-core
# (tests/interop), nginx (the keep-alive bench's peer), redis-server and redis-cli (scale-out tests).
# Idempotent and quick when all is there: apt-get, pip and npm run only for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing_apt=()
command -v curl >/dev/null 2>&1 || missing_apt+=(curl)
command -v python3 >/dev/null 2>&1 || missing_apt+=(python3 python3-pip)
[ -x /usr/bin/chromium ] || missing_apt+=(chromium)
command -v node >/dev/null 2>&1 || missing_apt+=(nodejs npm)
# nginx: `holdfast bench keepalive` is tested against it (crates/holdfast/tests/bench_cli.rs).
[ -x /usr/sbin/nginx ] || missing_apt+=(nginx)
# redis-server (its dependency redis-tools brings redis-cli): the Redis broker's scale-out tests
# start their own servers and a cluster (crates/holdfast-testkit/src/redis.rs).
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing_apt+=(redis-server)
if [ ${#missing_apt[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
fi

missing_pip=()
python3 -c 'import requests' >/dev/null 2>&1 || missing_pip+=(requests)
python3 -c 'import sseclient' >/dev/null 2>&1 || missing_pip+=(sseclient-py)
python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing_pip+=(prometheus-client)
# websockets.asyncio (the API tests/interop/ws_client.py uses) is there from websockets 13 on.
python3 -c 'import websockets.asyncio.client' >/dev/null 2>&1 || missing_pip+=('websockets>=13')
if [ ${#missing_pip[@]} -gt 0 ]; then
  python3 -m pip install -q "${missing_pip[@]}" || python3 -m pip install -q --break-system-packages "${missing_pip[@]}"
fi

# playwright-core at the version package-lock.json pins; it drives /usr/bin/chromium and must
# never download a browser of its own.
pinned=$(node -p 'require("./tests/interop/package-lock.json").packages["node_modules/playwright-core"].version')
installed=$(node -p 'try { require("./tests/interop/node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$pinned" != "$installed" ]; then
  (cd tests/interop && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
