#!/usr/bin/env bash
# The chaos run (issue 22): three instances of the server on one PostgreSQL
# database, a fake Telegram Bot API failing on demand, mixed load and faults,
# then the invariants. The driver is benches/chaos.mjs (Node.js, with the
# pinned graphql-ws and ws of tests/clients); see its header for the load,
# the faults and the checks.
#
# Usage: benches/chaos.sh [seconds]        (default 600: the full run)
#   CHAOS_BIN        the server binary (default target/release/stockroom,
#                    built first unless BENCH_NO_BUILD=1)
#   PG_ADMIN_URL     PostgreSQL, trust auth (default postgres://postgres@127.0.0.1:5432/test)
#   CHAOS_PG_RESTART the command that restarts PostgreSQL once mid-run
#                    (default: pg_ctlcluster for the running cluster, when
#                    there is one and we may; empty: no restart)
#   CHAOS_PORT       first of three ports (default 4401)
# CI runs `benches/chaos.sh 75` with the debug build. Exits 1 when an
# invariant does not hold; the instances' logs are kept in target/chaos/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_SECONDS="${1:-600}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
CHAOS_BIN="${CHAOS_BIN:-target/release/stockroom}"
DB=stockroom_chaos
DATABASE_URL="${PG_ADMIN_URL%/*}/$DB"
NPM_DIR=target/npm-clients
LOGS="$(pwd)/target/chaos"

die() { echo "chaos: $*" >&2; exit 1; }

command -v node >/dev/null || die "Node.js 20 or newer is needed"
command -v psql >/dev/null || die "psql is needed"
pg_isready -d "$PG_ADMIN_URL" >/dev/null 2>&1 || die "PostgreSQL is unreachable at $PG_ADMIN_URL"
if [ "$CHAOS_BIN" = target/release/stockroom ] && [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo build --release --locked --quiet
fi
[ -x "$CHAOS_BIN" ] || die "no server binary at $CHAOS_BIN"

if [ -z "${CHAOS_PG_RESTART+set}" ]; then
  CHAOS_PG_RESTART=
  if command -v pg_lsclusters >/dev/null && [ "$(id -u)" = 0 ]; then
    cluster=$(pg_lsclusters -h | awk '$4 == "online" && $3 == 5432 { print $1 " " $2; exit }')
    [ -n "$cluster" ] && CHAOS_PG_RESTART="pg_ctlcluster --skip-systemctl-redirect $cluster restart"
  fi
fi
[ -n "$CHAOS_PG_RESTART" ] || echo "chaos: no PostgreSQL restart in this run (CHAOS_PG_RESTART is empty)" >&2

# The driver's packages: the pinned ones of tests/clients, installed where
# the tests install them (npm ci only when the installed lock differs).
mkdir -p "$NPM_DIR" "$LOGS"
for f in package.json package-lock.json .npmrc; do cp tests/clients/$f "$NPM_DIR/$f"; done
if ! cmp -s tests/clients/package-lock.json "$NPM_DIR/node_modules/.stockroom-installed-lock.json"; then
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed (the first install needs the npm registry)"
  cp tests/clients/package-lock.json "$NPM_DIR/node_modules/.stockroom-installed-lock.json"
fi
cp benches/chaos.mjs "$NPM_DIR/chaos.mjs"
rm -f "$LOGS"/instance-*.log

psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
cleanup() { psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT

CHAOS_BIN="$(realpath "$CHAOS_BIN")" CHAOS_DATABASE_URL="$DATABASE_URL" CHAOS_SECONDS="$RUN_SECONDS" \
  CHAOS_PORT="${CHAOS_PORT:-4401}" CHAOS_LOGS="$LOGS" CHAOS_PG_RESTART="$CHAOS_PG_RESTART" \
  node "$NPM_DIR/chaos.mjs"
