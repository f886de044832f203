#!/usr/bin/env bash
# Lua on wasm (crates/hb-lua) against native Debian lua5.3, same handler, same run.
#
#   bench/lua.sh            # N=1000000 handler calls
#   N=300000 bench/lua.sh
#
# Workload: bench/lua-handler.lua — `handle(msg)` bumps a counter and returns a table;
# `loop(n)` calls it n times from Lua. Both sides time `loop(N)` inside one process
# (wasm: fuel metering on, as in the node). Prints calls/s of each and the ratio
# native/wasm. The wasm side also prints host->Lua calls/s (one `Lua::call` per
# message), snapshot size/time and how fast `while true do end` is stopped.
# Needs `lua5.3` (apt-get install lua5.3); not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
if ! command -v lua5.3 >/dev/null; then
  echo "lua5.3 not found (apt-get install lua5.3)" >&2
  exit 1
fi
cargo build --release -q -p hb-lua --example lua_loop
bin="${CARGO_TARGET_DIR:-target}/release/examples/lua_loop"

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
