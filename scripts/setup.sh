#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: curl and Python `requests`
# (interop tests). Idempotent; uses apt-get/pip only for what is missing.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing_apt=()
command -v curl >/dev/null 2>&1 || missing_apt+=(curl)
command -v python3 >/dev/null 2>&1 || missing_apt+=(python3 python3-pip)
if [ ${#missing_apt[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing_apt[@]}"
fi

if ! python3 -c 'import requests' >/dev/null 2>&1; then
  python3 -m pip install -q requests || python3 -m pip install -q --break-system-packages requests
fi
