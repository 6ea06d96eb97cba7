#!/usr/bin/env bash
# Fills testdata/compat/ with the third-party files Vigil's tests check
# compatibility against: Prometheus's PromQL conformance tests (v2.42.0, the
# version of Debian's prometheus and promtool), the awesome-prometheus-alerts
# rule files and the Node Exporter Full Grafana dashboard. They are not the
# project's own work and are not committed; this script is the only part of
# the project that reads anything outside the repository.
#
# Each file comes from, in order:
#   1. testdata/compat/ itself, when the file there already has its checksum;
#   2. $VIGIL_COMPAT_SOURCE, default ../shared/compat beside the checkout
#      (machines without internet access keep a copy there);
#   3. its pinned upstream address.
# A file whose SHA-256 differs from the one below is refused, and the script
# exits non-zero naming it; nothing unchecked is left in testdata/compat/.
#
# Environment: VIGIL_COMPAT_SOURCE (a folder laid out as testdata/compat/),
# VIGIL_COMPAT_DEST (default testdata/compat/ of this checkout).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dest=${VIGIL_COMPAT_DEST:-$top/testdata/compat}
source_dir=${VIGIL_COMPAT_SOURCE:-$top/../shared/compat}

prom=https://raw.githubusercontent.com/prometheus/prometheus/v2.42.0/promql/testdata
apa=https://raw.githubusercontent.com/samber/awesome-prometheus-alerts
dash=https://raw.githubusercontent.com/rfmoz/grafana-dashboards/cbb98458612984a1cc5360d1477157d159c27efd/prometheus

# path under testdata/compat, SHA-256, upstream address
manifest="
promql/aggregators.test 4cdb600425a71cb73a04ddb8dc0de70a2b1c75351d6da64799c24c08de570d64 $prom/aggregators.test
promql/at_modifier.test 8916b4fe669bc6af693fc388600386adbc2dec833c409f5aa4f02a0e06303244 $prom/at_modifier.test
promql/collision.test 09d8d733f7bb8f7c5a18689f2a9863bb607e35b7aadfdcd63e663d97044473b3 $prom/collision.test
promql/functions.test 500a3ef042406c6c03233d154edea7f341b8b2524d51301f36ee2ffa81521021 $prom/functions.test
promql/histograms.test 0d717d6b96f22a1a1bda1a521ebf88eef2ec08ec2ecdf5097bdb7d36c4e6e820 $prom/histograms.test
promql/literals.test 9ec1dc31c71c25baabe9e709930aff716fe70bf9580acf3bbe1a87018057e193 $prom/literals.test
promql/operators.test 445ba80352fba0cb1f1b7d7bfecc5cade55f053dc487a01ec6a15b290f6cf923 $prom/operators.test
promql/selectors.test a00f4d00499afd01d527fc186d272aa748b00cf3e887f306f003f95fb1f554da $prom/selectors.test
promql/staleness.test ef03652dcbdc43d0c397b97d5411766dd0a2ff654a2dbd772fb011bce67a3129 $prom/staleness.test
promql/subquery.test 6739f69ae9815e4ece2a19fdee736829d433c267c890eb5ea13f498a6693f41e $prom/subquery.test
promql/trig_functions.test cb70f2d40147f61721054ea742a024998572052210d6859150c3786b54c2d108 $prom/trig_functions.test
rules/node-exporter.yml 39271518d4562140d25df49a2c2c8815ce55f2bcbf00915e6d0ede8a31030e57 $apa/e2ffbfb6539d0d4a47282dfba3e1f36f79e241d5/dist/rules/host-and-hardware/node-exporter.yml
rules/blackbox-exporter.yml 65b9f2b2a5e09e859544f15090cf5fdcbf2787c199c6c66d4e35f6ddbad5a495 $apa/ae1d84c78873696c22e3f65f1362508e775c9371/dist/rules/blackbox/blackbox-exporter.yml
rules/embedded-exporter.yml 634c16ef31cf3e33bdc611c1675ccecdbcff733e8f829ddbfd2403aaa10d32de $apa/20f9a36615278f0e77540f619e7b0443db628543/dist/rules/prometheus-self-monitoring/embedded-exporter.yml
dashboards/node-exporter-full.json d5cdb9a475a9a97df332d12da68130c4dc02ef1cc9fe17d51b1d4ceb1010540a $dash/node-exporter-full.json
"

sha() { sha256sum "$1" | cut -d' ' -f1; }

failed=0
fetched=0
kept=0
while read -r path want url; do
  [ -n "$path" ] || continue
  target=$dest/$path
  if [ -f "$target" ] && [ "$(sha "$target")" = "$want" ]; then
    kept=$((kept + 1))
    continue
  fi
  mkdir -p "$(dirname "$target")"
  tmp=$(mktemp "$target.XXXXXX")
  if [ -f "$source_dir/$path" ]; then
    from=$source_dir/$path
    cp "$from" "$tmp"
  elif command -v curl >/dev/null 2>&1 && curl -fsSL --retry 3 --max-time 60 -o "$tmp" "$url"; then
    from=$url
  else
    echo "fetch-compat: $path: not in $source_dir and could not be downloaded from $url" >&2
    rm -f "$tmp"
    failed=$((failed + 1))
    continue
  fi
  got=$(sha "$tmp")
  if [ "$got" != "$want" ]; then
    echo "fetch-compat: $path from $from: SHA-256 $got, expected $want; refused" >&2
    rm -f "$tmp"
    failed=$((failed + 1))
    continue
  fi
  mv "$tmp" "$target"
  fetched=$((fetched + 1))
done <<<"$manifest"

if [ "$failed" -gt 0 ]; then
  echo "fetch-compat: $failed file(s) missing or refused; testdata/compat is incomplete" >&2
  exit 1
fi
echo "fetch-compat: $dest ready ($fetched fetched, $kept already there)"
