# syntax=docker/dockerfile:1
#
# kvroute: the router (entry point), plus the load generator and the
# simulator, on a small non-root Debian runtime.
#
#   docker build -t kvroute:0.1.0 .
#   docker run --rm -p 8000:8000 -p 9000:9000 kvroute:0.1.0 \
#       --config /etc/kvroute/router.toml --instance http://ENGINE:8000
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
# See docs/deploy.md for the configuration, ports and probes.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The target directory and the registry live in cache mounts (kept between
# builds, not in the layer), so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin router --bin loadgen --bin sim \
 && mkdir -p /out/bin \
 && cp target/release/router target/release/loadgen target/release/sim /out/bin/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# A fixed numeric user, so Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 kvroute \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin kvroute
COPY --from=build /out/bin/ /usr/local/bin/
# The shipped Qwen3 tokenizer and chat template (Apache-2.0; provenance and
# licences in datasets/README.md, copied along): what the default
# configuration and `sim serve` use. The
# workload samples loadgen reads are not in the image; mount a datasets
# directory and point KVROUTE_DATASETS at it to use them.
COPY datasets/README.md /usr/share/kvroute/datasets/README.md
COPY datasets/tokenizers/qwen3/ /usr/share/kvroute/datasets/tokenizers/qwen3/
COPY deploy/docker/router.toml /etc/kvroute/router.toml
COPY --chmod=0755 deploy/docker/healthcheck.sh /usr/local/bin/kvroute-healthcheck
ENV KVROUTE_LISTEN=0.0.0.0:8000 \
    KVROUTE_DATASETS=/usr/share/kvroute/datasets
USER 10001:10001
WORKDIR /
# 8000: the API and /health. 9000: /metrics and /admin/ (admin_listen in
# /etc/kvroute/router.toml). KV-event ports are only needed when the router
# binds them (bind:tcp://…); publish those yourself.
EXPOSE 8000 9000
# Healthy = GET /health answers 200 = at least one engine is healthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/kvroute-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/router"]
CMD ["--config", "/etc/kvroute/router.toml"]
