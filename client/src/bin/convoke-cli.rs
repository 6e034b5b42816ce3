//! `convoke-cli`: a command-line client of a Convoke broker, one subcommand per call of the
//! group API (see `convoke-cli --help`), plus `ping` and `watch`.

mod cli;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // clap exits with status 2 on a usage error and 0 for --help/--version.
    let args = cli::args::Cli::parse();
    cli::run::run(args).await
}
