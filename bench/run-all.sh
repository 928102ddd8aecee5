#!/usr/bin/env bash
# The whole benchmark, side by side, in one go: builds the server and the bench, then runs every
# scenario of natter-bench against a fresh Natter node (default durable mode) and, for `direct`
# and `fanout`, against the peers too (Socket.IO, NATS core, NATS JetStream without and with
# Nats-Msg-Id, and with Nats-Msg-Id and a durable consumer per connection), each started fresh
# on this machine. Loopback only; every step is bounded in time (the whole run: about 35
# minutes, at most RUN_ALL_TIMEOUT seconds, 60 minutes by default).
#
#   bench/run-all.sh                 # everything
#   ONLY="direct fanout" bench/run-all.sh
#   OUT=/tmp/results bench/run-all.sh
#   ENCODING=json ONLY="direct fanout" bench/run-all.sh   # Natter with JSON frames only
#   ONLY="direct-nodes fanout-nodes idle-nodes" bench/run-all.sh     # clusters (not in the default
#                                    # set: they need PostgreSQL on 127.0.0.1:5432 and nats-server)
#
# Results: OUT (default target/bench-results/<date>): per scenario a .txt (the table), a .json
# (schema in docs/benchmarks.md), a .log (progress and notes) and, for sweeps, an .svg chart.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-target/bench-results/$(date +%Y%m%d-%H%M%S)}"
ONLY="${ONLY:-direct fanout idle reconnect sync}"
RUN_ALL_TIMEOUT="${RUN_ALL_TIMEOUT:-3600}"
DIRECT_RATES="${DIRECT_RATES:-1000,2000,5000,10000,20000,30000,40000,50000,60000,70000,80000,90000,100000}"
FANOUT_RATES="${FANOUT_RATES:-250,500,1000,1500,2000,2500,3000,4000,5000,6000,8000,10000}"
PEERS="${PEERS:-natter,socketio,nats,jetstream,jetstream-dedupe,jetstream-durable}"
# Natter's frame encoding for direct and fanout: json, proto, or json,proto (the default: both,
# each judged against the targets and the peers); sync, idle and reconnect take the first.
ENCODING="${ENCODING:-json,proto}"
ENCODING_ONE="${ENCODING%%,*}"
# Cluster runs: one node against NODES nodes (each on PostgreSQL and NATS), and idle on IDLE_NODES.
NODES="${NODES:-3}"
IDLE_NODES="${IDLE_NODES:-5}"
mkdir -p "$OUT"
deadline=$(( $(date +%s) + RUN_ALL_TIMEOUT ))

command -v nats-server >/dev/null || echo "warning: nats-server not found (apt-get install nats-server): the NATS peers will fail" >&2
command -v node >/dev/null || echo "warning: node not found: the Socket.IO peer will fail" >&2

cargo build --release -p natter-server --bin natter
cargo build --release -p natter-bench
bench=target/release/natter-bench

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (work tree modified)')"
  echo "started: $(date -Is); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

run() {
  local name="$1"; shift
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -le 60 ]; then
    echo "skipping $name: the run's time is up" | tee -a "$OUT/skipped.txt"
    return 0
  fi
  echo "== $name: natter-bench $*  (load average $(cut -d' ' -f1 /proc/loadavg))"
  # The bench bounds itself (--timeout); `timeout` is the belt to its braces.
  timeout --kill-after=30 "$left" "$bench" "$@" --timeout "$left" --json "$OUT/$name.json" \
    2> >(tee "$OUT/$name.log" >&2) | tee "$OUT/$name.txt" || echo "($name exited with $?)"
}

for scenario in $ONLY; do
  case "$scenario" in
    direct) run direct direct --pairs 100 --sweep "$DIRECT_RATES" --duration 10 --warmup 2 --peer "$PEERS" --encoding "$ENCODING" ;;
    fanout) run fanout fanout --groups 10 --group-size 100 --sweep "$FANOUT_RATES" --duration 10 --warmup 2 --peer "$PEERS" --encoding "$ENCODING" ;;
    idle) run idle idle --connections 19000 --per-user 100 --hold 30 --encoding "$ENCODING_ONE" ;;
    reconnect) run reconnect reconnect --clients 19000 --per-user 100 --group-users 10 --missed 380 --live-rate 20 --encoding "$ENCODING_ONE" ;;
    sync) run sync sync --conversations 100 --messages 10000 --encoding "$ENCODING_ONE" ;;
    direct-nodes)
      run direct-nodes1 direct --nodes 1 --pairs 100 --sweep "$DIRECT_RATES" --duration 10 --warmup 2 --encoding "$ENCODING"
      run "direct-nodes$NODES" direct --nodes "$NODES" --pairs 100 --sweep "$DIRECT_RATES" --duration 10 --warmup 2 --encoding "$ENCODING" ;;
    fanout-nodes)
      run fanout-nodes1 fanout --nodes 1 --groups 10 --group-size 100 --sweep "$FANOUT_RATES" --duration 10 --warmup 2 --encoding "$ENCODING"
      run "fanout-nodes$NODES" fanout --nodes "$NODES" --groups 10 --group-size 100 --sweep "$FANOUT_RATES" --duration 10 --warmup 2 --encoding "$ENCODING" ;;
    idle-nodes) run "idle-nodes$IDLE_NODES" idle --nodes "$IDLE_NODES" --connections $((IDLE_NODES * 19000)) --per-user 100 --hold 30 --encoding "$ENCODING_ONE" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
done
echo "results in $OUT"
