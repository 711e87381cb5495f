"""A conda channel of real, runnable packages for tests and benchmarks, made on this machine:

- `python`: the host's CPython (Debian's /usr/bin/python3.X with its standard library), made to
  behave like conda's: a `sitecustomize.py` puts `lib/pythonX.Y/site-packages` on the path
  (Debian's `site` only adds its own dist-packages directories), its `sysconfig` installs into
  that prefix scheme (Debian's defaults to `local/lib/.../dist-packages`), and the shared
  libraries it and its extension modules need (libz, libexpat, libssl, ...) are in `lib/`,
  found through the binary's RPATH `$ORIGIN/../lib` (set with patchelf) as conda-forge's python
  finds its own. So it
  runs from an installed prefix, from an unpacked archive, and in a build pod whose image has
  glibc and nothing else (uv runs it to install a pip section). For an image with no base at
  all, glibc's loader and libraries are in `lib/` too: `lib/ld-linux-x86-64.so.2 bin/python3.X`
  starts it;
- PyPI wheels repackaged as conda packages: pure wheels as `noarch: python` (entry points in
  `info/link.json`, installed by the conda client), binary wheels as `linux-64` for that Python;
  dependencies from the wheels' `Requires-Dist` (markers evaluated for this Python on Linux).

Archives are `.tar.bz2` (conda-store fetches `.conda` files with range requests, which a plain
static server does not answer); each subdir gets `repodata.json` and `repodata.json.bz2`, the
channel a `channeldata.json`. Wheels are downloaded once into --wheels (a cache outside the
checkout). Idempotent: an existing channel with the same inputs is kept.

    python3 tests/support/real_channel.py OUT --wheels DIR flask numpy ...
"""

import argparse
import bz2
import email.parser
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from pip._vendor.packaging.markers import Marker
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

HOST_PYTHON = "/usr/bin/python3.11"
TIMESTAMP = 1_700_000_000_000
SITECUSTOMIZE = '''"""Written by the test channel: Debian's site module only adds its own dist-packages."""
import os, site, sys
_here = os.path.join(sys.prefix, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
if os.path.isdir(_here) and _here not in sys.path:
    site.addsitedir(_here)
'''


def host_python():
    out = subprocess.check_output(
        [HOST_PYTHON, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], text=True
    )
    full = out.strip()
    return full, ".".join(full.split(".")[:2])


