#!/usr/bin/env bash
# The JS cross-checks (see README.md): installs the pinned client libraries, builds the
# node unless HB_BIN names one, and runs every test file with node's test runner under a
# total time limit. Exit status is the test runner's (124 on timeout).
set -euo pipefail
cd "$(dirname "$0")"
harness_dir="$(pwd)"
repo_dir="$(cd .. && pwd)"
total_timeout="${HARNESS_TIMEOUT:-600}"

echo "== harness: node $(node --version), npm $(npm --version)"

# npm ci, unless node_modules was installed from exactly this lockfile.
stamp="node_modules/.harness-lock.sha256"
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "== npm ci: skipped (node_modules matches package-lock.json)"
else
  echo "== npm ci"
  timeout 300 npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

if [ -z "${HB_BIN:-}" ]; then
  echo "== cargo build -p hb --locked"
  (cd "$repo_dir" && cargo build -p hb --locked)
  HB_BIN="${CARGO_TARGET_DIR:-$repo_dir/target}/debug/hb"
fi
case "$HB_BIN" in
  /*) ;;
  *) HB_BIN="$harness_dir/$HB_BIN" ;;
esac
export HB_BIN
if [ ! -x "$HB_BIN" ]; then
  echo "HB_BIN=$HB_BIN is not an executable" >&2
  exit 1
fi
echo "== node --test (HB_BIN=$HB_BIN, limit ${total_timeout}s)"

# `timeout` signals its whole process group, so nodes started by the tests stop too.
shopt -s nullglob
files=(test/*.test.mjs)
timeout --kill-after=15 "$total_timeout" \
  node --test --test-reporter=spec --test-timeout=120000 "${files[@]}"
