"""A PEP 503 "simple" package index of real wheels, written as static files, for tests and
benchmarks (any static HTTP server serves it; `python3 -m http.server` does):

    OUT/simple/index.html                  every project
    OUT/simple/<project>/index.html        its files, each link with `#sha256=<hex>`, and
                                           `data-dist-info-metadata` (PEP 658), so a resolver
                                           reads `OUT/files/<wheel>.metadata` instead of the wheel
    OUT/files/<wheel>, <wheel>.metadata

Wheels come from --wheels (the download cache outside the checkout), downloaded there first by
`pip download` when requirements are given (binary wheels for the host's Python 3.11 on
manylinux x86_64, pure wheels for any; each exactly as named, without its dependencies, so
the index holds what the test names and two versions of one project may be served). Idempotent: files already written are kept. An sdist
(`.tar.gz`) made with --sdist NAME==VERSION (a minimal source tree: PKG-INFO and a setup.py)
is served too, to test that a project with no wheel is refused.

    python3 tests/support/pypi_index.py OUT --wheels DIR [--sdist NAME==VERSION ...] [requirement ...]
"""

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(requirements, wheels):
    wheels.mkdir(parents=True, exist_ok=True)
    stamp = wheels / ".requirements.json"
    if stamp.exists() and json.loads(stamp.read_text()) == requirements:
        return
    for req in requirements:  # one at a time: two versions of one project are no conflict here
        subprocess.check_call([
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--platform",
            "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311", "--abi", "abi3", "--abi", "none", "--no-deps", "-d", str(wheels), req,
        ], stdout=sys.stderr)
    stamp.write_text(json.dumps(requirements))


def wheel_metadata(path):
    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            if n.count("/") == 1 and n.endswith(".dist-info/METADATA"):
                return z.read(n)
    raise SystemExit(f"{path}: no .dist-info/METADATA")


def project_of(filename):
    if filename.endswith(".whl"):
        return canonical(filename.split("-")[0])
    # name-version.tar.gz: the version starts at the last dash.
    return canonical(filename[: -len(".tar.gz")].rsplit("-", 1)[0])


def write_sdist(files, spec):
    import io, tarfile
    name, version = spec.split("==")
    path = files / f"{name}-{version}.tar.gz"
    if path.exists():
        return path
    members = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "setup.py": f"from setuptools import setup\nsetup(name={name!r}, version={version!r})\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{member}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--wheels", required=True)
    parser.add_argument("--sdist", action="append", default=[])
    parser.add_argument("requirements", nargs="*")
    args = parser.parse_intermixed_args()
    wheels = Path(args.wheels)
    if args.requirements:
        download(args.requirements, wheels)
    out = Path(args.out)
    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)
    dists = sorted(wheels.glob("*.whl"))
    dists += [write_sdist(files, s) for s in args.sdist]
    projects = {}
    for src in dists:
        dst = files / src.name
        if not dst.exists():
            shutil.copyfile(src, dst.with_suffix(".part"))
            os.replace(dst.with_suffix(".part"), dst)
        meta_attr = ""
        if src.name.endswith(".whl"):
            meta = files / (src.name + ".metadata")
            if not meta.exists():
                meta.write_bytes(wheel_metadata(dst))
            meta_attr = f' data-dist-info-metadata="sha256={sha256(meta)}" data-core-metadata="sha256={sha256(meta)}"'
        projects.setdefault(project_of(src.name), []).append(
            f'<a href="../../files/{html.escape(src.name)}#sha256={sha256(dst)}"{meta_attr}>{html.escape(src.name)}</a><br/>'
        )
    simple = out / "simple"
    for name, links in projects.items():
        (simple / name).mkdir(parents=True, exist_ok=True)
        (simple / name / "index.html").write_text(
            "<!DOCTYPE html>\n<html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )
    (simple / "index.html").write_text(
        "<!DOCTYPE html>\n<html><body>\n"
        + "\n".join(f'<a href="{n}/">{n}</a><br/>' for n in sorted(projects))
        + "\n</body></html>\n"
    )
    print(out)


if __name__ == "__main__":
    main()
