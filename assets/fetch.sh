#!/usr/bin/env bash
# Re-downloads the third-party files vendored in one asset directory from the
# npm registry, checks every tarball against the sha512 integrity pinned in
# that directory's `packages` file, and copies just the files the page needs
# (flat) into it, with their licences concatenated into LICENSES.
#
#   bash assets/fetch.sh graphiql     # or: console
#
# `packages` has one line per package,
#   name|version|integrity (the registry's dist.integrity)|src=dest ...|licence file
# and `# ` lines that open LICENSES. Needs npm (for `npm pack`), tar, and
# openssl or node. To upgrade a package, see the directory's README.md.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 graphiql|console" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/$1" && pwd)"
[[ -f "$here/packages" ]] || { echo "no $here/packages" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sha512_b64() {
  if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha512 -binary "$1" | base64 | tr -d '\n'
  else
    node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$1"
  fi
}

licenses="$work/LICENSES"
sed -n 's/^# \{0,1\}//p' "$here/packages" >"$licenses"
vendored=()

while IFS='|' read -r name version integrity files license; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  echo "==> $name@$version"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  tarball="$work/$name-$version.tgz"
  [[ -f "$tarball" ]] || { echo "npm pack produced no $tarball" >&2; exit 1; }
  actual="sha512-$(sha512_b64 "$tarball")"
  if [[ "$actual" != "$integrity" ]]; then
    echo "integrity mismatch for $name@$version:" >&2
    echo "  expected $integrity" >&2
    echo "  actual   $actual" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
  for pair in $files; do
    src="${pair%%=*}"
    dest="${pair#*=}"
    install -m 0644 "$work/$name/package/$src" "$here/$dest"
    vendored+=("$dest")
    echo "    $dest ($(wc -c <"$here/$dest") bytes)"
  done
  {
    echo
    echo "================================================================"
    echo "$name@$version ($license)"
    echo "================================================================"
    cat "$work/$name/package/$license"
  } >>"$licenses"
done <"$here/packages"

install -m 0644 "$licenses" "$here/LICENSES"

# Compare with the sha256 sums recorded in the directory's README.md.
status=0
for f in "${vendored[@]}"; do
  sum="$(sha256sum "$here/$f" | cut -d' ' -f1)"
  if grep -q "$sum" "$here/README.md" 2>/dev/null; then
    echo "ok   $f $sum"
  else
    echo "NEW  $f $sum (update README.md)"
    status=1
  fi
done
exit "$status"
