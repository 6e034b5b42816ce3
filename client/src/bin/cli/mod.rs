//! The `convoke-cli` command line: argument definitions ([`args`], [`commands`]), running a
//! command against the broker ([`run`]), rendering results and errors ([`output`]) and the
//! transfer progress bar ([`progress`]).

pub(crate) mod args;
pub(crate) mod commands;
pub(crate) mod output;
pub(crate) mod progress;
pub(crate) mod run;
