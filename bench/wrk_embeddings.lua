-- wrk script for bench/_load.py: POST one sentence per request, a different one each time (no cache can answer),
-- as base64 like the openai SDK asks; `-- <model>` names the model (infinity needs it, eduserve takes its default);
-- `-- <model> <think ms>` (model "" for the default) makes each connection pause a random time, exponential with that
-- mean, before each request: arrivals spread out like independent users rather than clients answered together.
local subjects = {"The student", "Our teacher", "A scientist", "The class", "My friend", "The author"}
local topics = {"how photosynthesis turns light into chemical energy", "why the Roman Empire split into east and west",
  "the rules for adding fractions with unlike denominators", "the water cycle and the role of evaporation",
  "Newton's second law of motion with an everyday example", "the causes of the First World War",
  "how vaccines train the immune system", "the difference between weather and climate"}
local counter = 0
local model = nil
local think_ms = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"  -- beside the -H headers (wrk.format with a table would drop them)

init = function(args)
  model = args[1]
  if model == "" then model = nil end
  think_ms = tonumber(args[2] or "0")
  counter = math.random(1, 1000000)
end

delay = function()
  if think_ms <= 0 then return 0 end
  return math.floor(-think_ms * math.log(1 - math.random()))
end

request = function()
  counter = counter + 1
  local text = subjects[(counter % #subjects) + 1] .. " explained " .. topics[(counter % #topics) + 1] ..
    " (note " .. counter .. ")."
  local body = '{"input": ["' .. text .. '"], "encoding_format": "base64"'
  if model then body = body .. ', "model": "' .. model .. '"' end
  return wrk.format(nil, nil, nil, body .. "}")
end
