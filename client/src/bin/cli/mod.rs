//! The `convoke-cli` command line: argument definitions ([`args`], [`commands`]), running a
//! command against the broker ([`run`]), rendering results and errors ([`output`]) and the
//! transfer progress bar ([`progress`]).

pub mod args;
pub mod commands;
pub mod output;
pub mod progress;
pub mod run;
