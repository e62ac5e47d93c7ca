#!/usr/bin/env bash
# Upload import benchmark of the release build.
# Usage: benches/uploads.sh [sqlite|postgres] [rows] [products]
#   (defaults: sqlite 100000 1000; PG_ADMIN_URL as in benches/run.sh)
# Imports a PRODUCTS file (`products` rows, each with initial stock), then a
# STOCK_MOVEMENTS file of `rows` rows (inbound, outbound, return and
# adjustment over those products, never below zero), both through
# POST /api/v1/uploads. Prints rows per second from the job's startedAt to
# its finishedAt (the worker's time) and from the upload to the finished
# state (what a client waits), and the server's peak resident memory.
set -euo pipefail
cd "$(dirname "$0")/.."
DB_KIND="${1:-sqlite}"
ROWS="${2:-100000}"
PRODUCTS="${3:-1000}"
PORT="${BENCH_PORT:-4197}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
WORK="$(mktemp -d)"

[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --quiet
BIN="${BENCH_BIN:-target/release/stockroom}"

BENCH_DB=stockroom_uploads
# shellcheck source=benches/common.sh
. benches/common.sh
bench_start UPLOAD_MAX_ROWS="$ROWS" UPLOAD_MAX_BYTES=104857600

python3 - "$WORK" "$ROWS" "$PRODUCTS" <<'PY'
import random, sys
work, rows, products = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
with open(f"{work}/products.csv", "w") as f:
    f.write("sku,name,category,unit,low_stock_threshold,initial_stock\n")
    for p in range(products):
        f.write(f"UP-{p:06d},Upload bench {p},bench,ea,10,1000\n")
stock = [1000] * products
with open(f"{work}/movements.csv", "w") as f:
    f.write("sku,kind,quantity,note,reference\n")
    for i in range(rows):
        p = random.randrange(products)
        kind = random.choice(["inbound", "outbound", "outbound", "return", "adjustment"])
        q = random.randint(1, 20)
        if kind in ("outbound",) or (kind == "adjustment" and random.random() < 0.5):
            q = min(q, stock[p])
            if q == 0:
                kind, q = "inbound", 5
            elif kind == "adjustment":
                q = -q
        if kind == "outbound":
            stock[p] -= q
        else:
            stock[p] += q
        f.write(f"UP-{p:06d},{kind},{q},bench row {i},REF-{i}\n")
PY

# import FILE KIND: prints "rows worker_rows_per_s client_rows_per_s failed"
import() {
  local start end job
  start=$(date +%s.%N)
  job=$(upload "$1" "$2")
  end=$(date +%s.%N)
  python3 -c '
import json, sys
from datetime import datetime
job = json.loads(sys.argv[1]); start, end = float(sys.argv[2]), float(sys.argv[3])
parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
worker = (parse(job["finishedAt"]) - parse(job["startedAt"])).total_seconds()
n = job["processedRows"]
status, failed = job["status"], job["failedRows"]
print(f"{status} {n} rows, {failed} refused: {n / worker:,.0f} rows/s in the worker ({worker:.2f} s), {n / (end - start):,.0f} rows/s upload to finished")
' "$job" "$start" "$end"
}

echo "== $DB_KIND: $PRODUCTS products, then $ROWS movements"
echo "idle RSS: $(( $(rss_kb) / 1024 )) MB"
echo -n "PRODUCTS: "; import "$WORK/products.csv" PRODUCTS
echo -n "STOCK_MOVEMENTS: "; import "$WORK/movements.csv" STOCK_MOVEMENTS
echo "peak RSS: $(( $(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status") / 1024 )) MB, now $(( $(rss_kb) / 1024 )) MB"
"$BIN" verify-ledger >/dev/null && echo "verify-ledger: clean" || echo "verify-ledger: DRIFT"
