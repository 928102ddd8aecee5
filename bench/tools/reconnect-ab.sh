#!/usr/bin/env bash
# The `reconnect` storm of two or more builds, alternating: time until all caught up, and the
# node's CPU over it.
#
#   bench/tools/reconnect-ab.sh ROUNDS DIR [DIR…]
#   ENCODING=json bench/tools/reconnect-ab.sh 4 /tmp/a /tmp/b
#
# Each DIR holds a build: `natter` and `natter-bench` (copied from target/release). For each
# round and each DIR in turn: starts `DIR/natter serve` on a fresh data directory
# (127.0.0.1:18080) and runs `DIR/natter-bench reconnect` as bench/run-all.sh does (19,000
# clients, 100 per user, groups of 10 users, 380 messages while away, 20/s live; ENCODING proto
# by default). Prints the time until every client had resumed and caught up, the node's CPU
# while they came back (as the bench reads it from /proc) and the bench's own, and the messages
# missing (must be 0).
# On a 2-core VM one storm varies by ±20% from run to run; alternate enough rounds to see past it.
set -euo pipefail
# shellcheck source=bench/tools/node.sh
. "$(dirname "$0")/node.sh"
ROUNDS=$1; shift
ENCODING=${ENCODING:-proto}
export CONNECTIONS_PER_USER=100
for round in $(seq 1 "$ROUNDS"); do
    for dir in "$@"; do
        data=$(mktemp -d /var/tmp/natter-reconnect-ab.XXXXXX)
        start_node "$dir/natter" "$data"
        out=$(timeout 300 "$dir/natter-bench" reconnect --clients 19000 --per-user 100 \
            --group-users 10 --missed 380 --live-rate 20 --encoding "$ENCODING" \
            --url http://127.0.0.1:18080 --pid "$NODE_PID" 2>/dev/null || true)
        field() { echo "$out" | grep "$1" | awk '{print $(NF-1)}'; }
        missing=$(echo "$out" | grep 'messages missing' | awk '{print $3}')
        echo "$(basename "$dir") round $round: caught up $(field 'all resumed')s," \
            "server cpu $(field 'server cpu while')s, bench cpu $(field 'bench cpu while')s," \
            "missing ${missing:-?}"
        stop_node
    done
done
