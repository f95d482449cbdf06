-- wrk script for benches/load/soak.sh: mixed reads and writes against
-- `bench_server --mode soak`.
--
--   wrk -t1 -c64 -d180s --latency -s benches/load/soak.lua http://127.0.0.1:PORT -- TAGS_FILE
--
-- TAGS_FILE has one `ID ETAG` line per item (the tags a client fetched at the start; items
-- never change, so they stay current). Request k of each wrk thread, deterministically:
--   k % 10 in 0..3  GET                          -> 200
--   k % 10 in 4..6  GET  If-None-Match: current  -> 304
--   k % 10 in 7..8  PUT  If-Match: stale          -> 412 (503 when the lookup fails)
--   k % 10 == 9     PUT  If-Match: current        -> 200 (503 when the lookup fails)
-- on item k % ITEMS, so every kind of request meets every item.

local requests = {}
local items = 0
local counter = 0

local STALE = '"stale-0000000000000000000000000000000000000000"'
local BODY = '{"name":"soak","note":"a small write body, read whole by the handler"}'

function init(args)
  local file = args[1]
  if file == nil then
    error("usage: wrk ... -s soak.lua URL -- TAGS_FILE")
  end
  for line in io.lines(file) do
    local id, tag = line:match("^(%d+)%s+(%S+)%s*$")
    if id ~= nil then
      local path = "/items/" .. id
      local put_stale = { ["Content-Type"] = "application/json", ["If-Match"] = STALE }
      local put_fresh = { ["Content-Type"] = "application/json", ["If-Match"] = tag }
      requests[items] = {
        plain = wrk.format("GET", path),
        revalidate = wrk.format("GET", path, { ["If-None-Match"] = tag }),
        stale = wrk.format("PUT", path, put_stale, BODY),
        fresh = wrk.format("PUT", path, put_fresh, BODY),
      }
      items = items + 1
    end
  end
  if items == 0 then
    error("no tags in " .. file)
  end
end

function request()
  local k = counter
  counter = counter + 1
  local item = requests[k % items]
  local kind = k % 10
  if kind < 4 then
    return item.plain
  elseif kind < 7 then
    return item.revalidate
  elseif kind < 9 then
    return item.stale
  else
    return item.fresh
  end
end
