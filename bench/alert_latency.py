#!/usr/bin/env python3
"""End-to-end alert latency: from the moment a host value crosses a threshold
to the webhook's arrival, with `for: 0s` and `group_wait: 0s`.

    cargo build --release --bins
    bench/alert_latency.py --crossings 50 --flush 10s     # Vigil's defaults
    bench/alert_latency.py --crossings 50 --flush 1s      # agent flushing every second
    bench/alert_latency.py --stack prometheus --interval 1s   # node_exporter + Prometheus + Alertmanager, tuned
    bench/alert_latency.py --stack prometheus --crossings 50 --overlap 20   # their defaults: minutes each, so overlapped

It starts a release collector and agent on 127.0.0.1 (their own ports and
folders), a local webhook receiver, and a rule `latency_probe > 5` on a value
the agent reads from its textfile directory. Each crossing writes the value
above the threshold at a random moment, waits for the firing notification,
then writes it back below and waits for the resolution. It prints the median,
p90, p99 and worst latency of the firing notifications."""
import argparse, http.server, json, math, os, random, shutil, signal, socket, statistics, subprocess
import sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


arrivals = []  # (time, status, crossing labels of the firing alerts)
arrived = threading.Condition()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        payload = json.loads(body)
        status = payload.get("status")
        crossings = {a["labels"].get("crossing") for a in payload.get("alerts", []) if a.get("status") == "firing"}
        with arrived:
            arrivals.append((now, status, crossings))
            arrived.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_for(status, since, timeout=120):
    with arrived:
        deadline = time.time() + timeout
        while True:
            for t, s, _ in arrivals:
                if s == status and t >= since:
                    return t
            left = deadline - time.time()
            if left <= 0:
                raise SystemExit(f"no {status} notification within {timeout} s")
            arrived.wait(left)


def parse_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u) and text[: -len(u)].replace(".", "", 1).isdigit():
            return float(text[: -len(u)]) * units[u]
    raise SystemExit(f"bad duration {text!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossings", type=int, default=50)
    ap.add_argument("--flush", default="10s")
    ap.add_argument("--stack", choices=["vigil", "prometheus"], default="vigil")
    ap.add_argument("--overlap", type=float, default=None, metavar="SECONDS",
                    help="start a crossing on its own series every SECONDS (plus a random phase) without "
                         "waiting for the previous one; each alert is its own group (group_by ['...']). "
                         "For stacks whose defaults take minutes per crossing")
    ap.add_argument("--interval", default=None,
                    help="prometheus stack: scrape and evaluation interval (default: theirs, 1m), "
                         "and group_wait 0s instead of Alertmanager's 30s")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="vigil-latency-")
    procs = []
    try:
        hook_port = free_port()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        textfile = os.path.join(work, "textfile")
        os.makedirs(textfile)

        values = {}

        def write(v, crossing=""):
            values[crossing] = v
            tmp = os.path.join(textfile, "probe.tmp")
            with open(tmp, "w") as f:
                f.write("# TYPE latency_probe gauge\n")
                for c, x in sorted(values.items()):
                    f.write(f'latency_probe{{crossing="{c}"}} {x}\n' if c else f"latency_probe {x}\n")
            os.rename(tmp, os.path.join(textfile, "probe.prom"))

        write(0)
        with open(os.path.join(work, "rules.yml"), "w") as f:
            f.write("groups:\n  - name: latency\n    rules:\n      - alert: LatencyProbe\n"
                    "        expr: latency_probe > 5\n        for: 0s\n")
        if args.stack == "prometheus":
            start_prometheus_stack(work, textfile, hook_port, args.interval, procs, args.overlap)
        else:
            start_vigil(work, textfile, hook_port, args.flush, procs, args.overlap)
        period = parse_seconds(args.interval or "60s") if args.stack == "prometheus" else parse_seconds(args.flush)
        latencies = []
        if args.overlap:
            latencies = overlapping(args.crossings, args.overlap, write)
        for i in range(0 if args.overlap else args.crossings):
            # Cross at a random phase of the sender's and evaluator's clocks:
            # a uniform wait over one whole period.
            time.sleep(0.5 + random.uniform(0, period))
            crossed = time.time()
            write(10)
            fired = wait_for("firing", crossed, timeout=600)
            latencies.append(fired - crossed)
            time.sleep(random.uniform(0.2, 1.0))
            dropped = time.time()
            write(0)
            wait_for("resolved", dropped, timeout=900)
            print(f"crossing {i + 1}: {latencies[-1] * 1000:.0f} ms", file=sys.stderr)
        latencies.sort()
        # Nearest rank: the smallest value with at least p of the crossings at or below it.
        q = lambda p: latencies[max(0, math.ceil(p * len(latencies)) - 1)]
        what = (f"vigil, flush {args.flush}" if args.stack == "vigil"
                else f"prometheus 2.42 + node_exporter + alertmanager 0.25, interval {args.interval or 'default (1m, group_wait 30s)'}")
        print(f"{what}, {len(latencies)} crossings: median {statistics.median(latencies) * 1000:.0f} ms, "
              f"p90 {q(0.9) * 1000:.0f} ms, p99 {q(0.99) * 1000:.0f} ms, worst {latencies[-1] * 1000:.0f} ms, "
              f"best {latencies[0] * 1000:.0f} ms")
        if args.stack == "vigil":
            report_pipeline(procs)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP"):
            print(f"kept {work} (collector.log, agent.log)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def overlapping(n, every, write):
    """Crossings on their own series, one started every `every` seconds at a
    random phase; returns each one's latency once all have fired."""
    crossed = {}
    for i in range(n):
        time.sleep(random.uniform(0, every))
        crossed[str(i)] = time.time()
        write(10, str(i))
        time.sleep(every - (time.time() - crossed[str(i)]) % every)
    fired = {}
    with arrived:
        deadline = time.time() + 900
        while len(fired) < n:
            for t, status, crossings in arrivals:
                for c in crossings:
                    if status == "firing" and c in crossed and c not in fired:
                        fired[c] = t
            if len(fired) < n:
                if time.time() > deadline:
                    raise SystemExit(f"only {len(fired)} of {n} crossings fired within 900 s")
                arrived.wait(5)
    out = []
    for c, t in sorted(fired.items(), key=lambda kv: int(kv[0])):
        out.append(t - crossed[c])
        print(f"crossing {int(c) + 1}: {out[-1] * 1000:.0f} ms", file=sys.stderr)
    return out


def start_prometheus_stack(work, textfile, hook_port, interval, procs, overlap):
    ne, prom, am = free_port(), free_port(), free_port()
    with open(os.path.join(work, "am.yml"), "w") as f:
        wait = "  group_wait: 0s\n  group_interval: 1s\n" if interval else ""
        group_by = "['...']" if overlap else "[alertname]"
        f.write(f"route:\n  receiver: hook\n  group_by: {group_by}\n{wait}receivers:\n  - name: hook\n"
                f"    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n")
    with open(os.path.join(work, "prom.yml"), "w") as f:
        glob = f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n" if interval else ""
        f.write(f"{glob}rule_files: ['{work}/rules.yml']\nalerting:\n  alertmanagers:\n    - static_configs:\n"
                f"        - targets: ['127.0.0.1:{am}']\nscrape_configs:\n  - job_name: node\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{ne}']\n")
    procs.append(subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne}",
                                   f"--collector.textfile.directory={textfile}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen(["prometheus-alertmanager", f"--config.file={work}/am.yml",
                                   f"--storage.path={work}/am-data", f"--web.listen-address=127.0.0.1:{am}",
                                   "--cluster.listen-address="],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={work}/prom-data",
                                   f"--web.listen-address=127.0.0.1:{prom}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(5)


