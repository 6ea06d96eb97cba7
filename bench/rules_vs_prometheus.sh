#!/usr/bin/env bash
# Rule evaluation, Vigil beside Prometheus 2.42 on the same data in the same run:
# the 35 rules of node-exporter.yml over HOSTS (default 1000) hosts replaying a
# real agent's recorded hour (bench/data/agent-1h.tsv.gz).
#
#   bench/rules_vs_prometheus.sh            # needs promtool and prometheus (Debian: prometheus)
#
# 1. The rule benchmark loads the fleet into Vigil's history and writes the
#    same samples as OpenMetrics; promtool turns them into TSDB blocks.
# 2. Prometheus starts on those blocks (no scraping).
# 3. The benchmark runs again: Vigil evaluates every rule (one round, alert
#    states and templates included) and runs the 35 expressions as instant
#    queries; the same 35 expressions go to Prometheus's query API at the same
#    evaluation time, timed by its own engine (stats=all, evalTotalTime).
set -euo pipefail
cd "$(dirname "$0")/.."
export HOSTS=${HOSTS:-1000}
for tool in promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install prometheus"; exit 1; }
done
work=$(mktemp -d /tmp/vigil-rules-bench.XXXXXX)
prom=""
cleanup() { [ -n "$prom" ] && kill "$prom" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== loading $HOSTS hosts, writing OpenMetrics"
ROUNDS=1 PROM_OPENMETRICS="$work/data.om" cargo bench -q -p vigil-collector --bench rules
echo "== promtool tsdb create-blocks-from openmetrics ($(du -h "$work/data.om" | cut -f1))"
start=$(date +%s)
promtool tsdb create-blocks-from openmetrics "$work/data.om" "$work/tsdb" >/dev/null
echo "   took $(( $(date +%s) - start )) s"
rm -f "$work/data.om"
printf 'global:\n  scrape_interval: 1h\n' > "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --storage.tsdb.retention.time=10y --web.listen-address=127.0.0.1:19090 \
  --log.level=warn >"$work/prometheus.log" 2>&1 &
prom=$!
for _ in $(seq 120); do
  curl -sf http://127.0.0.1:19090/-/ready >/dev/null && break
  sleep 0.5
done
curl -sf http://127.0.0.1:19090/-/ready >/dev/null || { cat "$work/prometheus.log"; exit 1; }
echo "== evaluating (machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
PROM_URL=http://127.0.0.1:19090 cargo bench -q -p vigil-collector --bench rules
