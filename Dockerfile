# syntax=docker/dockerfile:1
# Holdfast in a container: README, "Deploy". Build and run:
#
#   docker build -t holdfast .
#   docker run --rm -p 7700:7700 --ulimit nofile=1048576:1048576 holdfast
#
# One connection is one file descriptor, and `max_connections` defaults to the descriptor limit
# less 64 (the server raises its soft limit to the hard one at start). Without --ulimit the
# container inherits whatever the daemon was given, which varies from host to host: say it.
# Configuration: HOLDFAST_* variables (-e HOLDFAST_BROKER=redis://…), or a file mounted read-only
# and named by HOLDFAST_CONFIG. HOLDFAST_LISTEN set below wins over a file's `listen`.

# Build stage: the Rust the workspace declares (Cargo.toml `rust-version`; scripts/deploy-check.sh
# keeps the two equal), on the same Debian release as the runtime stage (same glibc).
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target/ are cache mounts (BuildKit): a rebuild after a source change compiles
# the workspace, not every dependency again. The binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p holdfast --locked \
 && install -m 0755 target/release/holdfast /usr/local/bin/holdfast

# Runtime stage: debian slim rather than distroless/cc, for one reason: the health check. The
# probe is deploy/healthcheck.sh, a GET /healthz over bash's /dev/tcp, so the image needs bash and
# nothing more (no curl or wget, no TLS library: the binary links only libc and libgcc_s).
FROM debian:bookworm-slim
# /var/lib/holdfast: the disk history store's directory when it is used (mount a volume there), its
# user's own so a new named volume takes that ownership.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin holdfast \
    && install -d -m 0700 -o 10001 -g 10001 /var/lib/holdfast
COPY --from=build /usr/local/bin/holdfast /usr/local/bin/holdfast
COPY deploy/healthcheck.sh /usr/local/bin/holdfast-healthcheck
# The loopback default would be unreachable from outside the container.
ENV HOLDFAST_LISTEN=0.0.0.0:7700
# Numeric, so a runtime that checks runAsNonRoot can see it is not root.
USER 10001:10001
EXPOSE 7700
# SIGTERM drains (/healthz 503, idle connections closed at once, in-flight requests finished, held
# long polls answered, streams closed spread over `drain_seconds`) within `shutdown_timeout` (15 s
# by default): give `docker stop` more than that,
# `docker stop -t 20` or `stop_grace_period: 20s` in compose (Docker's own default is 10 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/holdfast-healthcheck"]
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["serve"]
