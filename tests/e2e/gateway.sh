#!/usr/bin/env bash
# The gateway on a real control plane: `scripts/local.sh up` (cluster, operator, gateway, the
# demo Environment built), then the published `conda-store` client (PyPI, in a cached
# virtualenv) and curl against the REST API: lists, download, wait, token, login, a new
# environment POSTed and built, role checks (401/403) and bad input (4xx, never 5xx).
#
#   bash tests/e2e/gateway.sh
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CONDA_STORE_LOCAL_DIR=${CONDA_STORE_LOCAL_DIR:-/tmp/conda-store-e2e-gateway-$$}
STATE=${CONDA_STORE_LOCAL_DIR%/}
VENV=${CONDA_STORE_CLIENT_VENV:-$HOME/.cache/conda-store-k8s/client-venv}
# shellcheck source=tests/e2e/checks.sh
source "$ROOT/tests/e2e/checks.sh"

cleanup() {
  if [[ -n ${FUZZ_PID:-} ]]; then kill "$FUZZ_PID" 2>/dev/null || true; fi
  if [[ -n ${BB_PID:-} ]]; then kill "$BB_PID" 2>/dev/null || true; fi
  if [[ -n ${PY_PID:-} ]]; then kill "$PY_PID" 2>/dev/null || true; fi
  if [[ -n ${KEEP_LOGS:-} && -d $STATE ]]; then cp "$STATE"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
  bash "$ROOT/scripts/local.sh" down >/dev/null 2>&1 || true
  bash "$ROOT/tests/support/identity-providers.sh" stop "$STATE.sso" >/dev/null 2>&1 || true
  rm -rf "$STATE.sso"
}
trap cleanup EXIT

# The client (scripts/install-test-deps.sh installs it; this covers a direct run).
if [[ ! -x $VENV/bin/conda-store ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'conda-store==2025.2.2'
fi
if [[ ! -x $VENV/bin/schemathesis ]]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi
CS() { "$VENV/bin/conda-store" "$@"; }
COMPAT=${CONDA_STORE_COMPAT_VENV:-$HOME/.cache/conda-store-k8s/compat-venv}
[[ -x $COMPAT/bin/python ]] || eval "$(bash "$ROOT/scripts/install-test-deps.sh")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}

USERS=$(mktemp)
API_BIN=$CARGO_TARGET_DIR/debug/conda-store-api-server
# The same build local.sh makes (so its own is a no-op): the hashes need the binary first.
(cd "$ROOT" && cargo build -q --locked -p conda-store-operator -p conda-store-api-server)
hash_pw() { echo "$1" | "$API_BIN" hash-password; }
printf 'users:\n  - username: demo\n    password: "%s"\n  - username: alice\n    password: "%s"\n' \
  "$(hash_pw demo)" "$(hash_pw alice-pw)" >"$USERS"
# Browser sign-in: npm's oidc-provider and a real JupyterHub on loopback (the gateway runs on
# the host network, so it reaches them where the browser does), the gateway configured for both
# through the chart's values, the secrets as Secrets.
[[ -n ${CONDA_STORE_JUPYTERHUB:-} ]] || eval "$(bash "$ROOT/scripts/install-sso.sh")"
export CONDA_STORE_LOCAL_API_PORT
CONDA_STORE_LOCAL_API_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bash "$ROOT/tests/support/identity-providers.sh" start "$STATE.sso" \
  "http://localhost:$CONDA_STORE_LOCAL_API_PORT/conda-store/oauth_callback/" >/dev/null
# shellcheck disable=SC1091
source "$STATE.sso/sso.env"
printf '%s' "$OIDC_CLIENT_SECRET" >"$STATE.sso/oidc-secret"
printf '%s' "$HUB_SERVICE_TOKEN" >"$STATE.sso/hub-token"
cat >"$STATE.sso/values.yaml" <<EOF
apiServer:
  oidc:
    issuer: "$ISSUER"
    clientId: conda-store
    displayName: Test IdP
    scopes: "openid profile groups"
    clientSecret: {existingSecret: e2e-oidc-client}
  jupyterhub:
    url: "$HUB_URL"
    clientSecret: {existingSecret: e2e-hub-service}
  groupBindings: ["*:{group}/*=editor"]
EOF
export CONDA_STORE_LOCAL_VALUES=$STATE.sso/values.yaml
export CONDA_STORE_LOCAL_SECRETS="e2e-oidc-client/client-secret=$STATE.sso/oidc-secret e2e-hub-service/api-token=$STATE.sso/hub-token"
CONDA_STORE_LOCAL_USERS=$USERS bash "$ROOT/scripts/local.sh" up >"$STATE.up.log" 2>&1 ||
  { tail -n 30 "$STATE.up.log"; exit 1; }
rm -f "$USERS"
URL=$(cat "$STATE/api.url")
# The demo channel local.sh serves (the gateway may solve from it: CONDA_STORE_SOLVE_CHANNELS).
CHANNEL_URL=$(cat "$STATE/channel.url")
API=${URL}api/v1
export CONDA_STORE_URL=$URL

j() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
status_of() { # status_of CURL-ARGS...: the HTTP status
  curl -s -o /dev/null -w '%{http_code}' "$@"
}
is() { [[ $1 == "$2" ]] || { echo "expected $2, got $1"; return 1; }; }
no_5xx() { local s; s=$(status_of "$@"); [[ $s -lt 500 && $s -ge 400 ]] || { echo "status $s"; return 1; }; }

check "GET api/v1/ gives the version" contains '"version"' curl -fsS "$API/"
check "anonymous callers see no namespace" is "$(curl -fsS "$API/namespace/" | j 'd["count"]')" 0

# The client, logged in with a password (cookies need a host name, not an IP).
basic() { CONDA_STORE_AUTH=basic CONDA_STORE_USERNAME=$1 CONDA_STORE_PASSWORD=$2 CS "${@:3}"; }
check "conda-store list namespace" contains Demo basic demo demo list namespace
check "conda-store list environment" contains Tools basic demo demo list environment --output json
check "conda-store list build shows the completed build" contains COMPLETED basic demo demo list build
ID=$(curl -fsS -u demo:demo "$API/environment/Demo/Tools/" | j 'd["data"]["current_build_id"]')
check "the environment has a current build" test "$ID" -gt 0
cd "$STATE"
check "conda-store download of the lockfile" basic demo demo download "Demo/Tools" --output-filename tools.lock
conda_lock_reads() { # conda-lock's own parser reads the served lockfile, with the packages
  "$COMPAT/bin/python" - "$1" <<'PY'
import pathlib, sys
from conda_lock.lockfile import parse_conda_lock_file
lock = parse_conda_lock_file(pathlib.Path(sys.argv[1]))
names = sorted(p.name for p in lock.package)
assert names == ["liba", "libb", "tool"], names
assert all(p.hash.sha256 and p.hash.md5 for p in lock.package)
print(names)
PY
}
check "the lockfile is the conda-lock document (conda-lock parses it)" conda_lock_reads tools.lock
check "conda's explicit list has its own path" contains '@EXPLICIT' curl -fsS -u demo:demo "$API/build/$ID/explicit/"
check "conda-store wait on a built environment" basic demo demo wait "Demo/Tools" --timeout 30 --interval 1
check "conda-store wait --artifact archive" basic demo demo wait "Demo/Tools" --artifact archive --timeout 30 --interval 1
run_tool() { # conda-store run: the archive extracted, unpacked, activated (activate.d), a program run
  local out
  out=$(basic demo demo run --no-cache "Demo/Tools" -- sh -c 'echo "data=$TOOL_DATA"; tool') || return 1
  echo "$out"
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
m = re.search(r"^prefix: (/\S+)$", out, re.M)
assert m, "tool did not print its prefix"
assert f"data={m.group(1)}/share/tool/data.txt" in out, "activate.d did not run in the new prefix"
assert "tool data" in out, "tool did not read its data through the relocated prefix"
PY
}
check "conda-store run runs a program of the environment from its archive" run_tool

# The web UI in a real browser (Debian's chromium, PyPI playwright): tests/e2e/browser.py walks
# the journeys and checks what the pages show; its screenshots are kept in $CONDA_STORE_SCREENSHOTS
# (scripts/test.sh: ~/.cache/conda-store-k8s/ci-output/screenshots), else $STATE/screenshots.
BROWSER_VENV=${CONDA_STORE_BROWSER_VENV:-$HOME/.cache/conda-store-k8s/browser-venv}
check "conda-store-ui is served at ui/ (its bundle from the image)" \
  contains 'src="/conda-store/static/conda-store-ui/main.js"' curl -fsS -H "Authorization: Bearer $(basic demo demo token)" "${URL}ui/"
check "the UI's script is served" contains 'condaStoreConfig' curl -fsS "${URL}static/conda-store-ui/main.js"
check "the prefix redirects to the UI" is "$(curl -s -o /dev/null -w '%{redirect_url}' "$URL")" "${URL}ui/"
SHOTS=${CONDA_STORE_SCREENSHOTS:-$STATE/screenshots}
rm -rf "$SHOTS"
browser_journeys() { # browser_journeys USER PASSWORD NAMESPACE ENVIRONMENT: browser.py's checks counted here
  local out line
  out=$("$BROWSER_VENV/bin/python" "$ROOT/tests/e2e/browser.py" "$URL" "$@" "$SHOTS" 2>&1) || true
  while IFS= read -r line; do
    case $line in
      "ok   "*) passed=$((passed + 1)); echo "$line" ;;
      "FAIL "*) failed=$((failed + 1)); echo "$line" ;;
    esac
  done <<<"$out"
  grep -q '^ok   browser:' <<<"$out" || { failed=$((failed + 1)); printf 'FAIL the browser journeys ran\n%s\n' "$out"; }
  if [[ -n ${KEEP_LOGS:-} ]]; then cp -r "$SHOTS" "$KEEP_LOGS/" 2>/dev/null || true; fi
}
# Signing in with the users file, npm's oidc-provider and JupyterHub; the editor's journeys
# come with the pip section below (they build from its channel and index).
CONDA_STORE_E2E_SSO=1 CONDA_STORE_E2E_SECRET_KEY_FILE=$STATE/secret.key BROWSER_JOURNEYS=password,sso \
  browser_journeys demo demo Demo Tools
