"""Where this project's build time goes in the end-to-end benchmark: for each Build of the bench
namespace, each step's Job as Kubernetes recorded it (created, container started, container
finished; 1 s resolution) and the step's own duration from its report. Reads
`kubectl get builds,jobs,pods -A -o json` on stdin; prints a table of medians."""

import json
import statistics
import sys
from datetime import datetime


def t(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timestamp() if s else None


items = json.load(sys.stdin)["items"]
builds = {b["metadata"]["name"]: b for b in items if b["kind"] == "Build" and b["metadata"]["namespace"] == "bench"}
jobs = {j["metadata"]["uid"]: j for j in items if j["kind"] == "Job"}
pods = [p for p in items if p["kind"] == "Pod"]
rows = {}
per_build = []
for name, b in sorted(builds.items(), key=lambda kv: kv[1].get("status", {}).get("id") or 0):
    st = b.get("status", {})
    start = t(st.get("scheduledOn"))
    ended = t(st.get("endedOn"))
    line = {"build": st.get("id"), "environment": b["spec"].get("environment", "?"),
            "total": f"{ended - start:.0f} s" if start and ended else "-"}
    per_build.append(line)
    for sj in st.get("jobs", []):
        job = jobs.get(sj["uid"])
        pod = next((p for p in pods if p["metadata"].get("labels", {}).get("controller-uid") == sj["uid"]), None)
        if not job or not pod:
            continue
        cs = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("terminated", {})
        created, started, finished = t(job["metadata"]["creationTimestamp"]), t(cs.get("startedAt")), t(cs.get("finishedAt"))
        report = json.loads(cs.get("message") or "{}")
        r = rows.setdefault(sj["step"], {"created after request": [], "pod start": [], "step (its report)": [], "container": []})
        r["created after request"].append(created - start)
        if started:
            r["pod start"].append(started - created)
        if started and finished:
            r["container"].append(finished - started)
        r["step (its report)"].append(report.get("durationMs", 0) / 1000)
        line[sj["step"]] = (f"{started - created:.0f} + {finished - started:.0f} s ({report.get('durationMs', 0) / 1000:.1f} s)"
                            if started and finished else "-")
print("| step | created after request | pod start | container | step (its report) |")
print("|---|---|---|---|---|")
for step in ("solve", "install", "pack", "image"):
    if step in rows:
        r = rows[step]
        med = lambda k: f"{statistics.median(r[k]):.1f} s" if r[k] else "-"
        print(f"| {step} | {med('created after request')} | {med('pod start')} | {med('container')} | {med('step (its report)')} |")

# Each build on its own: the first of an environment has a cold package cache.
print()
print("Each build: pod start + container (the step's own report), 1 s resolution:")
print("| build | environment | request → ended | solve | install | pack |")
print("|---|---|---|---|---|---|")
for line in per_build:
    print(f"| {line['build']} | {line['environment']} | {line['total']} | "
          + " | ".join(line.get(step, "-") for step in ("solve", "install", "pack")) + " |")