def write_package(out_dir, subdir, name, version, build, depends, files, noarch=None, link=None):
    """files: list of (path in package, bytes, mode). Returns the archive's file name."""
    index = {
        "name": name, "version": version, "build": build, "build_number": 0,
        "depends": depends, "subdir": subdir, "timestamp": TIMESTAMP, "license": "various",
    }
    if noarch:
        index["noarch"] = noarch
    paths = []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        def add(path, data, mode=0o644, link_target=None):
            ti = tarfile.TarInfo(path)
            ti.mtime = TIMESTAMP // 1000
            if link_target is not None:
                ti.type, ti.linkname = tarfile.SYMTYPE, link_target
                tar.addfile(ti)
            else:
                ti.size, ti.mode = len(data), mode
                tar.addfile(ti, io.BytesIO(data))
        for path, data, mode in sorted(files, key=lambda f: f[0]):
            if isinstance(data, str):  # a symlink target
                add(path, b"", link_target=data)
                paths.append({"_path": path, "path_type": "softlink"})
                continue
            add(path, data, mode)
            paths.append({"_path": path, "path_type": "hardlink",
                          "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)})
        add("info/index.json", json.dumps(index, indent=2, sort_keys=True).encode())
        add("info/files", "".join(p["_path"] + "\n" for p in paths).encode())
        add("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}, sort_keys=True).encode())
        if link:
            add("info/link.json", json.dumps(link, sort_keys=True).encode())
    file_name = f"{name}-{version}-{build}.tar.bz2"
    (out_dir / subdir).mkdir(parents=True, exist_ok=True)
    (out_dir / subdir / file_name).write_bytes(buf.getvalue())
    return file_name


def shared_libraries(binary):
    """The shared libraries ldd resolves for `binary`, with the loader: {soname: real path}."""
    libs = {}
    for line in subprocess.check_output(["ldd", binary], text=True).splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs[parts[0]] = os.path.realpath(parts[2])
        elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
            libs[os.path.basename(parts[0])] = os.path.realpath(parts[0])
    return libs


def relinked_python(short):
    """The host's python binary with RUNPATH $ORIGIN/../lib (patchelf works on a copy)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "python"
        shutil.copyfile(HOST_PYTHON, copy)
        # DT_RPATH, not RUNPATH: it also applies to what the extension modules load.
        subprocess.check_call(["patchelf", "--force-rpath", "--set-rpath", "$ORIGIN/../lib", str(copy)])
        return copy.read_bytes()


def compiled(source, rel, short):
    """The module's bytecode as an unchecked-hash .pyc (PEP 552: valid whatever the file times),
    as conda's python ships its standard library compiled: without it every start of a fresh
    prefix compiles what it imports. None when this interpreter cannot compile it for `short`."""
    import importlib.util
    import py_compile
    import tempfile
    if "%d.%d" % sys.version_info[:2] != short:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "m.py", Path(tmp) / "m.pyc"
        src.write_bytes(source)
        if py_compile.compile(str(src), cfile=str(out), dfile=rel, doraise=False,
                              invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH) is None:
            return None
        return out.read_bytes()


def python_package(out_dir):
    full, short = host_python()
    lib = Path("/usr/lib") / f"python{short}"
    files = [(f"bin/python{short}", relinked_python(short), 0o755),
             ("bin/python3", f"python{short}", 0), ("bin/python", f"python{short}", 0)]
    libs = shared_libraries(HOST_PYTHON)
    for ext in sorted((lib / "lib-dynload").glob("*.so")):
        libs.update(shared_libraries(str(ext)))
    # glibc's compatibility libraries, which wheels built for older glibc (manylinux2014) link.
    for compat in ("libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1"):
        host = Path("/lib/x86_64-linux-gnu") / compat
        if host.exists():
            libs.setdefault(compat, os.path.realpath(host))
    for soname, path in sorted(libs.items()):
        files.append((f"lib/{soname}", Path(path).read_bytes(), 0o755))
    for root, dirs, names in os.walk(lib):
        rel_root = Path(root).relative_to(lib)
        # Tests, caches and Debian's dist-packages marker are not part of a conda python.
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "test", "idlelib", "tkinter", "turtledemo")]
        for n in names:
            if n in ("EXTERNALLY-MANAGED", "sitecustomize.py"):
                continue
            p = Path(root) / n
            if p.is_symlink() or not p.is_file():
                continue
            data = p.read_bytes()
            if n == "sysconfig.py" and rel_root == Path("."):
                # conda's python installs into its prefix's site-packages (posix_prefix).
                data = data.replace(b"prefix_scheme = 'posix_local'", b"prefix_scheme = 'posix_prefix'")
            rel = f"lib/python{short}/{rel_root / n}".replace("/./", "/")
            files.append((rel, data, 0o644))
            if n.endswith(".py"):
                pyc = compiled(data, rel, short)
                if pyc is not None:
                    stem = n[:-3]
                    tag = f"cpython-{short.replace('.', '')}"
                    files.append((f"{rel.rsplit('/', 1)[0]}/__pycache__/{stem}.{tag}.pyc", pyc, 0o644))
    files.append((f"lib/python{short}/sitecustomize.py", SITECUSTOMIZE.encode(), 0o644))
    files.append((f"lib/python{short}/site-packages/README.txt", b"conda site-packages\n", 0o644))
    write_package(out_dir, "linux-64", "python", full, "host_0", [], files)
    return full, short


def download_wheels(requirements, wheels, short):
    wheels.mkdir(parents=True, exist_ok=True)
    stamp = wheels / ".requirements.json"
    if stamp.exists() and json.loads(stamp.read_text()) == requirements:
        return
    subprocess.check_call([
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--python-version", short, "--implementation", "cp",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "--platform", "any",
        "-d", str(wheels), *requirements,
    ])
    stamp.write_text(json.dumps(requirements))


def conda_depends(meta, short):
    env = {"python_version": short, "python_full_version": short + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    deps = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        spec = ",".join(sorted(str(s) for s in req.specifier))
        deps.append(f"{canonicalize_name(req.name)} {spec}".strip())
    return deps


def wheel_package(out_dir, wheel, short):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        meta = email.parser.Parser().parsestr(z.read(f"{dist_info}/METADATA").decode())
        wheel_meta = email.parser.Parser().parsestr(z.read(f"{dist_info}/WHEEL").decode())
        pure = wheel_meta.get("Root-Is-Purelib", "false").lower() == "true"
        name = canonicalize_name(meta["Name"])
        version = meta["Version"]
        entry_points = []
        if f"{dist_info}/entry_points.txt" in names:
            section = None
            for line in z.read(f"{dist_info}/entry_points.txt").decode().splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]")
                elif section == "console_scripts" and "=" in line:
                    k, v = (x.strip() for x in line.split("=", 1))
                    entry_points.append(f"{k} = {v}")
        prefix = "site-packages" if pure else f"lib/python{short}/site-packages"
        files = []
        for n in names:
            if n.endswith("/") or n.endswith("/RECORD"):
                continue
            data = z.read(n)
            if n.endswith("/INSTALLER"):
                data = b"conda\n"
            mode = 0o755 if (z.getinfo(n).external_attr >> 16) & 0o111 else 0o644
            files.append((f"{prefix}/{n}", data, mode))
    depends = conda_depends(meta, short)
    if pure:
        depends.append("python")
        link = {"noarch": {"type": "python", "entry_points": entry_points},
                "package_metadata_version": 1}
        write_package(out_dir, "noarch", name, version, "pyhd_0", depends, files,
                      noarch="python", link=link)
    else:
        depends.append(f"python >={short},<{short.split('.')[0]}.{int(short.split('.')[1]) + 1}")
        for ep in entry_points:  # binary packages install their scripts themselves
            cmd, target = (x.strip() for x in ep.split("=", 1))
            module, func = target.split(":")
            script = (f"#!/usr/bin/env python{short}\nimport sys\nfrom {module} import {func}\n"
                      f"sys.exit({func}())\n")
            files.append((f"bin/{cmd}", script.encode(), 0o755))
        write_package(out_dir, "linux-64", name, version, f"py{short.replace('.', '')}_0",
                      depends, files)


def index(out_dir):
    subdirs = {}
    for subdir in ("noarch", "linux-64"):
        d = out_dir / subdir
        d.mkdir(parents=True, exist_ok=True)
        packages = {}
        for archive in sorted(d.glob("*.tar.bz2")):
            data = archive.read_bytes()
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:bz2") as tar:
                record = json.load(tar.extractfile("info/index.json"))
            record.update(md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(),
                          size=len(data))
            packages[archive.name] = record
        repodata = {"info": {"subdir": subdir}, "packages": packages, "packages.conda": {},
                    "removed": [], "repodata_version": 1}
        raw = json.dumps(repodata, indent=1, sort_keys=True).encode()
        (d / "repodata.json").write_bytes(raw)
        (d / "repodata.json.bz2").write_bytes(bz2.compress(raw))
        subdirs[subdir] = packages
    names = {r["name"]: {"subdirs": sorted(s for s, p in subdirs.items()
                                           if any(x["name"] == r["name"] for x in p.values())),
                         "version": r["version"]}
             for p in subdirs.values() for r in p.values()}
    (out_dir / "channeldata.json").write_text(json.dumps(
        {"channeldata_version": 1, "packages": names, "subdirs": sorted(subdirs)}, indent=1, sort_keys=True))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--wheels", required=True, help="the wheel download cache")
    parser.add_argument("requirements", nargs="*")
    args = parser.parse_intermixed_args()
    out = Path(args.out)
    _, short = host_python()
    stamp = out / ".inputs.json"
    inputs = {"requirements": args.requirements, "python": host_python()[0], "version": 5}
    if stamp.exists() and json.loads(stamp.read_text()) == inputs:
        print(out)
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.time()
    python_package(out)
    if args.requirements:
        download_wheels(args.requirements, Path(args.wheels), short)
        for wheel in sorted(Path(args.wheels).glob("*.whl")):
            wheel_package(out, wheel, short)
    index(out)
    stamp.write_text(json.dumps(inputs))
    print(f"real channel in {out} ({time.time() - start:.1f} s)", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
