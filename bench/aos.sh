#!/usr/bin/env bash
# aos processes on the WebAssembly stack: raw compute against @permaweb/ao-loader
# measured in the same run, and end to end through the node. See docs/PERFORMANCE.md
# ("WebAssembly processes (aos)").
#
#   bench/aos.sh                                 # ~1 min after the build
#   N=1000 ROUNDS=5 PASSES=3 CONCURRENCY=8 SNAPSHOT_SLOTS=1000 bench/aos.sh
#
# Module: aos-2-pure-xs.wasm (../shared/fixtures, beside the repository; AOS_WASM
# overrides). Workload (the issue's): `X = 0`, then N Eval messages `X = X + 1`, then
# `return X`, which must answer the number of evaluations.
#
# 1. Raw compute, PASSES times in turn:
#    * @permaweb/ao-loader 0.0.49 (pinned in harness/), live memory (`UNSAFE_MEMORY`,
#      no heap copies), on `node --experimental-wasm-memory64`:
#      harness/bench/ao-loader.mjs;
#    * ours: the same JSON through hb-wasm's `Engine` and `aos::handle`, release
#      build, fuel on as in the node: crates/hb-wasm/examples/aos_evals.rs; and once
#      more with fuel off (not the node's setting; printed for comparison).
#    Each run: one instance, `X = 0`, ROUNDS rounds of N evaluations (each timed),
#    `return X` = ROUNDS x N checked. Round 1 is the issue's measurement (the first N
#    evaluations of a process); rounds 2.. show each engine warm (V8 tiers its code
#    up while it runs; wasmtime compiles everything before the first call). Target:
#    ours >= 2x ao-loader's evaluations/s.
# 2. End to end: a release `hb serve` on a fresh data directory (LMDB with durable
#    commits, the default), bound to 127.0.0.1, listing key-1 in `cache_writers`, with
#    the node's default snapshot policy (docs/adr/0006), or a snapshot every
#    SNAPSHOT_SLOTS slots when that is set.
#    harness/bench/aos-node.mjs uploads the module, spawns an aos process on
#    `[wasi@1.0, json-iface@1.0, wasm-64@1.0, multipass@1.0]`, schedules and computes
#    `X = 0`; signs N Eval messages (key-1, httpsig), POSTs them to /<pid>/schedule
#    from CONCURRENCY connections (timed), schedules `return X`, then times one GET
#    of /<pid>/compute/results/data?slot=<last Eval> (nothing computed before: the N
#    slots run and are stored), and checks `return X` = N. Target: N / (schedule time
#    + compute time) >= 1,000 messages/s on one process. Then, as a busy process
#    runs, N more messages scheduled while one reader keeps computing up to the last
#    slot answered, timed until all are computed (printed, not judged).
# 3. The floor on this machine, from two measurements of work every node must do per
#    message: hb's own RSA-4096 signer (crates/hb-codec/examples/sign_rate.rs) on all
#    cores, one signature per assignment; and the module alone on the JSON the node
#    gives it (aos_evals `node-json`: json-iface@1.0's encoders on the run's signed
#    process and messages, fuel on). End to end cannot beat N / (signing time +
#    module time), however fast the rest of the node is.
#
# Needs node (20+, with harness/node_modules installed: `cd harness && npm ci`), curl,
# openssl. Servers listen on 127.0.0.1 only; every process the script starts is
# stopped by its pid.
set -euo pipefail

N="${N:-1000}"
ROUNDS="${ROUNDS:-5}"
PASSES="${PASSES:-3}"
CONCURRENCY="${CONCURRENCY:-8}"
SNAPSHOT_SLOTS="${SNAPSHOT_SLOTS:-}"
snapshot_args=()
policy="the default snapshot policy"
if [[ -n "$SNAPSHOT_SLOTS" ]]; then
    snapshot_args=(--set process_snapshot_slots="$SNAPSHOT_SLOTS")
    policy="a snapshot every $SNAPSHOT_SLOTS slots"
fi
OPENSSL_SECONDS="${OPENSSL_SECONDS:-3}"
TARGET_RATIO=2
TARGET_E2E=1000

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

((ROUNDS >= 2)) || die "ROUNDS must be at least 2 (round 1 is cold, the others warm)"

