"""The end-to-end benchmark's driver: the same environments built by conda-store-server 2025.2.2
(the upstream peer) and by this project, through the same REST calls (conda-store's API, which
both serve), in alternating runs. For each build it times POST /specification/ until the build
is COMPLETED, and until its lockfile, YAML and archive can all be downloaded.

Prints one JSON object: {env: {side: [{"completed": s, "artifacts": s}, ...]}}.
"""

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request


class Side:
    def __init__(self, name, url, namespace, auth=None):
        self.name, self.api, self.namespace = name, url.rstrip("/") + "/api/v1", namespace
        self.headers = {"Content-Type": "application/json"}
        if auth:
            self.headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()

    def call(self, method, path, body=None):
        for attempt in range(5):
            req = urllib.request.Request(self.api + path, method=method, headers=self.headers,
                                         data=json.dumps(body).encode() if body is not None else None)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return json.load(r)
            except urllib.error.HTTPError as e:
                # A server error right after start-up (the upstream's worker may not be up yet)
                # is retried; it is reported in any case.
                detail = e.read().decode(errors="replace")[:500]
                print(f"{self.name}: {method} {path}: {e.code} {detail}", file=sys.stderr)
                if e.code < 500 or attempt == 4:
                    raise
                time.sleep(1)

    def available(self, path):
        req = urllib.request.Request(self.api + path, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read(1)
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def build(self, name, channel, deps, deadline):
        spec = f"name: {name}\nchannels: [{channel}]\ndependencies: [{', '.join(deps)}]\n"
        start = time.perf_counter()
        build_id = self.call("POST", "/specification/",
                             {"namespace": self.namespace, "specification": spec})["data"]["build_id"]
        completed = None
        while time.perf_counter() - start < deadline:
            status = self.call("GET", f"/build/{build_id}/")["data"]["status"]
            if status == "COMPLETED":
                completed = time.perf_counter() - start
                break
            if status == "FAILED":
                raise RuntimeError(f"{self.name}: build {build_id} of {name} failed")
            time.sleep(0.1)
        if completed is None:
            raise RuntimeError(f"{self.name}: build {build_id} of {name} timed out")
        pending = {"lockfile/", "yaml/", "archive/"}
        while pending and time.perf_counter() - start < deadline:
            pending = {a for a in pending if not self.available(f"/build/{build_id}/{a}")}
            if pending:
                time.sleep(0.1)
        if pending:
            raise RuntimeError(f"{self.name}: build {build_id}: {pending} never available")
        return {"completed": completed, "artifacts": time.perf_counter() - start, "id": build_id}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ours", required=True)
    p.add_argument("--ours-auth", default="demo:demo")
    p.add_argument("--ours-namespace", default="bench")
    p.add_argument("--peer", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--env", action="append", required=True, help="NAME=dep,dep,...")
    p.add_argument("--deadline", type=float, default=300)
    a = p.parse_args()
    sides = [Side("upstream", a.peer, "default"), Side("ours", a.ours, a.ours_namespace, a.ours_auth)]
    results = {}
    for env in a.env:
        name, deps = env.split("=", 1)
        results[name] = {s.name: [] for s in sides}
        for run in range(a.runs):
            # Alternate which side goes first, so neither always meets a quieter machine.
            order = sides if run % 2 == 0 else list(reversed(sides))
            for s in order:
                try:
                    r = s.build(f"{name}-{run}", a.channel, deps.split(","), a.deadline)
                except RuntimeError as e:
                    # One side's stuck or failed build is reported and the runs go on (the
                    # upstream's Celery worker has been seen to leave a build QUEUED).
                    print(f"{name} run {run} {s.name}: {e}", file=sys.stderr)
                    results[name][s.name].append({"completed": None, "artifacts": None,
                                                  "error": str(e)})
                    continue
                results[name][s.name].append(r)
                print(f"{name} run {run} {s.name}: completed {r['completed']:.2f} s, "
                      f"artifacts {r['artifacts']:.2f} s", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
