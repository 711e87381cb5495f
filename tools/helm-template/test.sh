#!/usr/bin/env bash
# Tests the `helm template` stand-in (tools/helm-template, run through
# scripts/helm-template.sh) on the fixture chart in testdata/chart:
#   - the full render (--include-crds) must equal testdata/expected.yaml byte for byte;
#   - --values files and --set/--set-string override as in Helm (later wins, null deletes);
#   - schema violations, a failing `required`, and invalid YAML output fail with Helm's
#     messages and print nothing on stdout.
# Usage: bash tools/helm-template/test.sh   (exit status 0 only if every case passes)
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RENDER="$ROOT/scripts/helm-template.sh"
CHART="$HERE/testdata/chart"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

failures=0
pass() { printf 'ok   %s\n' "$1"; }
fail() {
  printf 'FAIL %s\n' "$1"
  failures=$((failures + 1))
}

# render NAME ARGS...: runs the renderer; stdout in $TMP/NAME.out, stderr in $TMP/NAME.err,
# exit status in $rc.
render() {
  local name="$1"
  shift
  rc=0
  "$RENDER" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
}

# expect_ok NAME ARGS...: must succeed.
expect_ok() {
  render "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$1: exit status $rc"
    sed 's/^/     /' "$TMP/$1.err"
    return 1
  fi
}

# has NAME PATTERN / lacks NAME PATTERN: fixed-string line checks on a case's stdout.
has() {
  if grep -qxF -- "$2" "$TMP/$1.out"; then pass "$1: has '$2'"; else fail "$1: missing line '$2'"; fi
}
lacks() {
  if grep -qF -- "$2" "$TMP/$1.out"; then fail "$1: unexpected '$2'"; else pass "$1: no '$2'"; fi
}

# expect_error NAME EXPECTED_STDERR ARGS...: must fail, print nothing on stdout, and print
# exactly EXPECTED_STDERR (plus the final newline) on stderr.
expect_error() {
  local name="$1" want="$2"
  shift 2
  render "$name" "$@"
  if [ "$rc" -eq 0 ]; then
    fail "$name: succeeded, expected an error"
  elif [ -s "$TMP/$name.out" ]; then
    fail "$name: printed manifests despite the error"
  elif ! diff -u <(printf '%s\n' "$want") "$TMP/$name.err" >"$TMP/$name.diff"; then
    fail "$name: unexpected error message"
    sed 's/^/     /' "$TMP/$name.diff"
  else
    pass "$name: fails with Helm's message"
  fi
}

# 1. The full render, compared with the reviewed expected output.
if expect_ok full "$CHART" --include-crds; then
  if diff -u "$HERE/testdata/expected.yaml" "$TMP/full.out" >"$TMP/full.diff"; then
    pass "full render equals testdata/expected.yaml"
  else
    fail "full render differs from testdata/expected.yaml"
    cat "$TMP/full.diff"
  fi
fi

# 2. Without --include-crds the CRD is not printed; hooks can be left out.
if expect_ok nocrds "$CHART" --no-hooks; then
  lacks nocrds "# Source: demo/crds/"
  lacks nocrds "# Source: demo/templates/hooks/job.yaml"
  has nocrds "# Source: demo/templates/deployment.yaml"
fi

# 3. --values files merge in order, then --set wins over them; null deletes a default.
if expect_ok files "$CHART" -f "$HERE/testdata/override-values.yaml" --values "$HERE/testdata/override-values-2.yaml"; then
  has files "  replicas: 4"                                     # second file beats the first
  has files '          image: "quay.io/example/app:9.9.9"'    # first file, deep-merged
  has files "        checksum/config: abc123"                  # podAnnotations now rendered
  has files "            - name: EXTRA"
  has files "            - name: FEATURE_X"                    # chart default kept
  lacks files "LOG_LEVEL"                                       # deleted by null
  lacks files "# Source: demo/templates/service.yaml"           # service.enabled=false
  has files "          ports: []"
  has files "automountServiceAccountToken: false"
fi
if expect_ok set myrel "$CHART" -f "$HERE/testdata/override-values.yaml" \
  --set 'replicaCount=5,nodeSelector.disktype=ssd' --set image.pullPolicy=Always \
  --set-string env.NUMERIC=42 --namespace prod; then
  has set "  replicas: 5"
  has set "          imagePullPolicy: Always"
  has set "        disktype: ssd"
  has set "            - name: NUMERIC"
  has set '              value: "42"'
  has set "  namespace: prod"
  has set "  name: myrel-demo"
  has set '              value: "hello from myrel"'          # tpl sees .Release
  has set '          image: "quay.io/example/app:9.9.9"'
fi
# --set types values: an integer passes the schema's "integer", a string does not.
if expect_ok settyped "$CHART" --set replicaCount=7 --show-only templates/deployment.yaml; then
  has settyped "  replicas: 7"
  lacks settyped "# Source: demo/templates/service.yaml"
fi

# 4. Schema violations: Helm's header, then one "- field: description" line per error
# (gojsonschema reports them in no fixed order, as in Helm, so compare them as a set).
render schema "$CHART" --set replicaCount=0 --set image.pullPolicy=Sometimes --set-string service.port=80
if [ "$rc" -eq 0 ] || [ -s "$TMP/schema.out" ]; then
  fail "schema: expected a failure with empty stdout"
elif ! diff -u <(printf '%s\n' \
  "Error: values don't meet the specifications of the schema(s) in the following chart(s):" \
  "demo:" \
  '- image.pullPolicy: image.pullPolicy must be one of the following: "Always", "IfNotPresent", "Never"' \
  "- replicaCount: Must be greater than or equal to 1" \
  "- service.port: Invalid type. Expected: integer, given: string" \
  "") <(head -n2 "$TMP/schema.err"; tail -n +3 "$TMP/schema.err" | grep -v '^$' | sort; echo) >"$TMP/schema.diff"; then
  fail "schema: unexpected error message"
  sed 's/^/     /' "$TMP/schema.diff"
else
  pass "schema: fails with Helm's message"
fi
expect_error schema-null \
  "Error: values don't meet the specifications of the schema(s) in the following chart(s):
demo:
- image: repository is required
" "$CHART" --set image.repository=null

# 5. `required` with an empty value: the template's own message, at its position.
expect_error required \
  "Error: execution error at (demo/templates/deployment.yaml:24:21): image.repository is required

Use --debug flag to render out invalid YAML" "$CHART" --set image.repository=

# 6. A template that renders invalid YAML is named in the error.
expect_error badyaml \
  "Error: YAML parse error on demo/templates/broken.yaml: error converting YAML to JSON: yaml: line 6: mapping values are not allowed in this context

Use --debug flag to render out invalid YAML" "$CHART" --set breakYaml=true

# 7. Plain usage errors.
expect_error novalues "Error: open $TMP/missing.yaml: no such file or directory" "$CHART" -f "$TMP/missing.yaml"
expect_error nochart "Error: path \"$TMP/nochart\" not found" "$TMP/nochart"

if [ "$failures" -ne 0 ]; then
  printf '%d check(s) failed\n' "$failures"
  exit 1
fi
printf 'all helm-template checks passed\n'
