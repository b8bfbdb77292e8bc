-- wrk: POST /v1/completions with a ~2 KB prompt that is unique per request
-- (a fresh run id and a counter up front), so every request is a cache miss
-- for a cache-aware router and must be hashed/indexed in full.
local counter = 0
local base
local run_id
function init(args)
  math.randomseed(7)
  local words = {"route", "cache", "block", "prefix", "token", "engine", "serve", "query"}
  local t = {}
  for i = 1, 330 do t[i] = words[math.random(1, #words)] end
  base = table.concat(t, " ")
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  run_id = tostring(math.random(100000, 999999))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = '{"model":"fake-model","max_tokens":4,"prompt":"req ' .. run_id .. '-' .. counter .. ' ' .. base .. '"}'
  return wrk.format("POST", "/v1/completions", nil, body)
end
