#!/usr/bin/env bash
# CPU per message of each of a Natter node's threads during a `direct` run.
#
#   bench/tools/thread-cpu.sh [NATTER_BIN] [RATE]     (defaults: target/release/natter, 10000)
#
# Starts a node on a fresh data directory (127.0.0.1:18080), runs `natter-bench direct` with 100
# pairs at RATE messages/s for 12 s, and reads every thread's user+system time from
# /proc/PID/task/*/stat over 8 s of the steady state; prints seconds and µs per message by thread
# name (threads of one name summed; a thread that starts or ends in between is left out).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/natter}
RATE=${2:-10000}
BENCH=${BENCH:-$(dirname "$BIN")/natter-bench}
# shellcheck source=bench/tools/node.sh
. bench/tools/node.sh
DIR=$(mktemp -d /var/tmp/natter-thread-cpu.XXXXXX)
start_node "$BIN" "$DIR"
PID=$NODE_PID
TICKS=$(getconf CLK_TCK)
snap() {
    for t in /proc/$PID/task/*; do
        read -r -a f < <(sed 's/.*) //' "$t/stat")
        echo "${t##*/} $(tr ' ' '_' <"$t/comm") $((f[11] + f[12]))"
    done | sort
}
(sleep 6; snap >"$DIR/before"; sleep 8; snap >"$DIR/after") &
SNAP=$!
timeout 100 "$BENCH" direct --pairs 100 --rate "$RATE" --duration 12 --warmup 2 \
    --url http://127.0.0.1:18080 --pid "$PID" 2>/dev/null | grep -E '^(peer|natter) '
wait $SNAP
# Threads present in both snapshots, summed by name.
join "$DIR/before" "$DIR/after" | awk -v rate="$RATE" -v hz="$TICKS" '
    {d[$2] += ($5 - $3) / hz}
    END {for (k in d) printf "%-24s %6.2f s  %6.1f us/msg\n", k, d[k], d[k] * 1e6 / (rate * 8)}' | sort