printf 'channels: ["%s"]\ndependencies: [tool]\n' "$CHANNEL_URL" >solve.yaml
check "conda-store solve lists the solved packages" contains '"libb"' basic demo demo solve solve.yaml --output json
check "conda-lock.yml is served" contains 'version: 1' curl -fsS -u demo:demo "$API/build/$ID/conda-lock.yml"
check "the build's packages are indexed" contains '"liba"' curl -fsS -u demo:demo "$API/build/$ID/packages/"
check "the package catalog lists them" contains '"tool"' curl -fsS "$API/package/?search=too"
catalog_has_liba1() { # liba 1.0 is in the demo channel but in no build: the channel is indexed
  for _ in $(seq 60); do
    [[ $(curl -fsS "$API/package/?search=liba&exact=true" | j '[p["version"] for p in d["data"]]') == *"'1.0'"* ]] && return 0
    sleep 0.5
  done
  curl -fsS "$API/package/?search=liba"
  return 1
}
check "the catalog holds the configured channel's packages, built or not" catalog_has_liba1
check "and lists the channel" contains "${CHANNEL_URL%/}" curl -fsS "$API/channel/"
check "logs are served" contains '==> solve <==' curl -fsS -u demo:demo "$API/build/$ID/logs/"

# A token for alice, from the client, then alice builds in her own namespace.
TOKEN=$(basic alice alice-pw token)
check "conda-store token issues a token" test -n "$TOKEN"
# The demo channel the operator builds from (local.sh serves it on the pod gateway).
CHANNEL=$(curl -fsS -u demo:demo "$API/build/$ID/" | j 'd["data"]["specification"]["spec"]["channels"][0]')
BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"alice","environment_name":"my_env","specification":"channels: [\""+sys.argv[1]+"\"]\ndependencies: [liba]\n"}))' "$CHANNEL")
NEW=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$BODY" "$API/specification/" | j 'd["data"]["build_id"]')
check "POST specification returns the new build's id" test "$NEW" -gt "$ID"
check "conda-store wait on the new build" env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" wait "$NEW" --timeout 240 --interval 1
check "alice's environment is listed for her" contains my_env env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" list environment --output json
check "the same spec again reuses the build" is "$(curl -fsS -H "Authorization: Bearer $TOKEN" -d "$BODY" "$API/specification/" | j 'd["data"]["build_id"]')" "$NEW"

