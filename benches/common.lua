-- Shared by the wrk scripts: JSON POSTs to /graphql with the bench token,
-- counting responses that are not a clean GraphQL success.
local M = {}
local threads = {}

function M.install(make_body)
  wrk.method = "POST"
  wrk.path = "/graphql"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

  setup = function(thread)
    table.insert(threads, thread)
  end
  init = function(args)
    failures = 0
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  end
  request = function()
    return wrk.format(nil, nil, nil, make_body())
  end
  response = function(status, headers, body)
    if status ~= 200 or string.find(body, '"errors"', 1, true) then
      failures = failures + 1
      if failures == 1 then io.stderr:write("first failure: " .. status .. " " .. body .. "\n") end
    end
  end
  done = function(summary, latency, requests)
    local total = 0
    for _, t in ipairs(threads) do total = total + t:get("failures") end
    io.write(string.format("failed responses: %d of %d\n", total, summary.requests))
  end
end

function M.ids()
  return dofile(os.getenv("IDS_FILE"))
end

return M
