#!/usr/bin/env bash
# The JavaScript side of Natter: the SDK's type check (tsc --checkJs) and tests (node --test
# against a real `natter serve`), then the web app's tests in a real headless Chromium.
# Needs Node 20+, npm and Debian's Chromium at /usr/bin/chromium (or $CHROMIUM_PATH); no browser
# is ever downloaded. Run from anywhere; honours $CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "error: $CHROMIUM is missing; the browser tests need Debian's Chromium." >&2
  echo "       Install it with: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi
for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool is missing; the JavaScript tests need Node 20 or later." >&2
    exit 1
  fi
done
if [ "$(node -p 'Number(process.versions.node.split(".")[0])')" -lt 20 ]; then
  echo "error: Node $(node --version) is too old; the JavaScript tests need Node 20 or later." >&2
  exit 1
fi

echo "== cargo build -p natter-server --bin natter (the web app is embedded in it)"
cargo build -p natter-server --bin natter

echo "== npm ci (clients/js, web)"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
(cd web && npm ci --no-audit --no-fund --loglevel=error)

echo "== SDK type check (tsc --checkJs --noEmit)"
(cd clients/js && npm run --silent check)

echo "== SDK tests (node --test)"
(cd clients/js && npm test)

echo "== web app tests in Chromium (node --test, playwright-core)"
(cd web && npm test)
