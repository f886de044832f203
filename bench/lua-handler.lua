-- The handler-like function of crates/hb-lua's benchmarks: takes a message table,
-- bumps a counter, returns a table. Shared by bench/lua.sh (native lua5.3) and
-- crates/hb-lua/examples/lua_loop.rs (Lua on wasm).
count = 0
function handle(msg)
  count = count + msg.inc
  return {count = count, from = msg.from, ok = true}
end
function loop(n)
  local msg = {inc = 1, from = 'bench'}
  for i = 1, n do handle(msg) end
  return count
end
