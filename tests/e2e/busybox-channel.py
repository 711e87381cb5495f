"""Writes a conda channel holding one package, `busybox`, whose bin/busybox is the static binary
given: an environment of it runs in a container without any base image (the images this project
builds have none), so the node's containerd can pull an environment's image from the gateway's
registry and run a command of the environment.

Usage: python3 busybox-channel.py OUT_DIR BUSYBOX_BINARY [NAME VERSION PATH]

With NAME VERSION PATH the package is NAME at VERSION and the binary is installed at PATH (the
pip e2e makes a hostile `python` this way).
"""

import hashlib
import io
import json
import os
import sys
import tarfile

out, binary = sys.argv[1], sys.argv[2]
data = open(binary, "rb").read()
name, version, target = (sys.argv[3:6] if len(sys.argv) > 5 else ("busybox", "1.35.0", "bin/busybox"))
build = "0"
index = {"name": name, "version": version, "build": build, "build_number": 0, "depends": [],
         "subdir": "linux-64", "arch": "x86_64", "platform": "linux", "license": "GPL-2.0-only"}
paths = {"paths_version": 1, "paths": [{"_path": target, "path_type": "hardlink",
         "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}]}


def add(tar, path, content, mode=0o644):
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(content), mode, 0
    tar.addfile(info, io.BytesIO(content))


buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
    add(tar, "info/index.json", json.dumps(index).encode())
    add(tar, "info/paths.json", json.dumps(paths).encode())
    add(tar, "info/files", target.encode() + b"\n")
    add(tar, target, data, 0o755)
pkg = buf.getvalue()
file_name = f"{name}-{version}-{build}.tar.bz2"
for subdir in ("linux-64", "noarch"):
    os.makedirs(os.path.join(out, subdir), exist_ok=True)
open(os.path.join(out, "linux-64", file_name), "wb").write(pkg)
record = dict(index, md5=hashlib.md5(pkg).hexdigest(), sha256=hashlib.sha256(pkg).hexdigest(),
              size=len(pkg))
repodata = {"info": {"subdir": "linux-64"}, "packages": {file_name: record}, "packages.conda": {}}
json.dump(repodata, open(os.path.join(out, "linux-64", "repodata.json"), "w"))
json.dump({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}},
          open(os.path.join(out, "noarch", "repodata.json"), "w"))
print(out)
