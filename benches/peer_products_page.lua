-- benches/compare.sh: PostGraphile's equivalent of products_page.lua (the
-- same ordering, by primary key, and the same filter on archived products).
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local c = require("common")
local body = '{"query":"{ allProducts(first: 20, orderBy: [PRIMARY_KEY_ASC], condition: {archivedAt: null}) { totalCount pageInfo { hasNextPage endCursor } nodes { id sku name stock } } }"}'
c.install(function() return body end)
