"""Every REST answer of the gateway checked against conda-store 2025.2.2's own response models.

Usage: PYTHONPATH=tests/e2e/compat python validate.py API_URL TOKEN BUILD_ID OWN_BUILD_ID
  API_URL       the gateway's .../api/v1 URL
  TOKEN         a token of alice (admin of her namespace `alice`, nothing else)
  BUILD_ID      the current build of Demo/Tools (readable by demo/demo)
  OWN_BUILD_ID  a completed build of alice's alice/my_env

The models are conda_store_server._internal.schema's, from PyPI conda-store-server==2025.2.2
installed without its dependencies (conda is a stand-in module beside this file). An answer
with a 4xx status must validate as conda-store's error envelope (APIResponse, status "error");
any other answer as the model conda-store declares for the route. Prints one line per check and
exits non-zero when one fails.
"""

import base64
import json
import sys
import urllib.error
import urllib.request

from conda_store_server._internal import schema

API, TOKEN, BUILD, OWN = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
V2 = API.rsplit("/v1", 1)[0] + "/v2"
DEMO = "Basic " + base64.b64encode(b"demo:demo").decode()
ALICE = "Bearer " + TOKEN

failures = []


def call(method, url, auth=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if auth:
        req.add_header("Authorization", auth)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check(method, path, model, auth=None, body=None, status=None, base=API):
    code, raw = call(method, base + path, auth, body)
    label = f"{method} {path} ({code})"
    try:
        doc = json.loads(raw)
        if code >= 400:
            answer = schema.APIResponse.model_validate(doc)
            assert answer.status == schema.APIStatus.ERROR, "status is not error"
            assert answer.message, "no message"
        else:
            model.model_validate(doc)
        if status is not None:
            assert code == status, f"expected status {status}"
    except Exception as e:  # one line per failure, then go on
        failures.append(label)
        print(f"FAIL {label}: {str(e)[:600]}\n     body: {raw[:300]!r}")
        return None
    print(f"ok   {label} as {model.__name__ if code < 400 else 'APIResponse(error)'}")
    return doc


S = schema
check("GET", "/", S.APIGetStatus, status=200)
check("GET", "/permission/", S.APIGetPermission, status=200)
check("GET", "/permission/", S.APIGetPermission, auth=DEMO, status=200)
check("GET", "/usage/", S.APIGetUsage, auth=DEMO, status=200)
check("POST", "/token/", S.APIPostToken, auth=DEMO, body={}, status=200)
check("POST", "/token/", S.APIPostToken, body={}, status=200)
check("GET", "/namespace/", S.APIListNamespace, auth=DEMO, status=200)
check("GET", "/namespace/Demo/", S.APIGetNamespace, auth=DEMO, status=200)
check("GET", "/namespace/nope/", S.APIGetNamespace, auth=DEMO, status=403)
check("GET", "/namespace/alice/roles", S.APIResponse, auth=ALICE, status=200)
check("PUT", "/namespace/alice/metadata", S.APIAckResponse, auth=ALICE, body={"owner": "alice"}, status=200)
check("POST", "/namespace/Demo/", S.APIAckResponse, auth=DEMO, status=403)
check("POST", "/namespace/no-such-one/", S.APIAckResponse, auth=DEMO, status=403)
check("GET", "/environment/", S.APIListEnvironment, auth=DEMO, status=200)
check("GET", "/environment/?search=too&namespace=Demo", S.APIListEnvironment, auth=DEMO, status=200)
check("GET", "/environment/", S.APIV2ListEnvironment, auth=DEMO, status=200, base=V2)
check("GET", "/environment/Demo/Tools/", S.APIGetEnvironment, auth=DEMO, status=200)
check("GET", "/environment/Demo/nope/", S.APIGetEnvironment, auth=DEMO, status=404)
check("PUT", "/environment/alice/my_env/", S.APIAckResponse, auth=ALICE,
      body={"description": "checked against conda-store's models"}, status=200)
check("GET", "/build/", S.APIListBuild, auth=DEMO, status=200)
check("GET", "/build/?status=COMPLETED&size=1", S.APIListBuild, auth=DEMO, status=200)
check("GET", f"/build/{BUILD}/", S.APIGetBuild, auth=DEMO, status=200)
check("GET", f"/build/{OWN}/", S.APIGetBuild, auth=ALICE, status=200)
check("GET", "/build/abc/", S.APIGetBuild, auth=DEMO, status=400)
check("GET", f"/build/{OWN}/", S.APIGetBuild, auth=DEMO, status=404)
check("GET", f"/build/{BUILD}/packages/", S.APIListCondaPackage, auth=DEMO, status=200)
check("PUT", f"/build/{BUILD}/cancel/", S.APIAckResponse, auth=DEMO, status=403)
check("DELETE", f"/build/{BUILD}/", S.APIAckResponse, auth=DEMO, status=403)
check("GET", "/channel/", S.APIListCondaChannel, status=200)
check("GET", "/package/", S.APIListCondaPackage, status=200)
check("GET", "/package/?search=too&distinct_on=name", S.APIListCondaPackage, status=200)
check("GET", "/setting/", S.APIGetSetting, auth=DEMO, status=200)
check("GET", "/setting/alice/", S.APIGetSetting, auth=ALICE, status=200)
check("GET", "/setting/alice/my_env/", S.APIGetSetting, auth=ALICE, status=200)
check("PUT", "/setting/alice/", S.APIPutSetting, auth=ALICE, body={"conda_channel_alias": None}, status=200)
check("PUT", "/setting/Demo/", S.APIPutSetting, auth=DEMO, body={}, status=403)
spec = json.loads(call("GET", f"{API}/build/{OWN}/", ALICE)[1])["data"]["specification"]["spec"]
post = {"namespace": "alice", "environment_name": "my_env", "specification": json.dumps(spec)}
check("POST", "/specification/", S.APIPostSpecification, auth=ALICE, body=post, status=200)
check("POST", "/specification/", S.APIPostSpecification, auth=ALICE,
      body={"namespace": "alice", "specification": "dependencies: {a: 1}\n"}, status=400)
check("PUT", f"/build/{OWN}/", S.APIPostSpecification, auth=ALICE, status=200)

print(f"{len(failures)} of the answers do not validate" if failures else "every answer validates")
sys.exit(1 if failures else 0)
