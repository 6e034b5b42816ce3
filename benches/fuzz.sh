#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 600), starting from the
# committed seed corpus (fuzz/corpus/<target>/seed-*) plus whatever earlier runs added, and
# prints one summary line per target: executions, coverage (cov = edges, ft = features),
# corpus size and whether it crashed. Exits 1 if any target crashed; the crashing input is
# in fuzz/artifacts/<target>/ (replay: cargo +nightly fuzz run -s none <target> <file>).
#
#   benches/fuzz.sh          # the long run (10 min per target), figures in benches/RESULTS.md
#   benches/fuzz.sh 20       # the bounded run .ci/run does
#   benches/fuzz.sh 60 hello # one target
#   FUZZ_DEV=1 benches/fuzz.sh 20  # unoptimised build: what .ci/run does (see below)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Built
# without a sanitizer (-s none): the code is safe Rust (unsafe_code = forbid), so AddressSanitizer
# would look for errors it cannot have, at about twice the cost per execution and a slower
# build; panics, overflows (debug assertions are on) and the targets' own invariants are
# what is checked.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame hello request rules_sequence)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz missing; installing it (crates.io, about 1 min on 2 cores)"
  cargo install cargo-fuzz --locked --quiet
fi

# FUZZ_DEV=1 builds without optimisation: 4m40 cold on 2 cores instead of 10m10 (cargo-fuzz's
# release build forces one codegen unit), at about a tenth of the executions per second. The
# bounded CI run only replays the corpus and explores briefly, so it takes the cheap build;
# the long run keeps the optimised one.
mode=()
if [ "${FUZZ_DEV:-0}" = 1 ]; then
  mode=(--dev)
fi

start=$(date +%s)
cargo +nightly fuzz build -s none "${mode[@]}"
echo "fuzz: build took $(( $(date +%s) - start )) s"

failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  # -rss_limit_mb: a state that grows without bound shows as an out-of-memory crash.
  if cargo +nightly fuzz run -s none "${mode[@]}" "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASHED
    failed=1
  fi
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  runs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)
  echo "fuzz: $t ${secs}s $status runs=${runs:-?} $(echo "$done_line" | sed -E 's/.*DONE[[:space:]]+//')"
  if [ "$status" != ok ]; then
    grep -E "panicked at|^thread|Test unit written|SUMMARY" -A2 "$log" | head -20
  fi
  rm -f "$log"
done
echo "fuzz: total $(( $(date +%s) - start )) s"
exit $failed
