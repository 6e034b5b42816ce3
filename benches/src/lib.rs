//! Convoke's benchmarks. The criterion micro-benchmarks live in `benches/` (`cargo bench -p
//! convoke-benches`); the load generator (`convoke-loadgen`, [`loadgen`]) drives a real
//! broker, and nats-server as the peer, through their public clients. Results, with the
//! machine and the commands, are in `RESULTS.md`; `run.sh` produces them.

pub mod loadgen;
