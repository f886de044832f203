-- hb-aos: an aos-compatible process library for lua@5.3a, written for hyperbeam-rs
-- (spec 06 §1.12-1.13). Load it as the module `builtin:aos` (before the process's own
-- modules); the node calls `compute(base, req, opts)` for every slot.
--
-- Provides: Handlers (add, append, prepend, once, before, after, remove, evaluate,
-- list, utils), ao (id, env, authorities, outbox, send, spawn, assign, isTrusted,
-- result, clearOutbox), Send, Spawn, print -> Output, the owner's Eval, Inbox, and a
-- `json` module (require("json")).

local insert, remove, concat, sort = table.insert, table.remove, table.concat, table.sort
local fmt, lower, upper = string.format, string.lower, string.upper

local MAX_INBOX = 10000

-- Tables read without case: `t.Action` finds `t.action`. Each table gets a metatable
-- of its own; they share one __index function.
local function ci_index(tt, k)
  if type(k) == "string" then
    local lk = lower(k)
    if lk ~= k then return rawget(tt, lk) end
  end
  return nil
end
local function ci(t)
  return setmetatable(t, { __index = ci_index })
end

local upper_first, by_type, collect_keys, handle -- defined at the end of the file
-- "block-height" -> "Block-Height", the first 1024 keys remembered (the same ones come).
local capitalized, ncapitalized = {}, 0
local function capitalize(key)
  local K = capitalized[key]
  if K == nil then
    K = key:gsub("(%a)(%w*)", upper_first)
    if ncapitalized < 1024 then capitalized[key], ncapitalized = K, ncapitalized + 1 end
  end
  return K
end
local function sorted_keys(t)
  local keys, mixed = collect_keys(t)
  if mixed then sort(keys, by_type) else sort(keys) end
  return keys
end

