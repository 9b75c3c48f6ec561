#!/usr/bin/env bash
# Refresh the status page's chart library from the npm registry: scripts/vendor-charts.sh [VERSION]
set -euo pipefail
version="${1:-5.3.0}"
here="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$here/streamer/web/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "lightweight-charts@$version" >/dev/null && tar xzf ./*.tgz)
cp "$work/package/dist/lightweight-charts.standalone.production.js" "$vendor/"
cp "$work/package/LICENSE" "$vendor/LICENSE-lightweight-charts"
sed -i -E "s/\*\*[0-9][0-9.]*\*\*/**$version**/" "$vendor/README.md"
echo "lightweight-charts $version vendored into $vendor"
