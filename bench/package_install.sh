#!/usr/bin/env bash
# The Debian packages' installed size, and the time from `dpkg -i` to the
# agent's first batch at the collector. Run as root, on a machine where the
# packages are not installed, after `packaging/build-debs.sh`:
#
#   bench/package_install.sh [DEB_DIR]     (default target/debian)
#
# Without systemd as PID 1 (a container), both binaries are started as
# their units would start them (ExecStart=, as User=vigil) right after
# dpkg returns; with systemd, postinst starts them. Both packages are purged
# at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
debs=${1:-target/debian}
agent=$(ls "$debs"/vigil-agent_*.deb | tail -1)
collector=$(ls "$debs"/vigil-collector_*.deb | tail -1)
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
if dpkg-query -W vigil-agent vigil-collector >/dev/null 2>&1; then
  echo "vigil-agent or vigil-collector is installed: purge them first" >&2; exit 1
fi
pids=()
logs=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  dpkg --purge vigil-agent vigil-collector >/dev/null 2>&1 || true
}
trap cleanup EXIT

now() { date +%s.%N; }
start=$(now)
DEBIAN_FRONTEND=noninteractive dpkg -i "$collector" "$agent" >/dev/null
installed=$(now)
if [ ! -d /run/systemd/system ]; then
  for unit in vigil-collector vigil-agent; do
    exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/$unit.service)
    # shellcheck disable=SC2086
    setpriv --reuid=vigil --regid=vigil --init-groups -- $exec_start >"$logs/$unit.log" 2>&1 &
    pids+=($!)
  done
fi
until curl -sf 'http://127.0.0.1:9470/api/v1/query?query=node_load1' | grep -q '"value"'; do
  sleep 0.05
  if [ "$(echo "$(now) - $start > 60" | bc)" = 1 ]; then
    echo "no batch within 60 s" >&2; tail -n 20 "$logs"/*.log >&2; exit 1
  fi
done
first=$(now)
printf 'deb files: agent %s KiB, collector %s KiB\n' $(( $(stat -c %s "$agent") / 1024 )) $(( $(stat -c %s "$collector") / 1024 ))
printf 'installed size: agent %s KiB, collector %s KiB\n' \
  "$(dpkg-query -W -f='${Installed-Size}' vigil-agent)" "$(dpkg-query -W -f='${Installed-Size}' vigil-collector)"
printf 'dpkg -i of both: %.2f s\n' "$(echo "$installed - $start" | bc)"
printf 'dpkg -i start to the first batch at the collector: %.2f s\n' "$(echo "$first - $start" | bc)"
