#!/usr/bin/env bash
# Subscription fan-out benchmark of the release build.
# Usage: benches/fanout.sh [sqlite|postgres] [subscribers] [movements]
#   (defaults: sqlite 2000 50; PG_ADMIN_URL as in benches/run.sh)
# Prints the delay from each mutation's response to each subscriber's
# delivery (p50/p99), the server's resident memory before and with the
# subscribers connected, and what one idle subscriber costs.
set -euo pipefail
cd "$(dirname "$0")/.."
DB_KIND="${1:-sqlite}"
SUBSCRIBERS="${2:-2000}"
MOVEMENTS="${3:-50}"
PORT="${BENCH_PORT:-4198}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
WORK="$(mktemp -d)"
ulimit -n 65536

cargo build --release --locked --quiet
CLIENT=$(cargo bench --locked --bench fanout --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\)).*/\1/p' | tail -n1)
BIN=target/release/stockroom

case "$DB_KIND" in
  sqlite) DATABASE_URL="sqlite://$WORK/bench.db?mode=rwc" ;;
  postgres)
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS stockroom_fanout WITH (FORCE)" -c "CREATE DATABASE stockroom_fanout" >/dev/null
    DATABASE_URL="${PG_ADMIN_URL%/*}/stockroom_fanout" ;;
  *) echo "usage: $0 [sqlite|postgres] [subscribers] [movements]" >&2; exit 2 ;;
esac

export APP_ENV=development HOST=127.0.0.1 PORT DATABASE_URL \
  JWT_SECRET=bench-secret-bench-secret-bench-secret-1 ADMIN_PASSWORD=bench-password-1 \
  THROTTLE_DEFAULT_LIMIT=100000000 THROTTLE_LOGIN_LIMIT=1000 RUST_LOG="${BENCH_RUST_LOG:-warn}" \
  WS_MAX_CONNECTIONS_PER_IP=1000000
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() {
  exec 3>&- 2>/dev/null || true
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
  if [ "$DB_KIND" = postgres ]; then
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS stockroom_fanout WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null && break; sleep 0.1; done

gql() {
  curl -fsS "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' \
    ${TOKEN:+-H "authorization: Bearer $TOKEN"} -d "$1"
}
TOKEN=$(gql '{"query":"mutation { login(input: {email: \"admin@stockroom.local\", password: \"bench-password-1\"}) { accessToken } }"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])')
PRODUCT=$(gql '{"query":"mutation { createProduct(input: {sku: \"FAN-1\", name: \"Fan-out\", initialStock: 1000000}) { id } }"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createProduct"]["id"])')

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
sleep 1
before=$(rss_kb)
echo "database: $DB_KIND; server RSS before subscribers: $((before / 1024)) MB"

mkfifo "$WORK/go"
"$CLIENT" "http://127.0.0.1:$PORT" "$TOKEN" "$PRODUCT" "$SUBSCRIBERS" "$MOVEMENTS" <"$WORK/go" >"$WORK/client.out" 2>&1 &
CLIENT_PID=$!
exec 3>"$WORK/go"
until grep -q READY "$WORK/client.out" 2>/dev/null; do
  kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$WORK/client.out"; exit 1; }
  sleep 0.2
done
with=$(rss_kb)
echo >&3
until grep -q DONE "$WORK/client.out" 2>/dev/null; do
  kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$WORK/client.out"; exit 1; }
  sleep 0.2
done
after=$(rss_kb)
echo >&3
wait "$CLIENT_PID" || true
grep -v -E 'READY|DONE' "$WORK/client.out"
per=$(( (with - before) * 1024 / SUBSCRIBERS ))
echo "server RSS with $SUBSCRIBERS subscribers: $((with / 1024)) MB; after the events: $((after / 1024)) MB"
echo "per idle subscriber: about $((per / 1024)) KB, so about $(( 1024 * 1024 * 1024 / (per > 0 ? per : 1) )) idle subscribers per GB"
