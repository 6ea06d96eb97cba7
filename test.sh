#!/usr/bin/env bash
# The whole test suite, as CI runs it: fetch the third-party test corpora
# into testdata/compat/ (checked against pinned SHA-256 sums), build the
# binaries once, then run every unit, conformance and end-to-end test.
# Extra arguments go to `cargo test` (for example a test name to filter on).
set -euo pipefail
cd "$(dirname "$0")"
scripts/fetch-compat.sh
cargo build --workspace --bins
cargo test --workspace "$@"
