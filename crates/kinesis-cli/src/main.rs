//! `kin`: the command line for people who operate Kinesis streams.
//!
//! ```text
//!  argv ─► cli (clap) ─► Output (format, progress) ─► commands::{stream,put,tail,leases,lag,local,demo}
//!                      ─► aws::Aws (config, clients) ─┘        │
//!                                                   CliError ─► message + hint, exit code
//! ```
//!
//! Results go to stdout, everything else (progress, status, errors) to stderr. Exit codes:
//! 0 success, 1 failure, 2 usage, 3 not found, 4 access (see `kin --help`).

mod aws;
mod cli;
mod commands;
mod error;
mod output;
mod util;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::Kind;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kin: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Readers blocked on stdin (tokio's stdin is a blocking thread) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind == Kind::BrokenPipe => e.exit_code(),
        Err(e) => {
            eprintln!("kin: error: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> error::Result<()> {
    let out = output::Output::new(&cli.global);
    match cli.command {
        Command::Local(args) => commands::local::run(args).await,
        Command::Demo(args) => commands::demo::run(&out, args).await,
        Command::Stream(command) => {
            let aws = aws::Aws::connect(&cli.global).await?;
            commands::stream::run(&aws, &out, command).await
        }
        Command::Put(args) => {
            let aws = aws::Aws::connect(&cli.global).await?;
            commands::put::run(&aws, &out, args).await
        }
        Command::Tail(args) => {
            let aws = aws::Aws::connect(&cli.global).await?;
            commands::tail::run(&aws, &out, args).await
        }
        Command::Leases(args) => {
            let aws = aws::Aws::connect(&cli.global).await?;
            commands::leases::run(&aws, &out, args).await
        }
        Command::Lag(args) => {
            let aws = aws::Aws::connect(&cli.global).await?;
            commands::lag::run(&aws, &out, args).await
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "error,kinesis_cli=warn,kinesis_producer=warn,s3_sink=warn",
        1 => "warn,kinesis_cli=info,kinesis_producer=info",
        2 => "info,kinesis_cli=debug,kinesis_producer=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter)
        .init();
}
