package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local body = '{"query":"{ products(first: 20) { totalCount pageInfo { hasNextPage endCursor } nodes { id sku name stock } } }"}'
c.install(function() return body end)
