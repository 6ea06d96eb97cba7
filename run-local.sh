#!/usr/bin/env bash
# Starts a Vigil collector and an agent on this host with the embedded
# defaults (no config file; the collector keeps its write-ahead log in
# ./data/collector and the agent its spool in ./data/agent, instead of under
# /var/lib/vigil/), prints where to look, and runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --bins

agent=""
collector=""
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping Vigil..."
  # The agent first, so that its last window still reaches the collector.
  if [ -n "$agent" ]; then kill -TERM "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
  if [ -n "$collector" ]; then kill -TERM "$collector" 2>/dev/null || true; wait "$collector" 2>/dev/null || true; fi
}
trap stop INT TERM EXIT

# Each in its own session, so that Ctrl-C reaches only this script, which
# stops them in order.
setsid ./target/release/vigil-collector --data-dir ./data/collector &
collector=$!
for _ in $(seq 100); do
  kill -0 "$collector" 2>/dev/null || { echo "the collector did not start (see its message above)"; exit 1; }
  if (exec 3<>/dev/tcp/127.0.0.1/9470) 2>/dev/null; then break; fi
  sleep 0.1
done
setsid ./target/release/vigil-agent --data-dir ./data/agent &
agent=$!
sleep 0.5
kill -0 "$agent" 2>/dev/null || { echo "the agent did not start (see its message above)"; exit 1; }

cat <<TXT

Vigil is running on this host:
  collector  http://localhost:9470/metrics   (Prometheus exposition; gRPC ingest on :9471)
  agent      samples every 1 s, ships every 10 s as instance "$(uname -n)"

Try:  curl -s localhost:9470/metrics | grep -E '^(node_load1|vigil_cpu_busy_ratio_count)'
Ctrl-C stops both.

TXT
wait "$collector" "$agent"
