#!/usr/bin/env bash
# Throughput with 1, 2 and 3 instances of the release build on one
# PostgreSQL (docs/SCALING.md), and the cost of pg_notify at commit.
# Usage: benches/scaling.sh [products]      (default 10000)
#   BENCH_SECONDS    seconds per run (default 10)
#   PG_ADMIN_URL     PostgreSQL, trust auth (default postgres://postgres@127.0.0.1:5432/test)
#   BENCH_NO_BUILD=1 use target/release/stockroom as it is
# For k = 1, 2, 3 instances (each DB_MAX_CONNECTIONS=16, the same token
# signing key so that one login serves all): recordStockMovement over 100
# products with 32 wrk connections and productBySku with 48, split evenly
# over the instances, run at once; sums of the answered-without-error rates.
# Then pgbench: a one-row UPDATE per transaction at c1 and c32, with and
# without a pg_notify in it. wrk, the instances and PostgreSQL share the
# machine's cores: the figures say what saturates first here, not what more
# machines would do. Installs wrk (apt) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-10000}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
DB_KIND=postgres
BENCH_DB=stockroom_scaling
NOTIFY_DB=notify_scaling
PORT=4301
WORK="$(mktemp -d)"
BIN=target/release/stockroom
BENCH_DIR="$(pwd)/benches"
export BENCH_DIR PRODUCTS="$N"
EXTRA=()

say() { echo "[$(date +%T)] $*" >&2; }
die() { echo "scaling: $*" >&2; exit 1; }

command -v wrk >/dev/null || apt-get install -y wrk >/dev/null 2>&1 \
  || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null; } || die "wrk is needed"
command -v pgbench >/dev/null || die "pgbench is needed"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --quiet

scaling_cleanup() {
  for pid in "${EXTRA[@]}"; do kill "$pid" 2>/dev/null || true; done
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $NOTIFY_DB WITH (FORCE)" >/dev/null 2>&1 || true
  bench_cleanup
}
BENCH_TRAP=scaling_cleanup
# shellcheck source=benches/common.sh
. benches/common.sh
bench_start DB_MAX_CONNECTIONS=16

# N products BENCH-0000.., each with its INBOUND movement; the first 100
# (the write load) with 1,000,000 in stock.
psql "$DATABASE_URL" -qX -v ON_ERROR_STOP=1 -v n="$N" >/dev/null <<'SQL'
BEGIN;
CREATE TEMP TABLE seed ON COMMIT DROP AS
  SELECT i, gen_random_uuid() AS id, gen_random_uuid() AS movement_id, now() AS at,
    'BENCH-' || CASE WHEN i < 10000 THEN lpad(i::text, 4, '0') ELSE i::text END AS sku,
    CASE WHEN i < 100 THEN 1000000 ELSE 1000 END AS stock
  FROM generate_series(0, :n - 1) AS i;
INSERT INTO products (id, sku, name, description, category, unit, stock, low_stock_threshold,
    version, archived_at, created_at, updated_at, search_key)
  SELECT id, sku, 'Bench product ' || i, NULL, 'cat', 'ea', stock, 10, 2, NULL, at, at,
    lower(sku || E'\n' || 'Bench product ' || i)
  FROM seed;
INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, product_version,
    note, reference, idempotency_key, request_hash, created_by, created_at)
  SELECT movement_id, id, 'INBOUND', stock, stock, 2, 'initial stock', NULL, NULL, NULL,
    (SELECT id FROM users WHERE email = 'admin@stockroom.local'), at
  FROM seed;
COMMIT;
ANALYZE;
SQL
{ echo "return {"
  psql "$DATABASE_URL" -Atc "SELECT '  \"' || id || '\",' FROM products WHERE sku ~ '^BENCH-00[0-9][0-9]$'"
  echo "}"; } >"$WORK/ids.lua"
export IDS_FILE="$WORK/ids.lua"
say "seeded $N products"

# load NAME SCRIPT CONNECTIONS PORTS...: one wrk per instance at once;
# prints the summed clean rate and the failures.
load() {
  local name=$1 script=$2 conns=$3; shift 3
  local k=$# i=0 pids=()
  for port in "$@"; do
    wrk -t1 -c$((conns / k)) -d"${SECONDS_PER_RUN}s" -s "$BENCH_DIR/$script" \
      "http://127.0.0.1:$port/graphql" >"$WORK/$name-$i.out" 2>&1 &
    pids+=($!); i=$((i + 1))
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  python3 - "$WORK" "$name" "$k" <<'PY'
import re, sys
work, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
ok = failed = 0.0
for i in range(k):
    text = open(f"{work}/{name}-{i}.out").read()
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    secs = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
    f = re.search(r"failed responses: (\d+) of", text)
    bad = int(f.group(1)) if f else 0
    ok += (int(m.group(1)) - bad) / secs
    failed += bad
print(f"{ok:,.0f}\t{int(failed)}")
PY
}

ports=("$PORT")
printf '| instances | recordStockMovement c32 (ok/s) | productBySku c48 (ok/s) | failed |\n|---|---|---|---|\n' >"$WORK/table.md"
for k in 1 2 3; do
  while [ "${#ports[@]}" -lt "$k" ]; do
    p=$((PORT + ${#ports[@]}))
    PORT=$p DB_MAX_CONNECTIONS=16 "$BIN" serve >"$WORK/server-$p.log" 2>&1 &
    EXTRA+=($!)
    for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$p/api/v1/health/live" >/dev/null && break; sleep 0.1; done
    curl -fs "http://127.0.0.1:$p/api/v1/health/live" >/dev/null || die "instance on $p did not start"
    ports+=("$p")
  done
  IFS=$'\t' read -r writes wfail <<<"$(load write record_movement.lua 32 "${ports[@]}")"
  IFS=$'\t' read -r reads rfail <<<"$(load read product_by_sku.lua 48 "${ports[@]}")"
  say "$k instance(s): $writes movements/s, $reads lookups/s, failed $wfail + $rfail"
  printf '| %d | %s | %s | %s |\n' "$k" "$writes" "$reads" "$((wfail + rfail))" >>"$WORK/table.md"
done
"$BIN" verify-ledger >/dev/null || die "the ledger drifted"

psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $NOTIFY_DB WITH (FORCE)" -c "CREATE DATABASE $NOTIFY_DB" >/dev/null
NOTIFY_URL="${PG_ADMIN_URL%/*}/$NOTIFY_DB"
pgbench -i -s 32 -q "$NOTIFY_URL" >/dev/null 2>&1
printf '\\set aid random(1, 3200000)\nBEGIN;\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\nCOMMIT;\n' >"$WORK/plain.sql"
printf '\\set aid random(1, 3200000)\nBEGIN;\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\nSELECT pg_notify('"'"'stockroom_events'"'"', '"'"'{"kind":"stock"}'"'"');\nCOMMIT;\n' >"$WORK/notify.sql"
printf '\n| one-row UPDATE per commit | c1 (tps) | c32 (tps) |\n|---|---|---|\n' >>"$WORK/table.md"
for s in plain notify; do
  row="| $s |"
  for c in 1 32; do
    tps=$(pgbench -n -M prepared -c "$c" -j 2 -T "$SECONDS_PER_RUN" -f "$WORK/$s.sql" "$NOTIFY_URL" 2>&1 \
      | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -n1)
    row="$row $(printf '%.0f' "$tps") |"
  done
  echo "$row" >>"$WORK/table.md"
done
mkdir -p target/bench
cp "$WORK/table.md" target/bench/scaling.md
cat "$WORK/table.md"
