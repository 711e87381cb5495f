#!/usr/bin/env bash
# Installs the identity providers the browser sign-in journeys run on loopback, idempotently,
# into the cache outside the checkout (CONDA_STORE_CACHE, default ~/.cache/conda-store-k8s):
#   - npm oidc-provider (a certified OpenID Connect provider library; tests/support/
#     oidc_issuer.mjs runs it) and configurable-http-proxy (JupyterHub's proxy), exact versions
#     with their npm lockfile kept beside them;
#   - PyPI jupyterhub in its own virtualenv.
# Prints the environment the tests read.
set -euo pipefail
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
OIDC_PROVIDER_VERSION=8.8.1
CHP_VERSION=5.3.0
JUPYTERHUB_VERSION=5.5.4
NPM_DIR="$CACHE/sso-npm-$OIDC_PROVIDER_VERSION-$CHP_VERSION"
HUB_VENV="$CACHE/jupyterhub-venv"

log() { printf '%s\n' "$*" >&2; }

if [[ ! -f $NPM_DIR/.complete ]]; then
  log "installing oidc-provider@$OIDC_PROVIDER_VERSION and configurable-http-proxy@$CHP_VERSION (npm) into $NPM_DIR"
  rm -rf "$NPM_DIR.new" && mkdir -p "$NPM_DIR.new"
  (cd "$NPM_DIR.new" && npm init -y >/dev/null &&
    npm install --silent --no-audit --no-fund --save-exact \
      "oidc-provider@$OIDC_PROVIDER_VERSION" "configurable-http-proxy@$CHP_VERSION" >&2)
  touch "$NPM_DIR.new/.complete"
  rm -rf "$NPM_DIR" && mv "$NPM_DIR.new" "$NPM_DIR"
fi
if ! "$HUB_VENV/bin/pip" show jupyterhub 2>/dev/null | grep -x "Version: $JUPYTERHUB_VERSION" >/dev/null; then
  log "installing jupyterhub==$JUPYTERHUB_VERSION into $HUB_VENV"
  python3 -m venv "$HUB_VENV"
  "$HUB_VENV/bin/pip" install --quiet --disable-pip-version-check "jupyterhub==$JUPYTERHUB_VERSION" >&2
fi
echo "export CONDA_STORE_OIDC_PROVIDER_MODULES=$NPM_DIR/node_modules"
echo "export CONDA_STORE_CHP=$NPM_DIR/node_modules/.bin/configurable-http-proxy"
echo "export CONDA_STORE_JUPYTERHUB=$HUB_VENV/bin/jupyterhub"
