#!/usr/bin/env bash
# Load benchmark of the release build with wrk (installed from Debian if
# missing). Usage: benches/run.sh [sqlite|postgres] [seconds]
#   PG_ADMIN_URL  PostgreSQL to create the bench database in
#                 (default postgres://postgres@127.0.0.1:5432/test)
# Prints requests/s for productBySku (c50), products(first: 20) with
# totalCount (c50) and recordStockMovement (c32, 100 products), plus the
# server's resident memory when idle and after the load.
set -euo pipefail
cd "$(dirname "$0")/.."
DB_KIND="${1:-sqlite}"
SECONDS_PER_RUN="${2:-10}"
PORT="${BENCH_PORT:-4199}"
BENCH_DIR="$(pwd)/benches"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
WORK="$(mktemp -d)"
export BENCH_DIR

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null || { echo "wrk is needed" >&2; exit 1; }; }
cargo build --release --locked --quiet
BIN=target/release/stockroom

BENCH_DB=stockroom_bench
# shellcheck source=benches/common.sh
. "$BENCH_DIR/common.sh"
bench_start DB_MAX_CONNECTIONS="${DB_MAX_CONNECTIONS:-16}"

PRODUCTS=100
export PRODUCTS
echo "return {" >"$WORK/ids.lua"
for i in $(seq 0 $((PRODUCTS - 1))); do
  sku=$(printf 'BENCH-%04d' "$i")
  id=$(gql "{\"query\":\"mutation { createProduct(input: {sku: \\\"$sku\\\", name: \\\"Bench $i\\\", initialStock: 1000000}) { id } }\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createProduct"]["id"])')
  echo "  \"$id\"," >>"$WORK/ids.lua"
done
echo "}" >>"$WORK/ids.lua"
export IDS_FILE="$WORK/ids.lua"

rss() { echo "$(( $(rss_kb) / 1024 )) MB"; }
sleep 1
echo "database: $DB_KIND; idle RSS after setup: $(rss)"

run() {
  local name=$1 conns=$2 script=$3
  echo
  echo "== $name (c$conns, ${SECONDS_PER_RUN}s)"
  wrk -t2 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$BENCH_DIR/$script" "http://127.0.0.1:$PORT/graphql" \
    | grep -E 'Requests/sec|Latency|99%|failed responses|Non-2xx'
}
run "productBySku" 50 product_by_sku.lua
run "products(first: 20) + totalCount" 50 products_page.lua
before=$(gql '{"query":"{ stockMovements(first: 1) { totalCount } }"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["stockMovements"]["totalCount"])')
run "recordStockMovement, 100 products" 32 record_movement.lua
after=$(gql '{"query":"{ stockMovements(first: 1) { totalCount } }"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["stockMovements"]["totalCount"])')
echo "movements written: $((after - before)) ($(( (after - before) / SECONDS_PER_RUN ))/s)"
echo
echo "RSS after load: $(rss)"
DATABASE_URL="$DATABASE_URL" "$BIN" verify-ledger
