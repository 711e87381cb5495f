#!/usr/bin/env bash
# Starts the identity providers of the browser sign-in journeys on loopback, for a gateway
# whose callback is CALLBACK (`{origin}{prefix}oauth_callback/`):
#   - npm oidc-provider (tests/support/oidc_issuer.mjs), client `conda-store` with a random
#     secret; any user name signs in on its development pages; carol is in the group data-team;
#   - a real JupyterHub (tests/support/jupyterhub_config.py) with its configurable-http-proxy,
#     the gateway registered as service `conda-store`; dana (password hub-pw) is in data-team.
#
#   bash tests/support/identity-providers.sh start STATE CALLBACK   # prints the settings
#   bash tests/support/identity-providers.sh stop STATE
#
# `start` writes STATE/sso.env (ISSUER, OIDC_CLIENT_SECRET, HUB_URL, HUB_SERVICE_TOKEN) and
# waits until both answer. Needs scripts/install-sso.sh's environment.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cmd=$1 STATE=$2
mkdir -p "$STATE"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for URL: until it answers (30 s)
  for _ in $(seq 120); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.25; done
  echo "identity-providers: $1 does not answer" >&2
  return 1
}

case $cmd in
  start)
    CALLBACK=$3
    : "${CONDA_STORE_OIDC_PROVIDER_MODULES:?run scripts/install-sso.sh first}"
    issuer_port=$(free_port)
    secret=$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_')
    python3 - "$STATE/oidc.json" "$CALLBACK" "$secret" <<'PY'
import json, sys
path, callback, secret = sys.argv[1:]
json.dump({"clients": [{"client_id": "conda-store", "client_secret": secret,
                        "redirect_uris": [callback],
                        "token_endpoint_auth_method": "client_secret_post"}],
           "groups": {"carol": ["data-team"]}}, open(path, "w"))
PY
    nohup node "$ROOT/tests/support/oidc_issuer.mjs" "$issuer_port" "$STATE/oidc.json" \
      >"$STATE/oidc-issuer.log" 2>&1 &
    echo $! >"$STATE/oidc-issuer.pid"

    export HUB_STATE=$STATE/hub HUB_PORT HUB_INTERNAL_PORT HUB_PROXY_API_PORT HUB_PASSWORD=hub-pw
    HUB_PORT=$(free_port) HUB_INTERNAL_PORT=$(free_port) HUB_PROXY_API_PORT=$(free_port)
    export HUB_SERVICE_TOKEN HUB_REDIRECT_URI=$CALLBACK
    HUB_SERVICE_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    mkdir -p "$HUB_STATE"
    (cd "$HUB_STATE" && nohup "$CONDA_STORE_JUPYTERHUB" -f "$ROOT/tests/support/jupyterhub_config.py" \
      >"$STATE/jupyterhub.log" 2>&1 &)
    cat >"$STATE/sso.env" <<ENV
ISSUER=http://127.0.0.1:$issuer_port
OIDC_CLIENT_SECRET=$secret
HUB_URL=http://127.0.0.1:$HUB_PORT
HUB_SERVICE_TOKEN=$HUB_SERVICE_TOKEN
ENV
    wait_for "http://127.0.0.1:$issuer_port/.well-known/openid-configuration"
    wait_for "http://127.0.0.1:$HUB_PORT/hub/api/"
    cat "$STATE/sso.env"
    ;;
  stop)
    [[ -f $STATE/oidc-issuer.pid ]] && kill "$(cat "$STATE/oidc-issuer.pid")" 2>/dev/null || true
    # JupyterHub stops its proxy with it.
    [[ -f $STATE/hub/hub.pid ]] && kill "$(cat "$STATE/hub/hub.pid")" 2>/dev/null || true
    rm -f "$STATE/oidc-issuer.pid"
    ;;
  *) echo "usage: $0 start STATE CALLBACK | stop STATE" >&2; exit 2 ;;
esac
