#!/usr/bin/env bash
# Message reads and writes through hb-store's message cache on LMDB, against raw LMDB
# gets and puts of the same bytes measured in the same run. Runs the criterion bench
# crates/hb-store/benches/store.rs and prints the rates and the ratios. See
# docs/PERFORMANCE.md ("Store").
#
#   bench/store.sh            # ~1 min after the build
#
# Targets (from the issue): message reads (an ID not in the front cache) >= 50% of the
# raw LMDB get rate, and >= 100,000 message reads/s on one core. The raw gets look up
# the same keys (the message IDs) in the same order as the message reads; gets in key
# order, LMDB's best case, are printed for comparison. Both sides share the
# machine's load: run this on a quiet machine (the load average is printed).
set -euo pipefail

TARGET_RATIO=0.5
TARGET_READS=100000

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) is needed"

log "building the bench (release)..."
cargo bench --quiet -p hb-store --bench store --no-run
target_dir="$(cargo_target_dir)"
results="$target_dir/criterion/store"

load_before="$(load)"
log "cargo bench -p hb-store --bench store..."
rm -rf "$results"
timeout 900 cargo bench --quiet -p hb-store --bench store >&2 ||
    die "the criterion bench failed or took more than 15 minutes"
load_after="$(load)"

# median NAME: the median time of bench store/NAME in nanoseconds.
median() { criterion_median "$results" "$1"; }

awk -v rs="$(median read_store)" -v rt="$(median read_tree)" -v dc="$(median decode)" \
    -v rpk="$(median read_packed)" -v dpk="$(median decode_packed)" \
    -v rgk="$(median raw_get_in_key_order)" \
    -v rh="$(median read_hot)" -v rg="$(median raw_get)" -v w="$(median write)" \
    -v rp="$(median raw_put)" -v tr="$TARGET_RATIO" -v treads="$TARGET_READS" \
    -v crc="$(median check_crc32)" -v sha="$(median check_sha256)" \
    -v lb="$load_before" -v la="$load_after" -v cores="$(nproc 2>/dev/null || echo '?')" '
    function t(ns) {
        if (ns >= 1e6) return sprintf("%8.3f ms", ns / 1e6)
        if (ns >= 1e3) return sprintf("%8.2f us", ns / 1e3)
        return sprintf("%8.1f ns", ns)
    }
    function row(name, ns) { printf "%-52s %s %12.0f/s\n", name, t(ns), 1e9 / ns }
    BEGIN {
        printf "load average: %s (before), %s (after) on %s cores\n\n", lb, la, cores
        printf "%-52s %11s %14s\n", "operation (10-key message, LMDB, NO_SYNC)", "time", "rate"
        row("message read, store path (MessageCache::read)", rs)
        row("  of which the store: read_packed (1 lookup)", rpk)
        row("  of which decoding the packed copy", dpk)
        row("message read through its group (sum of the parts):", rt + dc)
        row("  the store: read_tree (1 transaction)", rt)
        row("  decoding: from_tabm", dc)
        row("message read, hot (front cache)", rh)
        row("raw LMDB get of the same bytes, same keys, same order", rg)
        row("  LMDB best case: keys visited in key order", rgk)
        row("message write (MessageCache::write)", w)
        row("raw LMDB put of the same bytes", rp)
        printf "\nchecking a 64 KiB value: CRC-32 %s (%.1f GB/s), SHA-256 %s (%.2f GB/s)\n", t(crc), 65536 / crc, t(sha), 65536 / sha
        printf "\nstore-path reads / raw gets = %.3f (target >= %.2f)%s\n", rg / rs, tr, (rg / rs >= tr) ? "" : "  MISSED"
        printf "store-path reads/s = %.0f (target >= %d)%s\n", 1e9 / rs, treads, (1e9 / rs >= treads) ? "" : "  MISSED"
        printf "(store-path reads / raw gets in key order = %.3f: LMDB best case, for comparison)\n", rgk / rs
        printf "hot reads / raw gets = %.1f\n", rg / rh
        printf "writes / raw puts = %.3f\n", rp / w
    }'
