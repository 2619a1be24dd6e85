-- wrk script for bench/serve.sh's soak: cycles through valid and invalid requests (the
-- files listed in $SOAK_BODIES, one "PATH BODYFILE" per line) and counts answers by status
-- across all threads, printed at the end as "status CODE COUNT".
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  requests = {}
  for line in io.lines(os.getenv("SOAK_BODIES")) do
    local path, file = line:match("^(%S+)%s+(%S+)$")
    local f = assert(io.open(file, "r"))
    local headers = { ["Content-Type"] = "application/json" }
    table.insert(requests, wrk.format("POST", path, headers, f:read("*a")))
    f:close()
  end
  n = 0
end

function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end

function response(status, headers, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, reqs)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("status %s %d\n", k, v))
  end
end
