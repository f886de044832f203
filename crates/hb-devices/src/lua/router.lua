-- The router process of a hyperbeam-rs node (module `builtin:router`, loaded after
-- `builtin:aos`): nodes register routes to themselves with `router@1.0`'s `register`
-- (spec 05 §7.7), and the process's state key `routes` is a routing table that
-- `router@1.0` reads through the node option `route_provider`
-- (`/router~node-process@1.0/now/routes`).
--
-- A registration is a message signed by the registering node:
--   { path = "register", route = { prefix, template, price }, body = <attestation> }
-- or, from a node that cannot attest (no SEV-SNP hardware), `attestation = "none"`
-- and no body. This router cannot verify attestations (there is no `snp@1.0` here),
-- so it refuses attested registrations, and accepts unattested ones only when its
-- process definition says `accept-unattested = true`; by default it refuses them.
-- A refusal is the slot's error (`results/error`), which the registering node reads.
--
-- Each template has one route `{ template, strategy = "Random", nodes = {...} }`; a
-- node is `{ prefix, price, wallet = <the registering node's address> }`. A node that
-- registers again for a template replaces its own entry.

Routes = Routes or {}

local function is_true(v)
  return v == true or v == "true"
end

local function accepts_unattested()
  local tags = ao.env and ao.env.Process and ao.env.Process.Tags or {}
  return is_true(tags["accept-unattested"])
end

local function text(v, what)
  if type(v) == "number" then return tostring(v) end
  if type(v) ~= "string" or v == "" then
    error("Registration refused: the route has no " .. what .. ".", 0)
  end
  return v
end

local function is_registration(msg)
  return msg.path == "register" and type(msg.route) == "table"
end

local function register_route(msg)
  local node = msg.Owner
  if node == nil then
    error("Registration refused: the message is not signed.", 0)
  end
  if type(msg.body) == "table" then
    error("Registration refused: this router cannot verify attestations (no snp@1.0).", 0)
  end
  if not accepts_unattested() then
    error("Registration refused: the registration has no attestation, and this router "
      .. "accepts unattested registrations only when its operator allows them "
      .. "(`accept-unattested` on the router process).", 0)
  end
  local template = text(msg.route.template, "template")
  local prefix = text(msg.route.prefix, "prefix")
  if not prefix:find("^https?://") then
    error("Registration refused: the route's prefix is not an http(s) URL.", 0)
  end
  local entry = { prefix = prefix, wallet = node }
  if msg.route.price ~= nil then entry.price = msg.route.price end
  local route
  for _, r in ipairs(Routes) do
    if r.template == template then route = r break end
  end
  if route == nil then
    route = { template = template, strategy = "Random", nodes = {} }
    table.insert(Routes, route)
  end
  for i, n in ipairs(route.nodes) do
    if n.wallet == node then
      route.nodes[i] = entry
      print("Route updated: " .. template .. " -> " .. prefix)
      return
    end
  end
  table.insert(route.nodes, entry)
  print("Route registered: " .. template .. " -> " .. prefix)
end

Handlers.add("Register", is_registration, register_route)

-- The routing table as a state key, after every slot.
local aos_compute = compute
function compute(base, req, opts)
  local state = aos_compute(base, req, opts)
  state.routes = Routes
  return state
end

-- A slot whose message has `path = "register"` calls the global `register` (the
-- message's path names the function, as in the reference's router script): the same
-- computation as any other slot.
function register(base, req, opts)
  return compute(base, req, opts)
end