# A lockfile round trip: the downloaded conda-lock document posted back builds the same.
ROUND_BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"alice","environment_name":"relocked","is_lockfile":True,"specification":open(sys.argv[1]).read()}))' tools.lock)
RELOCKED=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d "$ROUND_BODY" "$API/specification/" | j 'd["data"]["build_id"]')
check "the downloaded lockfile posted back (is_lockfile) builds" env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" wait "$RELOCKED" --timeout 240 --interval 1
check "into an identical lockfile" is "$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$RELOCKED/lockfile/" | sha256sum)" \
  "$(sha256sum <tools.lock)"
pkgs() { # pkgs AUTH-HEADER BUILD: the build's installed packages
  curl -fsS -H "$1" "$API/build/$2/packages/" |
    python3 -c 'import json,sys; print(sorted((p["name"],p["version"],p["build"],p["sha256"]) for p in json.load(sys.stdin)["data"]))'
}
check "with the same packages installed" is "$(pkgs "Authorization: Bearer $TOKEN" "$RELOCKED")" \
  "$(pkgs "Authorization: Basic $(printf demo:demo | base64)" "$ID")"
# An environment with no dependencies builds (an empty prefix), as in conda-store.
EMPTY=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d '{"namespace":"alice","specification":"name: empty\n"}' "$API/specification/" | j 'd["data"]["build_id"]')
check "an environment with no dependencies builds" env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" wait "$EMPTY" --timeout 240 --interval 1
check "its explicit list is served (an empty lockfile is a lockfile)" \
  contains '@EXPLICIT' curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$EMPTY/explicit/"
