#!/usr/bin/env bash
# The CRDs against a real API server: they are accepted (server-side dry run, then a real apply),
# become Established, serve the example manifests with their printer columns and short names,
# document their fields for `kubectl explain`, and the server rejects what the schema forbids.
#
#   bash tests/e2e/crds.sh     # starts its own control plane (tests/e2e/cluster.sh) and stops it
#
# Kubernetes 1.20 (the local control plane) predates CEL: kubectl's client-side validation refuses
# the `x-kubernetes-validations` the CRDs carry for newer clusters, so applies here pass
# --validate=false (the server ignores the rules; the operator enforces them too).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CONDA_STORE_CLUSTER_DIR=${CONDA_STORE_CLUSTER_DIR:-/tmp/conda-store-e2e-crds-$$}
CLUSTER="$ROOT/tests/e2e/cluster.sh"

# shellcheck source=tests/e2e/checks.sh
source "$ROOT/tests/e2e/checks.sh"

cleanup() { bash "$CLUSTER" down >/dev/null 2>&1 || true; }
trap cleanup EXIT

bash "$CLUSTER" up
eval "$(bash "$CLUSTER" env)"
k() { "$CONDA_STORE_KUBECTL" "$@"; }

check "server-side dry run accepts every CRD" \
  k apply --dry-run=server --validate=false -f "$ROOT/crds/"
check "CRDs apply" k apply --validate=false -f "$ROOT/crds/"
check "CRDs become Established" \
  k wait --for=condition=Established --timeout=60s \
  crd/condanamespaces.conda.store crd/environments.conda.store \
  crd/specifications.conda.store crd/builds.conda.store

check "example Namespace applies" k apply -f "$ROOT/examples/namespace.yaml"
check "its Kubernetes namespace can be created" k create namespace team-a
check "example Environment applies" k apply -f "$ROOT/examples/data-science.yaml"
check "an Environment with a pip: sub-list applies (mixed string / pip: items kept)" \
  k apply -f - <<'YAML'
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: with-pip, namespace: team-a}
spec:
  channels: [conda-forge]
  dependencies: [python=3.11, {pip: [requests]}]
YAML
check "the pip: sub-list survives the round trip" \
  contains '"pip":["requests"]' k get environment with-pip -n team-a -o 'jsonpath={.spec.dependencies}'
check "short name and printer columns" \
  contains "CURRENT" k get cenv -n team-a
check "cluster-scoped Namespace lists by short name" contains "team-a" k get cns
eventually() { # eventually COMMAND...: retry for up to 30 s (the API server publishes CRD schemas
  local _        # to its OpenAPI document a few seconds after they are Established)
  for _ in $(seq 30); do "$@" && return 0; sleep 1; done
  "$@"
}
check "kubectl explain shows field docs" \
  eventually contains "pip: [requirement" k explain environment.spec.dependencies
check "kubectl explain documents Build status" \
  eventually contains "readable by a person" k explain build.status.message

check "an explicit null in an optional field is accepted (and pruned)" \
  k apply -f - <<'EOF'
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: with-null, namespace: team-a}
spec:
  description: null
  dependencies: [python]
EOF
check "an unknown artifact kind is refused by the server" \
  refused "Unsupported value" k apply -f - <<'EOF'
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: bad-artifact, namespace: team-a}
spec:
  dependencies: [python]
  artifacts: [tarball]
EOF
check "an unknown role is refused by the server" \
  refused "Unsupported value" k apply -f - <<'EOF'
apiVersion: conda.store/v1alpha1
kind: Namespace
metadata: {name: bad-role}
spec:
  roleBindings: [{entity: "*/*", role: owner}]
EOF
check "a malformed Specification hash is refused by the server" \
  refused "spec.sha256" k apply -f - <<'EOF'
apiVersion: conda.store/v1alpha1
kind: Specification
metadata: {name: spec-bad, namespace: team-a}
spec:
  sha256: not-a-hash
  spec: {dependencies: [python]}
EOF
check "a Build with status subresource accepts a status patch" \
  k apply -f - <<'EOF'
apiVersion: conda.store/v1alpha1
kind: Build
metadata: {name: data-science-1, namespace: team-a}
spec: {environment: data-science, specification: spec-0123}
EOF
# kubectl 1.20 has no --subresource: PUT the object with a status to the status endpoint.
put_build_status() {
  k get build data-science-1 -n team-a -o json |
    python3 -c 'import json,sys; b=json.load(sys.stdin); b["status"]={"id":1,"phase":"Queued"}; print(json.dumps(b))' |
    k replace --raw /apis/conda.store/v1alpha1/namespaces/team-a/builds/data-science-1/status -f -
}
check "Build status is written through the status subresource" put_build_status
check "Build printer columns show id and phase" \
  contains "Queued" k get cbuild -n team-a

finish