need node curl openssl timeout
wasm="$(aos_module)"
key1="$root/tests/fixtures/key-1.json"
key1_address="vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4"
loader_version="$(node -p 'require("./harness/node_modules/@permaweb/ao-loader/package.json").version' 2>/dev/null || true)"
[[ "$loader_version" == "0.0.49" ]] ||
    die "@permaweb/ao-loader 0.0.49 is not installed in harness/ (found: ${loader_version:-none}); run: (cd harness && npm ci)"

# --- build --------------------------------------------------------------------------
log "building (release)..."
cargo build --release --quiet -p hb --bin hb
cargo build --release --quiet -p hb-wasm --example aos_evals
cargo build --release --quiet -p hb-codec --example sign_rate
target_dir="$(cargo_target_dir)"
hb_bin="$target_dir/release/hb"
evals_bin="$target_dir/release/examples/aos_evals"
sign_rate_bin="$target_dir/release/examples/sign_rate"
for bin in "$hb_bin" "$evals_bin" "$sign_rate_bin"; do
    [[ -x "$bin" ]] || die "missing $bin"
done

work="$(mktemp -d)"
hb_pid=""
stop_hb() {
    if [[ -n "$hb_pid" ]]; then
        kill "$hb_pid" 2>/dev/null || true
        wait "$hb_pid" 2>/dev/null || true
        hb_pid=""
    fi
}
cleanup() {
    stop_hb
    rm -rf "$work"
}
trap cleanup EXIT

# field NAME FILE: the rest of the line `NAME ...` in FILE.
field() { sed -n "s/^$1 //p" "$2" | head -n1; }
load_before="$(load)"

# --- 1. raw compute -----------------------------------------------------------------
# run_raw KIND PASS: one run of KIND (loader, ours, nofuel) into $work/KIND.PASS;
# checks the final X.
run_raw() {
    local kind="$1" pass="$2" out="$work/$1.$2"
    case "$kind" in
    loader)
        (cd harness && timeout 600 node --experimental-wasm-memory64 bench/ao-loader.mjs \
            "$wasm" "$N" "$ROUNDS") >"$out" || die "ao-loader run failed"
        ;;
    ours) timeout 600 "$evals_bin" "$wasm" "$N" "$ROUNDS" fuel >"$out" || die "aos_evals failed" ;;
    nofuel) timeout 600 "$evals_bin" "$wasm" "$N" "$ROUNDS" no-fuel >"$out" || die "aos_evals failed" ;;
    esac
    local x
    x="$(field final "$out")"
    [[ "$x" == "$((N * ROUNDS))" ]] || die "$kind: return X answered \`$x\`, not $((N * ROUNDS))"
}
for pass in $(seq 1 "$PASSES"); do
    log "raw compute, pass $pass/$PASSES: ao-loader, ours, ours without fuel ($ROUNDS x $N evaluations each)..."
    run_raw loader "$pass"
    run_raw ours "$pass"
    run_raw nofuel "$pass"
done
# rate KIND cold|warm: evaluations/s, median over the passes of round 1 (cold) or of
# rounds 2.. (warm).
rate() {
    local kind="$1" which="$2"
    cat "$work/$kind".* | awk -v n="$N" -v which="$which" '
        $1 == "round" && ((which == "cold") == ($2 == 1)) { print n / $3 }' | median
}
# ms KIND load|init: the median of that line over the passes.
ms() { cat "$work/$1".* | awk -v k="$2" '$1 == k { print $2 }' | median; }
for kind in loader ours nofuel; do
    for which in cold warm; do
        printf -v "r_${kind}_${which}" '%s' "$(rate "$kind" "$which")"
    done
done
log "raw compute (evaluations/s, cold then warm): ao-loader $r_loader_cold $r_loader_warm, ours $r_ours_cold $r_ours_warm, ours without fuel $r_nofuel_cold $r_nofuel_warm"

# The module on the JSON the node gives it (json-iface@1.0's encoders, the end-to-end
# run's signed process and messages): what one slot costs in wasm alone. Two rounds;
# the second (warm, as a node's live instance is) is used.
log "the module alone on the node's JSON ($N evaluations x 2, fuel on)..."
timeout 600 "$evals_bin" "$wasm" "$N" 2 fuel node-json >"$work/nodejson" || die "aos_evals node-json failed"
[[ "$(field final "$work/nodejson")" == "$((N * 2))" ]] || die "node-json: wrong final X"
module_secs="$(awk '$1 == "round" && $2 == 2 { print $3 }' "$work/nodejson")"

