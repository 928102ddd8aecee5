#!/usr/bin/env bash
# Start the machine's nats-server for the NATS and JetStream peers of natter-bench:
#   start.sh PORT STORE_DIR
# Loopback only, JetStream enabled with file storage in STORE_DIR (fresh for each run). Prints
# "nats listening on nats://127.0.0.1:PORT" on stdout once the server accepts connections.
set -euo pipefail
port="${1:?usage: start.sh PORT STORE_DIR}"
dir="${2:?usage: start.sh PORT STORE_DIR}"
command -v nats-server >/dev/null || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }
mkdir -p "$dir"
nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir" >"$dir/nats-server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' TERM INT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "nats listening on nats://127.0.0.1:$port pid $pid"
    wait $pid
    exit $?
  fi
  kill -0 $pid 2>/dev/null || { cat "$dir/nats-server.log" >&2; exit 1; }
  sleep 0.05
done
echo "nats-server did not start; see $dir/nats-server.log" >&2
kill $pid
exit 1
