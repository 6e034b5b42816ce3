#!/usr/bin/env bash
# Load matrix: Convoke vs nats-server (plaintext and TLS), written to benches/RESULTS.md.
#
#   benches/run.sh            # the full matrix (about 28 minutes on 2 cores)
#   benches/run.sh --quick    # one small point per scenario, printed (RESULTS.md untouched)
#
# Builds the broker and the load generator in release, installs nats-server from the
# distribution's packages if it is missing, pins every server to core 0 and the load
# generator to core 1, and replaces the section between the loadgen markers of RESULTS.md
# (everything else in that file, e.g. the criterion results, is kept).
# Environment: DURATION (s, default 10), SERVER_CPU (0), LOADGEN_CPU (1), EXTRA (extra
# loadgen flags, e.g. "--set sessions.outbound_queue=16384").
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=benches/RESULTS.md
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
EXTRA=${EXTRA:-}
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

cargo build --release -p convoke-benches --bin convoke-loadgen -p convoke-broker --bin convoke

NATS=$(command -v nats-server || true)
if [[ -z "$NATS" && -x /usr/sbin/nats-server ]]; then NATS=/usr/sbin/nats-server; fi
if [[ -z "$NATS" ]]; then
    echo "installing nats-server (Debian package)" >&2
    if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server
    NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
fi
NATS_VERSION=$("$NATS" --version 2>&1 | head -1)

# Thousands of TCP connections (nats) need descriptors; QUIC connections share sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# Private copies: target/ is shared, and a rebuild during the run must not change what is
# measured half-way through.
cp target/release/convoke target/release/convoke-loadgen "$OUT/"
LOADGEN=$OUT/convoke-loadgen
BROKER_SHA=$(sha256sum "$OUT/convoke" | cut -c1-12)
JSON=$OUT/results.jsonl
LOG=$OUT/run.log

FAILED=()
lg() {
    echo "+ taskset -c $LOADGEN_CPU target/release/convoke-loadgen --nats-bin $NATS --server-cpu $SERVER_CPU --duration $DURATION --json-out results.jsonl${EXTRA:+ $EXTRA} $*" | tee -a "$LOG" >&2
    # shellcheck disable=SC2086
    if ! taskset -c "$LOADGEN_CPU" "$LOADGEN" --nats-bin "$NATS" --server-cpu "$SERVER_CPU" \
        --duration "$DURATION" --json-out "$JSON" $EXTRA "$@" >"$OUT/one.log" 2>&1; then
        FAILED+=("convoke-loadgen $*: $(tail -3 "$OUT/one.log" | tr '\n' ' ')")
    fi
    grep -v '^|' "$OUT/one.log" | tee -a "$LOG" >&2 || true
}

STARTED=$(date -u +"%Y-%m-%d %H:%M UTC")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
if [[ $QUICK -eq 1 ]]; then
    lg fanout --members 100 --rate 20000
    lg idle --connections 1000
    lg rooms --groups 20 --size 10 --member-rate 1
    lg ops --rate 500
    lg migration --rate 100 --rebind-every 1
    lg attack attr-keys
else
    # Each point: Convoke (defaults), nats-server, nats-server with TLS; then Convoke again
    # with coalescing off (`convoke-nocoalesce`), as its own row.
    # "1000 1000" is an idle group (1 message/s), to show coalescing does not delay it.
    NOCOALESCE="--set sessions.coalesce_busy_ms=0"
    for point in "10 20000" "10 100000" "100 20000" "100 100000" "1000 1000" "1000 20000" \
                 "1000 100000" "5000 20000" "5000 100000" "10000 20000"; do
        read -r n rate <<<"$point"
        for system in convoke nats nats-tls; do
            lg --systems "$system" fanout --members "$n" --rate "$rate"
        done
        lg --systems convoke --label convoke-nocoalesce $NOCOALESCE fanout --members "$n" --rate "$rate"
    done
    for n in 1000 10000; do
        for system in convoke nats nats-tls; do
            lg --systems "$system" idle --connections "$n"
        done
    done
    lg rooms --groups 100 --size 10 --member-rate 1
    for rate in 500 1000 2000 4000 8000; do
        lg ops --groups 10 --size 10 --rate "$rate"
    done
    # A receiver moving to a new UDP socket every second beside one that stays (QUIC
    # connection migration); RESULTS.md's "Client resilience" has a 30 s run.
    lg migration --rate 100 --rebind-every 1
    # Abuse under load: each attack of issue #12 on a fresh broker while one normal client
    # works, its p50 / p99 with and without the attack and the broker's RSS beside them.
    lg attack
fi
ELAPSED=$(( $(date +%s) - T0 ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

SECTION=$OUT/section.md
{
    echo "<!-- loadgen:begin (written by benches/run.sh; edits here are replaced) -->"
    echo "## Load: Convoke vs nats-server (\`benches/run.sh\`)"
    echo
    echo "- Date: $STARTED; run took ${ELAPSED}s."
    echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)."
    echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'), broker binary sha256 $BROKER_SHA...; peer: $NATS_VERSION."
    echo "- Command: \`$( [[ $QUICK -eq 1 ]] && echo "benches/run.sh --quick" || echo "benches/run.sh")\` (DURATION=$DURATION SERVER_CPU=$SERVER_CPU LOADGEN_CPU=$LOADGEN_CPU EXTRA='$EXTRA'); each table row comes from one \`convoke-loadgen\` run, listed in full below the tables."
    echo "- Pinning: each server (a fresh process per run) on core $SERVER_CPU, the load generator on core $LOADGEN_CPU (taskset)."
    echo "- Load average before / after: $LOAD_BEFORE / $LOAD_AFTER. A run in which other processes used more than 15% of a core is marked \"noise\"."
    echo "- Method: open loop, ${DURATION}s measured after 2s of warm-up at the same rate; latency from each message's scheduled send time (stamped in its 64-byte payload) to its receipt; server CPU = utime+stime from /proc over the measured phase and its drain, divided by deliveries; UDP drops from /proc/net/snmp (whole machine) and /proc/net/udp (the broker's socket)."
    "$LOADGEN" report "$JSON"
    for f in "${FAILED[@]}"; do echo; echo "- FAILED: $f"; done
    echo
    echo "<details><summary>Exact commands</summary>"
    echo
    echo '```'
    grep '^+ taskset' "$LOG" | sed 's/^+ //'
    echo '```'
    echo "</details>"
    echo "<!-- loadgen:end -->"
} >"$SECTION"

if [[ $QUICK -eq 1 ]]; then
    cat "$SECTION"
    exit 0
fi
if [[ -f "$RESULTS" ]] && grep -q '<!-- loadgen:begin' "$RESULTS"; then
    awk -v section="$SECTION" '
        /<!-- loadgen:begin/ { while ((getline l < section) > 0) print l; skip = 1; next }
        /<!-- loadgen:end -->/ { skip = 0; next }
        !skip { print }
    ' "$RESULTS" >"$OUT/new.md"
    cp "$OUT/new.md" "$RESULTS"
else
    { [[ -f "$RESULTS" ]] && cat "$RESULTS" && echo; cat "$SECTION"; } >"$OUT/new.md"
    cp "$OUT/new.md" "$RESULTS"
fi
cp "$JSON" "$ROOT/target/loadgen-results.jsonl"
echo "wrote $RESULTS (raw results: target/loadgen-results.jsonl)" >&2
