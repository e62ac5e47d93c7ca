package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local ids = c.ids()
c.install(function()
  local id = ids[math.random(#ids)]
  local kind = (math.random(2) == 1) and "INBOUND" or "OUTBOUND"
  return '{"query":"mutation($i: StockMovementInput!) { recordStockMovement(input: $i) { id balanceAfter } }","variables":{"i":{"productId":"' .. id .. '","kind":"' .. kind .. '","quantity":1}}}'
end)
