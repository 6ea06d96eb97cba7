#!/usr/bin/env bash
# Installs a Vigil binary on a host without the Debian package, reversibly.
#
#   install.sh [--root DIR] agent|collector BINARY SHA256
#   install.sh [--root DIR] --rollback agent|collector
#
# BINARY is a vigil-agent built with `cargo build --profile release-agent
# -p vigil-agent` (target/release-agent/) or a vigil-collector built with
# `cargo build --release -p vigil-collector`, and SHA256 its checksum
# (`sha256sum BINARY`), which is checked before anything is replaced.
#
# It installs the binary as /usr/bin/vigil-NAME, keeping the one it
# replaces as /usr/lib/vigil/vigil-NAME.previous; the systemd unit in
# /etc/systemd/system/; the default config in /etc/vigil/NAME.toml unless
# one is there (an edited config is never overwritten); the system user
# `vigil` and /var/lib/vigil/NAME owned by it. The new binary must accept
# the installed config (`--check-config`), or the previous one is put back.
# `--rollback` puts the previous binary back. When systemd runs and the
# root is /, the service is (re)started.
#
# --root DIR installs under DIR instead of / (for tests and images): no
# user is created and no service is started there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=""
rollback=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a folder}; shift 2 ;;
    --rollback) rollback=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
name=${1:-}
case "$name" in
  agent|collector) ;;
  *) echo "install.sh: say agent or collector (install.sh --help)" >&2; exit 2 ;;
esac
bin="vigil-$name"
target="$root/usr/bin/$bin"
previous="$root/usr/lib/vigil/$bin.previous"
unit="$root/etc/systemd/system/$bin.service"
config="$root/etc/vigil/$name.toml"
data="$root/var/lib/vigil/$name"

live_systemd() {
  [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

restart() {
  if live_systemd; then
    systemctl daemon-reload
    systemctl enable "$bin.service" >/dev/null 2>&1 || true
    systemctl restart "$bin.service"
    echo "install.sh: $bin restarted"
  else
    echo "install.sh: no running systemd for $root/; start $target yourself"
  fi
}

if [ "$rollback" = 1 ]; then
  if [ ! -f "$previous" ]; then
    echo "install.sh: no previous $bin to roll back to ($previous is missing)" >&2
    exit 1
  fi
  tmp="$target.rollback.$$"
  cp -p "$previous" "$tmp"
  mv -f "$tmp" "$target"
  rm -f "$previous"
  echo "install.sh: $bin rolled back to $("$target" -V 2>/dev/null || echo 'the previous build')"
  restart
  exit 0
fi

binary=${2:-}
want=${3:-}
if [ -z "$binary" ] || [ -z "$want" ]; then
  echo "install.sh: usage: install.sh [--root DIR] $name BINARY SHA256" >&2
  exit 2
fi
if [ ! -f "$binary" ]; then
  echo "install.sh: $binary: no such file" >&2
  exit 1
fi
# The checksum first: nothing is touched for a binary that does not match.
got=$(sha256sum "$binary" | cut -d' ' -f1)
want=$(printf %s "$want" | tr 'A-F' 'a-f')
if [ "$got" != "$want" ]; then
  echo "install.sh: $binary has SHA-256 $got, not $want: refused, nothing changed" >&2
  exit 1
fi

mkdir -p "$root/usr/bin" "$root/usr/lib/vigil" "$root/etc/systemd/system" "$root/etc/vigil" "$data"
# The default collector.toml loads /etc/vigil/rules/*.yml.
if [ "$name" = collector ]; then mkdir -p "$root/etc/vigil/rules"; fi
if [ -z "$root" ] && ! id vigil >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/vigil --no-create-home --shell /usr/sbin/nologin vigil
fi
if [ -z "$root" ]; then
  chown vigil:vigil "$data"
  chmod 0750 "$data"
fi
if [ ! -f "$config" ]; then
  install -m 0644 "$here/packaging/config/$name.toml" "$config"
fi
install -m 0644 "$here/packaging/systemd/$bin.service" "$unit"
# Units and configs name /usr/bin and /etc; under --root they still do.

tmp="$target.new.$$"
install -m 0755 "$binary" "$tmp"
if ! "$tmp" --config "$config" --check-config >/dev/null; then
  rm -f "$tmp"
  echo "install.sh: the new $bin refuses $config (see above); the installed one is unchanged" >&2
  exit 1
fi
# Only now is the installed binary kept aside and replaced.
had_previous=0
if [ -f "$target" ]; then
  cp -p "$target" "$previous"
  had_previous=1
fi
mv -f "$tmp" "$target"
echo "install.sh: installed $("$target" -V) as $target"
if [ "$had_previous" = 1 ]; then
  echo "install.sh: the previous build is kept as $previous (install.sh --rollback $name)"
fi
restart
