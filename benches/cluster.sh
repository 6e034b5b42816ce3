#!/usr/bin/env bash
# The cluster's speed targets (issue #11, "Speed"), printed as Markdown for RESULTS.md:
#
#   1. a cluster of one node against today's single broker: fan-out rows at N=100 and
#      N=1000 (`--cluster-nodes 1`: cluster.enabled=true, one core member);
#   2. 3 nodes (127.0.0.1/2/3, README "Running a cluster"), one group's members spread
#      evenly, all nodes' CPU summed, against one broker: N=1000 and N=10,000 at 20k/s;
#   3. getGroupInfo through the group's owner and through the other nodes (`forward`);
#   4. the presence directory's memory per user with 100,000 users (convoke-presence-mem).
#
#   benches/cluster.sh            # all of it, REPS runs of each point, interleaved
#   benches/cluster.sh --quick    # one short run of each
#
# Every broker (all nodes of a cluster) is pinned to core SERVER_CPU, the load generator to
# LOADGEN_CPU, as in benches/run.sh. Each run starts fresh processes and stops them.
# Environment: REPS (default 3), DURATION (s, 10), SERVER_CPU (0), LOADGEN_CPU (1), OUT_MD
# (default target/cluster-bench.md), EXTRA (extra loadgen flags), POINTS (the one-node
# points, "N RATE" separated by commas), CLUSTER_MEMBERS (the 3-node group sizes, "1000
# 10000"), BUILD=0 (use the binaries in target/release).
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
OUT_MD=${OUT_MD:-target/cluster-bench.md}
EXTRA=${EXTRA:-}
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if [[ $QUICK -eq 1 ]]; then REPS=1; DURATION=3; fi

POINTS=${POINTS:-100 20000,100 100000,1000 1000,1000 20000,1000 100000}
CLUSTER_MEMBERS=${CLUSTER_MEMBERS:-1000 10000}
if [[ ${BUILD:-1} -ne 0 ]]; then
    cargo build --release -p convoke-benches --bin convoke-loadgen --bin convoke-presence-mem \
        -p convoke-broker --bin convoke
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# Private copies: a rebuild of target/ during the run must not change what is measured.
cp target/release/convoke target/release/convoke-loadgen "$OUT/"
cp target/release/convoke-presence-mem "$OUT/" 2>/dev/null || true
LOADGEN=$OUT/convoke-loadgen
FANOUT=$OUT/fanout.jsonl
FORWARD=$OUT/forward.jsonl
LOG=$OUT/run.log
FAILED=()

# lg JSON-FILE ARGS...: one convoke-loadgen run, its command logged.
lg() {
    local json=$1
    shift
    echo "+ taskset -c $LOADGEN_CPU target/release/convoke-loadgen --server-cpu $SERVER_CPU --duration $DURATION${EXTRA:+ $EXTRA} $*" | tee -a "$LOG" >&2
    # shellcheck disable=SC2086
    if ! taskset -c "$LOADGEN_CPU" "$LOADGEN" --server-cpu "$SERVER_CPU" --duration "$DURATION" \
        --json-out "$json" $EXTRA "$@" >"$OUT/one.log" 2>&1; then
        FAILED+=("convoke-loadgen $*: $(tail -5 "$OUT/one.log" | tr '\n' ' ')")
    fi
    grep -v '^|' "$OUT/one.log" | grep -v '^  connected' | tee -a "$LOG" >&2 || true
}

STARTED=$(date -u +"%Y-%m-%d %H:%M UTC")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
for rep in $(seq "$REPS"); do
    echo "--- round $rep of $REPS" >&2
    # 1. One node: today's broker, then a cluster of one, point by point.
    IFS=, read -r -a points <<<"$POINTS"
    for point in "${points[@]}"; do
        read -r n rate <<<"$point"
        [[ $QUICK -eq 1 && "$point" != "1000 20000" ]] && continue
        lg "$FANOUT" --systems convoke fanout --members "$n" --rate "$rate"
        lg "$FANOUT" --systems convoke --cluster-nodes 1 fanout --members "$n" --rate "$rate"
    done
    # 2. Three nodes against one broker.
    for n in $CLUSTER_MEMBERS; do
        [[ $QUICK -eq 1 && $n -ne 1000 ]] && continue
        [[ $n -ne 1000 ]] && lg "$FANOUT" --systems convoke fanout --members "$n" --rate 20000
        lg "$FANOUT" --systems convoke --cluster-nodes 3 fanout --members "$n" --rate 20000
    done
    # 3. A request through the owner and through the other nodes.
    lg "$FORWARD" --cluster-nodes 3 forward --requests "$([[ $QUICK -eq 1 ]] && echo 200 || echo 1000)" --rounds 5
done
ELAPSED=$(( $(date +%s) - T0 ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT_MD")"
{
    echo "- Date: $STARTED; run took ${ELAPSED}s; REPS=$REPS DURATION=$DURATION SERVER_CPU=$SERVER_CPU LOADGEN_CPU=$LOADGEN_CPU EXTRA='$EXTRA'."
    echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)."
    echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'), broker binary sha256 $(sha256sum "$OUT/convoke" | cut -c1-12)..."
    echo "- Load average before / after: $LOAD_BEFORE / $LOAD_AFTER."
    "$LOADGEN" report "$FANOUT" "$FORWARD"
    echo
    echo "#### Presence directory memory (\`target/release/convoke-presence-mem 100000\`)"
    echo
    if [[ -x "$OUT/convoke-presence-mem" ]]; then "$OUT/convoke-presence-mem" 100000; fi
    for f in "${FAILED[@]}"; do echo; echo "- FAILED: $f"; done
    echo
    echo "<details><summary>Exact commands</summary>"
    echo
    echo '```'
    grep '^+ taskset' "$LOG" | sed 's/^+ //'
    echo '```'
    echo "</details>"
} >"$OUT_MD"
cp "$FANOUT" target/cluster-bench-fanout.jsonl
cp "$FORWARD" target/cluster-bench-forward.jsonl 2>/dev/null || true
cat "$OUT_MD"
echo "wrote $OUT_MD (raw: target/cluster-bench-*.jsonl)" >&2
