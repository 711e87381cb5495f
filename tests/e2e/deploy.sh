#!/usr/bin/env bash
# The deployment artifacts against a real API server: every manifest the Helm chart renders
# (defaults and the other shapes a platform team picks: S3 and PostgreSQL, ingress and OIDC,
# single-node directories with host networking, several replicas) and the kustomize base in
# deploy/kubernetes are accepted by `kubectl apply --dry-run=server`; deploy/kubernetes is what
# the chart renders (scripts/generate-manifests.sh --check); the values schema refuses bad values
# with a message naming them; the RBAC grants what each identity needs and nothing it does not;
# the Dockerfile describes the image the e2e tests build without docker.
#
#   bash tests/e2e/deploy.sh     # starts its own control plane (tests/e2e/cluster.sh) and stops it
#
# The chart is rendered by the real Helm (scripts/helm-template.sh: `helm template`, Helm 3.10.1
# from scripts/install-helm.sh), and installed, upgraded and uninstalled with it below. That the
# chart really runs the operator and gateway, and Environments build through them, is
# tests/e2e/gateway.sh (scripts/local.sh installs the chart with Helm and local values).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CONDA_STORE_CLUSTER_DIR=${CONDA_STORE_CLUSTER_DIR:-/tmp/conda-store-e2e-deploy-$$}
CLUSTER="$ROOT/tests/e2e/cluster.sh"
CHART="$ROOT/charts/conda-store"
WORK=$(mktemp -d)

# shellcheck source=tests/e2e/checks.sh
source "$ROOT/tests/e2e/checks.sh"

