#!/usr/bin/env bash
# Crash matrix, the long run: ROUNDS rounds of `kill -9` at a random moment during mixed
# traffic (messages, management changes, uploads, new groups, requests that must be refused),
# restart on the same data dir, and check every acknowledged operation (and nothing refused)
# is there. The test is tests/tests/crash_matrix.rs; CI runs a few rounds of it against the
# debug broker, this runs hundreds against the release broker.
#
#   benches/crash-matrix.sh            # 300 rounds, prints the summary
#   benches/crash-matrix.sh --write    # and replaces the crash-matrix section of RESULTS.md
#
# Environment: ROUNDS (default 300), SEED (default random; printed, and in every failure:
# SEED=<it> replays the same choices, not the same interleaving).
set -euo pipefail

cd "$(dirname "$0")/.."
RESULTS=benches/RESULTS.md
ROUNDS=${ROUNDS:-300}
SEED=${SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
WRITE=0
[[ "${1:-}" == "--write" ]] && WRITE=1

cargo build --release -p convoke-broker --bin convoke
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# A private copy: target/ is shared, and a rebuild during the run must not change the broker
# half-way through.
cp target/release/convoke "$OUT/"
BROKER_SHA=$(sha256sum "$OUT/convoke" | cut -c1-12)
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- broker protocol 2>/dev/null || echo ' (with uncommitted broker/protocol changes)')"
STARTED=$(date -u +"%Y-%m-%d %H:%M UTC")
T0=$(date +%s)
STATUS=0
CONVOKE_BIN="$OUT/convoke" CRASH_ROUNDS=$ROUNDS CRASH_SEED=$SEED \
    cargo test -p convoke-tests --test crash_matrix -- --nocapture 2>&1 | tee "$OUT/run.log" || STATUS=$?
ELAPSED=$(( $(date +%s) - T0 ))
SUMMARY=$(grep -o 'CRASH-MATRIX-SUMMARY.*' "$OUT/run.log" | tail -1 || true)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$SUMMARY"; }

SECTION=$OUT/section.md
{
    echo "<!-- crash-matrix:begin (written by benches/crash-matrix.sh --write; edits here are replaced) -->"
    echo "#### Crash matrix, long run (\`benches/crash-matrix.sh\`)"
    echo
    echo "- Date: $STARTED; run took ${ELAPSED}s. Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)."
    echo "- Commit: $COMMIT, release broker sha256 $BROKER_SHA...; seed $SEED."
    echo "- Command: \`ROUNDS=$ROUNDS SEED=$SEED benches/crash-matrix.sh\` (= \`CONVOKE_BIN=target/release/convoke CRASH_ROUNDS=$ROUNDS CRASH_SEED=$SEED cargo test -p convoke-tests --test crash_matrix -- --nocapture\`)."
    if [[ -n "$SUMMARY" ]]; then
        echo "- Result: **no violation** in $(field rounds) rounds."
        echo
        echo "| rounds | operations checked | acknowledged | refused (must not be there) | unknown (no answer) | unknown found applied | acknowledged messages | acknowledged uploads | state checks | messages in the histories | files | groups created |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
        echo "| $(field rounds) | $(field ops) | $(field acked) | $(field refused) | $(field unknown) | $(field unknown_applied) | $(field messages_acked) | $(field files_acked) | $(field state_checks) | $(field history_messages) | $(field files) | $(field groups_created) |"
    else
        echo "- Result: **FAILED** (exit $STATUS):"
        echo
        echo '```'
        grep -A40 'violation(s)' "$OUT/run.log" | head -60 || tail -40 "$OUT/run.log"
        echo '```'
    fi
    echo "<!-- crash-matrix:end -->"
} >"$SECTION"

cat "$SECTION"
if [[ $WRITE -eq 1 ]]; then
    if grep -q '<!-- crash-matrix:begin' "$RESULTS"; then
        awk -v section="$SECTION" '
            /<!-- crash-matrix:begin/ { while ((getline l < section) > 0) print l; skip = 1; next }
            /<!-- crash-matrix:end -->/ { skip = 0; next }
            !skip { print }
        ' "$RESULTS" >"$OUT/new.md"
    else
        { cat "$RESULTS"; echo; cat "$SECTION"; } >"$OUT/new.md"
    fi
    cp "$OUT/new.md" "$RESULTS"
    echo "wrote $RESULTS" >&2
fi
exit "$STATUS"
