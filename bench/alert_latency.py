#!/usr/bin/env python3
"""End-to-end alert latency: from the moment a host value crosses a threshold
to the webhook's arrival, with `for: 0s` and `group_wait: 0s`.

    cargo build --release --bins
    bench/alert_latency.py --crossings 50 --flush 10s     # Vigil's defaults
    bench/alert_latency.py --crossings 50 --flush 1s      # agent flushing every second
    bench/alert_latency.py --stack prometheus --interval 1s   # node_exporter + Prometheus + Alertmanager, tuned
    bench/alert_latency.py --stack prometheus --crossings 3   # the same at their defaults (minutes each)

It starts a release collector and agent on 127.0.0.1 (their own ports and
folders), a local webhook receiver, and a rule `latency_probe > 5` on a value
the agent reads from its textfile directory. Each crossing writes the value
above the threshold at a random moment, waits for the firing notification,
then writes it back below and waits for the resolution. It prints the median,
p90, p99 and worst latency of the firing notifications."""
import argparse, http.server, json, os, random, shutil, signal, socket, statistics, subprocess
import sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


arrivals = []  # (time, status)
arrived = threading.Condition()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        status = json.loads(body).get("status")
        with arrived:
            arrivals.append((now, status))
            arrived.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_for(status, since, timeout=120):
    with arrived:
        deadline = time.time() + timeout
        while True:
            for t, s in arrivals:
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

        def write(v):
            tmp = os.path.join(textfile, "probe.tmp")
            with open(tmp, "w") as f:
                f.write(f"# TYPE latency_probe gauge\nlatency_probe {v}\n")
            os.rename(tmp, os.path.join(textfile, "probe.prom"))

        write(0)
        with open(os.path.join(work, "rules.yml"), "w") as f:
            f.write("groups:\n  - name: latency\n    rules:\n      - alert: LatencyProbe\n"
                    "        expr: latency_probe > 5\n        for: 0s\n")
        if args.stack == "prometheus":
            start_prometheus_stack(work, textfile, hook_port, args.interval, procs)
        else:
            start_vigil(work, textfile, hook_port, args.flush, procs)
        period = parse_seconds(args.interval or "60s") if args.stack == "prometheus" else parse_seconds(args.flush)
        latencies = []
        for i in range(args.crossings):
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
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
        what = (f"vigil, flush {args.flush}" if args.stack == "vigil"
                else f"prometheus 2.42 + node_exporter + alertmanager 0.25, interval {args.interval or 'default (1m, group_wait 30s)'}")
        print(f"{what}, {len(latencies)} crossings: median {statistics.median(latencies) * 1000:.0f} ms, "
              f"p90 {q(0.9) * 1000:.0f} ms, p99 {q(0.99) * 1000:.0f} ms, worst {latencies[-1] * 1000:.0f} ms, "
              f"best {latencies[0] * 1000:.0f} ms")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def start_prometheus_stack(work, textfile, hook_port, interval, procs):
    ne, prom, am = free_port(), free_port(), free_port()
    with open(os.path.join(work, "am.yml"), "w") as f:
        wait = "  group_wait: 0s\n  group_interval: 1s\n" if interval else ""
        f.write(f"route:\n  receiver: hook\n  group_by: [alertname]\n{wait}receivers:\n  - name: hook\n"
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


def start_vigil(work, textfile, hook_port, flush, procs):
    http_port, ingest_port = free_port(), free_port()
    with open(os.path.join(work, "routing.yml"), "w") as f:
        f.write(f"route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n"
                f"  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n"
                f"    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n")
    with open(os.path.join(work, "collector.toml"), "w") as f:
        f.write(f"[http]\nlisten = \"127.0.0.1:{http_port}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\n"
                f"[store]\ndata_dir = \"{work}/data\"\n[rules]\nfiles = [\"{work}/rules.yml\"]\nhost_down = false\n"
                f"[notify]\nalertmanager_config = \"{work}/routing.yml\"\n")
    with open(os.path.join(work, "agent.toml"), "w") as f:
        f.write(f"flush_interval = \"{flush}\"\n[collector]\nendpoint = \"http://127.0.0.1:{ingest_port}\"\n"
                f"[sources.textfile]\ndirectory = \"{textfile}\"\n")
    bins = os.path.join(ROOT, "target", "release")
    procs.append(subprocess.Popen([f"{bins}/vigil-collector", "--config", f"{work}/collector.toml"],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{work}/collector.log", "w")))
    time.sleep(1)
    procs.append(subprocess.Popen([f"{bins}/vigil-agent", "--config", f"{work}/agent.toml"],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{work}/agent.log", "w")))
    time.sleep(3)


if __name__ == "__main__":
    main()
