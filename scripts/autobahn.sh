#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (cases 1–7 and 10; 9 is performance, 12–13 are
# permessage-deflate, which Holdfast does not offer) against Holdfast's conformance echo
# endpoint, and fails on any FAILED case. Prints the suite's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=../shared/tools/autobahn/run.sh
if [ ! -x "$SUITE" ] && [ ! -f "$SUITE" ]; then
  echo "autobahn: skipped, $SUITE not found (a checkout without ../shared beside it)"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

cargo build -q -p holdfast
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn target/debug/holdfast serve --listen "127.0.0.1:$PORT" --enable-conformance-echo true \
  --ws-max-message-bytes 16MiB &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done

OUT=target/autobahn
bash "$SUITE" "ws://127.0.0.1:$PORT/_conformance/echo" "$OUT"
