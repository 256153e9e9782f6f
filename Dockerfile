# syntax=docker/dockerfile:1
# The server and the load client in containers. Two images:
#
#   runtime (the default target): the CPU build on debian:bookworm-slim
#     docker build -t torchpipe-rs .
#     docker run --rm -p 8888:8888 -p 9100:9100 torchpipe-rs
#   cuda: the `cuda` build on NVIDIA's CUDA runtime + cuDNN image; the host needs only the NVIDIA
#   driver and the NVIDIA Container Toolkit
#     docker build --target cuda -t torchpipe-rs:cuda .
#     docker run --rm --gpus all -p 8888:8888 -p 9100:9100 torchpipe-rs:cuda
#
# Each holds `server` and `client_qps` in /usr/local/bin, and configs/ with the generated models/
# in /app (mount models of your own over /app/models); it runs as an unprivileged user and serves
# Thrift on 8888 and /metrics, /health/live, /health/ready on 9100. Arguments after the image
# name replace the default ones (CMD), e.g. `--toml configs/resnet50_cpu.toml --port 8888 ...`.

ARG RUST_VERSION=1.95
ARG CUDA_VERSION=13.0.1

FROM rust:${RUST_VERSION}-bookworm AS build
# cmake and nasm build libjpeg-turbo from the source that turbojpeg-sys bundles
# (.cargo/config.toml). Debian's stable archive is the pin for the build tools.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake nasm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cargo caches outlive the build; what the image needs is copied out of them.
RUN --mount=type=cache,id=cargo-registry,sharing=locked,target=/usr/local/cargo/registry \
    --mount=type=cache,id=target-bookworm,target=/src/target \
    cargo build --release --locked -p server -p client_qps --bins \
    && cargo run --release --locked -p engine --bin make-models -- models \
    && mkdir -p /out \
    && cp target/release/server target/release/client_qps /out/

# The `cuda` build. cudarc loads the driver, cuDNN, cuBLAS, NVRTC and nvJPEG at run time, so
# nothing of CUDA is linked here; building on the runtime image's Ubuntu keeps glibc the same.
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build-cuda
ARG RUST_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates cmake curl nasm \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=cargo-registry-cuda,sharing=locked,target=/usr/local/cargo/registry \
    --mount=type=cache,id=target-cuda,target=/src/target \
    cargo build --release --locked --features server/cuda -p server -p client_qps --bins \
    && cargo run --release --locked -p engine --bin make-models -- models \
    && mkdir -p /out \
    && cp target/release/server target/release/client_qps /out/

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu24.04 AS cuda
# A numeric USER, so that Kubernetes can check runAsNonRoot.
RUN groupadd --system --gid 10001 torchpipe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home torchpipe
WORKDIR /app
COPY --from=build-cuda /out/ /usr/local/bin/
COPY configs/ configs/
# Writable by the server: `model::cache` keeps what the GPU engine tuned beside the model.
COPY --from=build-cuda --chown=torchpipe:torchpipe /src/models/ models/
USER 10001:10001
EXPOSE 8888 9100
# No curl in the image: bash's /dev/tcp asks /health/live (answered once every instance is built).
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9100 && printf 'GET /health/live HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["server"]
CMD ["--toml", "configs/resnet50_gpu.toml", "--host", "0.0.0.0", "--port", "8888", "--metrics-port", "9100"]

# Last, so that a plain `docker build .` makes this one (and skips the CUDA stages).
FROM debian:bookworm-slim AS runtime
# A numeric USER, so that Kubernetes can check runAsNonRoot.
RUN groupadd --system --gid 10001 torchpipe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home torchpipe
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY configs/ configs/
COPY --from=build --chown=torchpipe:torchpipe /src/models/ models/
USER 10001:10001
EXPOSE 8888 9100
# As in the cuda image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9100 && printf 'GET /health/live HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["server"]
CMD ["--toml", "configs/resnet50_cpu.toml", "--host", "0.0.0.0", "--port", "8888", "--metrics-port", "9100"]
