#!/usr/bin/env bash
# Container smoke test: builds the image, starts postgres + stockroom with
# docker/docker-compose.yml (project stockroom-smoke), waits for
# GET /api/v1/health to answer 200 {"status":"ok",...}, logs in as the seeded
# admin through POST /graphql, then removes the stack and its volume.
#
# Where it cannot run (no docker CLI or compose, no engine, no BuildKit, base
# images not pullable) it prints one line saying why and exits 0. Any failure
# once the stack can run exits 1.
#
# Environment (all optional):
#   SMOKE_START_DOCKERD=1     as root, start dockerd when `docker info` fails
#                             (stopped again on exit)
#   SMOKE_PORT=N              host port of the API (default: a free port, else 4000)
#   SMOKE_BUILD_TIMEOUT=S     bound on `docker build` (default 3600: a cold release build)
#   SMOKE_HEALTH_TIMEOUT=S    bound on the wait for /api/v1/health (default 180)
#   SMOKE_PULL_TIMEOUT=S      bound on each base-image pull (default 120)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

compose_file=docker/docker-compose.yml
project=stockroom-smoke
image=stockroom:smoke
build_timeout="${SMOKE_BUILD_TIMEOUT:-3600}"
health_timeout="${SMOKE_HEALTH_TIMEOUT:-180}"
pull_timeout="${SMOKE_PULL_TIMEOUT:-120}"
workdir="$(mktemp -d)"
stack_started=0
dockerd_pid=""

skip() { echo "smoke: SKIPPED: $*"; exit 0; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
say() { echo "smoke: $*"; }

cleanup() {
    local rc=$?
    set +e
    if [ "$stack_started" = 1 ]; then
        if [ "$rc" != 0 ]; then
            say "last logs of the stack:"
            timeout 60 "${compose[@]}" logs --no-color --tail 80 >&2
        fi
        say "tearing down (down -v)"
        timeout 180 "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 \
            || echo "smoke: WARNING: down -v failed; run: ${compose[*]} down -v" >&2
    fi
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
    fi
    rm -rf "$workdir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Tools.
command -v docker >/dev/null 2>&1 || skip "no docker CLI on PATH"
command -v curl >/dev/null 2>&1 || skip "curl not found (needed to probe the API)"
if timeout 20 docker compose version >/dev/null 2>&1; then
    compose=(docker compose -p "$project" -f "$compose_file")
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose -p "$project" -f "$compose_file")
else
    skip "neither 'docker compose' (v2 plugin) nor docker-compose is installed"
fi

# 2. Engine.
if ! timeout 20 docker info >/dev/null 2>&1; then
    if [ "${SMOKE_START_DOCKERD:-0}" = 1 ] && [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
        say "starting dockerd (log: /tmp/dockerd.log)"
        dockerd >/tmp/dockerd.log 2>&1 &
        dockerd_pid=$!
        for _ in $(seq 1 30); do
            timeout 5 docker info >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    timeout 20 docker info >/dev/null 2>&1 \
        || skip "no Docker engine reachable ('docker info' failed; start dockerd, or rerun as root with SMOKE_START_DOCKERD=1)"
fi

# 3. Registry: every image the build and the stack need. The Dockerfile's
#    "# syntax=docker/dockerfile:1" line makes BuildKit pull that frontend too.
for base in debian:bookworm-slim postgres:15 rust:1.95-bookworm docker/dockerfile:1; do
    if timeout 20 docker image inspect "$base" >/dev/null 2>&1; then
        continue
    fi
    say "pulling $base"
    timeout "$pull_timeout" docker pull -q "$base" >"$workdir/pull.log" 2>&1 \
        || skip "cannot pull $base from the registry ($(tail -n 1 "$workdir/pull.log" | cut -c1-160))"
done

# 4. BuildKit: the Dockerfile uses RUN --mount (cache mounts).
if ! timeout 20 docker buildx version >/dev/null 2>&1; then
    client_major="$(docker version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)"
    if [[ "$client_major" =~ ^[0-9]+$ ]] && [ "$client_major" -lt 23 ]; then
        export DOCKER_BUILDKIT=1   # 20.10-era CLI: BuildKit without the buildx plugin
    else
        skip "BuildKit unavailable: docker CLI ${client_major:-?} without the buildx plugin cannot build RUN --mount (install docker-buildx)"
    fi
fi

# 5. Build.
say "building $image (bounded: ${build_timeout}s)"
if ! timeout "$build_timeout" docker build -f docker/Dockerfile -t "$image" . >"$workdir/build.log" 2>&1; then
    if grep -Eqi 'failed to resolve source metadata|pull access denied|failed to (fetch|authorize)|toomanyrequests|error pulling image|(registry-1|auth)\.docker\.io.*(no such host|i/o timeout|connection refused)' "$workdir/build.log"; then
        skip "the build could not pull its base images ($(grep -Ei 'resolve source metadata|pull access|docker\.io' "$workdir/build.log" | tail -n 1 | cut -c1-160))"
    fi
    tail -n 40 "$workdir/build.log" >&2
    fail "docker build failed (or exceeded ${build_timeout}s)"
fi

# 6. Start the stack with throwaway secrets.
port="${SMOKE_PORT:-}"
if [ -z "$port" ]; then
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 4000)"
fi
rand() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export STOCKROOM_IMAGE="$image" STOCKROOM_HOST_PORT="$port"
export JWT_SECRET="$(rand)" DATA_ENCRYPTION_KEY="$(rand)" ADMIN_PASSWORD="smoke-$(rand | cut -c1-24)"
export POSTGRES_PASSWORD="smoke$(rand | cut -c1-16)"

say "starting $project on 127.0.0.1:$port"
stack_started=1
timeout 300 "${compose[@]}" up -d --no-build >"$workdir/up.log" 2>&1 \
    || { cat "$workdir/up.log" >&2; fail "compose up failed"; }

# 7. Health: 200 with {"status":"ok",...} (503 {"status":"degraded"} while the database is down).
base_url="http://127.0.0.1:$port"
deadline=$((SECONDS + health_timeout))
healthy=0
while [ "$SECONDS" -lt "$deadline" ]; do
    code="$(curl -sS --max-time 5 -o "$workdir/health.json" -w '%{http_code}' "$base_url/api/v1/health" 2>/dev/null || true)"
    if [ "$code" = 200 ] && grep -q '"status":"ok"' "$workdir/health.json"; then
        healthy=1
        break
    fi
    sleep 3
done
[ "$healthy" = 1 ] || fail "GET /api/v1/health did not answer 200 \"status\":\"ok\" within ${health_timeout}s (last: HTTP ${code:-none} $(head -c 300 "$workdir/health.json" 2>/dev/null))"
say "health OK: $(head -c 200 "$workdir/health.json")"

# 8. Login as the seeded admin (ADMIN_EMAIL defaults to admin@stockroom.local).
#    The password is hex only, so it needs no JSON escaping.
login_body='{"query":"mutation($i: LoginInput!){login(input:$i){accessToken}}","variables":{"i":{"email":"admin@stockroom.local","password":"'"$ADMIN_PASSWORD"'"}}}'
code="$(curl -sS --max-time 15 -o "$workdir/login.json" -w '%{http_code}' \
    -H 'Content-Type: application/json' --data "$login_body" "$base_url/graphql" || true)"
if [ "$code" != 200 ] || ! grep -Eq '"accessToken":"[^"]+"' "$workdir/login.json"; then
    fail "admin login returned no accessToken (HTTP ${code:-none}: $(head -c 300 "$workdir/login.json" 2>/dev/null))"
fi
say "admin login OK (accessToken received)"
say "PASSED"
