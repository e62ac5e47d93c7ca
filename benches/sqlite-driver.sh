#!/usr/bin/env bash
# sea-orm's in-thread SQLite driver (rusqlite, only in the sync crate
# sea-orm-sync) against sqlx's SQLite driver (the server's), on the server's
# two SQLite hot paths: a product read by SKU, and a stock movement (BEGIN
# IMMEDIATE; conditional UPDATE ... RETURNING; INSERT movement; INSERT audit;
# COMMIT) on 100 products. Same file, same pragmas (WAL, synchronous=NORMAL),
# same statements; tables of the server's shape, trimmed to the columns used.
# Usage: benches/sqlite-driver.sh [tasks] [reads] [writes] [products]
#   (defaults: 32 200000 20000 10000)
# Each driver is its own small crate under benches/sqlite-driver/ (they link
# different libsqlite3-sys versions, so one dependency graph cannot hold
# both); built with --release into target/sqlite-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS="${1:-32}"
READS="${2:-200000}"
WRITES="${3:-20000}"
PRODUCTS="${4:-10000}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export CARGO_TARGET_DIR="$(pwd)/target/sqlite-driver"
for driver in sqlx rusqlite; do
  cargo build --release --locked --quiet --manifest-path "benches/sqlite-driver/$driver/Cargo.toml"
done

python3 - "$WORK/seed.db" "$PRODUCTS" <<'PY'
import sqlite3, sys, uuid
path, n = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
db.executescript("""
PRAGMA journal_mode = WAL;
CREATE TABLE products (id TEXT PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
  stock INTEGER NOT NULL CHECK (stock >= 0), version INTEGER NOT NULL);
CREATE TABLE stock_movements (id TEXT PRIMARY KEY, product_id TEXT NOT NULL REFERENCES products (id),
  kind TEXT NOT NULL, quantity INTEGER NOT NULL, balance_after INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX stock_movements_product ON stock_movements (product_id, created_at);
CREATE TABLE audit_logs (id TEXT PRIMARY KEY, action TEXT NOT NULL, entity_type TEXT NOT NULL,
  entity_id TEXT, payload TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX audit_logs_entity ON audit_logs (entity_type, entity_id, created_at);
CREATE INDEX audit_logs_created ON audit_logs (created_at);
""")
db.executemany("INSERT INTO products VALUES (?, ?, ?, ?, 1)",
  ((str(uuid.uuid4()), f"BENCH-{i:05d}", f"Bench product {i}", 1_000_000 if i < 100 else 1000) for i in range(n)))
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.close()
PY

echo "SQLite drivers through sea-orm 2.0.4: $TASKS tasks, $READS reads over $PRODUCTS products, $WRITES movements over 100; $(nproc) cores"
echo
printf '| %-50s | %10s | %9s | %9s |\n' "driver, work, callers" "ops/s" "p50 ms" "p99 ms"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..52})" "------------" "-----------" "-----------"
for driver in sqlx rusqlite; do
  rm -f "$WORK"/run.db*
  cp "$WORK/seed.db" "$WORK/run.db"
  "$CARGO_TARGET_DIR/release/sqlite-driver-$driver" "$WORK/run.db" "$TASKS" "$READS" "$WRITES" "$PRODUCTS" \
    | while IFS=$'\t' read -r name rate p50 p99; do
        printf '| %-50s | %10s | %9s | %9s |\n' "$name" "$rate" "$p50" "$p99"
      done
done
