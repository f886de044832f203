#!/usr/bin/env bash
# aoconnect `message` + `result` round trips through our node, against the client-side
# floor measured on the stub node in the same run (spec 07 §8 row `60-perf`; issue 8).
# See docs/PERFORMANCE.md ("aoconnect round trips").
#
#   bench/aoconnect.sh                 # N=1000: ~1 min after the build
#   N=200 bench/aoconnect.sh           # a short run
#
# What it does: builds the release `hb` (`cargo build --release -p hb --bin hb`, in
# cargo's target directory: CARGO_TARGET_DIR is honoured), installs harness/node_modules
# (`npm ci`) when it is missing, then runs harness/bench/aoconnect-perf.mjs, which
#   1. drives harness/lib/stub-node.mjs (the recording stand-in node of
#      99-client-contract, in the script's own process) with aoconnect 0.0.98 in mainnet
#      mode: spawn, then N sequential `message` (Eval `X = (X or 0) + 1`) + `result`
#      round trips, each call timed: the client's own cost per call (the floor);
#   2. starts arlocal, uploads aos-2-pure-xs.wasm to it with real aos module tags (as
#      harness/test/60-aoconnect-aos does), starts `hb serve` on a fresh data directory
#      (LMDB, durable commits) with `--gateway <arlocal>`, spawns an aos process with
#      aoconnect and runs the same N round trips, timed the same way; then a `dryrun`
#      of `return X` must answer N (the run fails otherwise);
# and prints one table: ms per call of each type on the stub and on the node, node
# minus stub (the node's own share), round trips per second end to end, CPU per round
# trip, and percentiles. Load averages before and after are printed above it.
#
# Knobs: N (default 1000), AOS_WASM (default ../shared/fixtures/aos-2-pure-xs.wasm,
# beside the repository), AOC_CAP_S (wall-clock cap of the run, default 1800 s),
# AOC_NODE_ARGS (extra `hb serve` arguments for experiments, e.g.
# `--set store_sync=false`; none by default).
#
# Needs cargo, node (20+) and npm. Servers listen on 127.0.0.1 only; every process the
# run starts (arlocal, hb serve) is stopped by its pid.
set -euo pipefail

N="${N:-1000}"
AOC_CAP_S="${AOC_CAP_S:-1800}"
export AOC_CAP_S

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer (got \`$N\`)"
need cargo node npm timeout
AOS_WASM="$(aos_module)"
export AOS_WASM

# --- build --------------------------------------------------------------------------
log "building (release)..."
cargo build --release --quiet -p hb --bin hb
target_dir="$(cargo_target_dir)"
hb_bin="$target_dir/release/hb"
[[ -x "$hb_bin" ]] || die "missing $hb_bin"

# --- the pinned clients ---------------------------------------------------------------
if [[ ! -d harness/node_modules ]]; then
    log "installing harness/node_modules (npm ci; ~2 min: sqlite3 compiles)..."
    (cd harness && timeout 600 npm ci --no-audit --no-fund) || die "npm ci failed"
fi
aoc_version="$(node -p 'require("./harness/node_modules/@permaweb/aoconnect/package.json").version' 2>/dev/null || true)"
[[ "$aoc_version" == "0.0.98" ]] ||
    die "@permaweb/aoconnect 0.0.98 is not installed in harness/ (found: ${aoc_version:-none}); run: (cd harness && npm ci)"

# --- run ------------------------------------------------------------------------------
cores="$(nproc 2>/dev/null || echo 1)"
load_before="$(load)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
log "running $N round trips on the stub, then on hb serve ($hb_bin)..."
# The script stops its children itself (its cap, SIGTERM); `timeout` is the backstop.
(cd harness && HB_BIN="$hb_bin" timeout --kill-after=15 $((AOC_CAP_S + 60)) \
    node bench/aoconnect-perf.mjs "$N") >"$out" || die "the run failed (see above)"
load_after="$(load)"

printf 'load average: %s (before), %s (after) on %s cores\n\n' "$load_before" "$load_after" "$cores"
cat "$out"
