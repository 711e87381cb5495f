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

# uv, which the solve and install steps run for pip sections: the static binary of PyPI's musl
# wheel, pinned by hash (scripts/install-uv.sh fetches the same one for the tests).
FROM docker.io/library/python:3.12-slim-bookworm AS uv
ADD --checksum=sha256:2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25 \
    https://files.pythonhosted.org/packages/fe/fe/794884de0efd3ac77a427cab21aa72c0483e100c55a42cd5cbb02c141b84/uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl /uv.whl
RUN python3 -c "import zipfile; open('/uv','wb').write(zipfile.ZipFile('/uv.whl').read('uv-0.13.9.data/scripts/uv'))" \
    && chmod 0755 /uv

# conda-store-ui's built bundle (npm @conda-store/conda-store-ui 2024.11.1, its dist/), which
# the gateway serves at {prefix}ui/; pinned by hash (scripts/install-ui.sh checks the same
# tarball by its npm sha512).
FROM docker.io/library/python:3.12-slim-bookworm AS ui
ADD --checksum=sha256:925724f88d39ec05bef67d96ce3788ed190b96331e8774f5ec22fb2204e2983b \
    https://registry.npmjs.org/@conda-store/conda-store-ui/-/conda-store-ui-2024.11.1.tgz /ui.tgz
RUN mkdir -p /ui && tar -xzf /ui.tgz -C /ui --strip-components=2 package/dist/index.html \
    package/dist/main.js package/dist/main.css package/dist/main.js.LICENSE.txt

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/conda-store-operator /out/conda-store-api-server /usr/local/bin/
COPY --from=uv /uv /usr/local/bin/uv
COPY --from=ui /ui/ /usr/share/conda-store-ui/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/conda-store-operator"]