cleanup() {
  bash "$CLUSTER" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

render() { # render VALUES-FILE...: the chart as `helm template conda-store -n conda-store`
  local args=()
  for f in "$@"; do args+=(--values "$f"); done
  bash "$ROOT/scripts/helm-template.sh" --release conda-store --namespace conda-store "${args[@]}" "$CHART"
}

# The value shapes, beside the defaults.
cat >"$WORK/production.yaml" <<'EOF'
image: {repository: registry.example.com/platform/conda-store, tag: "2026.11.1", pullPolicy: Always}
imagePullSecrets: [{name: registry-credentials}]
storage:
  backend: s3
  s3: {endpoint: "https://s3.example.com", bucket: envs, region: eu-west-1, prefix: prod/, credentialsSecret: conda-store-s3}
environments:
  persistentVolumeClaim: {claimName: shared-envs, create: false}
operator:
  replicas: 2
  maxBuilds: 8
  policy:
    allowedChannels: [conda-forge, "https://conda.example.com/internal"]
    defaultPackages: [ipykernel]
  extraArgs: [--job-deadline-seconds=7200]
  nodeSelector: {node-role.kubernetes.io/builder: "true"}
  tolerations: [{key: builder, operator: Exists, effect: NoSchedule}]
apiServer:
  replicas: 3
  secretKey: {existingSecret: conda-store-signing, key: key}
  database: {existingSecret: conda-store-postgres, databaseUrlKey: url}
  oidc: {issuer: "https://login.example.com/realms/data", clientId: conda-store, usernameClaim: email,
         displayName: Keycloak, scopes: "openid profile groups",
         clientSecret: {existingSecret: conda-store-oidc}}
  jupyterhub: {url: "https://hub.example.com", apiUrl: "http://proxy-public.jhub",
               clientSecret: {existingSecret: conda-store-hub-service}}
  groupBindings: ["*:{group}/*=editor", "platform:*/*=admin"]
  authenticatedBindings: ["*/*=viewer"]
  anonymousBindings: ["public/*=viewer"]
  service: {type: LoadBalancer, port: 443}
  ingress: {enabled: true, className: nginx, host: conda-store.example.com, tlsSecret: conda-store-tls,
            annotations: {nginx.ingress.kubernetes.io/proxy-body-size: "0"}}
extraEnv: [{name: RUST_LOG, value: "info,conda_store_operator=debug"}]
EOF
cat >"$WORK/single-node.yaml" <<'EOF'
hostNetwork: true
listenHost: 127.0.0.1
environments: {hostPath: /srv/conda-store/envs}
storage: {local: {hostPath: /srv/conda-store/artifacts}}
apiServer:
  usersSecret: conda-store-users
  database: {sqlite: {hostPath: /srv/conda-store/db}}
operator: {leaderElection: false}
logJson: false
EOF

# Rendering (no cluster needed).
check "the chart renders with its defaults" render
check "it renders with S3, PostgreSQL, OIDC, an Ingress and replicas" render "$WORK/production.yaml"
check "it renders for a single node (host paths, host network)" render "$WORK/single-node.yaml"
check "deploy/kubernetes is what the chart renders (generate-manifests --check)" \
  bash "$ROOT/scripts/generate-manifests.sh" --check
render >"$WORK/defaults.out"
render "$WORK/production.yaml" >"$WORK/production.out"
render "$WORK/single-node.yaml" >"$WORK/single-node.out"
# Kubernetes 1.20 has no Pod Security admission: the profile is checked field by field.
OPERATOR_BIN=${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}/debug/conda-store-operator
check "defaults: every pod passes Pod Security \"restricted\"" \
  "$OPERATOR_BIN" check-pod-security "$WORK/defaults.out"
check "production: every pod passes Pod Security \"restricted\"" \
  "$OPERATOR_BIN" check-pod-security "$WORK/production.out"
check "single node: only the host network and paths break \"restricted\"" \
  bash -c '! "$1" check-pod-security "$2" | grep -v "hostNetwork\|hostPath\|pod templates checked"' _ \
  "$OPERATOR_BIN" "$WORK/single-node.out"
check "defaults: claims, both Deployments, RBAC, Service, a generated signing key" \
  python3 - "$WORK/defaults.out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
want = ["ClusterRole/conda-store-api-server", "ClusterRole/conda-store-operator",
        "ClusterRole/conda-store-tenant-edit", "ClusterRole/conda-store-tenant-view",
        "ClusterRoleBinding/conda-store-api-server", "ClusterRoleBinding/conda-store-operator",
        "Deployment/conda-store-api-server", "Deployment/conda-store-operator",
        "NetworkPolicy/conda-store-api-server", "NetworkPolicy/conda-store-builds",
        "NetworkPolicy/conda-store-operator",
        "PersistentVolumeClaim/conda-store-artifacts", "PersistentVolumeClaim/conda-store-db",
        "PersistentVolumeClaim/conda-store-envs", "Role/conda-store-operator",
        "RoleBinding/conda-store-operator", "Secret/conda-store-api-server-secret-key",
        "Service/conda-store-api-server", "ServiceAccount/conda-store-api-server",
        "ServiceAccount/conda-store-operator"]
assert kinds == want, kinds
op = next(d for d in docs if d["metadata"]["name"] == "conda-store-operator" and d["kind"] == "Deployment")
pod = op["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e.get("value") for e in c["env"]}
assert env["CONDA_STORE_LEADER_ELECTION"] == "true", env
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
assert c["resources"]["limits"]["memory"]
# Build pods: nothing connects to them; they reach DNS and public 80/443 only, never private
# ranges or the metadata address.
np = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "conda-store-builds")
sel = np["spec"]["podSelector"]
assert sel["matchLabels"] == {"app.kubernetes.io/managed-by": "conda-store"}, sel
assert {"key": "conda.store/step", "operator": "Exists"} in sel["matchExpressions"], sel
assert np["spec"]["ingress"] == [] and set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
blocks = [t["ipBlock"] for r in np["spec"]["egress"] for t in r.get("to", [])]
assert blocks and all("169.254.0.0/16" in b["except"] and "10.0.0.0/8" in b["except"] for b in blocks), blocks
PY
check "jobPlacement build: no build policy in the release namespace (it would select nothing)" \
  bash -c '! bash "$1/scripts/helm-template.sh" --release conda-store --namespace conda-store \
    --set operator.jobPlacement=build "$1/charts/conda-store" | grep -q "name: conda-store-builds"' _ "$ROOT"
check "production: S3 settings and credentials, PostgreSQL URL from its Secret, Ingress with TLS" \
  python3 - "$WORK/production.out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"], "no claim is created"
