# syntax=docker/dockerfile:1
# llmd-worker, multi-stage.
#
#   docker build -f docker/worker.Dockerfile -t llmd-worker .            (CPU)
#   docker build -f docker/worker.Dockerfile --build-arg VARIANT=cuda \
#       -t llmd-worker:cuda .                                              (CUDA base)
#
# VARIANT selects the base images:
#   cpu   debian:bookworm / debian:bookworm-slim (the default)
#   cuda  nvidia/cuda:$CUDA_VERSION-devel-ubuntu22.04 / -runtime-ubuntu22.04
#         (Ubuntu 22.04 ships the same hiredis 0.14 as Debian 12).  The devel
#         image has nvcc, so workers/cuda.mk builds the cuda backend
#         (`--backend cuda`: weights and KV pages in GPU memory) for
#         CUDA_ARCHS [sm_90 code + compute_90 PTX]; the sim and cpu backends
#         are there too.  The deployments run cuda workers colocated
#         (`--role both`): their pages are in device memory, and the GPU
#         transports (cuda-ipc, nccl) are built but not yet verified on a
#         GPU (docs/deployment.md).
# BUILD_IMAGE / RUN_IMAGE override either base directly.
ARG VARIANT=cpu
ARG CUDA_VERSION=12.4.1
ARG BUILD_IMAGE_cpu=debian:bookworm
ARG RUN_IMAGE_cpu=debian:bookworm-slim
ARG BUILD_IMAGE_cuda=nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04
ARG RUN_IMAGE_cuda=nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04

FROM ${BUILD_IMAGE_cpu} AS build-cpu
FROM ${BUILD_IMAGE_cuda} AS build-cuda
FROM ${RUN_IMAGE_cpu} AS run-cpu
FROM ${RUN_IMAGE_cuda} AS run-cuda

FROM build-${VARIANT} AS build
# e.g. "-gencode arch=compute_80,code=sm_80" for A100s (cuda only)
ARG CUDA_ARCHS=
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libevent-dev libjansson-dev libxxhash-dev libpcre2-dev \
        libhiredis-dev libmsgpack-dev libyajl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY common/ common/
COPY workers/Makefile workers/cuda.mk workers/
COPY workers/src/ workers/src/
COPY workers/profiles/ workers/profiles/
COPY workers/tools/ workers/tools/
COPY docker/runtime-deps.sh docker/
RUN make -C workers -j"$(nproc)" ${CUDA_ARCHS:+CUDA_ARCHS="$CUDA_ARCHS"} \
        build/llmd-worker build/llmd-model-tool build/llmd-fleet \
 && mkdir -p /out \
 && cp workers/build/llmd-worker workers/build/llmd-model-tool workers/build/llmd-fleet /out/ \
 && sh docker/runtime-deps.sh /out/llmd-worker /out/llmd-model-tool /out/llmd-fleet > /out/runtime-packages

FROM run-${VARIANT}
COPY --from=build /out/ /tmp/llmd/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        curl $(cat /tmp/llmd/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* \
 && install -m 0755 /tmp/llmd/llmd-worker /tmp/llmd/llmd-model-tool /tmp/llmd/llmd-fleet /usr/local/bin/ \
 && rm -rf /tmp/llmd \
 && groupadd --system --gid 10001 llmd \
 && useradd --system --uid 10001 --gid llmd --home-dir /models --shell /usr/sbin/nologin llmd \
 && install -d -o llmd -g llmd /models
COPY docker/worker/llmd-worker-entry docker/worker/llmd-drain /usr/local/bin/

USER 10001:10001
ENV LLMD_PORT=8000
# 8000: HTTP (API, /metrics, /health); 9100: the KV-transfer listener of a
# prefill worker (`--role prefill --kv-listen 0.0.0.0:9100`), which decode
# workers connect to
EXPOSE 8000 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -sf http://127.0.0.1:${LLMD_PORT}/health || exit 1
ENTRYPOINT ["/usr/local/bin/llmd-worker-entry"]
CMD ["--backend", "sim"]
