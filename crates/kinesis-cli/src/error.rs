//! The one error type of the commands: a message for people, the fix when we know it, and
//! the exit code (documented in `kin --help`).

use std::fmt;
use std::process::ExitCode;

/// What went wrong, as far as the exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command failed: an AWS error, the network, a timeout, records not put. Exit 1.
    Failed,
    /// The command line or its environment is wrong. Exit 2 (clap's own errors use 2 too).
    Usage,
    /// The stream or shard does not exist. Exit 3.
    NotFound,
    /// No credentials or region, credentials refused, permission denied. Exit 4.
    Access,
    /// stdout was closed (`kin tail | head`): stop quietly, exit 0.
    BrokenPipe,
}

#[derive(Debug, thiserror::Error)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
    /// How to fix it, when we know.
    pub hint: Option<String>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.kind {
            Kind::BrokenPipe => 0,
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Access => 4,
        })
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::new(Kind::BrokenPipe, "stdout closed")
        } else {
            CliError::failed(e.to_string())
        }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