# --- 2. end to end ------------------------------------------------------------------
cores="$(nproc 2>/dev/null || echo 1)"
log "openssl speed -elapsed -seconds $OPENSSL_SECONDS -multi $cores rsa4096..."
sign_all="$(timeout $((OPENSSL_SECONDS * 4 + 60)) \
    openssl speed -elapsed -seconds "$OPENSSL_SECONDS" -multi "$cores" rsa4096 2>/dev/null |
    awk '/sign\/s/ { for (i = 1; i <= NF; i++) col[$i] = i }
         /^rsa *4096 bits/ && ("sign/s" in col) { v = $(col["sign/s"] + 3) }
         END { if (v == "") exit 1; print v }')" || die "openssl speed failed"
log "hb's own signer (AWS-LC, sign_rate) on $cores threads for $OPENSSL_SECONDS s..."
sign_node="$("$sign_rate_bin" "$OPENSSL_SECONDS" "$cores")" || die "sign_rate failed"
dsync="$(dd if=/dev/zero of="$work/dsync.bin" bs=4k count=500 oflag=dsync 2>&1 |
    awk -F', ' '/copied/ { split($3, t, " "); printf "%.0f\n", 500 / t[1] }')"
rm -f "$work/dsync.bin"

log "starting hb serve (fresh data directory, LMDB, $policy)..."
: >"$work/hb.out"
env -C "$work" "$hb_bin" serve --bind 127.0.0.1 --port 0 --gateway none \
    --data-dir "$work/hb-data" --set request_timeout=3600000 \
    --set cache_writers="$key1_address" \
    "${snapshot_args[@]}" \
    >"$work/hb.out" 2>"$work/hb.err" &
hb_pid="$!"
addr=""
for _ in $(seq 1 300); do
    addr="$(sed -n 's|^listening on http://\(.*\)$|\1|p' "$work/hb.out" | head -n1)"
    [[ -n "$addr" ]] && break
    kill -0 "$hb_pid" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$addr" ]] || { cat "$work/hb.err" >&2 || true; die "hb did not start"; }
log "hb: http://$addr; uploading, spawning, X = 0; signing and scheduling $N messages; computing..."
(cd harness && timeout 3600 node bench/aos-node.mjs "http://$addr" "$wasm" "$key1" "$N" "$CONCURRENCY") \
    >"$work/e2e.out" || { tail -n 20 "$work/hb.err" >&2 || true; die "end-to-end run failed"; }
stop_hb
store_bytes="$(du -sb "$work/hb-data/store" | cut -f1)"
load_after="$(load)"

read -r sched_secs sched_count <<<"$(field schedule "$work/e2e.out")"
read -r comp_secs comp_slots <<<"$(field compute "$work/e2e.out")"
read -r first_slot last_slot <<<"$(field slots "$work/e2e.out")"
final_x="$(field final "$work/e2e.out")"
[[ "$sched_count" == "$N" ]] || die "$sched_count of $N messages scheduled"
[[ "$comp_slots" == "$N" ]] || die "the timed compute ran $comp_slots slots, not $N"
[[ "$final_x" == "$N" ]] || die "return X answered \`$final_x\` through the node, not $N"
read -r overlap_secs overlap_count overlap_reads <<<"$(field overlap "$work/e2e.out")"
[[ "$overlap_count" == "$N" ]] || die "overlapped: $overlap_count of $N messages scheduled"
[[ "$(field overlap-final "$work/e2e.out")" == "$((2 * N))" ]] || die "overlapped: wrong return X"

