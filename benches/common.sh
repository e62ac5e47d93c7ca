# Shared by the benchmark scripts (sourced): starts the release server on a
# fresh database and logs in as the seeded admin.
# Needs: DB_KIND (sqlite|postgres), BENCH_DB (PostgreSQL database name), PORT,
# PG_ADMIN_URL, WORK (a temporary directory), BIN; BENCH_DB_PARAMS (optional,
# appended to the PostgreSQL URL, e.g. ?sslmode=disable). Sets DATABASE_URL, SERVER,
# TOKEN and BENCH_START_RSS_KB (before the login); defines gql, upload and rss_kb;
# removes everything on exit (BENCH_TRAP names another exit handler).

bench_database() {
  case "$DB_KIND" in
    sqlite) DATABASE_URL="sqlite://$WORK/bench.db?mode=rwc" ;;
    postgres)
      psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB" >/dev/null
      DATABASE_URL="${PG_ADMIN_URL%/*}/$BENCH_DB${BENCH_DB_PARAMS:-}" ;;
    *) echo "usage: $0 [sqlite|postgres] ..." >&2; exit 2 ;;
  esac
}

# ensure_postgraphile: PostGraphile 4 and @graphile/pg-pubsub (npm, pinned)
# under BENCH_PEERS_DIR (default target/bench-peers), installed when missing.
# Sets POSTGRAPHILE (its CLI) and POSTGRAPHILE_VERSION.
ensure_postgraphile() {
  POSTGRAPHILE_VERSION="${POSTGRAPHILE_VERSION:-4.14.1}" # the latest 4.x on npm
  local version="$POSTGRAPHILE_VERSION"
  local dir="${BENCH_PEERS_DIR:-$(pwd)/target/bench-peers}/postgraphile-$version"
  POSTGRAPHILE="$dir/node_modules/.bin/postgraphile"
  if [ ! -x "$POSTGRAPHILE" ] || [ ! -d "$dir/node_modules/@graphile/pg-pubsub" ]; then
    command -v npm >/dev/null || { echo "npm is needed to install PostGraphile" >&2; exit 1; }
    echo "installing postgraphile@$version and @graphile/pg-pubsub@$version into $dir" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
      "postgraphile@$version" "@graphile/pg-pubsub@$version" >/dev/null \
      || { echo "npm install postgraphile@$version failed" >&2; exit 1; }
  fi
}

# postgraphile_start PORT LOG ARGS...: starts PostGraphile (NODE_ENV=production)
# on 127.0.0.1:PORT with ARGS, its output in LOG; sets POSTGRAPHILE_PID and
# waits up to 60 s for it to answer (status 1 if it does not).
postgraphile_start() {
  local port=$1 log=$2
  shift 2
  NODE_ENV=production "$POSTGRAPHILE" "$@" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
  POSTGRAPHILE_PID=$!
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/graphql" -H 'content-type: application/json' \
      -d '{"query":"{ __typename }"}' >/dev/null 2>&1 && return 0
    kill -0 "$POSTGRAPHILE_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 30 "$log" >&2
  echo "PostGraphile did not answer on port $port within 60 s" >&2
  return 1
}

bench_cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
  if [ "$DB_KIND" = postgres ]; then
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}

gql() {
  curl -fsS "http://127.0.0.1:$PORT/graphql" -H 'content-type: application/json' \
    ${TOKEN:+-H "authorization: Bearer $TOKEN"} -d "$1"
}

# upload FILE KIND: uploads FILE through POST /api/v1/uploads, waits for the
# job to end, and prints the finished job (JSON).
upload() {
  local id
  id=$(curl -fsS -X POST "http://127.0.0.1:$PORT/api/v1/uploads?kind=$2&filename=$(basename "$1")" \
    -H "authorization: Bearer $TOKEN" --data-binary "@$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  # Polled every 50 ms over one kept-alive connection: a curl process per
  # poll took about a sixth of a core from the server being measured.
  python3 - "$PORT" "$id" "$TOKEN" <<'PY'
import http.client, sys, time
port, job_id, token = sys.argv[1:]
conn = http.client.HTTPConnection("127.0.0.1", int(port))
while True:
    conn.request("GET", f"/api/v1/uploads/{job_id}", headers={"authorization": f"Bearer {token}"})
    response = conn.getresponse()
    job = response.read().decode()
    if response.status != 200:
        sys.exit(f"GET /api/v1/uploads/{job_id}: {response.status} {job}")
    if any(f'"status":"{s}"' in job for s in ("COMPLETED", "FAILED", "CANCELLED")):
        print(job)
        break
    time.sleep(0.05)
PY
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }

# bench_start [VAR=value ...]: extra settings for the server.
bench_start() {
  bench_database
  export APP_ENV=development HOST=127.0.0.1 PORT DATABASE_URL \
    JWT_SECRET=bench-secret-bench-secret-bench-secret-1 ADMIN_PASSWORD=bench-password-1 \
    THROTTLE_DEFAULT_LIMIT=100000000 THROTTLE_LOGIN_LIMIT=1000 RUST_LOG="${BENCH_RUST_LOG:-warn}"
  env "$@" "$BIN" serve >"$WORK/server.log" 2>&1 &
  SERVER=$!
  trap "${BENCH_TRAP:-bench_cleanup}" EXIT
  local up=
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null && { up=1; break; }
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "the server did not answer on port $PORT within 30 s; its log:" >&2
    tail -n 30 "$WORK/server.log" >&2
    exit 1
  fi
  # Resident memory before the first login (after BENCH_SETTLE_SECONDS).
  sleep "${BENCH_SETTLE_SECONDS:-0}"
  BENCH_START_RSS_KB=$(rss_kb)
  TOKEN=$(gql '{"query":"mutation { login(input: {email: \"admin@stockroom.local\", password: \"bench-password-1\"}) { accessToken } }"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])')
  export TOKEN
}
