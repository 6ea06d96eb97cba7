#!/usr/bin/env python3
"""Exports what a running Vigil collector holds of one agent's series over the
last hour, as the recording the store and rule benchmarks replay:

    bench/record_agent.py http://127.0.0.1:9470 bench/data/agent-1h.tsv.gz

Start a collector and an agent (defaults: 10 s flushes), wait an hour, run this.
One line per series: its labels as JSON, a tab, then `t,v` pairs (t in ms)."""
import gzip, json, sys, urllib.parse, urllib.request, time

base, out = sys.argv[1], sys.argv[2]
now = time.time()
query = urllib.parse.urlencode({"query": '{__name__=~".+"}[1h]', "time": f"{now:.3f}"})
with urllib.request.urlopen(f"{base}/api/v1/query?{query}") as r:
    answer = json.load(r)
series = answer["data"]["result"]
with gzip.open(out, "wt") as f:
    for s in sorted(series, key=lambda s: json.dumps(s["metric"], sort_keys=True)):
        points = " ".join(f"{int(round(float(t) * 1000))},{v}" for t, v in s["values"])
        f.write(json.dumps(s["metric"], sort_keys=True) + "\t" + points + "\n")
print(f"{len(series)} series, {sum(len(s['values']) for s in series)} samples -> {out}")
