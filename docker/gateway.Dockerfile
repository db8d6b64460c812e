# syntax=docker/dockerfile:1
# The llmd gateway: Debian's nginx with ngx_llmd_module, built from source in
# the build stage against Debian's nginx-dev, so the module's binary
# signature matches the packaged nginx of the run stage.
#
#   docker build -f docker/gateway.Dockerfile -t llmd-gateway .    (repo root)
#
# Configured from LLMD_* environment variables (see docker/gateway/llmd-gateway)
# or from a complete nginx.conf mounted at /etc/llmd/nginx.conf.
ARG DEBIAN=debian:bookworm

FROM ${DEBIAN} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx nginx-dev build-essential dpkg-dev pkg-config \
        libyajl-dev libxxhash-dev libhiredis-dev libmsgpack-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile config ./
COPY common/ common/
COPY ngx_llmd_module/ ngx_llmd_module/
COPY docker/runtime-deps.sh docker/
RUN make module \
 && mkdir -p /out \
 && cp build/ngx/ngx_llmd_module.so /out/ \
 && dpkg-query -W -f '${Version}' nginx > /out/nginx-version \
 && sh docker/runtime-deps.sh /out/ngx_llmd_module.so > /out/runtime-packages

FROM ${DEBIAN}-slim
COPY --from=build /out/ /tmp/llmd/
# the same nginx version the module was built against, plus the module's
# shared libraries; curl for the health check
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "nginx=$(cat /tmp/llmd/nginx-version)" curl \
        $(cat /tmp/llmd/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* \
 && install -m 0644 /tmp/llmd/ngx_llmd_module.so /usr/lib/nginx/modules/ \
 && rm -rf /tmp/llmd \
 && groupadd --system --gid 10001 llmd \
 && useradd --system --uid 10001 --gid llmd --home-dir /run/llmd --shell /usr/sbin/nologin llmd \
 && install -d -o llmd -g llmd /run/llmd /etc/llmd
COPY docker/gateway/llmd-gateway /usr/local/bin/llmd-gateway

USER 10001:10001
EXPOSE 8080 9090
# nginx's graceful stop: in-flight streams finish (bounded by
# LLMD_SHUTDOWN_TIMEOUT); SIGTERM would cut them
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -sf http://127.0.0.1:${LLMD_LISTEN:-8080}/health || exit 1
ENTRYPOINT ["/usr/local/bin/llmd-gateway"]
CMD ["run"]