def report_pipeline(procs):
    """Prints the collector's own view: from the agent's batch to the webhook's 2xx."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{procs[0].http_port}/metrics", timeout=5).read().decode()
    except OSError as e:
        print(f"cannot read the collector's metrics: {e}", file=sys.stderr)
        return
    total = count = 0.0
    for line in body.splitlines():
        if line.startswith("vigil_collector_notification_latency_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vigil_collector_notification_latency_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    if count:
        print(f"collector: batch closed -> webhook 2xx, mean {total / count * 1000:.1f} ms over {count:.0f} notifications")


def start_vigil(work, textfile, hook_port, flush, procs, overlap):
    http_port, ingest_port = free_port(), free_port()
    with open(os.path.join(work, "routing.yml"), "w") as f:
        group_by = "['...']" if overlap else "[alertname]"
        f.write(f"route:\n  receiver: hook\n  group_by: {group_by}\n  group_wait: 0s\n"
                f"  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n"
                f"    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n")
    with open(os.path.join(work, "collector.toml"), "w") as f:
        f.write(f"[http]\nlisten = \"127.0.0.1:{http_port}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\n"
                f"[store]\ndata_dir = \"{work}/data\"\n[rules]\nfiles = [\"{work}/rules.yml\"]\nhost_down = false\n"
                f"[notify]\nalertmanager_config = \"{work}/routing.yml\"\n")
    with open(os.path.join(work, "agent.toml"), "w") as f:
        f.write(f"flush_interval = \"{flush}\"\ndata_dir = \"{work}/agent-data\"\n[collector]\nendpoint = \"http://127.0.0.1:{ingest_port}\"\n"
                f"[sources.textfile]\ndirectory = \"{textfile}\"\n")
    bins = os.path.join(ROOT, "target", "release")
    collector = subprocess.Popen([f"{bins}/vigil-collector", "--config", f"{work}/collector.toml"],
                                 stdout=subprocess.DEVNULL, stderr=open(f"{work}/collector.log", "w"))
    collector.http_port = http_port
    procs.append(collector)
    time.sleep(1)
    procs.append(subprocess.Popen([f"{bins}/vigil-agent", "--config", f"{work}/agent.toml"],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{work}/agent.log", "w")))
    time.sleep(3)


if __name__ == "__main__":
    main()
