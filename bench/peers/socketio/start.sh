#!/usr/bin/env bash
# Start the Socket.IO peer on 127.0.0.1:PORT (0: any free port), installing its packages first
# if needed. Prints "socketio listening on http://127.0.0.1:PORT" on stdout.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/socket.io ]; then
  npm ci --no-audit --no-fund --silent >&2
fi
exec node server.js "${1:-0}"