# Live logs: ?follow=true streams each step's log as it is written and ends with the build.
FOLLOW_BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"alice","environment_name":"followed","specification":"channels: [\""+sys.argv[1]+"\"]\ndependencies: [libb]\n"}))' "$CHANNEL")
FOLLOWED=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d "$FOLLOW_BODY" "$API/specification/" | j 'd["data"]["build_id"]')
follow_log() {
  local out
  out=$(timeout 240 curl -fsSN -H "Authorization: Bearer $TOKEN" "$API/build/$FOLLOWED/logs/?follow=true") ||
    { echo "the stream did not end with the build: $out"; return 1; }
  for want in "==> solve <==" "==> install <==" "==> pack <==" "step pack succeeded"; do
    [[ $out == *"$want"* ]] || { echo "no '$want' in: $out"; return 1; }
  done
  [[ $(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$FOLLOWED/" | j 'd["data"]["status"]') == COMPLETED ]]
}
check "logs/?follow=true streams the build's steps until it ends" follow_log
# Environment settings (/setting/{ns}/{env}/): kept in the Namespace, applied to that
# environment's builds only; changed only by who may change the namespace's settings.
check "alice sets my_env's default channels" is "$(status_of -X PUT -H "Authorization: Bearer $TOKEN" \
  -d "{\"conda_default_channels\": [\"$CHANNEL\"]}" "$API/setting/alice/my_env/")" 200
check "my_env's settings show them" contains "$CHANNEL" curl -fsS -H "Authorization: Bearer $TOKEN" "$API/setting/alice/my_env/"
check "its namespace's do not" is "$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/setting/alice/" | j 'd["data"]["conda_default_channels"]')" None
check "demo may not change them (403)" is "$(status_of -X PUT -u demo:demo -d '{}' "$API/setting/alice/my_env/")" 403
NOCHAN=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d '{"namespace":"alice","environment_name":"my_env","specification":"dependencies: [libb]\n"}' "$API/specification/" | j 'd["data"]["build_id"]')
check "a build of my_env without channels takes its settings' channel" env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" wait "$NOCHAN" --timeout 240 --interval 1

# A pipeline's Kubernetes ServiceAccount token, checked by TokenReview.
eval "$(CONDA_STORE_LOCAL_DIR=$STATE bash "$ROOT/scripts/local.sh" env)"
# The chart's default job placement: the build Jobs ran in the operator's namespace.
jobs_in() { "$CONDA_STORE_KUBECTL" get jobs -n "$1" -l conda.store/namespace=demo -o name; }
check "the demo builds' Jobs ran in conda-store (jobPlacement release)" contains solve jobs_in conda-store
check "and none in the demo namespace" is "$(jobs_in demo)" ""
"$CONDA_STORE_KUBECTL" create serviceaccount ci -n demo >/dev/null
SA_TOKEN=""
for _ in $(seq 50); do
  secret=$("$CONDA_STORE_KUBECTL" get sa ci -n demo -o 'jsonpath={.secrets[0].name}' 2>/dev/null || true)
  [[ -n $secret ]] && SA_TOKEN=$("$CONDA_STORE_KUBECTL" get secret "$secret" -n demo -o 'jsonpath={.data.token}' | base64 -d) && break
  sleep 0.2
done
check "a ServiceAccount token is accepted (TokenReview)" \
  is "$(curl -fsS -H "Authorization: Bearer $SA_TOKEN" "$API/permission/" | j 'd["data"]["primary_namespace"]')" demo
check "the ServiceAccount reads what its Namespace opens to it" \
  is "$(status_of -H "Authorization: Bearer $SA_TOKEN" "$API/environment/Demo/Tools/")" 200

# Rights.
check "anonymous: a build is 404 (its existence not told)" is "$(status_of "$API/build/$ID/")" 404
check "demo (viewer of Demo) may not cancel: 403" is "$(status_of -u demo:demo -X PUT "$API/build/$ID/cancel/")" 403
check "demo may not read alice's environment: 403" is "$(status_of -u demo:demo "$API/environment/alice/my_env/")" 403
VIEWER=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d '{"role_bindings":{"alice/my_env":["viewer"]}}' "$API/token/" | j 'd["data"]["token"]')
check "a viewer token may read" is "$(status_of -H "Authorization: Bearer $VIEWER" "$API/environment/alice/my_env/")" 200
check "a viewer token may not build: 403" is "$(status_of -H "Authorization: Bearer $VIEWER" -d "$BODY" "$API/specification/")" 403
check "a token cannot exceed its holder: 400" is "$(status_of -H "Authorization: Bearer $VIEWER" -d '{"role_bindings":{"alice/*":["admin"]}}' "$API/token/")" 400
check "a forged token is 401" is "$(status_of -H "Authorization: Bearer ${TOKEN%?}x" "$API/environment/alice/my_env/")" 401
check "wrong password is 401" is "$(status_of -u demo:nope "$API/namespace/")" 401
anon_token() { # an anonymous caller gets a token (conda-store's), which opens nothing private
  local t
  t=$(curl -fsS -X POST -H 'Content-Type: application/json' -d '{}' "$API/token/" | j 'd["data"]["token"]')
  [[ -n $t ]] || return 1
  is "$(status_of -H "Authorization: Bearer $t" "$API/environment/alice/my_env/")" 403
}
check "an anonymous caller gets a token that opens nothing private" anon_token

# Bad input: 4xx with a conda-store error body, never 5xx.
check "malformed JSON is 400" contains '"status":"error"' curl -s -H "Authorization: Bearer $TOKEN" -d '{nope' "$API/specification/"
check "an invalid environment.yaml is 400 with the line" contains 'line' curl -s -H "Authorization: Bearer $TOKEN" \
  -d '{"namespace":"alice","environment_name":"bad","specification":"dependencies: {a: 1}\n"}' "$API/specification/"
check "an unknown namespace without rights on it is 403 (existence not told)" \
  is "$(status_of -H "Authorization: Bearer $TOKEN" "$API/namespace/nope/")" 403
check "an unknown environment in her namespace is 404" \
  is "$(status_of -H "Authorization: Bearer $TOKEN" "$API/environment/alice/nope/")" 404
check "a build id that is not a number is 400" is "$(status_of "$API/build/abc/")" 400
check "an id out of range is 4xx" no_5xx "$API/build/99999999999999999999/"
check "path traversal in names is refused" no_5xx -u demo:demo "$API/environment/..%2F../x/"
check "an oversized body is 413" is "$(head -c 5000000 /dev/zero | tr '\0' a | status_of -H "Authorization: Bearer $TOKEN" --data-binary @- "$API/specification/")" 413
# The OCI registry (pull side) at the root: skopeo pulls the demo image the pipeline built.
REG=${URL%/conda-store/}
REG_HOST=${REG#http://}
check "GET /v2/ without credentials is 401 with a token challenge" \
  contains 'Bearer realm=' curl -sS -D - -o /dev/null "$REG/v2/"
check "skopeo inspect" contains '"Digest"' skopeo inspect --creds demo:demo --tls-verify=false \
  "docker://$REG_HOST/demo/tools:latest"
rm -rf "$STATE/pulled"
check "skopeo copy to an OCI layout" skopeo copy -q --src-creds demo:demo --src-tls-verify=false \
  "docker://$REG_HOST/demo/tools:latest" "oci:$STATE/pulled:tools"
layers_match() { # the layers, extracted, hold the installed prefix's files
  python3 - "$STATE/pulled" "$STATE/envs/demo/tools" <<'PY'
import json, os, subprocess, sys, tempfile
layout, prefix = sys.argv[1], os.path.realpath(sys.argv[2])
index = json.load(open(f"{layout}/index.json"))
blob = lambda d: f"{layout}/blobs/sha256/{d.split(':')[1]}"
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
root = tempfile.mkdtemp()
for layer in manifest["layers"]:
    subprocess.run(["tar", "-xzf", blob(layer["digest"]), "-C", root], check=True)
metas = [d for d, dirs, _ in os.walk(root) if os.path.basename(d) == "conda-meta"]
assert metas, "no conda-meta in the image"
image_prefix = os.path.dirname(metas[0])
files = lambda top: sorted(os.path.relpath(os.path.join(d, f), top) for d, _, fs in os.walk(top) for f in fs)
want, got = files(prefix), files(image_prefix)
missing = sorted(set(want) - set(got))
assert not missing, f"not in the image: {missing[:10]}"
print(f"{len(got)} files of the prefix in {len(manifest['layers'])} layers at {image_prefix[len(root):]}")
PY
}
check "the pulled layers hold the installed prefix" layers_match
check "tags/list lists every build and latest" contains '"latest"' curl -fsS -u demo:demo "$REG/v2/demo/tools/tags/list"
check "tags/list pages with n" contains '"tags":["' curl -fsS -u demo:demo "$REG/v2/demo/tools/tags/list?n=1"
LAYER=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]+"/blobs/sha256/"+json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"].split(":")[1])); print(max(m["layers"], key=lambda l: l["size"])["digest"])' "$STATE/pulled")
ranged() { # two ranges of the largest layer give its bytes
  local a b
  a=$(mktemp) b=$(mktemp)
  curl -fsS -u demo:demo -r 0-999 "$REG/v2/demo/tools/blobs/$LAYER" >"$a"
  curl -fsS -u demo:demo -r 1000- "$REG/v2/demo/tools/blobs/$LAYER" >"$b"
  [[ "sha256:$(cat "$a" "$b" | sha256sum | cut -d' ' -f1)" == "$LAYER" ]]
}
check "a resumed blob download (Range) gives the same bytes" ranged
check "a Docker client gets a schema 2 manifest" contains 'application/vnd.docker.distribution.manifest.v2+json' \
  curl -fsS -u demo:demo -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' -D - -o /dev/null \
  "$REG/v2/demo/tools/manifests/latest"
check "a pull without credentials is 401" is "$(status_of "$REG/v2/demo/tools/manifests/latest")" 401
check "a pull without rights is 403" is "$(status_of -H "Authorization: Bearer $VIEWER" "$REG/v2/demo/tools/manifests/latest")" 403
check "an unknown tag is MANIFEST_UNKNOWN" contains MANIFEST_UNKNOWN curl -sS -u demo:demo "$REG/v2/demo/tools/manifests/999"
check "a malformed digest is refused" contains DIGEST_INVALID curl -sS -u demo:demo "$REG/v2/demo/tools/blobs/sha256:..%2F..%2Fx"
check "skopeo with a token from /v2/token (login flow)" contains '"Digest"' skopeo inspect \
  --creds alice:alice-pw --tls-verify=false "docker://$REG_HOST/demo/tools:latest"

# Tenant isolation: demo (viewer of Demo, admin of nothing) against alice's environment and
# against Demo itself, through the REST API and the registry. Every attempt must fail.
TOOLS_SPEC() { "$CONDA_STORE_KUBECTL" get environment tools -n demo -o 'jsonpath={.spec.dependencies}'; }
SPEC_BEFORE=$(TOOLS_SPEC)
DEMO_BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"demo","environment_name":"Tools","specification":"channels: [\""+sys.argv[1]+"\"]\ndependencies: [libb]\n"}))' "$CHANNEL")
check "demo may not write Demo/Tools by spelling the namespace demo" \
  is "$(status_of -u demo:demo -d "$DEMO_BODY" "$API/specification/" | cut -c1)" 4
check "nor by spelling it Demo (a viewer): 403" \
  is "$(status_of -u demo:demo -d "${DEMO_BODY/\"demo\"/\"Demo\"}" "$API/specification/")" 403
check "Demo/Tools keeps its dependencies" is "$(TOOLS_SPEC)" "$SPEC_BEFORE"
check "demo may not create environments in the namespace object demo" \
  is "$(status_of -u demo:demo -d "${DEMO_BODY/Tools/probe}" "$API/specification/" | cut -c1)" 4
check "and none was created" is "$("$CONDA_STORE_KUBECTL" get environments -n demo -o name | grep -c probe || true)" 0
hidden_build() { # alice's build, by id, tells demo nothing (as a build that does not exist)
  local body
  body=$(curl -s -u demo:demo "$API/build/$NEW/")
  [[ $(status_of -u demo:demo "$API/build/$NEW/") == 404 ]] || { echo "status not 404: $body"; return 1; }
  [[ $body != *alice* && $body != *my_env* ]] || { echo "names it: $body"; return 1; }
}
check "walking build ids reveals no one else's environment" hidden_build
for what in logs lockfile yaml archive; do
  check "demo may not read alice's build $what" is "$(status_of -u demo:demo "$API/build/$NEW/$what/")" 404
done
check "demo may not cancel or delete alice's build" \
  is "$(status_of -u demo:demo -X PUT "$API/build/$NEW/cancel/")$(status_of -u demo:demo -X DELETE "$API/build/$NEW/")" 404404
# A running build's log comes from its own Job's pod only: a pod in alice's namespace labelled
# like the build's solve step (whoever may create pods there can make one) is never read.
GW_HOST=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).hostname)' "$CHANNEL")
TARPIT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tarpit "$GW_HOST" "$TARPIT_PORT"
TARPIT_PID=$!
for _ in $(seq 50); do python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)' "$GW_HOST" "$TARPIT_PORT" 2>/dev/null && break; sleep 0.1; done
SLOW_BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"alice","environment_name":"slow","specification":"channels: [\""+sys.argv[1]+"\"]\ndependencies: [liba]\n"}))' "http://$GW_HOST:$TARPIT_PORT/")
SLOW=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d "$SLOW_BODY" "$API/specification/" | j 'd["data"]["build_id"]')
slow_building() { [[ $(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$SLOW/" | j 'd["data"]["status"]') == BUILDING ]]; }
for _ in $(seq 100); do slow_building && break; sleep 0.3; done
SLOW_BUILD=$("$CONDA_STORE_KUBECTL" get builds -n alice -l conda.store/environment=slow -o 'jsonpath={.items[0].metadata.name}')
JOB_IMAGE=$("$CONDA_STORE_KUBECTL" get deployment conda-store-operator -n conda-store -o 'jsonpath={.spec.template.spec.containers[0].image}')
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: spoof
  namespace: alice
  labels: {conda.store/build: $SLOW_BUILD, conda.store/step: solve, conda.store/namespace: alice, app.kubernetes.io/managed-by: conda-store}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers: [{name: solve, image: "$JOB_IMAGE", imagePullPolicy: Never, args: [spec, name, SPOOFED-LOG-LINE]}]
YAML
for _ in $(seq 100); do
  [[ $("$CONDA_STORE_KUBECTL" get pod spoof -n alice -o 'jsonpath={.status.phase}') == Succeeded ]] && break
  sleep 0.3
done
check "the spoofing pod ran" contains spoofed-log-line "$CONDA_STORE_KUBECTL" logs spoof -n alice
not_spoofed() { # until the step's own log shows (its pod may still be starting), never the spoof's
  local logs=""
  for _ in $(seq 60); do
    slow_building || { curl -sS -H "Authorization: Bearer $TOKEN" "$API/build/$SLOW/"; return 1; }
    logs=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$SLOW/logs/")
    [[ $logs != *spoofed-log-line* ]] || { echo "the build's log is the spoofing pod's: $logs"; return 1; }
    [[ $logs == *"step solve starting"* ]] && return 0
    sleep 0.5
  done
  echo "not the step's own log: $logs"
  return 1
}
check "a running build's log is its own step's, not a look-alike pod's" not_spoofed
check "a running build cannot be deleted (400, cancel it first)" \
  is "$(status_of -X DELETE -H "Authorization: Bearer $TOKEN" "$API/build/$SLOW/")" 400
curl -fsS -X PUT -H "Authorization: Bearer $TOKEN" "$API/build/$SLOW/cancel/" >/dev/null || true
kill "$TARPIT_PID" 2>/dev/null || true

# A failed build's log is served: the one a person most needs.
BAD_BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"alice","environment_name":"unsolvable","specification":"channels: [\""+sys.argv[1]+"\"]\ndependencies: [liba >=7]\n"}))' "$CHANNEL")
BAD=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d "$BAD_BODY" "$API/specification/" | j 'd["data"]["build_id"]')
bad_failed() { [[ $(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$BAD/" | j 'd["data"]["status"]') == FAILED ]]; }
for _ in $(seq 200); do bad_failed && break; sleep 0.3; done
check "a failed build's log is served, with the solver's reason" \
  contains "step solve failed" curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$BAD/logs/"
check "and the client downloads it" env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" download "$BAD" --artifact logs --output-filename bad.log
check "with the reason in it" contains "step solve failed" cat bad.log

# An image of alice's, built from a manifest applied with kubectl (the REST API builds no images).
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: vault, namespace: alice}
spec:
  name: Vault
  channels: ["$CHANNEL"]
  dependencies: [libb]
  artifacts: [lockfile, image]
YAML
check "alice's image environment is built" \
  "$CONDA_STORE_KUBECTL" wait --for=condition=Ready environment/vault -n alice --timeout=240s
ALICE_REPO=vault
ALICE_MANIFEST=$(curl -fsS -u alice:alice-pw -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  -D - -o "$STATE/alice-manifest.json" "$REG/v2/alice/$ALICE_REPO/manifests/latest" |
  tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
ALICE_CONFIG=$(j 'd["config"]["digest"]' <"$STATE/alice-manifest.json")
check "alice pulls her own manifest and config" \
  is "$(status_of -u alice:alice-pw "$REG/v2/alice/$ALICE_REPO/blobs/$ALICE_CONFIG")" 200
for d in "$ALICE_MANIFEST" "$ALICE_CONFIG"; do
  check "demo cannot pull alice's blob ${d:7:12} through demo/tools (GET)" \
    is "$(status_of -u demo:demo "$REG/v2/demo/tools/blobs/$d")" 404
  check "nor learn that it exists (HEAD)" \
    is "$(status_of -u demo:demo -I "$REG/v2/demo/tools/blobs/$d")" 404
done
check "demo may not pull from alice's repository" \
  is "$(status_of -u demo:demo "$REG/v2/alice/$ALICE_REPO/manifests/latest")" 403

# Containerd is a registry client too: the node pulls an environment's image from the gateway
# (plain HTTP, which containerd allows for loopback hosts) with a pull Secret, and runs a program
# of the environment. The images have no base, so the environment holds a static busybox.
BB_TAR=$(bash "$ROOT/tests/e2e/images.sh" build busybox)
rm -rf "$STATE/bb" && mkdir -p "$STATE/bb/image" "$STATE/bb/rootfs"
tar -xf "$BB_TAR" -C "$STATE/bb/image"
tar -xf "$STATE/bb/image/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["Layers"][0])' "$STATE/bb/image/manifest.json")" \
  -C "$STATE/bb/rootfs" ./bin/busybox
python3 "$ROOT/tests/e2e/busybox-channel.py" "$STATE/bb/channel" "$STATE/bb/rootfs/bin/busybox" >/dev/null
BB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind "$GW_HOST" --directory "$STATE/bb/channel" "$BB_PORT" >"$STATE/bb/http.log" 2>&1 &
BB_PID=$!
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: boxed, namespace: alice}
spec:
  channels: ["http://$GW_HOST:$BB_PORT/"]
  dependencies: [busybox]
  artifacts: [lockfile, image]
YAML
check "an environment holding a static busybox is built with its image" \
  "$CONDA_STORE_KUBECTL" wait --for=condition=Ready environment/boxed -n alice --timeout=240s
BOXED_ID=$("$CONDA_STORE_KUBECTL" get environment boxed -n alice -o 'jsonpath={.status.currentBuild}')
"$CONDA_STORE_KUBECTL" create secret docker-registry gateway-pull -n alice --docker-server="$REG_HOST" \
  --docker-username=alice --docker-password=alice-pw >/dev/null
"$CONDA_STORE_KUBECTL" create secret docker-registry gateway-pull -n demo --docker-server="$REG_HOST" \
  --docker-username=demo --docker-password=demo >/dev/null
registry_pod() { # registry_pod NAMESPACE NAME: a pod of alice's image, pulled with NAMESPACE's secret
  "$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $2, namespace: $1}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  imagePullSecrets: [{name: gateway-pull}]
  containers:
    - name: env
      image: $REG_HOST/alice/boxed:$BOXED_ID
      imagePullPolicy: Always
      command: [busybox, sh, -c, 'echo "ran \$(busybox which busybox)"; busybox ls "\$(busybox dirname "\$(busybox which busybox)")/../conda-meta"']
YAML
}
registry_pod alice from-registry
pod_ran() {
  local phase=""
  for _ in $(seq 240); do
    phase=$("$CONDA_STORE_KUBECTL" get pod from-registry -n alice -o 'jsonpath={.status.phase}')
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 0.5
  done
  [[ $phase == Succeeded ]] || { "$CONDA_STORE_KUBECTL" describe pod from-registry -n alice | tail -n 15; return 1; }
  "$CONDA_STORE_KUBECTL" logs from-registry -n alice
}
check "the node's containerd pulls it from the gateway and runs the environment's busybox" \
  contains "busybox-1.35.0-0.json" pod_ran
check "the pod runs the image the registry serves (same digest)" \
  is "$("$CONDA_STORE_KUBECTL" get pod from-registry -n alice -o 'jsonpath={.status.containerStatuses[0].imageID}' | sed 's/.*@//')" \
  "$(skopeo inspect --creds alice:alice-pw --tls-verify=false "docker://$REG_HOST/alice/boxed:$BOXED_ID" | j 'd["Digest"]')"
registry_pod demo stolen
pull_refused() { # demo's credentials do not pull alice's image
  local reason=""
  for _ in $(seq 120); do
    reason=$("$CONDA_STORE_KUBECTL" get pod stolen -n demo -o 'jsonpath={.status.containerStatuses[0].state.waiting.reason}')
    [[ $reason == ErrImagePull || $reason == ImagePullBackOff ]] && return 0
    [[ $("$CONDA_STORE_KUBECTL" get pod stolen -n demo -o 'jsonpath={.status.phase}') == Pending ]] || break
    sleep 0.5
  done
  "$CONDA_STORE_KUBECTL" describe pod stolen -n demo | tail -n 15
  return 1
}
check "another team's pull secret does not pull alice's image" pull_refused
"$CONDA_STORE_KUBECTL" delete pod stolen -n demo --wait=false >/dev/null
kill "$BB_PID" 2>/dev/null || true

# A pip section, end to end: conda's python (the host's CPython made a conda package by
# tests/support/real_channel.py) and pip's flask (its closure, with the binary wheel markupsafe
# and the `flask` entry point) from a PEP 503 index of real PyPI wheels, both served where the
# build pods reach them. Built through the operator; checked with conda-lock's parser, from the
# installed prefix, from the archive unpacked elsewhere, by `conda-store run`, and in the image
# run as a Pod pulled from the gateway's registry.
PIP_DATA=${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}/test-data
python3 "$ROOT/tests/support/real_channel.py" "$PIP_DATA/pip-test-channel" \
  --wheels "$PIP_DATA/pip-test-channel-wheels" click==8.5.1 >/dev/null
python3 "$ROOT/tests/support/pypi_index.py" "$PIP_DATA/pip-test-index" --wheels "$PIP_DATA/pip-test-index-wheels" \
  --sdist onlysource==1.0 flask==3.1.3 werkzeug==3.1.9 jinja2==3.1.6 itsdangerous==2.2.0 click==8.5.1 \
  click==7.1.2 blinker==1.9.0 markupsafe==3.0.4 >/dev/null
mkdir -p "$STATE/py" && ln -sfn "$PIP_DATA/pip-test-channel" "$STATE/py/channel" && ln -sfn "$PIP_DATA/pip-test-index" "$STATE/py/index"
PY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind "$GW_HOST" --directory "$STATE/py" "$PY_PORT" >"$STATE/py-http.log" 2>&1 &
PY_PID=$!
PY_URL="http://$GW_HOST:$PY_PORT"
pip_env() { # pip_env NAME PIP_ITEMS [CONDA_ITEMS]: an Environment of alice's with a pip section
  "$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: $1, namespace: alice}
spec:
  channels: ["$PY_URL/channel/"]
  dependencies: [${3:-python}, {pip: ["--index-url $PY_URL/index/simple", $2]}]
  artifacts: [lockfile, archive, image]
YAML
}
pip_env flasky '"flask"'
check "an environment with a pip section (flask) builds through the operator" \
  "$CONDA_STORE_KUBECTL" wait --for=condition=Ready environment/flasky -n alice --timeout=300s
FLASKY_ID=$("$CONDA_STORE_KUBECTL" get environment flasky -n alice -o 'jsonpath={.status.currentBuild}')
curl -fsS -u alice:alice-pw "$API/build/$FLASKY_ID/conda-lock.yml" -o "$STATE/flasky.lock"
conda_lock_reads_pip() { # conda-lock's parser: pip entries with their sha256, conda's python
  "$COMPAT/bin/python" - "$1" <<'PY'
import pathlib, sys
from conda_lock.lockfile import parse_conda_lock_file
lock = parse_conda_lock_file(pathlib.Path(sys.argv[1]))
pip = sorted(p.name for p in lock.package if p.manager == "pip")
assert pip == ["blinker", "click", "flask", "itsdangerous", "jinja2", "markupsafe", "werkzeug"], pip
assert [p.name for p in lock.package if p.manager == "conda"] == ["python"]
assert all(len(p.hash.sha256) == 64 and p.url.endswith(".whl") for p in lock.package if p.manager == "pip")
print(pip)
PY
}
check "its lockfile has manager: pip entries that conda-lock's parser reads" conda_lock_reads_pip "$STATE/flasky.lock"
pip_entries() { # the pip entries of a conda-lock document on stdin: name, version, url, sha256
  python3 -c 'import sys, yaml; print(sorted((p["name"], p["version"], p["url"], p["hash"]["sha256"]) for p in yaml.safe_load(sys.stdin)["package"] if p["manager"] == "pip"))'
}
PIP_ROUND_BODY=$(python3 -c 'import json,sys; print(json.dumps({"namespace":"alice","environment_name":"flasky-relocked","is_lockfile":True,"specification":open(sys.argv[1]).read()}))' "$STATE/flasky.lock")
PIP_RELOCKED=$(curl -fsS -H "Authorization: Bearer $TOKEN" -d "$PIP_ROUND_BODY" "$API/specification/" | j 'd["data"]["build_id"]')
check "that lockfile posted back (is_lockfile) builds" env CONDA_STORE_AUTH=token CONDA_STORE_TOKEN="$TOKEN" \
  "$VENV/bin/conda-store" wait "$PIP_RELOCKED" --timeout 300 --interval 1
check "with exactly the locked pip files" is \
  "$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/build/$PIP_RELOCKED/conda-lock.yml" | pip_entries)" \
  "$(pip_entries <"$STATE/flasky.lock")"
check "and flask imports from that build's prefix" "$STATE/envs/alice/flasky-relocked/bin/python" -c 'import flask'
FLASKY=$STATE/envs/alice/flasky
check "flask imports from the installed prefix (markupsafe's compiled module too)" \
  "$FLASKY/bin/python" -c 'import flask, markupsafe._speedups'
check "the flask entry point runs from the installed prefix" contains "Flask 3.1.3" "$FLASKY/bin/flask" --version
unpacked_runs() { # the archive, extracted elsewhere and relocated by its conda-unpack
  rm -rf "$STATE/flasky-unpacked" && mkdir -p "$STATE/flasky-unpacked"
  curl -fsS -u alice:alice-pw "$API/build/$FLASKY_ID/archive/" | tar -xz -C "$STATE/flasky-unpacked" || return 1
  "$STATE/flasky-unpacked/bin/conda-unpack" || return 1
  head -n 1 "$STATE/flasky-unpacked/bin/flask"
  "$STATE/flasky-unpacked/bin/python" -c 'import flask, markupsafe._speedups' || return 1
  "$STATE/flasky-unpacked/bin/flask" --version
}
check "from the archive unpacked elsewhere (after conda-unpack), flask imports and its entry point runs" \
  contains "Flask 3.1.3" unpacked_runs
check "conda-store run of that build runs the pip entry point" \
  contains "Flask 3.1.3" basic alice alice-pw run --no-cache "alice/flasky" -- flask --version
IMG_PREFIX=/opt/conda/envs/flasky
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: flasky, namespace: alice}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  imagePullSecrets: [{name: gateway-pull}]
  containers:
    - name: env
      image: $REG_HOST/alice/flasky:$FLASKY_ID
      imagePullPolicy: Always
      # The image has no base: the test python carries glibc's loader in lib/.
      command:
        - $IMG_PREFIX/lib/ld-linux-x86-64.so.2
        - $IMG_PREFIX/bin/python3.11
        - -c
        - |
          import runpy, sys, flask, markupsafe._speedups
          print(open("$IMG_PREFIX/bin/flask").readline().strip())
          sys.argv = ["flask", "--version"]
          runpy.run_path("$IMG_PREFIX/bin/flask", run_name="__main__")
YAML
flasky_pod() {
  local phase=""
  for _ in $(seq 240); do
    phase=$("$CONDA_STORE_KUBECTL" get pod flasky -n alice -o 'jsonpath={.status.phase}')
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 0.5
  done
  "$CONDA_STORE_KUBECTL" logs flasky -n alice
  [[ $phase == Succeeded ]]
}
check "the image, pulled from the gateway's registry by the node and run as a Pod, imports flask and runs its entry point" \
  contains "Flask 3.1.3" flasky_pod
check "in the image the entry point's shebang names the image's python" \
  contains "#!$IMG_PREFIX/bin/python" "$CONDA_STORE_KUBECTL" logs flasky -n alice
# Bad input, through the operator: the build fails with a message naming the requirement, and
# the environment that works is untouched.
pip_env flasky-bad '"nosuchproject"'
pip_failed() { # pip_failed ENV: the build's failure message
  for _ in $(seq 240); do
    local msg
    msg=$("$CONDA_STORE_KUBECTL" get builds -n alice -l conda.store/environment="$1" \
      -o 'jsonpath={.items[0].status.phase} {.items[0].status.message}' 2>/dev/null)
    [[ $msg == Failed* ]] && { echo "$msg"; return 0; }
    sleep 0.5
  done
  return 1
}
check "an unknown pip package fails the build, naming it" contains nosuchproject pip_failed flasky-bad
pip_env flasky-conflict '"click<8"' 'python, click'
check "a pip requirement that conflicts with a conda package fails, naming the conda package" \
  contains "install click 8.5.1" pip_failed flasky-conflict
# A hostile channel: its `python` (tests/support/snoop.c, static) reads the environment of every
# process above it when the build runs it, as a package could to steal the pod's storage
# credentials. The step process makes itself non-dumpable and runs uv with a cleared
# environment: nothing of the build's settings is readable. It then tries to write forged
# repodata where every namespace's solves would read it: a pip solve gets its namespace's own
# repodata cache, so the shared one is not even there.
gcc -static -O2 -DSHARED_CACHE="\"$STATE/envs/.repodata-cache\"" -o "$STATE/snoop" "$ROOT/tests/support/snoop.c"
python3 "$ROOT/tests/e2e/busybox-channel.py" "$STATE/py/hostile" "$STATE/snoop" python 3.11.0 bin/python >/dev/null
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: sneaky, namespace: alice}
spec:
  channels: ["$PY_URL/hostile/"]
  dependencies: [python, {pip: ["--index-url $PY_URL/index/simple", flask]}]
YAML
check "a channel's python run by the pip resolver ran (its build fails with its report)" \
  contains "snoop: pid 1 environ unreadable" pip_failed sneaky
check "and read nothing of the build's settings from any process above it" \
  lacks "LEAKED" pip_failed sneaky
check "nor reached the repodata cache other namespaces' solves read" \
  contains "$STATE/envs/.repodata-cache is not there" pip_failed sneaky
check "the working pip environment is untouched" is \
  "$("$CONDA_STORE_KUBECTL" get environment flasky -n alice -o 'jsonpath={.status.currentBuild}')" "$FLASKY_ID"
# conda-store-ui's editor, as alice: an environment with a pip section made, watched, its log
# opened while it builds, downloaded, edited, switched back, deleted and made again; a create
# in a namespace alice only views is refused with the gateway's message.
EDITOR_CHANNEL="$PY_URL/channel/" EDITOR_INDEX="$PY_URL/index/simple" BROWSER_JOURNEYS=editor \
  browser_journeys alice alice-pw alice -
kill "$PY_PID" 2>/dev/null || true

# Dynamic images: a pull of conda-store-dynamic/<spec>/<spec> builds those packages once.
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Namespace
metadata: {name: conda-store-dynamic}
spec:
  roleBindings: [{entity: "*/*", role: editor}]
  policy: {defaultChannels: ["$CHANNEL"]}
