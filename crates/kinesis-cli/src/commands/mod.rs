//! One module per top-level command. Each `run` takes the parsed arguments and returns a
//! `CliError` whose kind decides the exit code; results go to stdout through `Output`.

pub mod demo;
pub mod lag;
pub mod leases;
pub mod local;
pub mod put;
pub mod stream;
pub mod tail;
