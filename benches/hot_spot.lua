-- benches/compare.sh: every connection records an OUTBOUND of 1 on the one
-- product HOT_ID (row lock contention); errors are counted by code.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local body = '{"query":"mutation($i: StockMovementInput!) { recordStockMovement(input: $i) { id balanceAfter } }","variables":{"i":{"productId":"'
  .. os.getenv("HOT_ID") .. '","kind":"OUTBOUND","quantity":1}}}'
c.install(function() return body end)