YAML
for _ in $(seq 100); do "$CONDA_STORE_KUBECTL" get namespace conda-store-dynamic >/dev/null 2>&1 && break; sleep 0.2; done
dyn_digest() { skopeo inspect --creds demo:demo --tls-verify=false "docker://$REG_HOST/conda-store-dynamic/$1:latest" | j 'd["Digest"]'; }
D1=$(dyn_digest liba.ge.2/tool 2>&1 || true)
check "a dynamic image is built on its first pull" contains sha256: echo "$D1"
check "the same packages in another order are the same image" is "$(dyn_digest tool/liba.ge.2 2>&1 || true)" "$D1"
check "one Environment serves both names" \
  is "$("$CONDA_STORE_KUBECTL" get environments -n conda-store-dynamic -o name | wc -l)" 1
check "an invalid dynamic name is NAME_INVALID" contains NAME_INVALID \
  curl -sS -u demo:demo "$REG/v2/conda-store-dynamic/Bad!!/manifests/latest"

# Every answer validates against conda-store 2025.2.2's own response models (pydantic).
check "the answers validate against conda-store's response models" \
  env PYTHONPATH="$ROOT/tests/e2e/compat" "$COMPAT/bin/python" "$ROOT/tests/e2e/compat/validate.py" "$API" "$TOKEN" "$ID" "$NEW"

