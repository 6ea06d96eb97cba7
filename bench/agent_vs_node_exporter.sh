#!/usr/bin/env bash
# Measures the agent's cost on the host beside node_exporter, in one run:
# resident memory and CPU seconds over DURATION seconds (default 60) at 1 s
# sampling, with node_exporter scraped once a second over HTTP (as a 1 s
# Prometheus scrape would). Needs Debian's prometheus-node-exporter and curl.
# When Debian's collectd-core is installed, collectd runs in the same run with
# six read plugins at a 1 s interval. Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-60}
command -v prometheus-node-exporter >/dev/null || { echo "install Debian's prometheus-node-exporter"; exit 1; }
cargo build --release --bins -q
# The agent as packaged (Cargo.toml, profile release-agent).
cargo build --profile release-agent -p vigil-agent --bin vigil-agent -q

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/collector.toml" <<TOML
[http]
listen = "127.0.0.1:19470"
[ingest]
listen = "127.0.0.1:19471"
[store]
data_dir = "$work/collector-data"
TOML
cat > "$work/agent.toml" <<TOML
instance = "bench"
data_dir = "$work/agent-data"
[collector]
endpoint = "http://127.0.0.1:19471"
TOML
./target/release/vigil-collector --config "$work/collector.toml" 2>"$work/collector.log" & pids+=($!); collector=$!
sleep 0.5
./target/release-agent/vigil-agent --config "$work/agent.toml" 2>"$work/agent.log" & pids+=($!); agent=$!
prometheus-node-exporter --web.listen-address=127.0.0.1:19100 2>"$work/node_exporter.log" & pids+=($!); node=$!
( while sleep 1; do curl -s -o /dev/null http://127.0.0.1:19100/metrics; done ) & pids+=($!)
collectd=""
if [ -x /usr/sbin/collectd ]; then
  cat > "$work/collectd.conf" <<CONF
Interval 1
BaseDir "$work"
PIDFile "$work/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin df
LoadPlugin disk
LoadPlugin interface
CONF
  /usr/sbin/collectd -f -C "$work/collectd.conf" >"$work/collectd.log" 2>&1 & pids+=($!); collectd=$!
fi

# CPU time on the CPU in nanoseconds, summed over the process's threads, from
# the scheduler (schedstat): /proc/PID/stat's utime/stime are sampled at each
# timer tick, and a process that wakes on a timer once a second is charged
# whole ticks at random, which made those figures swing 5x between runs.
ticks() { cat /proc/"$1"/task/*/schedstat | awk '{ns += $1} END {printf "%d", ns}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hz=1000000000

sleep 12   # warm up: one flush, a dozen scrapes
a0=$(ticks $agent); n0=$(ticks $node); c0=$(ticks $collector); d0=${collectd:+$(ticks $collectd)}
sleep "$duration"
a1=$(ticks $agent); n1=$(ticks $node); c1=$(ticks $collector); d1=${collectd:+$(ticks $collectd)}
series=$(curl -s http://127.0.0.1:19100/metrics | grep -vc '^#')
vseries=$(curl -s http://127.0.0.1:19470/metrics | grep -c 'instance="bench"')

row() { # name pid t0 t1 note
  local cpu_s pct
  cpu_s=$(echo "scale=4; ($4 - $3) / $hz" | bc)
  pct=$(echo "scale=4; 100 * ($4 - $3) / $hz / $duration" | bc)
  printf '| %s | %.1f MiB | %s s | %s %% | %s |\n' "$1" "$(echo "scale=2; $(rss_kib $2) / 1024" | bc)" "$cpu_s" "$pct" "$5"
}
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), ${duration} s measured after 12 s warm-up"
echo
echo "| process | RSS at end | CPU seconds | share of one core | what it did |"
echo "|---|---|---|---|---|"
row "vigil-agent $(./target/release-agent/vigil-agent --version | awk 'NR==1{print $2}')" $agent "$a0" "$a1" "sampled every 1 s, shipped every 10 s; $vseries series"
row "node_exporter $(prometheus-node-exporter --version 2>&1 | awk 'NR==1{print $3}')" $node "$n0" "$n1" "scraped every 1 s; $series series"
if [ -n "$collectd" ]; then
  row "collectd $(dpkg-query -W -f '${Version}' collectd-core 2>/dev/null)" $collectd "$d0" "$d1" "cpu, memory, load, df, disk, interface plugins every 1 s, no writer"
fi
row "vigil-collector (reference)" $collector "$c0" "$c1" "received 1 agent"
