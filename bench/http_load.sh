#!/usr/bin/env bash
# HTTP throughput of `hb serve` against a hello-world hyper server (the baseline built
# from the same crates: crates/hb-http/examples/hello_world.rs), both on loopback, at 32
# connections. Prints both rates and the ratio hb/hello. See docs/PERFORMANCE.md.
#
#   bench/http_load.sh                       # 15 paired rounds of 2 s per server, medians
#   ROUNDS=9 DURATION=10 bench/http_load.sh  # longer
#
# Needs `wrk` (installed from Debian when missing and we are root) or `oha`.
set -euo pipefail

DURATION="${DURATION:-2}"
ROUNDS="${ROUNDS:-15}"
CONNECTIONS=32
HB_PATH='/~message@1.0&a+integer=1/a'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

# --- build --------------------------------------------------------------------------
log "building (release)..."
cargo build --release --quiet -p hb --bin hb -p hb-http --example hello_world
target_dir="$(cargo_target_dir)"
hb_bin="$target_dir/release/hb"
hello_bin="$target_dir/release/examples/hello_world"
[[ -x "$hb_bin" ]] || die "missing $hb_bin"
[[ -x "$hello_bin" ]] || die "missing $hello_bin"

# --- load tool ----------------------------------------------------------------------
tool=""
if command -v wrk >/dev/null 2>&1; then
    tool=wrk
elif command -v oha >/dev/null 2>&1; then
    tool=oha
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing wrk..."
    apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null
    tool=wrk
else
    die "no load tool: install wrk (apt-get install wrk) or oha (cargo install oha)"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed to check the hb response"

# --- servers ------------------------------------------------------------------------
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME CMD... : runs CMD with stdout in $work/NAME.out; sets $addr once it prints
# `listening on http://ADDR` (waiting at most 10 s).
start() {
    local name="$1"
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=("$!")
    local pid="$!"
    addr=""
    for _ in $(seq 1 100); do
        addr="$(sed -n 's|^listening on http://\(.*\)$|\1|p' "$work/$name.out" | head -n1)"
        [[ -n "$addr" ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$work/$name.err" >&2 || true
    die "$name did not start"
}

start hello "$hello_bin" 0
hello_addr="$addr"
# Run hb from an empty directory so that a config.flat lying around is not picked up.
start hb env -C "$work" "$hb_bin" serve --port 0 --data-dir "$work/hb-data"
hb_addr="$addr"
log "hello: http://$hello_addr   hb: http://$hb_addr   tool: $tool"

hello_url="http://$hello_addr/"
hb_url="http://$hb_addr$HB_PATH"

# Check the answers once before loading.
body="$(curl -sS --globoff "$hello_url")"
[[ "$body" == "Hello, world!" ]] || die "hello world answered \`$body\`"
body="$(curl -sS --globoff "$hb_url")"
[[ "$body" == "1" ]] || die "hb answered \`$body\` to $HB_PATH, expected \`1\`"

# rate URL: requests per second at $CONNECTIONS connections for $DURATION s (after a
# 1 s warm-up). Fails if any response was not 2xx/3xx.
rate() {
    local url="$1" out
    case "$tool" in
    wrk)
        wrk -t2 -c"$CONNECTIONS" -d1s "$url" >/dev/null
        out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "$url")"
        if grep -q 'Non-2xx' <<<"$out"; then
            log "$out"
            die "non-2xx responses from $url"
        fi
        awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' <<<"$out"
        ;;
    oha)
        oha --no-tui -z 1s -c "$CONNECTIONS" "$url" >/dev/null
        out="$(oha --no-tui -z "${DURATION}s" -c "$CONNECTIONS" "$url")"
        awk '/Requests\/sec:/ { printf "%.0f\n", $2 }' <<<"$out"
        ;;
    esac
}

# Both rates move by ±20 % from one run to the next on a small shared machine, and they
# move together, so the servers take turns for $ROUNDS rounds: each round gives one
# paired ratio, and the medians are reported.
hello_all=()
hb_all=()
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    log "round $round/$ROUNDS: hello world for ${DURATION}s, then hb for ${DURATION}s..."
    h="$(rate "$hello_url")"
    b="$(rate "$hb_url")"
    [[ -n "$h" && -n "$b" ]] || die "could not read the request rates"
    hello_all+=("$h")
    hb_all+=("$b")
    ratios+=("$(awk -v a="$b" -v b="$h" 'BEGIN { printf "%.3f", a / b }')")
done
log "hello: ${hello_all[*]}"
log "hb:    ${hb_all[*]}"
log "ratio: ${ratios[*]}"
hello_rps="$(printf '%s\n' "${hello_all[@]}" | median)"
hb_rps="$(printf '%s\n' "${hb_all[@]}" | median)"
ratio="$(printf '%s\n' "${ratios[@]}" | median)"
printf 'hb: %.0f req/s  hello: %.0f req/s  ratio: %.2f  (medians of %s paired rounds)\n' \
    "$hb_rps" "$hello_rps" "$ratio" "$ROUNDS"
