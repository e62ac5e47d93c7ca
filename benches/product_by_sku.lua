package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local n = tonumber(os.getenv("PRODUCTS") or "100")
c.install(function()
  local sku = string.format("BENCH-%04d", math.random(n) - 1)
  return '{"query":"query($s: String!) { productBySku(sku: $s) { id sku name stock lowStockThreshold version } }","variables":{"s":"' .. sku .. '"}}'
end)
