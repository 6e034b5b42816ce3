#!/usr/bin/env bash
# The cluster checker, the long run (issue #11 item 6, design 13.4): three release brokers,
# six clients (and a guest each) on all nodes sending, writing announcements and joining/
# leaving groups while a nemesis kills -9 and restarts nodes, freezes them (SIGSTOP/SIGCONT)
# and, as root, cuts node-to-node links in network namespaces (a node isolated both ways,
# one direction cut). Then it heals and checks: no acknowledged change lost, no change from
# a failed request, one gap-free history per group identical through every node, no two
# owners in any /cluster sample, every answer within request_timeout_ms + slack, RSS
# bounded. The test is tests/tests/cluster_faults.rs; CI runs 16 s of faults against the
# debug broker, this runs SECS (default 120) against the release broker.
#
#   benches/cluster-faults.sh          # 120 s of faults, prints the checker's report
#   SECS=600 benches/cluster-faults.sh
#
# Without root (or without `ip netns`) the partition faults are skipped, and the report says
# so. The figures of the last run are in benches/RESULTS.md ("Cluster checker").
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${SECS:-120}

cargo build --release -p convoke-broker --bin convoke
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# A private copy: target/ is shared, and a rebuild during the run must not change the broker
# half-way through.
cp target/release/convoke "$OUT/"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- broker protocol 2>/dev/null || echo ' (with uncommitted broker/protocol changes)')"
echo "cluster checker: ${SECS} s of faults, broker at ${COMMIT}, $(nproc) cores, $(date -u +'%Y-%m-%d %H:%M UTC')"

CONVOKE_BIN="$OUT/convoke" CONVOKE_FAULTS_SECS="$SECS" \
  cargo test -p convoke-tests --test cluster_faults -- --nocapture --exact \
  the_checker_finds_no_lost_write_no_phantom_no_two_owners_under_faults
