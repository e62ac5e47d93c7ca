#!/usr/bin/env bash
# Stockroom next to its peers on one PostgreSQL, one catalogue size at a time.
# Usage: benches/compare.sh [products...]      (default: 10000 100000)
#   BENCH_SECONDS    seconds per wrk or pgbench run (default 10)
#   PG_ADMIN_URL     PostgreSQL, trust auth (default postgres://postgres@127.0.0.1:5432/test)
#   BENCH_BIN        the server binary (default target/release/stockroom)
#   BENCH_NO_BUILD=1 use BENCH_BIN as it is (otherwise cargo build --release --locked)
#   BENCH_SEED       upload: the CSV import, POST /api/v1/uploads (default);
#                    sql: the same rows (product, INBOUND movement) inserted directly
#   BENCH_PEERS_DIR  where PostGraphile is installed (default target/bench-peers)
#   DB_MAX_CONNECTIONS  Stockroom's pool, and PostGraphile's (default 16)
#   BENCH_PROFILE=1  record where the CPU goes (perf, the whole machine) during
#                    Stockroom's productBySku run: target/bench/profile-lookup-N.txt
#                    (and perf-lookup-N.data; BENCH_PERF_ARGS adds perf record
#                    options, e.g. "--call-graph dwarf")
#   BENCH_FANOUT=0   skip the subscriptions fan-out (benches/fanout.sh postgres,
#                    then benches/fanout.sh postgraphile: 2,000 subscribers, 50
#                    movements, the same client; it builds the bench client)
# All three talk to PostgreSQL over loopback without TLS (sslmode=disable for
# Stockroom and pgbench; PostGraphile's driver does not use TLS unless told).
# Installs wrk (apt) and PostGraphile 4 (npm, pinned) when missing. For each
# size N: a fresh database seeded with N products (each with its INBOUND
# movement); a copy of the products table in schema `peer` served by
# PostGraphile 4 (one process, no --cluster-workers: 2 cores); wrk c50 reads
# on both (productBySku of random SKUs, a page of 20 with totalCount);
# recordStockMovement c32 over 100 products against pgbench tpcb-like c32 on
# its own database; a 64-connection OUTBOUND hot spot on one product, errors
# by code, then stockroom verify-ledger; Stockroom's resident memory after
# start, after one login and after the loads; once, the fan-out's p99. Prints one table per N (ratio =
# Stockroom / peer) and writes it to target/bench/compare-N.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then SIZES=("$@"); else SIZES=(10000 100000); fi
for n in "${SIZES[@]}"; do
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 200 ] || { echo "usage: $0 [products...] (each at least 200)" >&2; exit 2; }
done
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
PORT="${BENCH_PORT:-4196}"
PEER_PORT="${BENCH_PEER_PORT:-5433}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
BIN="${BENCH_BIN:-target/release/stockroom}"
SEED="${BENCH_SEED:-upload}"
POOL="${DB_MAX_CONNECTIONS:-16}"
OUT_DIR="$(pwd)/target/bench"
BENCH_DIR="$(pwd)/benches"
export BENCH_DIR
DB_KIND=postgres
BENCH_DB=stockroom_bench
PGBENCH_DB=pgbench_bench
PGBENCH_URL="${PG_ADMIN_URL%/*}/$PGBENCH_DB"
PEER_FLAGS=(--schema peer --max-pool-size "$POOL"
  --disable-graphiql --no-setof-functions-contain-nulls --disable-query-log)
case "$SEED" in upload|sql) ;; *) echo "BENCH_SEED is upload or sql" >&2; exit 2 ;; esac

die() { echo "compare.sh: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] $*"; }

# --- tools -------------------------------------------------------------------
for tool in psql pgbench curl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
if ! command -v wrk >/dev/null; then
  say "installing wrk"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null; } \
    || die "wrk is needed (apt-get install -y wrk)"
