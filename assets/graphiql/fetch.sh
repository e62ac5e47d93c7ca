#!/usr/bin/env bash
# Re-downloads the vendored GraphiQL page dependencies from the npm registry,
# checks every tarball against the sha512 integrity pinned below, and copies
# just the files the page needs (flat) into this directory, with their
# licences concatenated into LICENSES.
#
#   bash assets/graphiql/fetch.sh
#
# Needs npm (for `npm pack`), tar, and openssl or node. To upgrade a package,
# see README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# package  version  integrity (the registry's dist.integrity)  files: src=dest ...
PACKAGES=(
  "react|18.3.1|sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==|umd/react.production.min.js=react.production.min.js|LICENSE"
  "react-dom|18.3.1|sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==|umd/react-dom.production.min.js=react-dom.production.min.js|LICENSE"
  "graphiql|3.9.0|sha512-rJYFlHdBbug9+YbFSwRVvgfPjCayC7wHecZkx/qB4XLuQPFQZw/yB9pmHFtOJV6RiNBBHro3u1GdocKa3YcGRA==|graphiql.min.js=graphiql.min.js graphiql.min.css=graphiql.min.css|LICENSE"
  "graphql-ws|6.0.6|sha512-zgfER9s+ftkGKUZgc0xbx8T7/HMO4AV5/YuYiFc+AtgcO5T0v8AxYYNQ+ltzuzDZgNkYJaFspm5MMYLjQzrkmw==|umd/graphql-ws.min.js=graphql-ws.min.js|LICENSE.md"
)

sha512_b64() {
  if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha512 -binary "$1" | base64 | tr -d '\n'
  else
    node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$1"
  fi
}

licenses="$work/LICENSES"
{
  echo "Licences of the third-party files vendored in this directory."
  echo "graphiql.min.js is a bundle: besides GraphiQL (MIT) it contains, among"
  echo "others, graphql-js, @graphiql/react, @graphiql/toolkit, graphql-ws,"
  echo "CodeMirror 5, markdown-it and Radix UI, all under the MIT licence."
} >"$licenses"

for entry in "${PACKAGES[@]}"; do
  IFS='|' read -r name version integrity files license <<<"$entry"
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
    echo "    $dest ($(wc -c <"$here/$dest") bytes)"
  done
  {
    echo
    echo "================================================================"
    echo "$name@$version ($license)"
    echo "================================================================"
    cat "$work/$name/package/$license"
  } >>"$licenses"
done

install -m 0644 "$licenses" "$here/LICENSES"

# Compare with the sha256 sums recorded in README.md, when it lists them.
if [[ -f "$here/README.md" ]]; then
  status=0
  for f in react.production.min.js react-dom.production.min.js graphiql.min.js graphiql.min.css graphql-ws.min.js; do
    sum="$(sha256sum "$here/$f" | cut -d' ' -f1)"
    if grep -q "$sum" "$here/README.md"; then
      echo "ok   $f $sum"
    else
      echo "NEW  $f $sum (update README.md)"
      status=1
    fi
  done
  exit "$status"
fi