# schemathesis against the served OpenAPI document: no request it makes gets a server error.
# A second gateway on the same cluster and storage where every login is admin everywhere, so the
# fuzzing reaches past authorisation into every handler.
eval "$(CONDA_STORE_LOCAL_DIR=$STATE bash "$ROOT/scripts/local.sh" env)"
printf 'users:\n  - username: root\n    password: "%s"\n' "$(hash_pw root)" >"$STATE/root.yaml"
ST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONDA_STORE_SECRET_KEY=$(cat "$STATE/secret.key") \
  "${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}/debug/conda-store-api-server" serve \
  --listen "127.0.0.1:$ST_PORT" --database-url "sqlite://$STATE/fuzz.db" --storage local \
  --storage-dir "$STATE/artifacts" --users-file "$STATE/root.yaml" \
  --authenticated-binding '*/*=admin' --build-wait-seconds 3 >"$STATE/api-fuzz.log" 2>&1 &
FUZZ_PID=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$ST_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
check "schemathesis finds no server error" "$VENV/bin/schemathesis" run \
  "http://127.0.0.1:$ST_PORT/conda-store/openapi.json" --url "http://127.0.0.1:$ST_PORT/conda-store" \
  -c not_a_server_error -H "Authorization: Basic $(printf root:root | base64)" \
  --max-examples 15 --request-timeout 20 -w 1 --seed 1
kill "$FUZZ_PID" 2>/dev/null || true

check "/metrics counts requests" contains conda_store_api_requests_total curl -fsS "${URL%/conda-store/}/metrics"
check "conda-store's metric lines are served under the prefix" \
  contains "conda_store_build_completed " curl -fsS "${URL}metrics"
check "and its worker status (celery)" contains '"active_tasks"' curl -fsS "${URL}celery"

finish
