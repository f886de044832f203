#!/usr/bin/env bash
# Lua on wasm against native Debian lua5.3, same work, same run. See docs/PERFORMANCE.md
# ("Lua on WebAssembly").
#
#   bench/lua.sh            # N=1000000 handler calls, M=100000 aos messages
#   N=300000 M=50000 bench/lua.sh
#
# 1. The engine (crates/hb-lua): bench/lua-handler.lua — `handle(msg)` bumps a counter
#    and returns a table; `loop(n)` calls it n times from Lua. Both sides time `loop(N)`
#    inside one process (wasm: fuel metering on, as in the node). Prints calls/s of
#    each and the ratio native/wasm. The wasm side also prints host->Lua calls/s (one
#    `Lua::call` per message), snapshot size/time and how fast `while true do end` is
#    stopped.
# 2. The device, through compute: `cargo bench -p hb-devices --bench lua --
#    aos_inc_handler` computes slots of an aos process (the project's aos library,
#    one `Inc` handler) on lua@5.3a, each message converted to Lua and back, the state
#    checkpointed for rollback; bench/lua-aos.lua runs the same library, handler and
#    messages in native lua5.3 with the tables built in Lua (nothing crosses a host
#    boundary). Prints messages/s of each and the ratio native/device. Target (issue):
#    the device at >= 10,000 handler messages/s.
# Needs `lua5.3` (apt-get install lua5.3); not run in CI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
N="${N:-1000000}"
M="${M:-100000}"
if ! command -v lua5.3 >/dev/null; then
  echo "lua5.3 not found (apt-get install lua5.3)" >&2
  exit 1
fi
echo "load average: $(load)"

# --- 1. the engine --------------------------------------------------------------------
cargo build --release -q -p hb-lua --example lua_loop
bin="$(cargo_target_dir)/release/examples/lua_loop"

native=$(lua5.3 -e "
  dofile('bench/lua-handler.lua')
  local t0 = os.clock()
  assert(loop($N) == $N)
  print(string.format('%.0f', $N / (os.clock() - t0)))")
wasm_out=$("$bin" "$N")
wasm=$(echo "$wasm_out" | awk '/^in_lua_calls_per_s/ { print $2 }')
echo "native lua5.3:  $native calls/s"
echo "$wasm_out" | sed 's/^/hb-lua (wasm): /'
awk -v n="$native" -v w="$wasm" 'BEGIN { printf "ratio native/wasm (in-Lua loop): %.2fx\n", n / w }'

# --- 2. the device, through compute ------------------------------------------------------
device_out=$(cargo bench -q -p hb-devices --bench lua -- aos_inc_handler 2>&1) || {
  echo "$device_out" >&2
  exit 1
}
# criterion: `thrpt:  [low unit mid unit high unit]` (the first such line; a later one
# is the change against the previous run); the middle estimate, in messages/s.
device=$(echo "$device_out" | awk '
  /thrpt:/ {
    gsub(/[][]/, "")
    v = $4; u = $5
    m = (u ~ /^Kelem/) ? 1e3 : (u ~ /^Melem/) ? 1e6 : (u ~ /^Gelem/) ? 1e9 : 1
    printf "%.0f\n", v * m
    exit
  }')
[[ -n "$device" ]] || { echo "no throughput in: $device_out" >&2; exit 1; }
native_aos=$(lua5.3 bench/lua-aos.lua crates/hb-devices/src/lua/aos.lua "$M" |
  awk '/^native_aos_msgs_per_s/ { print $2 }')
[[ -n "$native_aos" ]] || { echo "bench/lua-aos.lua printed no rate" >&2; exit 1; }
echo "aos Inc handler, native lua5.3 (library only): $native_aos messages/s"
echo "aos Inc handler, lua@5.3a through compute:     $device messages/s"
awk -v n="$native_aos" -v d="$device" 'BEGIN {
  printf "ratio native/device: %.1fx; device target >= 10000 messages/s: %s\n",
    n / d, (d >= 10000) ? "met" : "MISSED" }'
echo "load average: $(load)"
