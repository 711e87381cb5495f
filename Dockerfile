# syntax=docker/dockerfile:1
# The project's image: the operator (which also runs every build step in the Jobs) and the
# gateway, on distroless (glibc, CA certificates, no shell), as the non-root user 65532.
#
#   docker build -t conda-store:dev .
#
# Machines without a container daemon build the same image with tests/e2e/images.sh (the
# operator's own OCI writer, `conda-store-operator rootfs-image`): same paths, user and
# entrypoint, which tests/e2e/deploy.sh checks against this file.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Caches keep the crate downloads and the target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p conda-store-operator -p conda-store-api-server \
    && mkdir -p /out \
    && cp target/release/conda-store-operator target/release/conda-store-api-server /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/conda-store-operator /out/conda-store-api-server /usr/local/bin/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/conda-store-operator"]
