# syntax=docker/dockerfile:1
#
# One image, two roles: `gateway` (default) and `saver`.
#   docker build -t canvas:dev .
#   docker run --rm canvas:dev gateway      # or: saver
#
# Stages:
#   chef     rust toolchain + cargo-chef (from crates.io)
#   planner  turns the workspace manifests + Cargo.lock into recipe.json
#   builder  compiles the dependencies from recipe.json (cached layer: it is rebuilt only
#            when a Cargo.toml or Cargo.lock changes), then the workspace itself
#   runtime  debian bookworm-slim, non-root, ca-certificates + curl (for healthchecks)
#
# protoc is not installed: the proto crate's build script uses the protoc-bin-vendored crate.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only (stub sources): this layer stays cached while only our own .rs files change.
# --workspace matches the real build below, so features resolve identically and nothing is rebuilt.
RUN cargo chef cook --release --workspace --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --workspace --locked \
 && mkdir -p /out \
 && cp target/release/gateway target/release/saver /out/

FROM debian:${DEBIAN_SUITE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 canvas \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin canvas
COPY --from=builder /out/gateway /out/saver /usr/local/bin/
# Listen on all interfaces inside a container (the binaries default to 127.0.0.1).
ENV GATEWAY_ADDR=0.0.0.0:8080 \
    SAVER_HTTP_ADDR=0.0.0.0:9090 \
    SAVER_GRPC_ADDR=0.0.0.0:50051 \
    LOG_FORMAT=json \
    RUST_LOG=info
# Numeric user so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
# gateway: 8080 (WebSocket + HTTP); saver: 9090 (HTTP), 50051 (gRPC)
EXPOSE 8080 9090 50051
# Both binaries handle SIGTERM themselves (gateway: close sockets with 1001; saver: final flush).
STOPSIGNAL SIGTERM
CMD ["gateway"]