awk -v lb="$load_before" -v la="$load_after" -v cores="$cores" -v n="$N" \
    -v rounds="$ROUNDS" -v passes="$PASSES" \
    -v lc="$r_loader_cold" -v lw="$r_loader_warm" -v oc="$r_ours_cold" -v ow="$r_ours_warm" \
    -v fc="$r_nofuel_cold" -v fw="$r_nofuel_warm" \
    -v lload="$(ms loader load)" -v linit="$(ms loader init)" \
    -v oload="$(ms ours load)" -v oinit="$(ms ours init)" \
    -v target="$TARGET_RATIO" -v target_e2e="$TARGET_E2E" -v conns="$CONCURRENCY" \
    -v policy="$policy" -v ss="$sched_secs" -v cs="$comp_secs" \
    -v first="$first_slot" -v last="$last_slot" -v x="$final_x" \
    -v start="$(field start "$work/e2e.out")" -v signs="$(field sign "$work/e2e.out")" \
    -v again="$(field again "$work/e2e.out")" -v sign_all="$sign_all" -v dsync="$dsync" \
    -v os="$overlap_secs" -v oreads="$overlap_reads" \
    -v sign_node="$sign_node" -v module="$module_secs" \
    -v bytes="$store_bytes" '
    function row(name, c, w) {
        printf "%-36s %8.3f ms %7.0f/s   %8.3f ms %7.0f/s\n", name, 1000 / c, c, 1000 / w, w
    }
    function verdict(ok) { return ok ? "  MET" : "  MISSED" }
    BEGIN {
        printf "load average: %s (before), %s (after) on %s cores\n\n", lb, la, cores
        printf "raw compute: aos-2-pure-xs, X = X + 1 on one live instance (medians of %d passes)\n", passes
        printf "%-36s %-24s   %s\n", "", "first " n " (cold)", "rounds 2-" rounds " (warm)"
        row("@permaweb/ao-loader 0.0.49 (V8)", lc, lw)
        row("ours (wasmtime, fuel on: the node)", oc, ow)
        row("ours (fuel off)", fc, fw)
        printf "ours / ao-loader = %.2f (first %d evaluations; target >= %.0f)%s\n", oc / lc, n, target, verdict(oc / lc >= target)
        printf "ours / ao-loader = %.2f (warm)%s\n", ow / lw, verdict(ow / lw >= target)
        printf "set-up: ao-loader %.0f ms to load + %.0f ms for X = 0; ours %.0f ms to compile + %.0f ms to instantiate and run X = 0\n", lload, linit, oload, oinit
        printf "\nend to end through hb serve (LMDB, durable commits; %s):\n", policy
        printf "  scheduled: %d signed Eval messages (slots %d..%d) in %.2f s = %.0f msg/s (%d connections)\n", n, first, last, ss, n / ss, conns
        printf "  computed: one cold GET /<pid>/compute/results/data?slot=%d: %d slots in %.2f s = %.0f slots/s\n", last, n, cs, n / cs
        printf "  end to end: %d / (%.2f + %.2f) s = %.0f msg/s (target >= %d)%s\n", n, ss, cs, n / (ss + cs), target_e2e, verdict(n / (ss + cs) >= target_e2e)
        printf "  return X = %s (expected %d)\n", x, n
        printf "  overlapped: %d more scheduled while one reader computes up to the last slot answered (%d reads): %.2f s = %.0f msg/s\n", n, oreads, os, n / os
        printf "  process start (upload, spawn, X = 0 scheduled and computed): %.2f s; the last slot again: %.3f s\n", start / 1000, again
        printf "  client-side signing of the %d messages (not in the rates): %.2f s\n", n, signs
        printf "  openssl speed -elapsed rsa4096 on %d cores: %.0f sign/s; disk: %s synchronous 4 KiB writes/s\n", cores, sign_all, dsync
        printf "  store size: %.1f MB\n", bytes / 1e6
        # The floor: what the protocol makes the node do per message, whatever else it
        # does. Scheduling signs each assignment (RSA-4096); computing runs the module.
        sig = n / sign_node
        printf "\nwhat this machine allows (the work every node must do per message, measured above):\n"
        printf "  assignment signatures: the hb signer (AWS-LC, sign_rate) makes %.0f RSA-4096 sign/s on %d threads: %d take >= %.2f s\n", sign_node, cores, n, sig
        printf "  the module alone on the JSON a node gives it (json-iface@1.0 encoders, fuel on, warm): %.3f ms/slot: %d slots take >= %.2f s\n", 1000 * module / n, n, module
        printf "  end to end <= %d / (%.2f + %.2f) s = %.0f msg/s with everything else free (%.0f if the two overlapped on %d cores)\n", n, sig, module, n / (sig + module), cores * n / (sig * cores + module), cores
    }'
