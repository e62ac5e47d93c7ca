#!/usr/bin/env bash
# The admin console's queries at catalogue scale, on the release build.
# Usage: benches/console.sh [sqlite|postgres] [products] [repeats]
#   (defaults: sqlite 100000 30; PG_ADMIN_URL as in benches/run.sh)
# Loads `products` products through POST /api/v1/uploads (names and stock
# spread out, a unit cost on most), then sends each query the console's
# pages send, `repeats` times one after another over one keep-alive
# connection, and prints the median and the slowest answer in ms:
# the products page (first page with its count), a page deep in the
# catalogue by cursor, search, each sort, the dashboard (totals, low-stock
# list, recent movements, health) and a product page with its ledger.
set -euo pipefail
cd "$(dirname "$0")/.."
DB_KIND="${1:-sqlite}"
PRODUCTS="${2:-100000}"
REPEATS="${3:-30}"
PORT="${BENCH_PORT:-4198}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
WORK="$(mktemp -d)"

[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --quiet
BIN=target/release/stockroom

BENCH_DB=stockroom_console
# shellcheck source=benches/common.sh
. benches/common.sh
bench_start UPLOAD_MAX_ROWS="$PRODUCTS" UPLOAD_MAX_BYTES=104857600

python3 - "$WORK" "$PRODUCTS" <<'PY'
import random, sys
work, products = sys.argv[1], int(sys.argv[2])
random.seed(11)
words = ["bolt", "nut", "washer", "gear", "valve", "pump", "hinge", "spring", "cable", "filter"]
with open(f"{work}/products.csv", "w") as f:
    f.write("sku,name,category,unit,low_stock_threshold,unit_cost,initial_stock\n")
    for p in range(products):
        name = f"{random.choice(words)} {random.choice(words)} {p}"
        cost = "" if p % 10 == 0 else str(random.randint(100, 90000))
        f.write(f"CON-{p:06d},{name},cat-{p % 40},ea,{random.randint(0, 20)},{cost},{random.randint(0, 500)}\n")
PY

start=$(date +%s.%N)
upload "$WORK/products.csv" PRODUCTS >/dev/null
loaded=$(python3 -c "print(f'{float($(date +%s.%N)) - float($start):.1f}')")

# A product id and a cursor in the middle of the catalogue.
middle=$(printf 'CON-%06d' $((PRODUCTS / 2 - 1)))
deep=$(gql "{\"query\":\"{ productBySku(sku: \\\"$middle\\\") { id } }\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["productBySku"]["id"])')

PRODUCT_FIELDS='id sku name category unit stock lowStockThreshold unitCost version archivedAt isLowStock'
export PORT TOKEN REPEATS
python3 - "$deep" "$PRODUCT_FIELDS" "$DB_KIND" "$PRODUCTS" "$loaded" <<'PY'
import http.client, json, os, statistics, sys, time
deep, fields, db, products, loaded = sys.argv[1:6]
port, token, repeats = int(os.environ["PORT"]), os.environ["TOKEN"], int(os.environ["REPEATS"])
page = f"query ($after: String, $f: ProductFilter, $o: ProductOrder) {{ products(first: 25, after: $after, filter: $f, orderBy: $o) {{ totalCount pageInfo {{ hasNextPage endCursor }} nodes {{ {fields} }} }} }}"
movement = "id kind quantity balanceAfter createdAt reference product { id sku name stock lowStockThreshold isLowStock }"
cases = [
    ("products page 1 + count", page, {}),
    (f"products page at {int(products) // 2:,} (cursor)", page, {"after": None}),
    ("search 'gear valve'", page, {"f": {"search": "gear valve"}}),
    ("search SKU 'CON-0777'", page, {"f": {"search": "CON-0777"}}),
    ("category + low stock", page, {"f": {"category": "cat-7", "lowStockOnly": True}}),
    ("sort SKU desc", page, {"o": {"field": "SKU", "direction": "DESC"}}),
    ("sort name", page, {"o": {"field": "NAME"}}),
    ("sort name, page 2 (cursor)", page, {"o": {"field": "NAME"}, "after": "NAME"}),
    ("sort stock desc", page, {"o": {"field": "STOCK", "direction": "DESC"}}),
    ("dashboard", "{ currency summary: stockSummary { products lowStock outOfStock unitsOnHand costedProducts stockValue } "
        "low: products(first: 50, filter: { lowStockOnly: true }, orderBy: { field: STOCK }) { nodes { id sku name stock lowStockThreshold } } "
        f"recent: stockMovements(first: 10) {{ nodes {{ {movement} }} }} health {{ status }} }}", {}),
    ("product page + ledger", f"query ($id: ID!) {{ product(id: $id) {{ {fields} movements(first: 20) {{ nodes {{ id kind quantity balanceAfter createdAt }} }} }} }}", {"id": deep}),
]
conn = http.client.HTTPConnection("127.0.0.1", port)
def ask(query, variables):
    body = json.dumps({"query": query, "variables": variables})
    t = time.perf_counter()
    conn.request("POST", "/graphql", body, {"content-type": "application/json", "authorization": f"Bearer {token}"})
    answer = json.loads(conn.getresponse().read())
    if answer.get("errors"):
        raise SystemExit(f"{query[:60]}: {answer['errors']}")
    return (time.perf_counter() - t) * 1000, answer["data"]
# Cursors are the row's id, base64url without padding: the deep product's
# (creation order), and the end of page 1 by name.
import base64, uuid
cursor_deep = base64.urlsafe_b64encode(uuid.UUID(deep).bytes).decode().rstrip("=")
_, byname = ask(page, {"o": {"field": "NAME"}})
for name, query, variables in cases:
    v = dict(variables)
    if "after" in v:
        v["after"] = byname["products"]["pageInfo"]["endCursor"] if v["after"] == "NAME" else cursor_deep
    times = sorted(ask(query, v)[0] for _ in range(repeats))
    print(f"| {db} | {products} | {name} | {statistics.median(times):.1f} | {times[-1]:.1f} |")
print(f"| {db} | {products} | (loading the catalogue by upload) | {loaded} s | |")
PY
echo "RSS after: $(( $(rss_kb) / 1024 )) MB"
