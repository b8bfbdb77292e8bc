-- wrk: POST /v1/completions with a prompt of PROMPT_KB kilobytes (default 2)
-- that is unique per request (a fresh run id and a counter up front), so
-- every request is a cache miss for a cache-aware router and must be
-- tokenized/hashed and indexed in full.
local counter = 0
local base
local run_id
function init(args)
  local kb = tonumber(os.getenv("PROMPT_KB") or "2") or 2
  math.randomseed(7)
  local words = {"route", "cache", "block", "prefix", "token", "engine", "serve", "query"}
  local t = {}
  -- ~6.2 bytes per word with its space: 165 words per KB.
  for i = 1, math.floor(165 * kb) do t[i] = words[math.random(1, #words)] end
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
