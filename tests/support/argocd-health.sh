#!/usr/bin/env bash
# Runs the Argo CD health check of examples/argocd-health.md on an Environment: the Lua script
# is taken from the document's ConfigMap snippet and run by Lua 5.1 (the language version of
# gopher-lua, which Argo CD embeds) with `obj` set to the object, read as JSON on stdin.
# Prints "STATUS: message".
#
#   kubectl get environment tools -n demo -o json | bash tests/support/argocd-health.sh
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
command -v lua5.1 >/dev/null || { echo "lua5.1 is missing (apt-get install lua5.1)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/obj.json"
python3 - "$ROOT/examples/argocd-health.md" "$work/check.lua" "$work/obj.json" <<'PY'
import json, re, sys, textwrap
doc = open(sys.argv[1]).read()
m = re.search(r"resource\.customizations\.health\.conda\.store_Environment: \|\n(.*?)\n```", doc, re.S)
if not m:
    sys.exit("no health check in examples/argocd-health.md")
script = textwrap.dedent(m.group(1))

def lua(v):
    # JSON as a Lua table literal: what Argo CD hands the script (null becomes nil).
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "{" + ", ".join(lua(x) for x in v) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua(x)}" for k, x in v.items()) + "}"

obj = json.load(open(sys.argv[3]))
with open(sys.argv[2], "w") as f:
    f.write(f"local obj = {lua(obj)}\n")
    f.write("local function check()\n" + script + "\nend\n")
    f.write('local hs = check()\nprint(hs.status .. ": " .. (hs.message or ""))\n')
PY
lua5.1 "$work/check.lua"
