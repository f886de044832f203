-- The device benchmark's workload in native Lua: crates/hb-devices/src/lua/aos.lua
-- (the aos library of lua@5.3a) and one `Inc` handler, computing N slots the way
-- crates/hb-devices/benches/lua.rs does through the device — the same state, process
-- and message fields — but with the tables built in Lua, so nothing crosses a
-- host boundary.
--
--   lua5.3 bench/lua-aos.lua crates/hb-devices/src/lua/aos.lua N
--
-- Prints `native_aos_msgs_per_s <rate>` (io.write: the library sends `print` to Output); checks that the handler ran once a message.
local lib, n = arg[1], tonumber(arg[2] or "100000")
dofile(lib)

local PID = string.rep("P", 43)
local OWNER = string.rep("O", 43)
local function signed(m, id)
  m.commitments = {
    [id] = { alg = "rsa-pss-sha512", committer = OWNER, ["commitment-device"] = "httpsig@1.0" },
  }
  return m
end
local function slot(state, s, body)
  return compute(state, {
    path = "compute", slot = s, process = PID, timestamp = 1700000000000 + s, body = body,
  }, {})
end

local state = {
  device = "lua@5.3a", module = "builtin:aos",
  process = signed({ type = "Process" }, PID),
}
state = slot(state, 0, { type = "Process" })
state = slot(state, 1, signed({
  action = "Eval",
  data = "Handlers.add('Inc', { Action = 'Inc' }, function(m) N = (N or 0) + 1 end)",
}, string.rep("e", 43)))

local t0 = os.clock()
for s = 2, n + 1 do
  state = slot(state, s, signed({ action = "Inc" }, string.rep("i", 43)))
end
local elapsed = os.clock() - t0
assert(N == n, "the handler ran " .. tostring(N) .. " times, not " .. n)
io.write(string.format("native_aos_msgs_per_s %.0f\n", n / elapsed))
