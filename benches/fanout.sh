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
bench_start WS_MAX_CONNECTIONS_PER_IP=1000000

PRODUCT=$(gql '{"query":"mutation { createProduct(input: {sku: \"FAN-1\", name: \"Fan-out\", initialStock: 1000000}) { id } }"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createProduct"]["id"])')

sleep 1
before=$(rss_kb)
echo "database: $DB_KIND; server RSS before subscribers: $((before / 1024)) MB"

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
echo >&3
wait_for DONE
after=$(rss_kb)
echo >&3
wait "$CLIENT_PID" || true
grep -v -E 'READY|DONE' "$WORK/client.out"
per=$(( (with - before) * 1024 / SUBSCRIBERS ))
echo "server RSS with $SUBSCRIBERS subscribers: $((with / 1024)) MB; after the events: $((after / 1024)) MB"
echo "per idle subscriber: about $((per / 1024)) KB, so about $(( 1024 * 1024 * 1024 / (per > 0 ? per : 1) )) idle subscribers per GB"
