#!/usr/bin/env bash
# System calls and context switches per message of a Natter node in `direct`.
#
#   bench/tools/syscalls.sh [DIR] [RATE]      (defaults: target/release, 20000)
#
# Starts DIR/natter on a fresh data directory (127.0.0.1:18080), runs DIR/natter-bench `direct`
# with 100 pairs at RATE messages/s for 22 s (ENCODING: proto by default), and counts the node's
# system calls by name (`perf stat` on the syscalls:sys_enter_* tracepoints) and its context
# switches over 10 s of the steady state. Needs `perf` (Debian: linux-perf) and root.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-target/release}
RATE=${2:-20000}
ENCODING=${ENCODING:-proto}
# shellcheck source=bench/tools/node.sh
. bench/tools/node.sh
data=$(mktemp -d /var/tmp/natter-syscalls.XXXXXX)
start_node "$DIR/natter" "$data"
pid=$NODE_PID
(sleep 8; perf stat -e 'syscalls:sys_enter_*' -e context-switches -p "$pid" -o "$data/stat" \
    -- sleep 10 >/dev/null 2>&1) &
window=$!
timeout 120 "$DIR/natter-bench" direct --pairs 100 --rate "$RATE" --duration 22 --warmup 2 \
    --encoding "$ENCODING" --url http://127.0.0.1:18080 --pid "$pid" 2>/dev/null | grep -E '^natter'
wait "$window"
awk -v r="$RATE" '$1 ~ /^[0-9,]+$/ { gsub(",", "", $1); if ($1 > 0)
    printf "%-36s %9d  %6.3f per message\n", $2, $1, $1 / (r * 10) }' "$data/stat" | sort -k2 -nr | head -12
