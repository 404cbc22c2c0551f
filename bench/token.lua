-- wrk -s bench/token.lua: each request is a token request with its own, never reused, client
-- assertion, read from the file $BODIES (one form body per line, made by
-- tests/interop/bench-assertions.mjs). Thread k of $THREADS takes lines k, k+T, k+2T...; a thread
-- that runs out stops sending rather than replay (bench/tokens.sh then asks for more lines).
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  local threads = tonumber(os.getenv("THREADS"))
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("BODIES")) do
    if i % threads == id then
      bodies[#bodies + 1] = line
    end
    i = i + 1
  end
  sent = 0
  path = os.getenv("TOKEN_PATH")
end

function request()
  sent = sent + 1
  if sent > #bodies then
    -- Out of fresh assertions: a replay would be refused (non-2xx), which the script reports.
    sent = 1
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/x-www-form-urlencoded" }, bodies[sent])
end
