#!/usr/bin/env bash
# Validates docker/docker-compose.yml with Debian's docker-compose 1.29 and,
# when the plugin is installed, with Compose v2 (`docker compose`). Builds and
# pulls nothing. Run from anywhere:  docker/check.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
compose_file=docker/docker-compose.yml

if ! command -v docker-compose >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "check: installing Debian's docker-compose (apt-get install -y docker-compose; log: /tmp/check-apt.log)" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq docker-compose >/tmp/check-apt.log 2>&1; then
            apt-get update -qq >>/tmp/check-apt.log 2>&1 || true
            apt-get install -y -qq docker-compose >>/tmp/check-apt.log 2>&1 || {
                tail -n 20 /tmp/check-apt.log >&2
                echo "check: apt-get install docker-compose failed (see /tmp/check-apt.log)" >&2
                exit 1
            }
        fi
    else
        echo "check: docker-compose not found; install it as root with: apt-get install -y docker-compose" >&2
        exit 1
    fi
fi

# Dummy values: only the interpolation is checked, nothing starts.
export JWT_SECRET=check-dummy-jwt-secret-0123456789abcdef
export ADMIN_PASSWORD=check-dummy-admin-password
export DATA_ENCRYPTION_KEY=check-dummy-data-key-0123456789abcdef

echo "check: docker-compose $(docker-compose version --short 2>/dev/null || true) config -q $compose_file"
docker-compose -f "$compose_file" config -q
echo "check: docker-compose (v1) OK"

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    echo "check: docker compose $(docker compose version --short 2>/dev/null || true) config -q $compose_file"
    docker compose -f "$compose_file" config -q
    echo "check: docker compose (v2) OK"
else
    echo "check: docker compose (v2 plugin) not installed; skipped"
fi

# The required variables must really be required.
for var in JWT_SECRET ADMIN_PASSWORD DATA_ENCRYPTION_KEY; do
    if env -u "$var" docker-compose -f "$compose_file" config -q >/dev/null 2>&1; then
        echo "check: config passes without $var; it must use \${$var:?...}" >&2
        exit 1
    fi
done
echo "check: JWT_SECRET, ADMIN_PASSWORD and DATA_ENCRYPTION_KEY are required: OK"

# The env_file reaches the container; the compose file's own settings win.
env_file="$(mktemp "$repo_root/docker/check-XXXXXX.env")"
trap 'rm -f "$env_file"' EXIT
printf 'TELEGRAM_CHAT_IDS=-100424242\nTHROTTLE_PROBE_LIMIT=77\nAPP_ENV=development\n' >"$env_file"
resolved="$(STOCKROOM_ENV_FILE="$(basename "$env_file")" docker-compose -f "$compose_file" config)"
for want in "TELEGRAM_CHAT_IDS: '-100424242'" "THROTTLE_PROBE_LIMIT: '77'" "APP_ENV: production"; do
    if ! grep -qF "$want" <<<"$resolved"; then
        echo "check: the resolved config lacks $want" >&2
        exit 1
    fi
done
echo "check: env_file settings reach the container, environment: wins: OK"
