-- Shared by the wrk scripts: JSON POSTs to /graphql with the bench token
-- (none when TOKEN is empty, for the peers in benches/compare.sh), counting
-- responses that are not a clean GraphQL success, by error code.
local M = {}
local threads = {}

function M.install(make_body)
  wrk.method = "POST"
  wrk.path = "/graphql"
  wrk.headers["Content-Type"] = "application/json"
  local token = os.getenv("TOKEN")
  if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end

  setup = function(thread)
    table.insert(threads, thread)
  end
  init = function(args)
    failures = 0
    codes = {}
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  end
  request = function()
    return wrk.format(nil, nil, nil, make_body())
  end
  response = function(status, headers, body)
    if status ~= 200 or string.find(body, '"errors"', 1, true) then
      failures = failures + 1
      local code = string.match(body, '"code"%s*:%s*"([%w_]+)"') or ("HTTP_" .. status)
      codes[code] = (codes[code] or 0) + 1
      if failures == 1 then io.stderr:write("first failure: " .. status .. " " .. body .. "\n") end
    end
  end
  done = function(summary, latency, requests)
    local total, by_code = 0, {}
    for _, t in ipairs(threads) do
      total = total + t:get("failures")
      for code, n in pairs(t:get("codes") or {}) do by_code[code] = (by_code[code] or 0) + n end
    end
    io.write(string.format("failed responses: %d of %d\n", total, summary.requests))
    local names = {}
    for code in pairs(by_code) do table.insert(names, code) end
    table.sort(names)
    local parts = {}
    for _, code in ipairs(names) do table.insert(parts, code .. "=" .. by_code[code]) end
    io.write("errors by code: " .. (#parts > 0 and table.concat(parts, " ") or "none") .. "\n")
  end
end

function M.ids()
  return dofile(os.getenv("IDS_FILE"))
end

return M
