#!/usr/bin/env bash
# Checks the Prometheus alerting rules in this folder and runs their unit tests:
#   promtool check rules alerts.yml
#   promtool test rules alerts.test.yml
# promtool comes from $PROMTOOL, the PATH, or (as root, with apt-get) Debian's
# `prometheus` package, installed on the spot. Without promtool this fails: a CI
# run must not pass by skipping the checks.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

die() {
    echo "check.sh: $*" >&2
    exit 1
}

find_promtool() {
    if [[ -n "${PROMTOOL:-}" ]]; then
        [[ -x "$PROMTOOL" ]] || die "PROMTOOL=$PROMTOOL is not an executable file"
        return 0
    fi
    PROMTOOL=$(command -v promtool || true)
    [[ -n "$PROMTOOL" ]]
}

if ! find_promtool; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "check.sh: promtool not found; installing Debian's prometheus package" >&2
        if ! { apt-get update &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }; then
            die "promtool not found and 'apt-get install prometheus' failed; install promtool (Prometheus >= 2.x) or set PROMTOOL=/path/to/promtool"
        fi
        find_promtool || die "installed the prometheus package but promtool is still not on the PATH"
    else
        die "promtool not found; install it (Debian/Ubuntu: 'apt-get install prometheus', or a Prometheus release tarball) or set PROMTOOL=/path/to/promtool. Running this script as root with apt-get installs it."
    fi
fi

echo "check.sh: using $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n 1))"
"$PROMTOOL" check rules alerts.yml
"$PROMTOOL" test rules alerts.test.yml
echo "check.sh: alerts.yml is valid and every rule test passed"
