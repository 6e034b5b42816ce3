//! Convoke's benchmarks. The criterion micro-benchmarks live in `benches/` (`cargo bench -p
//! convoke-benches`); their results, with the machine and command, are in `RESULTS.md`.
