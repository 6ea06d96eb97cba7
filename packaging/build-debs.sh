#!/usr/bin/env bash
# Builds the Debian packages vigil-agent and vigil-collector with cargo-deb
# (`cargo install cargo-deb --locked`), from the metadata in agent/Cargo.toml
# and collector/Cargo.toml.
#
#   packaging/build-debs.sh [--profile release|dev] [--no-build]
#                           [--deb-version V] [--out DIR] [--fast]
#
# --profile   which build to package (default release: the collector from
#             target/release/, the agent from target/release-agent/)
# --no-build  package the binaries already built instead of running
#             `cargo build --profile P -p vigil-agent -p vigil-collector`
# --deb-version  the package version (default: the crate's, revision 1)
# --out       where the .deb files go (default target/debian/)
# --fast      gzip instead of xz: larger files, built in seconds (tests)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
out=target/debian
version=""
fast=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --no-build) build=0; shift ;;
    --deb-version) version=${2:?--deb-version needs a version}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --fast) fast=(--fast -Z gz); shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-debs.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "build-debs.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
fi
case "$profile" in
  dev|test) dir=debug ;;
  *) dir=$profile ;;
esac
# A release package's agent comes from the release-agent profile (size-
# optimised, whole-program LTO: fewer resident pages on every host).
agent_profile=$profile
if [ "$profile" = release ]; then agent_profile=release-agent; fi
agent_dir=$dir
if [ "$profile" = release ]; then agent_dir=release-agent; fi
if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" --bin vigil-collector -p vigil-collector
  cargo build --locked --profile "$agent_profile" --bin vigil-agent -p vigil-agent
fi
mkdir -p "$out"
target=${CARGO_TARGET_DIR:-target}
# cargo-deb takes binaries from TARGET/release/ only: the ones packaged are
# linked into a staging target folder of their own.
stage=$target/packaging-stage
rm -rf "$stage"
mkdir -p "$stage/release"
for package in vigil-agent vigil-collector; do
  if [ "$package" = vigil-agent ]; then binary="$target/$agent_dir/$package"; else binary="$target/$dir/$package"; fi
  if [ ! -x "$binary" ]; then
    echo "build-debs.sh: $binary is missing: build it first, or leave out --no-build" >&2
    exit 1
  fi
  python3 packaging/debian/extras.py "$package" "$binary" "target/packaging/$package"
  ln -f "$binary" "$stage/release/$package"
  # --compress-system: dpkg's own xz/gzip, several times faster here than
  # cargo-deb's built-in compressor.
  args=(-p "$package" --no-build --strip --no-dbgsym --compress-system --output "$out" "${fast[@]}")
  if [ -n "$version" ]; then args+=(--deb-version "$version"); fi
  CARGO_TARGET_DIR=$stage cargo deb "${args[@]}"
done
