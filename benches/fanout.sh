#!/usr/bin/env bash
# Subscription fan-out benchmark of the release build.
# Usage: benches/fanout.sh [sqlite|postgres|postgraphile] [subscribers] [movements]
#   (defaults: sqlite 2000 50; PG_ADMIN_URL as in benches/run.sh)
# `postgraphile` measures the peer the same way, on PostgreSQL: PostGraphile 4
# with @graphile/pg-pubsub and --simple-subscriptions (npm, installed when
# missing, see benches/common.sh), subscribers on `listen(topic: "movements")`
# over graphql-transport-ws, movements recorded by its `createStockMovement`
# into a table whose trigger updates the product's stock and NOTIFYs the
# topic (what Stockroom's own movement does, less its checks and audit).
# Prints the delay from each mutation's response to each subscriber's
# delivery (p50/p99), the server's resident memory before and with the
# subscribers connected, and what one idle subscriber costs.
set -euo pipefail
cd "$(dirname "$0")/.."
DB_KIND="${1:-sqlite}"
TARGET=stockroom
if [ "$DB_KIND" = postgraphile ]; then TARGET=postgraphile DB_KIND=postgres; fi
SUBSCRIBERS="${2:-2000}"
MOVEMENTS="${3:-50}"
PORT="${BENCH_PORT:-4198}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
WORK="$(mktemp -d)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# BENCH_NO_BUILD=1: the server and the client as last built (cargo would
# rebuild a server binary put in place by hand).
if [ -n "${BENCH_NO_BUILD:-}" ]; then
  CLIENT=$(find target/release/deps -maxdepth 1 -type f -executable -name 'fanout-*' -printf '%T@ %p\n' | sort -n | tail -n1 | cut -d' ' -f2)
else
  cargo build --release --locked --quiet
  CLIENT=$(cargo bench --locked --bench fanout --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\)).*/\1/p' | tail -n1)
fi
[ -x "$CLIENT" ] || { echo "no fan-out client built (run without BENCH_NO_BUILD once)" >&2; exit 1; }
BIN="${BENCH_BIN:-target/release/stockroom}"

BENCH_DB=stockroom_fanout
# shellcheck source=benches/common.sh
. benches/common.sh
if [ "$TARGET" = postgraphile ]; then
  ensure_postgraphile
  bench_database
  PRODUCT=$(psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE SCHEMA peer;
CREATE TABLE peer.products (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  sku text NOT NULL UNIQUE,
  stock integer NOT NULL CHECK (stock >= 0),
  version integer NOT NULL DEFAULT 1
);
CREATE TABLE peer.stock_movements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  product_id uuid NOT NULL REFERENCES peer.products,
  quantity integer NOT NULL,
  balance_after integer,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON peer.stock_movements (product_id);
CREATE FUNCTION peer.apply_movement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE peer.products SET stock = stock + NEW.quantity, version = version + 1
    WHERE id = NEW.product_id RETURNING stock INTO NEW.balance_after;
  PERFORM pg_notify('postgraphile:movements',
    json_build_object('__node__', json_build_array('stock_movements', NEW.id))::text);
  RETURN NEW;
END $$;
CREATE TRIGGER apply_movement BEFORE INSERT ON peer.stock_movements
  FOR EACH ROW EXECUTE FUNCTION peer.apply_movement();
INSERT INTO peer.products (sku, stock) VALUES ('FAN-1', 1000000) RETURNING id;
SQL
)
  trap bench_cleanup EXIT
  # --plugins first: the plugin's own options (--simple-subscriptions) exist
  # only once it is loaded.
  if ! postgraphile_start "$PORT" "$WORK/server.log" --plugins @graphile/pg-pubsub -c "$DATABASE_URL" \
    --schema peer --subscriptions --simple-subscriptions --disable-graphiql --disable-query-log; then
    SERVER=$POSTGRAPHILE_PID
    exit 1
  fi
  SERVER=$POSTGRAPHILE_PID
  TOKEN=none
  export FANOUT_TARGET=postgraphile
else
  bench_start WS_MAX_CONNECTIONS_PER_IP=1000000
  PRODUCT=$(gql '{"query":"mutation { createProduct(input: {sku: \"FAN-1\", name: \"Fan-out\", initialStock: 1000000}) { id } }"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createProduct"]["id"])')
  export FANOUT_TARGET=stockroom
fi

sleep 1
before=$(rss_kb)
echo "server: $TARGET; database: $DB_KIND; server RSS before subscribers: $((before / 1024)) MB"

mkfifo "$WORK/go"
"$CLIENT" "http://127.0.0.1:$PORT" "$TOKEN" "$PRODUCT" "$SUBSCRIBERS" "$MOVEMENTS" <"$WORK/go" >"$WORK/client.out" 2>&1 &
CLIENT_PID=$!
exec 3>"$WORK/go"
wait_for() {
  until grep -q "$1" "$WORK/client.out" 2>/dev/null; do
    kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$WORK/client.out"; exit 1; }
    sleep 0.2
  done
}
wait_for READY
with=$(rss_kb)
# FANOUT_SETTLE_SECONDS=N: also the memory N seconds later, still idle, once
# the allocator had time to return what the connection burst freed.
if [ "${FANOUT_SETTLE_SECONDS:-0}" -gt 0 ]; then
  sleep "$FANOUT_SETTLE_SECONDS"
  settled=$(rss_kb)
fi
echo >&3
wait_for DONE
after=$(rss_kb)
echo >&3
wait "$CLIENT_PID" || true
grep -v -E 'READY|DONE' "$WORK/client.out"
per=$(( (with - before) * 1024 / SUBSCRIBERS ))
echo "server RSS with $SUBSCRIBERS subscribers: $((with / 1024)) MB; after the events: $((after / 1024)) MB"
[ -z "${settled:-}" ] || echo "server RSS with $SUBSCRIBERS idle subscribers, ${FANOUT_SETTLE_SECONDS} s after they connected: $((settled / 1024)) MB"
echo "per idle subscriber: about $((per / 1024)) KB, so about $(( 1024 * 1024 * 1024 / (per > 0 ? per : 1) )) idle subscribers per GB"