fi
# shellcheck source=benches/common.sh
. "$BENCH_DIR/common.sh"
ensure_postgraphile
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --quiet
[ -x "$BIN" ] || die "no server binary at $BIN (BENCH_BIN)"
psql "$PG_ADMIN_URL" -Atqc 'SELECT 1' >/dev/null || die "cannot reach PostgreSQL at $PG_ADMIN_URL"
for p in "$PORT" "$PEER_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is taken (BENCH_PORT / BENCH_PEER_PORT)"; fi
done

# --- servers and cleanup ---------------------------------------------------
WORK="$(mktemp -d)"
SERVER=""
PEER=""
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
admin_sql() { psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" "$@" >/dev/null; }
compare_cleanup() {
  stop_pid "$PEER"
  stop_pid "$SERVER"
  PEER=""
  SERVER=""
  admin_sql -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" 2>/dev/null || true
  rm -rf "$WORK"
}
BENCH_TRAP=compare_cleanup
trap compare_cleanup EXIT
trap 'exit 130' INT TERM


mb() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$1"; }
peer_rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$PEER/status"; }
db_sql() { psql "$DATABASE_URL" -qX -v ON_ERROR_STOP=1 "$@"; }

# res KEY VALUE: one result of the current size.
res() { printf '%s\t%s\n' "$1" "$2" >>"$RESULTS"; }

# wrk_run NAME CONNECTIONS SCRIPT PORT: runs wrk; records NAME.rps (requests
# answered cleanly per second), NAME.failed, NAME.codes, NAME.p99.
wrk_run() {
  local name=$1 conns=$2 script=$3 port=$4 out="$WORK/$1.out" line
  if ! wrk -t2 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency -s "$BENCH_DIR/$script" \
    "http://127.0.0.1:$port/graphql" >"$out" 2>"$WORK/$name.err"; then
    cat "$out" "$WORK/$name.err" >&2
    die "wrk failed for $name"
  fi
  line=$(python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
if not m:
    sys.exit("cannot read the wrk output:\n" + text)
scale = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
total, secs = int(m.group(1)), float(m.group(2)) * scale
f = re.search(r"failed responses: (\d+) of", text)
failed = int(f.group(1)) if f else 0
c = re.search(r"errors by code: (.*)", text)
codes = c.group(1).strip() if c else "none"
s = re.search(r"Socket errors: (.*)", text)
if s:
    codes += " (socket errors: " + s.group(1).strip() + ")"
p = re.search(r"^\s+99%\s+(\S+)", text, re.M)
print(f"{(total - failed) / secs:.1f}\t{failed}\t{total}\t{p.group(1) if p else '?'}\t{codes}")
PY
) || die "wrk output for $name: see $out"
  local rps failed total p99 codes
  IFS=$'\t' read -r rps failed total p99 codes <<<"$line"
  res "$name.rps" "$rps"
  res "$name.failed" "$failed"
  res "$name.codes" "$codes"
  res "$name.p99" "$p99"
  say "  $name: $rps ok/s, p99 $p99, $failed of $total failed ($codes)"
  if [ "$failed" -gt 0 ]; then grep -m1 'first failure' "$WORK/$name.err" | cut -c1-300 >&2 || true; fi
}

# seed N: N products BENCH-0000.., each with its INBOUND movement; the first
# 100 with 1,000,000 in stock (the write load), the last one (the hot spot)
# with 1,000,000,000, the others 1,000.
seed_upload() {
  local n=$1 job status
  python3 - "$WORK/products.csv" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("sku,name,category,initial_stock,low_stock_threshold\n")
    for i in range(n):
        stock = 1_000_000_000 if i == n - 1 else 1_000_000 if i < 100 else 1000
        f.write(f"BENCH-{i:04d},Bench product {i},cat-{i % 25:02d},{stock},10\n")
PY
  job=$(upload "$WORK/products.csv" PRODUCTS) || die "the upload was refused"
  status=$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["status"], j["processedRows"], j["failedRows"])' "$job")
  case "$status" in
    COMPLETED*) ;;
    *) die "the import ended $status: $(echo "$job" | cut -c1-500)" ;;
  esac
  [ "${status#* }" = "$n 0" ] || die "the import did not take every row: $status"
}

