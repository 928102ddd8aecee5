#!/usr/bin/env bash
# Server CPU per message of two or more builds, alternating, in `direct` at one rate.
#
#   bench/tools/ab.sh RATE ROUNDS DIR [DIR…]
#   ENCODING=json ARGS="--client-msg-ids random" bench/tools/ab.sh 20000 3 /tmp/a /tmp/b
#
# Each DIR holds a build: `natter` and `natter-bench` (copied from target/release). For each
# round and each DIR in turn: starts `DIR/natter serve` on a fresh data directory
# (127.0.0.1:18080), runs `DIR/natter-bench direct` with 100 pairs at RATE messages/s for 22 s
# (ENCODING: proto by default; ARGS: more bench flags), and reads the node's user+system time
# from /proc/PID/stat over 12 s of the steady state. Prints µs of server CPU per message and the
# bench's row (its p99s). Alternating builds keeps a drifting VM from favouring one of them.
set -euo pipefail
# shellcheck source=bench/tools/node.sh
. "$(dirname "$0")/node.sh"
RATE=$1; ROUNDS=$2; shift 2
ENCODING=${ENCODING:-proto}
TICKS=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
    for dir in "$@"; do
        data=$(mktemp -d /var/tmp/natter-ab.XXXXXX)
        start_node "$dir/natter" "$data"
        pid=$NODE_PID
        cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
        (sleep 7; a=$(cpu); sleep 12; b=$(cpu); echo $((b - a)) >"$data/ticks") &
        window=$!
        # shellcheck disable=SC2086 # ARGS is a list of flags
        row=$(timeout 120 "$dir/natter-bench" direct --pairs 100 --rate "$RATE" --duration 22 \
            --warmup 2 --encoding "$ENCODING" --url http://127.0.0.1:18080 --pid "$pid" \
            ${ARGS:-} 2>/dev/null | grep -E '^natter' || true)
        wait "$window"
        us=$(awk -v t="$(cat "$data/ticks")" -v hz="$TICKS" -v r="$RATE" \
            'BEGIN {printf "%.2f", t / hz * 1e6 / (r * 12)}')
        echo "$(basename "$dir") round $round: server cpu $us us/msg | $row"
        stop_node
    done
done
