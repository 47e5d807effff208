//! The project's automation, run as `cargo xtask <command>` (an alias in .cargo/config.toml).
//!
//! - `bench`: builds and runs every benchmark (criterion for the aggregation format, the
//!   producer and consumer bench examples against a `local-aws` process, the Python and npm
//!   peers), and writes the results, as ratios to anchors measured in the same run, into
//!   docs/BENCHMARKS.md. See `cargo xtask bench --help` and `bench/mod.rs`.

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "kinesis-rs project automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every benchmark and write the results into docs/BENCHMARKS.md.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