seed_sql() {
  local n=$1
  # Same rows as the import writes: version 2 after the INBOUND movement,
  # time-ordered (v7) ids, search_key = lowercased "sku\nname".
  db_sql -v n="$n" <<'SQL' >/dev/null
CREATE FUNCTION pg_temp.uuid7(ms bigint) RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
    PLACING substring(int8send(ms) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint - :n AS t0 \gset
BEGIN;
CREATE TEMP TABLE seed ON COMMIT DROP AS
  SELECT i, pg_temp.uuid7(:t0 + i) AS id, pg_temp.uuid7(:t0 + i) AS movement_id,
    to_timestamp((:t0 + i) / 1000.0) AS at,
    'BENCH-' || CASE WHEN i < 10000 THEN lpad(i::text, 4, '0') ELSE i::text END AS sku,
    'Bench product ' || i AS name,
    'cat-' || lpad((i % 25)::text, 2, '0') AS category,
    CASE WHEN i = :n - 1 THEN 1000000000 WHEN i < 100 THEN 1000000 ELSE 1000 END AS stock
  FROM generate_series(0, :n - 1) AS i;
INSERT INTO products (id, sku, name, description, category, unit, stock, low_stock_threshold,
    version, archived_at, created_at, updated_at, search_key)
  SELECT id, sku, name, NULL, category, 'ea', stock, 10, 2, NULL, at, at, lower(sku || E'\n' || name)
  FROM seed ORDER BY i;
INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, product_version,
    note, reference, idempotency_key, request_hash, created_by, created_at)
  SELECT movement_id, id, 'INBOUND', stock, stock, 2, 'initial stock', NULL, NULL, NULL,
    (SELECT id FROM users WHERE email = 'admin@stockroom.local'), at
  FROM seed ORDER BY i;
COMMIT;
SQL
}

