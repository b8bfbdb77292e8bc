-- wrk: POST /v1/chat/completions as the next turn of a conversation: a
-- ~2 KB history of six earlier messages that every request shares, then a
-- new user message unique per request. A router that tokenizes with the
-- model's chat template re-encodes the whole history unless it remembers
-- the messages it has seen.
local counter = 0
local history
local run_id
function init(args)
  math.randomseed(11)
  local words = {"route", "cache", "block", "prefix", "token", "engine", "serve", "query"}
  local function text(n)
    local t = {}
    for i = 1, n do t[i] = words[math.random(1, #words)] end
    return table.concat(t, " ")
  end
  local roles = {"user", "assistant", "user", "assistant", "user", "assistant"}
  local msgs = {}
  for i, r in ipairs(roles) do
    msgs[i] = '{"role":"' .. r .. '","content":"' .. text(55) .. '"}'
  end
  history = table.concat(msgs, ",")
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  run_id = tostring(math.random(100000, 999999))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = '{"model":"fake-model","max_tokens":4,"messages":[' .. history ..
    ',{"role":"user","content":"question ' .. run_id .. '-' .. counter .. ': which block?"}]}'
  return wrk.format("POST", "/v1/chat/completions", nil, body)
end