assert not [d for d in docs if d["kind"] == "Secret"], "an existing signing key is used"
op = by[("Deployment", "conda-store-operator")]["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e for e in op["env"]}
assert env["CONDA_STORE_STORAGE"]["value"] == "s3" and env["CONDA_STORE_S3_ENDPOINT"]["value"] == "https://s3.example.com"
assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "conda-store-s3"
assert env["CONDA_STORE_S3_SECRET"]["value"] == "conda-store-s3"
assert env["CONDA_STORE_POLICY"]["value"] == "/etc/conda-store/policy/policy.yaml"
assert op["image"] == "registry.example.com/platform/conda-store:2026.11.1"
assert "--job-deadline-seconds=7200" in op["args"]
api = by[("Deployment", "conda-store-api-server")]
assert api["spec"]["replicas"] == 3 and "strategy" not in api["spec"], "PostgreSQL allows rolling updates"
aenv = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
assert aenv["CONDA_STORE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "conda-store-postgres", "key": "url"}
assert aenv["CONDA_STORE_OIDC_ISSUER"]["value"].startswith("https://login.example.com")
assert "--authenticated-binding=*/*=viewer" in api["spec"]["template"]["spec"]["containers"][0]["args"]
assert "--group-binding=*:{group}/*=editor" in api["spec"]["template"]["spec"]["containers"][0]["args"]
assert aenv["CONDA_STORE_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "conda-store-oidc", "key": "client-secret"}
assert aenv["CONDA_STORE_OIDC_DISPLAY_NAME"]["value"] == "Keycloak"
assert aenv["CONDA_STORE_JUPYTERHUB_URL"]["value"] == "https://hub.example.com"
assert aenv["CONDA_STORE_JUPYTERHUB_API_URL"]["value"] == "http://proxy-public.jhub"
assert aenv["CONDA_STORE_JUPYTERHUB_CLIENT_ID"]["value"] == "service-conda-store"
assert aenv["CONDA_STORE_JUPYTERHUB_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "conda-store-hub-service", "key": "api-token"}
ing = by[("Ingress", "conda-store-api-server")]["spec"]
assert ing["tls"][0]["secretName"] == "conda-store-tls"
assert [p["path"] for p in ing["rules"][0]["http"]["paths"]] == ["/conda-store/", "/v2/"]
policy = yaml.safe_load(by[("ConfigMap", "conda-store-operator-policy")]["data"]["policy.yaml"])
assert policy["defaultPackages"] == ["ipykernel"]
PY
check "single node: host paths, host network, probes on the listen address" \
  python3 - "$WORK/single-node.out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
for d in (d for d in docs if d["kind"] == "Deployment"):
    pod = d["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
    for v in pod["volumes"]:
        assert "persistentVolumeClaim" not in v, v
op = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "conda-store-operator")
env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
assert env["CONDA_STORE_ENVS_VOLUME"] == "hostPath:/srv/conda-store/envs", env
assert env["CONDA_STORE_STORAGE_VOLUME"] == "hostPath:/srv/conda-store/artifacts", env
assert env["CONDA_STORE_OPERATOR_LISTEN"] == "127.0.0.1:8080", env
PY

# Bad values: refused by the schema, with the offending value named.
bad() { # bad NEEDLE YAML: rendering with these values fails and says NEEDLE
  local needle=$1
  printf '%s\n' "$2" >"$WORK/bad.yaml"
  refused "$needle" render "$WORK/bad.yaml"
}
check "schema: an unknown backend" bad "storage.backend" 'storage: {backend: gcs}'
check "schema: zero concurrent builds" bad "operator.maxBuilds" 'operator: {maxBuilds: 0}'
check "schema: a misspelt key" bad "operatr" 'operatr: {replicas: 2}'
check "schema: a role binding without a role" bad "apiServer.authenticatedBindings" \
  'apiServer: {authenticatedBindings: ["*/*"]}'
check "schema: a relative host path" bad "environments.hostPath" 'environments: {hostPath: srv/envs}'
check "an issuer without a client id names the missing value" bad "apiServer.oidc.clientId" \
  'apiServer: {oidc: {issuer: "https://login.example.com"}}'
check "a hub without its client secret names the missing value" bad "apiServer.jupyterhub.clientSecret.existingSecret" \
  'apiServer: {jupyterhub: {url: "https://hub.example.com"}}'
check "schema: a group binding without a group" bad "apiServer.groupBindings" \
  'apiServer: {groupBindings: ["team/*=editor"]}'

# The Argo CD health check of examples/argocd-health.md on the statuses it must not call done
# (operator.sh runs it on real Healthy and Degraded Environments).
health() { printf '%s' "$2" | bash "$ROOT/tests/support/argocd-health.sh" | grep "^$1:" >/dev/null; }
check "Argo CD health: no status yet is Progressing" health Progressing '{"metadata":{"generation":1}}'
check "Argo CD health: a status of an older generation is Progressing" health Progressing \
  '{"metadata":{"generation":2},"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True"}]}}'
check "Argo CD health: building is Progressing" health Progressing \
  '{"metadata":{"generation":1},"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"False"},{"type":"Building","status":"True","reason":"Queued","message":""}]}}'

# The Dockerfile describes the image the e2e tests build without docker.
dockerfile_matches_image() {
  local tar
  tar=$(bash "$ROOT/tests/e2e/images.sh" build conda-store) || return 1
  mkdir -p "$WORK/image" && tar -xf "$tar" -C "$WORK/image"
  python3 - "$ROOT/Dockerfile" "$WORK/image" <<'PY'
import json, re, sys
dockerfile, layout = open(sys.argv[1]).read(), sys.argv[2]
final = dockerfile.split("\nFROM ")[-1]  # the last stage is the image
entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", final, re.M).group(1))
user = re.search(r"^USER (\S+)$", final, re.M).group(1)
paths = []  # what every COPY of the last stage puts in the image
for srcs, dest in re.findall(r"^COPY --from=\S+ (.+) (\S+)$", final, re.M):
    paths += [dest + s.rsplit("/", 1)[1] if dest.endswith("/") else dest for s in srcs.split()]
binaries = sorted(paths)
blob = lambda d: f"{layout}/blobs/sha256/{d.split(':')[1]}"
manifest = json.load(open(blob(json.load(open(f"{layout}/index.json"))["manifests"][0]["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))["config"]
assert config["Entrypoint"] == entrypoint, (config["Entrypoint"], entrypoint)
assert config["User"] == user, (config["User"], user)
import subprocess
files = set()
for layer in manifest["layers"]:
    files |= set(subprocess.run(["tar", "-tzf", blob(layer["digest"])], check=True,
                                capture_output=True, text=True).stdout.split())
for b in binaries:  # a file, or a directory (a COPY of one) with files in it
    b = b.lstrip("/")
    assert b in files or any(f.startswith(b.rstrip("/") + "/") for f in files), (b, sorted(f for f in files if "bin/" in f))
print(f"entrypoint {entrypoint}, user {user}, binaries {binaries}")
PY
}
check "the Dockerfile and the image built without docker agree (paths, user, entrypoint)" \
  dockerfile_matches_image

# A real API server from here on.
bash "$CLUSTER" up
eval "$(bash "$CLUSTER" env)"
k() { "$CONDA_STORE_KUBECTL" "$@"; }
# --validate=false: kubectl 1.20 predates the CRDs' x-kubernetes-validations (CEL) rules.
check "the chart's CRDs apply" k apply --validate=false -f "$CHART/crds/"
check "they become Established" k wait --for=condition=Established crd --all --timeout=60s
check "the release namespace exists" k create namespace conda-store
for shape in defaults production single-node; do
  check "server-side dry run accepts every manifest rendered for: $shape" \
    k apply --dry-run=server --validate=false -f "$WORK/$shape.out"
done
check "server-side dry run accepts the kustomize base (deploy/kubernetes)" \
  k apply --dry-run=server --validate=false -k "$ROOT/deploy/kubernetes"
check "and its claims" k apply --dry-run=server -k "$ROOT/deploy/kubernetes/claims"

is() { [[ $1 == "$2" ]] || { echo "expected $2, got $1"; return 1; }; }

# The real Helm against the real API server, as a platform team installs: a release of its own
# (objects named after it), an upgrade that changes a value and keeps the generated signing key
# (the chart looks the Secret up, which only a real install exercises), and an uninstall.
HELM=${CONDA_STORE_HELM:-$(bash "$ROOT/scripts/install-helm.sh")}
hk() { "$HELM" --kubeconfig "$KUBECONFIG" "$@"; }
check "helm install" hk install helmtest "$CHART" -n helmtest --create-namespace
key_of() { k get secret helmtest-conda-store-api-server-secret-key -n helmtest -o 'jsonpath={.data.secret-key}'; }
KEY_BEFORE=$(key_of)
check "helm upgrade with a changed value" hk upgrade helmtest "$CHART" -n helmtest --set operator.maxBuilds=8
check "the upgrade reached the operator's Deployment" \
  is "$(k get deployment helmtest-conda-store-operator -n helmtest -o 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="CONDA_STORE_MAX_BUILDS")].value}')" 8
check "the generated signing key survives the upgrade" is "$(key_of)" "$KEY_BEFORE"
check "helm reports the release deployed at revision 2" \
  contains '"version":2,' hk status helmtest -n helmtest -o json
check "helm uninstall" hk uninstall helmtest -n helmtest

# Least privilege, asked of the API server's authorizer with the chart's own RBAC.
check "the chart's RBAC applies" k apply -f "$ROOT/deploy/kubernetes/operator-rbac.yaml" \
  -f "$ROOT/deploy/kubernetes/api-server-rbac.yaml"
can() { # can yes|no VERB RESOURCE WHO [ARGS...]
  local want=$1 verb=$2 res=$3 who=$4 got
  shift 4
  got=$(k auth can-i "$verb" "$res" --as "system:serviceaccount:conda-store:$who" "$@" 2>/dev/null || true)
  [[ $got == "$want" ]] || { echo "can-i $verb $res as $who $*: $got, want $want"; return 1; }
}
check "operator: creates Jobs in its own namespace (jobPlacement release)" \
  can yes create jobs conda-store-operator -n conda-store
check "operator: and removes a deleted build's Jobs there" \
  can yes deletecollection jobs conda-store-operator -n conda-store
check "operator: no Jobs in the builds' namespaces" can no create jobs conda-store-operator -n team-a
check "operator: no pods there either" can no list pods conda-store-operator -n team-a
check "operator: writes Build status" can yes patch builds.conda.store conda-store-operator -n team-a --subresource=status
check "operator: holds its Lease in its own namespace" can yes update leases.coordination.k8s.io conda-store-operator -n conda-store
check "operator: no Leases elsewhere" can no update leases.coordination.k8s.io conda-store-operator -n team-a
check "operator: reads no Secrets" can no get secrets conda-store-operator -n team-a
check "operator: does not edit Environment specs" can no patch environments.conda.store conda-store-operator -n team-a
apply_build_placement() { # the operator's RBAC when Jobs run in each build's namespace
  bash "$ROOT/scripts/helm-template.sh" --release conda-store --namespace conda-store \
    --set operator.jobPlacement=build --show-only templates/operator-rbac.yaml "$CHART" | k apply -f -
}
check "with jobPlacement build, the operator's RBAC applies" apply_build_placement
check "operator (jobPlacement build): creates Jobs in any namespace" \
  can yes create jobs conda-store-operator -n team-a
check "operator (jobPlacement build): reads pods there" can yes list pods conda-store-operator -n team-a
check "gateway: applies Environments" can yes patch environments.conda.store conda-store-api-server -n team-a
check "gateway: reads running steps' logs" can yes get pods conda-store-api-server -n team-a --subresource=log
check "gateway: reviews tokens" can yes create tokenreviews.authentication.k8s.io conda-store-api-server
check "gateway: creates no Jobs" can no create jobs conda-store-api-server -n team-a
check "gateway: reads no Secrets" can no get secrets conda-store-api-server -n conda-store
check "gateway: does not write Build status" can no patch builds.conda.store conda-store-api-server -n team-a --subresource=status

# Tenants through kubectl, each with its own ServiceAccount bound to Kubernetes' "edit" in its
# own namespace (the chart's tenant roles aggregate into it). Real requests with each token:
# its own namespace works, the other team's does not, and nobody forges what the operator owns.
check "the chart's tenant roles apply" k apply -f "$ROOT/deploy/kubernetes/tenant-rbac.yaml"
for team in team-a team-b; do
  k create namespace "$team" >/dev/null 2>&1 || true
  k create serviceaccount ci -n "$team" >/dev/null
  k create rolebinding ci-edit -n "$team" --clusterrole=edit --serviceaccount="$team:ci" >/dev/null
done
sa_token() { # sa_token NAMESPACE: the ServiceAccount ci's token
  local secret
  for _ in $(seq 100); do
    secret=$(k get sa ci -n "$1" -o 'jsonpath={.secrets[0].name}' 2>/dev/null || true)
    [[ -n $secret ]] && { k get secret "$secret" -n "$1" -o 'jsonpath={.data.token}' | base64 -d; return; }
    sleep 0.2
  done
}
A_TOKEN=$(sa_token team-a)
as_a() { k --token "$A_TOKEN" "$@"; }
env_doc() { printf 'apiVersion: conda.store/v1alpha1\nkind: Environment\nmetadata: {name: %s, namespace: %s}\nspec: {dependencies: [python]}\n' "$1" "$2"; }
build_doc() { printf 'apiVersion: conda.store/v1alpha1\nkind: Build\nmetadata: {name: %s-1234abcd-1, namespace: %s}\nspec: {environment: %s, specification: spec-1234abcd}\n' "$1" "$2" "$1"; }
# What team-b owns (and a Build of team-a's), made by the cluster admin.
env_doc secret team-b | k apply --validate=false -f - >/dev/null
build_doc secret team-b | k apply --validate=false -f - >/dev/null
build_doc own team-a | k apply --validate=false -f - >/dev/null
own_env() { env_doc own team-a | as_a apply --validate=false -f -; }
check "team-a manages Environments in its own namespace" own_env
check "and reads its Builds" as_a get builds -n team-a
create_in_b() { env_doc x team-b | as_a create --validate=false -f -; }
refused_for_a() { # refused_for_a KUBECTL-ARGS...: team-a's token is refused (Forbidden)
  refused Forbidden as_a "$@"
}
check "team-a cannot list team-b's Environments" refused_for_a get environments -n team-b
check "nor read one" refused_for_a get environment secret -n team-b -o yaml
check "nor change one" refused_for_a patch environment secret -n team-b --type merge -p '{"spec":{"dependencies":["evil"]}}'
check "nor delete one" refused_for_a delete environment secret -n team-b
check "nor create one there" refused Forbidden create_in_b
check "nor list team-b's Builds or Specifications" refused_for_a get builds,specifications -n team-b
check "nor cancel team-b's Build" refused_for_a patch build secret-1234abcd-1 -n team-b --type merge -p '{"spec":{"cancel":true}}'
# kubectl 1.20 cannot patch a subresource: the status write goes to the API directly.
forge_status() {
  local server
  server=$(k config view --minify -o 'jsonpath={.clusters[0].cluster.server}')
  curl -sk -o /dev/null -w '%{http_code}' -X PATCH -H "Authorization: Bearer $A_TOKEN" \
    -H 'Content-Type: application/merge-patch+json' -d '{"status":{"phase":"Completed"}}' \
    "$server/apis/conda.store/v1alpha1/namespaces/team-a/builds/own-1234abcd-1/status"
}
check "team-a cannot forge its own Build's status (the operator's)" is "$(forge_status)" 403
printf 'apiVersion: conda.store/v1alpha1\nkind: Specification\nmetadata: {name: spec-x, namespace: team-a}\nspec: {sha256: \"%s\", spec: {dependencies: [python]}}\n' "$(printf '0%.0s' $(seq 64))" |
  k apply --validate=false -f - >/dev/null
check "nor edit its Specifications" refused_for_a patch specification spec-x -n team-a --type merge -p '{"spec":{"spec":{"dependencies":["evil"]}}}'
check "nor read the build Jobs, pods or logs in the release namespace" refused_for_a get jobs,pods -n conda-store
check "nor read Secrets there (S3 credentials, the signing key)" refused_for_a get secrets -n conda-store
check "nor change conda-store Namespaces (role bindings, policy)" refused_for_a patch condanamespaces team-b --type merge -p '{"spec":{}}'

finish