# The peer's table: the same rows and shape; the UNIQUE constraint on sku
# gives PostGraphile its productBySku, the primary key its default order.
make_peer() {
  db_sql <<'SQL' >/dev/null
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS peer CASCADE;
CREATE SCHEMA peer;
CREATE TABLE peer.products (
  id uuid PRIMARY KEY,
  sku text NOT NULL UNIQUE,
  name text NOT NULL,
  description text,
  category text,
  unit text NOT NULL DEFAULT 'ea',
  stock integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
  low_stock_threshold integer NOT NULL DEFAULT 0 CHECK (low_stock_threshold >= 0),
  version integer NOT NULL DEFAULT 1,
  archived_at timestamptz,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
INSERT INTO peer.products
  SELECT id, sku, name, description, category, unit, stock, low_stock_threshold, version,
    archived_at, created_at, updated_at
  FROM public.products ORDER BY id;
CREATE INDEX products_category_idx ON peer.products (category);
VACUUM ANALYZE peer.products;
SQL
}

start_peer() {
  local ok=1
  postgraphile_start "$PEER_PORT" "$WORK/peer.log" -c "$DATABASE_URL" "${PEER_FLAGS[@]}" || ok=
  PEER=$POSTGRAPHILE_PID
  [ -n "$ok" ] || die "PostGraphile did not start"
}

peer_gql() {
  curl -fsS "http://127.0.0.1:$PEER_PORT/graphql" -H 'content-type: application/json' -d "$1"
}

# Both servers answer the benchmark's queries with the same rows.
check_same() {
  local n=$1 sku_q page_q ours theirs
  sku_q='{"query":"query($s: String!) { productBySku(sku: $s) { id sku name stock lowStockThreshold version } }","variables":{"s":"BENCH-0042"}}'
  ours=$(gql "$sku_q") || die "Stockroom refused the productBySku query"
  theirs=$(peer_gql "$sku_q") || die "PostGraphile refused the productBySku query"
  python3 - "$ours" "$theirs" <<'PY' || die "productBySku differs"
import json, sys
a, b = (json.loads(x).get("data", {}).get("productBySku") for x in sys.argv[1:3])
if not a or a != b:
    sys.exit(f"productBySku differs: Stockroom {sys.argv[1][:300]}\n  PostGraphile {sys.argv[2][:300]}")
PY
  # The wrk scripts' bodies, as they are sent.
  page_q=$(sed -n "s/^local body = '\(.*\)'$/\1/p" "$BENCH_DIR/products_page.lua")
  ours=$(gql "$page_q") || die "Stockroom refused the page query"
  page_q=$(sed -n "s/^local body = '\(.*\)'$/\1/p" "$BENCH_DIR/peer_products_page.lua")
  theirs=$(peer_gql "$page_q") || die "PostGraphile refused the page query"
  python3 - "$ours" "$theirs" "$n" <<'PY' || die "the first pages differ"
import json, sys
a = json.loads(sys.argv[1])["data"]["products"]
b = json.loads(sys.argv[2])["data"]["allProducts"]
n = int(sys.argv[3])
ids = lambda c: [x["id"] for x in c["nodes"]]
if a["totalCount"] != n or b["totalCount"] != n or ids(a) != ids(b) or len(ids(a)) != 20:
    sys.exit(f"first pages differ: Stockroom {a['totalCount']} {ids(a)[:3]}, PostGraphile {b['totalCount']} {ids(b)[:3]}")
PY
}

render() {
  python3 - "$RESULTS" "$1" "$OUT_DIR/compare-$1.md" <<'PY'
import sys
results, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = {}
for line in open(results):
    k, _, v = line.rstrip("\n").partition("\t")
    r[k] = v
f = lambda k: float(r[k])
num = lambda x: f"{x:,.0f}"
def ratio(a, b):
    return a / b if b else float("nan")
rows = []
def row(name, ours, peer, rt, goal, met):
    rows.append((name, ours, peer, "—" if rt is None else f"{rt:.2f}x",
                 goal + ("" if met is None else (" — met" if met else " — **missed**"))))
def failures(key):
    return "" if r[key + ".failed"] == "0" else f" ({r[key + '.failed']} failed: {r[key + '.codes']})"

rt = ratio(f("sku.ours.rps"), f("sku.peer.rps"))
row("productBySku, random SKU, c50 (req/s)", num(f("sku.ours.rps")) + failures("sku.ours"),
    num(f("sku.peer.rps")) + failures("sku.peer"), rt, "5x", rt >= 5)
rt = ratio(f("sku.ours.rps"), f("lookup.pgbench.tps"))
row("productBySku (req/s) vs the same indexed lookup in pgbench -M prepared, as many clients as the pool (tps)",
    num(f("sku.ours.rps")), num(f("lookup.pgbench.tps")), rt,
    "0.5x" if n > 10000 else "—", rt >= 0.5 if n > 10000 else None)
rt = ratio(f("page.ours.rps"), f("page.peer.rps"))
goal, met = ("3x", rt >= 3) if n <= 10000 else (">1x", rt > 1)
row("products(first: 20) + totalCount, c50 (req/s)", num(f("page.ours.rps")) + failures("page.ours"),
    num(f("page.peer.rps")) + failures("page.peer"), rt, goal, met)
rt = ratio(f("write.ours.rps"), f("pgbench.tps"))
row("recordStockMovement c32, 100 products (ok/s) vs pgbench tpcb-like c32 (tps)",
    num(f("write.ours.rps")) + failures("write.ours"), num(f("pgbench.tps")), rt, "2.0x", rt >= 2.0)
codes = r["hot.ours.codes"]
anomalies = sum(int(p.split("=")[1]) for p in codes.split(" (")[0].split() if "=" in p and not p.startswith("INSUFFICIENT_STOCK="))
insufficient = sum(int(p.split("=")[1]) for p in codes.split() if p.startswith("INSUFFICIENT_STOCK="))
clean = r["ledger"] == "clean"
rt = ratio(f("hot.ours.rps"), f("pgbench.tps"))
row("hot spot: 64 connections, OUTBOUND 1 on one product (ok/s) vs pgbench tpcb-like c32 (tps)",
    f"{num(f('hot.ours.rps'))} (errors: {codes}; ledger {r['ledger']})", num(f("pgbench.tps")), rt,
    "1.0x, ledger clean", rt >= 1.0 and clean and anomalies == 0 and insufficient == 0)
mb = lambda k: f"{f(k) / 1024:.1f} MB"
row("idle RSS after start", mb("rss.start"), mb("peer.rss.start"), ratio(f("rss.start"), f("peer.rss.start")),
    "< 30 MB", f("rss.start") < 30 * 1024)
row("idle RSS after one login", mb("rss.login"), "— (no login)", None, "< 30 MB", f("rss.login") < 30 * 1024)
row("RSS after the loads", mb("rss.after"), mb("peer.rss.after") + " (after its reads)",
    ratio(f("rss.after"), f("peer.rss.after")), "—", None)
fan, peer_fan = r["fanout"].split("\t"), r["peer.fanout"].split("\t")
if len(fan) == 5 and len(peer_fan) == 5:
    p99, p50, got, want, rss = fan
    pp99, pp50, pgot, pwant, prss = peer_fan
    row("subscriptions fan-out, 2,000 subscribers, 50 movements: delay after the mutation's response (lower is better)",
        f"p99 {p99} ms (p50 {p50} ms; {int(got):,} of {int(want):,} delivered)",
        f"p99 {pp99} ms (p50 {pp50} ms; {int(pgot):,} of {int(pwant):,} delivered)",
        ratio(float(p99), float(pp99)), "p99 20 ms or less, none lost",
        float(p99) <= 20 and got == want)
    row("RSS with the 2,000 subscribers", f"{rss} MB", f"{prss} MB", ratio(float(rss), float(prss)), "—", None)
else:
    row("subscriptions fan-out, 2,000 subscribers", fan[0], peer_fan[0], None, "p99 20 ms or less", None)

lines = [f"### {n:,} products", "", r["context"], "",
         "| workload | Stockroom | peer | ratio | goal |", "|---|---|---|---|---|"]
lines += ["| " + " | ".join(x) + " |" for x in rows]
lines += ["", "Ratio = Stockroom / peer (for memory and the fan-out's delay, lower is better). Peer: PostGraphile for the reads, the subscriptions and memory, pgbench for the writes."]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
}

mkdir -p "$OUT_DIR"
# The commit the measured binary was built from (BENCH_BIN may be another
# checkout's build), as its --version says.
COMMIT=$("$BIN" --version 2>/dev/null | sed -n 's/.*commit \([0-9a-f]\{7\}\).*/\1/p')
COMMIT=${COMMIT:-unknown}
export BENCH_DB_PARAMS="?sslmode=disable" PGSSLMODE=disable
FANOUT="not run (BENCH_FANOUT=0)"
PEER_FANOUT="not run"
# fanout SERVER: "p99 <tab> p50 <tab> delivered <tab> expected <tab> RSS with the subscribers (MB)"
fanout() {
  BENCH_PORT=$((PORT + 2)) BENCH_NO_BUILD=1 benches/fanout.sh "$1" 2000 50 >"$WORK/fanout-$1.out" 2>&1 \
    || { cat "$WORK/fanout-$1.out" >&2; die "benches/fanout.sh $1 failed"; }
  python3 - "$WORK/fanout-$1.out" <<'PY' || die "fan-out output: see $WORK/fanout-$1.out"
import re, sys
text = open(sys.argv[1]).read()
d = re.search(r"deliveries: (\d+) of (\d+)", text)
p = re.search(r"delay from the mutation's response: p50 ([\d.]+) ms, p99 ([\d.]+) ms", text)
m = re.search(r"server RSS with \d+ subscribers: (\d+) MB", text)
if not d or not p or not m:
    sys.exit("cannot read the fan-out output:\n" + text)
print(f"{p.group(2)}\t{p.group(1)}\t{d.group(1)}\t{d.group(2)}\t{m.group(1)}")
PY
}
if [ "${BENCH_FANOUT:-1}" != 0 ]; then
  say "subscriptions fan-out: benches/fanout.sh postgres 2000 50, then the same for PostGraphile"
  [ -n "${BENCH_NO_BUILD:-}" ] || cargo bench --locked --bench fanout --no-run >/dev/null 2>&1 \
    || die "cannot build the fan-out client (cargo bench --bench fanout --no-run)"
  FANOUT=$(BENCH_BIN="$BIN" fanout postgres)
  say "  Stockroom: p99 $(cut -f1 <<<"$FANOUT") ms, $(cut -f3 <<<"$FANOUT") of $(cut -f4 <<<"$FANOUT") deliveries"
  PEER_FANOUT=$(fanout postgraphile)
  say "  PostGraphile: p99 $(cut -f1 <<<"$PEER_FANOUT") ms, $(cut -f3 <<<"$PEER_FANOUT") of $(cut -f4 <<<"$PEER_FANOUT") deliveries"
fi
say "pgbench database: pgbench -i -s 32"
admin_sql -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" -c "CREATE DATABASE $PGBENCH_DB"
pgbench -i -s 32 -q "$PGBENCH_URL" >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

for N in "${SIZES[@]}"; do
  RESULTS="$WORK/results-$N"
  : >"$RESULTS"
  say "== $N products"
  BENCH_SETTLE_SECONDS=1 bench_start DB_MAX_CONNECTIONS="$POOL" \
    UPLOAD_MAX_ROWS="$((N > 100000 ? N : 100000))" UPLOAD_MAX_BYTES=268435456
  res rss.start "$BENCH_START_RSS_KB"
  sleep 1
  res rss.login "$(rss_kb)"
  say "Stockroom up: RSS $(mb "$BENCH_START_RSS_KB") MB after start, $(mb "$(rss_kb)") MB after one login"

  seed_start=$SECONDS
  "seed_$SEED" "$N"
  db_sql -c "VACUUM (FULL, ANALYZE) products" -c "VACUUM ANALYZE stock_movements" >/dev/null
  seed_secs=$((SECONDS - seed_start))
  say "seeded $N products ($SEED) in ${seed_secs}s"

  make_peer
  start_peer
  res peer.rss.start "$(peer_rss_kb)"
  check_same "$N"
  say "both servers give the same rows; PostGraphile RSS $(mb "$(peer_rss_kb)") MB"

  export PRODUCTS="$N"
  PERF=""
  if [ -n "${BENCH_PROFILE:-}" ]; then
    command -v perf >/dev/null || die "BENCH_PROFILE needs perf (apt-get install linux-perf)"
    # shellcheck disable=SC2086 # BENCH_PERF_ARGS is a list of options
    perf record -a -F 499 ${BENCH_PERF_ARGS:-} -o "$OUT_DIR/perf-lookup-$N.data" -- sleep "$SECONDS_PER_RUN" \
      >"$WORK/perf.log" 2>&1 &
    PERF=$!
  fi
  wrk_run sku.ours 50 product_by_sku.lua "$PORT"
  if [ -n "$PERF" ]; then
    wait "$PERF" || { cat "$WORK/perf.log" >&2; die "perf record failed"; }
    python3 "$BENCH_DIR/profile_summary.py" "$OUT_DIR/perf-lookup-$N.data" "$SERVER" "$N" >"$OUT_DIR/profile-lookup-$N.txt"
    say "  where the CPU went: $OUT_DIR/profile-lookup-$N.txt"
  fi
  TOKEN="" wrk_run sku.peer 50 product_by_sku.lua "$PEER_PORT"
  wrk_run page.ours 50 products_page.lua "$PORT"
  TOKEN="" wrk_run page.peer 50 peer_products_page.lua "$PEER_PORT"
  sleep 1
  res peer.rss.after "$(peer_rss_kb)"
  stop_pid "$PEER"
  PEER=""

  # The database's own rate for the lookup productBySku makes (the same
  # columns by the lower(sku) index, random SKUs), prepared, with as many
  # clients as Stockroom's pool has connections.
  printf '%s\n' "\\set id random(0, $((N - 1)))" \
    "SELECT id, sku, name, description, category, unit, stock, low_stock_threshold, version, archived_at, created_at, updated_at FROM products WHERE lower(sku) = lower('BENCH-' || lpad(:id::text, greatest(4, length(:id::text)), '0'));" \
    >"$WORK/lookup.sql"
  pgbench -n -M prepared -c "$POOL" -j 2 -T "$SECONDS_PER_RUN" -f "$WORK/lookup.sql" "$DATABASE_URL" \
    >"$WORK/pgbench-lookup.out" 2>&1 || { cat "$WORK/pgbench-lookup.out" >&2; die "pgbench (lookup) failed"; }
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench-lookup.out" | tail -n1)
  [ -n "$tps" ] || { cat "$WORK/pgbench-lookup.out" >&2; die "no tps in the pgbench lookup output"; }
  res lookup.pgbench.tps "$tps"
  say "  pgbench -M prepared lookup c$POOL: $tps tps"

  db_sql -Atc "SELECT '  \"' || id || '\",' FROM products WHERE sku ~ '^BENCH-00[0-9][0-9]$' ORDER BY sku" >"$WORK/ids.body"
  [ "$(wc -l <"$WORK/ids.body")" -eq 100 ] || die "expected 100 write products"
  { echo "return {"; cat "$WORK/ids.body"; echo "}"; } >"$WORK/ids.lua"
  export IDS_FILE="$WORK/ids.lua"
  wrk_run write.ours 32 record_movement.lua "$PORT"
  pgbench -n -c 32 -j 2 -T "$SECONDS_PER_RUN" -b tpcb-like "$PGBENCH_URL" >"$WORK/pgbench.out" 2>&1 \
    || { cat "$WORK/pgbench.out" >&2; die "pgbench failed"; }
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.out" | tail -n1)
  [ -n "$tps" ] || { cat "$WORK/pgbench.out" >&2; die "no tps in the pgbench output"; }
  res pgbench.tps "$tps"
  say "  pgbench tpcb-like c32: $tps tps"

  HOT_ID=$(db_sql -Atc "SELECT id FROM products WHERE stock >= 1000000000 ORDER BY sku LIMIT 1")
  [ -n "$HOT_ID" ] || die "no hot-spot product"
  export HOT_ID
  wrk_run hot.ours 64 hot_spot.lua "$PORT"
  if ledger=$("$BIN" verify-ledger 2>&1); then res ledger clean; else res ledger "DRIFT"; echo "$ledger" | head -n 20 >&2; fi
  say "  verify-ledger: $(echo "$ledger" | head -n1)"
  sleep 2
  res rss.after "$(rss_kb)"

  res fanout "$FANOUT"
  res peer.fanout "$PEER_FANOUT"
  res context "Stockroom $COMMIT ($BIN, DB_MAX_CONNECTIONS=$POOL) vs PostGraphile $POSTGRAPHILE_VERSION (one process, NODE_ENV=production, ${PEER_FLAGS[*]}) and pgbench -s 32 on PostgreSQL $(psql "$PG_ADMIN_URL" -AtXc 'SHOW server_version' | cut -d' ' -f1); wrk -t2, ${SECONDS_PER_RUN}s a run, $(nproc) cores, no TLS on loopback, load average at the end $(cut -d' ' -f1-3 /proc/loadavg); seeded through $( [ "$SEED" = upload ] && echo 'the CSV import' || echo 'SQL') in ${seed_secs}s."
  stop_pid "$SERVER"
  SERVER=""
  render "$N"
done