-- Printable text of a value; tables pretty-printed with sorted keys.
local function stringify(v, indent, seen)
  if type(v) ~= "table" then
    if type(v) == "string" then return v end
    return tostring(v)
  end
  indent, seen = indent or "", seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local inner = indent .. "  "
  local parts = {}
  local n = #v
  for i = 1, n do
    local item = v[i]
    parts[#parts + 1] = inner .. (type(item) == "string" and fmt("%q", item) or stringify(item, inner, seen))
  end
  for _, k in ipairs(sorted_keys(v)) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then
      local item = v[k]
      local text = type(item) == "string" and fmt("%q", item) or stringify(item, inner, seen)
      parts[#parts + 1] = inner .. tostring(k) .. " = " .. text
    end
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  return "{\n" .. concat(parts, ",\n") .. "\n" .. indent .. "}"
end

-- Output of the current message.
local output = {}

print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[#parts + 1] = stringify((select(i, ...)))
  end
  output[#output + 1] = concat(parts, "\t")
end

-- The commitment that identifies a message: its ID and committer (an RSA-PSS
-- signature, or a signed ANS-104 item), the first in key order.
local function signature(m)
  local c = type(m) == "table" and m.commitments
  if type(c) ~= "table" then return nil, nil end
  local id, committer = nil, nil -- of the least key among those that match
  for k, v in pairs(c) do
    if type(v) == "table" and (v.alg == "rsa-pss-sha512"
        or (v.alg == "signed" and type(v["commitment-device"]) == "string"
            and v["commitment-device"]:find("^ans104"))) and (id == nil or by_type(k, id)) then
      id, committer = k, v.committer
    end
  end
  return id, committer
end

local function list_of(v)
  if type(v) == "table" then return v end
  local out = {}
  if type(v) == "string" then
    for item in v:gmatch("[^,%s]+") do out[#out + 1] = item end
  end
  return out
end


----------------------------------------------------------------------------------
-- json (require("json") / require(".json")): deterministic encoding, objects with
-- sorted keys.

local json = {}

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function encode_string(s)
  return '"' .. (s:gsub('[%c"\\]', function(c)
    return escapes[c] or fmt("\\u%04x", c:byte())
  end)) .. '"'
end

local function encode(v, seen)
  local t = type(v)
  if v == nil then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return fmt("%.14g", v)
  end
  if t == "string" then return encode_string(v) end
  if t ~= "table" then error("json: cannot encode a " .. t, 2) end
  if seen[v] then error("json: cannot encode a cycle", 2) end
  seen[v] = true
  local out, n, count = {}, #v, 0
  for _ in pairs(v) do count = count + 1 end
  if count == n then
    for i = 1, n do out[i] = encode(v[i], seen) end
    seen[v] = nil
    return "[" .. concat(out, ",") .. "]"
  end
  for _, k in ipairs(sorted_keys(v)) do
    local item = v[k]
    if type(item) ~= "function" then
      out[#out + 1] = encode_string(tostring(k)) .. ":" .. encode(item, seen)
    end
  end
  seen[v] = nil
  return "{" .. concat(out, ",") .. "}"
end

function json.encode(v) return encode(v, {}) end

local unescapes = {
  b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/",
}

function json.decode(str)
  assert(type(str) == "string", "json.decode needs a string")
  local pos = 1
  local function ws() pos = str:find("[^ \t\r\n]", pos) or #str + 1 end
  local function fail(what) error(fmt("json: %s at position %d", what, pos), 0) end
  local function text()
    pos = pos + 1
    local parts = {}
    while true do
      local c = str:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = str:sub(pos + 1, pos + 1)
        if unescapes[e] then
          parts[#parts + 1] = unescapes[e]
          pos = pos + 2
        elseif e == "u" then
          local cp = tonumber(str:sub(pos + 2, pos + 5):match("^%x%x%x%x$") or "", 16)
          if cp == nil then fail("bad \\u escape") end
          pos = pos + 6
          if cp >= 0xD800 and cp <= 0xDBFF and str:sub(pos, pos + 1) == "\\u" then
            local lo = tonumber(str:sub(pos + 2, pos + 5):match("^%x%x%x%x$") or "", 16)
            if lo and lo >= 0xDC00 and lo <= 0xDFFF then
              cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
              pos = pos + 6
            end
          end
          parts[#parts + 1] = utf8.char(cp)
        else
          fail("bad escape")
        end
      else
        local stop = str:find('["\\]', pos) or (#str + 1)
        parts[#parts + 1] = str:sub(pos, stop - 1)
        pos = stop
      end
    end
    return concat(parts)
  end
  local value
  value = function()
    ws()
    local c = str:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local obj = {}
      ws()
      if str:sub(pos, pos) == "}" then pos = pos + 1 return obj end
      while true do
        ws()
        if str:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = text()
        ws()
        if str:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[k] = value()
        ws()
        local d = str:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      pos = pos + 1
      local arr = {}
      ws()
      if str:sub(pos, pos) == "]" then pos = pos + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        ws()
        local d = str:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return text()
    elseif str:sub(pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif str:sub(pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif str:sub(pos, pos + 3) == "null" then
      pos = pos + 4
      return nil
    end
    local num = str:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    local n = num and tonumber(num)
    if n == nil then fail("unexpected character") end
    pos = pos + #num
    return n
  end
  local v = value()
  ws()
  if pos <= #str then fail("trailing characters") end
  return v
end

if type(package) == "table" and type(package.loaded) == "table" then
  package.loaded["json"] = json
  package.loaded[".json"] = json
end

----------------------------------------------------------------------------------
-- ao

ao = ao or {}
ao._version = "hb-aos-1"
ao.reference = ao.reference or 0
ao.authorities = ao.authorities or {}

function ao.clearOutbox()
  ao.outbox = { Output = {}, Messages = {}, Spawns = {}, Assignments = {} }
end
ao.clearOutbox()

-- A message table for the outbox: Tags flattened into keys.
local function outgoing(msg)
  local m = {}
  for k, v in pairs(msg) do
    if k ~= "Tags" and type(v) ~= "function" then m[k] = v end
  end
  if type(msg.Tags) == "table" then
    for k, v in pairs(msg.Tags) do
      if type(k) == "number" and type(v) == "table" and v.name then
        m[v.name] = v.value
      elseif type(k) == "string" then
        m[k] = v
      end
    end
  end
  return m
end

function ao.send(msg)
  assert(type(msg) == "table", "ao.send needs a message table")
  ao.reference = ao.reference + 1
  local m = outgoing(msg)
  m.Reference = tostring(ao.reference)
  insert(ao.outbox.Messages, m)
  local handle = {}
  for k, v in pairs(m) do handle[k] = v end
  handle.onReply = function(...)
    local name, fn = ...
    if fn == nil then fn, name = name, nil end
    Handlers.once(name or ("_reply_" .. m.Reference), { From = m.Target, ["X-Reference"] = m.Reference }, fn)
  end
  handle.receive = handle.onReply
  return handle
end

function ao.spawn(module, msg)
  assert(type(module) == "string", "ao.spawn needs a module ID")
  msg = msg or {}
  ao.reference = ao.reference + 1
  local m = outgoing(msg)
  m.Type = "Process"
  m.Module = module
  m["From-Process"] = ao.id
  m.Reference = tostring(ao.reference)
  insert(ao.outbox.Spawns, m)
  return m
end

function ao.assign(assignment)
  insert(ao.outbox.Assignments, assignment)
end

function ao.isTrusted(msg)
  local from_process = msg["from-process"]
  if from_process == nil then return msg.Owner ~= nil end
  if from_process == ao.id then return true end
  for _, a in ipairs(ao.authorities) do
    if a == from_process or a == msg.Owner then return true end
  end
  return false
end

function ao.result(r)
  if ao.outbox.Error or (type(r) == "table" and r.Error) then
    return { Error = ao.outbox.Error or r.Error }
  end
  return {
    Output = r and r.Output or ao.outbox.Output,
    Messages = ao.outbox.Messages,
    Spawns = ao.outbox.Spawns,
    Assignments = ao.outbox.Assignments,
  }
end

Send = function(msg) return ao.send(msg) end
Spawn = function(module, msg) return ao.spawn(module, msg) end

----------------------------------------------------------------------------------
-- Handlers

Handlers = Handlers or { list = {}, nonce = 0 }
Handlers.list = Handlers.list or {}
Handlers.nonce = Handlers.nonce or 0
Inbox = Inbox or {}

local utils = {}
Handlers.utils = utils

function utils.hasMatchingTag(name, value)
  return function(msg) return msg[name] == value or (msg.Tags and msg.Tags[name] == value) end
end

function utils.hasMatchingTagOf(name, values)
  return function(msg)
    for _, v in ipairs(values) do
      if msg[name] == v then return true end
    end
    return false
  end
end

function utils.hasMatchingData(value)
  return function(msg) return msg.Data == value end
end

function utils.reply(input)
  return function(msg)
    local m = type(input) == "table" and input or { Data = input }
    m.Target = msg.From
    Send(m)
  end
end

function utils.continue(pattern)
  return function(msg)
    local r = Handlers.match(msg, pattern)
    if r == "skip" then return "skip" end
    return "continue"
  end
end

local MAGIC = "[%^%$%(%)%%%.%[%]%*%+%-%?]"

local function value_matches(have, want)
  if want == "_" then return have ~= nil end
  if have == nil then return false end
  if type(want) == "function" then return want(have) and true or false end
  if type(want) == "table" then
    for _, w in ipairs(want) do
      if value_matches(have, w) then return true end
    end
    return false
  end
  if have == want then return true end
  if type(want) == "string" and type(have) == "string" and want:find(MAGIC) then
    return have:match("^" .. want .. "$") ~= nil
  end
  return tostring(have) == tostring(want)
end

-- "break", "continue" or "skip".
function Handlers.match(msg, pattern)
  local r
  if type(pattern) == "function" then
    r = pattern(msg)
  elseif type(pattern) == "string" then
    r = msg.Action == pattern
  elseif type(pattern) == "table" then
    r = true
    for k, want in pairs(pattern) do
      local have = msg[k]
      if have == nil and msg.Tags then have = msg.Tags[k] end
      if not value_matches(have, want) then r = false break end
    end
  else
    r = false
  end
  if r == true or r == -1 or r == "break" then return "break" end
  if r == 1 or r == "continue" then return "continue" end
  return "skip"
end

local function find(name)
  for i, h in ipairs(Handlers.list) do
    if h.name == name then return i end
  end
  return nil
end

local function arguments(name, pattern, handle, maxRuns)
  if handle == nil and type(pattern) == "function" and type(name) == "string" then
    -- add(name, handle): the pattern is the Action of that name.
    return name, utils.hasMatchingTag("Action", name), pattern, maxRuns
  end
  return name, pattern, handle, maxRuns
end

local function put(at, name, pattern, handle, maxRuns)
  name, pattern, handle, maxRuns = arguments(name, pattern, handle, maxRuns)
  assert(type(handle) == "function", "a handler needs a function")
  local h = { name = name, pattern = pattern, handle = handle, maxRuns = maxRuns }
  local i = find(name)
  if i then
    Handlers.list[i] = h
  elseif at then
    insert(Handlers.list, at, h)
  else
    insert(Handlers.list, h)
  end
  return #Handlers.list
end

function Handlers.add(name, pattern, handle, maxRuns) return put(nil, name, pattern, handle, maxRuns) end
Handlers.append = Handlers.add
function Handlers.prepend(name, pattern, handle, maxRuns) return put(1, name, pattern, handle, maxRuns) end

function Handlers.once(name, pattern, handle)
  if type(name) ~= "string" then
    name, pattern, handle = nil, name, pattern
  end
  if name == nil then
    Handlers.nonce = Handlers.nonce + 1
    name = "_once_" .. Handlers.nonce
  end
  return put(1, name, pattern, handle, 1)
end

function Handlers.before(target)
  return { add = function(name, pattern, handle, maxRuns)
    return put(find(target) or 1, name, pattern, handle, maxRuns)
  end }
end

function Handlers.after(target)
  return { add = function(name, pattern, handle, maxRuns)
    local i = find(target)
    return put(i and i + 1 or nil, name, pattern, handle, maxRuns)
  end }
end

function Handlers.remove(name)
  local i = find(name)
  if i then remove(Handlers.list, i) end
end

function Handlers.evaluate(msg, env)
  local handled = false
  local i = 1
  while i <= #Handlers.list do
    local h = Handlers.list[i]
    local m = Handlers.match(msg, h.pattern)
    if m ~= "skip" then
      handled = true
      h.handle(msg, env)
      if h.maxRuns then
        h.maxRuns = h.maxRuns - 1
        if h.maxRuns <= 0 then
          local j = find(h.name)
          if j then
            remove(Handlers.list, j)
            if j <= i then i = i - 1 end
          end
        end
      end
      if m == "break" then break end
    end
    i = i + 1
  end
  if not handled then
    insert(Inbox, msg)
    if #Inbox > MAX_INBOX then remove(Inbox, 1) end
  end
  return handled
end

----------------------------------------------------------------------------------
-- Messages

local function tags_of(m)
  local tags = {}
  for k, v in pairs(m) do
    if type(k) == "string" and k ~= "commitments" and type(v) ~= "table" then
      tags[k] = v
    end
  end
  return ci(tags)
end

local function normalize(body, req)
  local msg = {}
  local keys = sorted_keys(body)
  for _, k in ipairs(keys) do msg[k] = body[k] end
  for _, k in ipairs(keys) do
    if type(k) == "string" then
      local K = capitalize(k)
      if msg[K] == nil then msg[K] = body[k] end
    end
  end
  local id, committer = signature(body)
  msg.Id = body.id or id
  msg.Owner = committer
  msg.From = body["from-process"] or committer
  msg.Target = body.target
  msg.Action = body.action
  msg.Data = body.data
  if msg.Data == nil and type(body.body) ~= "table" then msg.Data = body.body end
  local ctype = body["content-type"]
  if type(msg.Data) == "string" and type(ctype) == "string" and ctype:find("^application/json") then
    local ok, decoded = pcall(json.decode, msg.Data)
    if ok then msg.Data = decoded end
  end
  msg.Timestamp = req.timestamp
  msg["Block-Height"] = req["block-height"]
  msg.Tags = tags_of(body)
  return ci(msg)
end

-- The owner's Eval: the code is tried as an expression, then as a chunk.
local function eval(msg)
  local code = msg.Data
  if type(msg.body) == "table" and type(msg.body.body) == "string" then code = msg.body.body end
  if type(code) ~= "string" then error("Eval needs code in Data") end
  local fn = load("return " .. code, "aos")
  if fn == nil then
    local err
    fn, err = load(code, "aos")
    if fn == nil then error(err, 0) end
  end
  local result = fn()
  if result ~= nil then print(result) end
end

local function results()
  local outbox = {}
  for i, m in ipairs(ao.outbox.Messages) do outbox[tostring(i)] = m end
  local r = {
    outbox = outbox,
    output = { data = concat(output, "\n"), prompt = "aos> ", print = true },
  }
  if #ao.outbox.Spawns > 0 then r.spawns = ao.outbox.Spawns end
  if #ao.outbox.Assignments > 0 then r.assignments = ao.outbox.Assignments end
  if ao.outbox.Error ~= nil then r.error = ao.outbox.Error end
  return r
end

function compute(base, req, opts)
  local process = type(base.process) == "table" and base.process or base
  local pid, owner = signature(process)
  if type(req.process) == "string" and #req.process == 43 then pid = req.process end
  ao.id = pid or ao.id
  Owner = Owner or owner
  ao.authorities = list_of(process.authority)
  ao.env = { Process = ci({ Id = ao.id, Owner = Owner, Tags = tags_of(process) }) }
  output = {}
  ao.clearOutbox()
  local body = type(req.body) == "table" and req.body or {}
  local msg = normalize(body, req)
  if req.slot == 0 or (msg.Id ~= nil and msg.Id == pid) then
    -- The process's own first message: nothing to handle.
  elseif not ao.isTrusted(msg) then
    print("Message is not trusted.")
  else
    local ok, err = pcall(handle, msg)
    if not ok then
      ao.outbox.Error = tostring(err)
      print(tostring(err))
    end
  end
  base.results = results()
  return base
end

----------------------------------------------------------------------------------
-- Helpers declared at the top (defined here so that the line numbers above, which the
-- library's error messages carry, stay as they were).

upper_first = function(a, b) return upper(a) .. b end

-- A trusted message, in compute's pcall.
handle = function(msg)
  if msg.Action == "Eval" and msg.From == Owner then
    eval(msg)
  else
    Handlers.evaluate(msg, ao.env)
  end
end

-- Keys in order: by type name, then by value (numbers, strings) or by text.
by_type = function(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- The keys of t, and whether they mix types (or are neither numbers nor strings):
-- keys that are all numbers or all strings sort with Lua's own `<`, which orders them
-- as by_type does, without a Lua call per comparison.
collect_keys = function(t)
  local keys, n, kind, mixed = {}, 0, nil, false
  for k in pairs(t) do
    n = n + 1
    keys[n] = k
    local tk = type(k)
    if tk ~= kind then
      mixed = mixed or kind ~= nil or (tk ~= "string" and tk ~= "number")
      kind = tk
    end
  end
  return keys, mixed
end
