# Sourced by the scripts beside it: start_node BIN DATA starts `BIN serve` on a fresh data
# directory DATA at 127.0.0.1:18080 with the limits a load generator must lift, sets NODE_PID,
# and arranges for the node to be stopped and DATA removed however the script ends.
# CONNECTIONS_PER_USER lifts the per-user connection limit further (16 by default).
start_node() {
    NATTER_LOG=${NATTER_LOG:-warn} "$1" serve --listen 127.0.0.1:18080 --data-dir "$2" \
        --sends-per-second 1000000 --login-attempts-per-minute 1000000 \
        --connections-per-user-max "${CONNECTIONS_PER_USER:-16}" >"$2/natter.log" 2>&1 &
    NODE_PID=$!
    NODE_DATA=$2
    trap stop_node EXIT
    sleep 1
}

# Stop the node start_node started and remove its data directory; a second call does nothing.
stop_node() {
    if [ -n "${NODE_PID:-}" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
        rm -rf "$NODE_DATA"
        NODE_PID=
    fi
}
