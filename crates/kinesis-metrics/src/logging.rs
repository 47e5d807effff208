//! Logging set up in one call: `tracing` events to standard output, as text for people or
//! as one JSON object per line for CloudWatch Logs (Logs Insights discovers the fields).
//!
//! ```text
//!   LOG_FORMAT = text (default) | json        RUST_LOG = info (default) | any EnvFilter
//!        │                                         │      e.g. "info,kinesis_consumer=debug"
//!        └────────────── LogConfig::from_env() ────┘
//!                               │ init()
//!                               ▼
//!   tracing events ─► EnvFilter ─► fmt (text, ANSI colours only on a terminal)
//!                                   └ json: {"timestamp":…,"level":"INFO","target":…,
//!                                            "message":…, <event fields>, "span":{…}}
//! ```
//!
//! kinesis-rs logs never contain record payloads, partition keys' data, credentials or
//! request signatures: only stream, shard and lease names, sequence numbers, counts and
//! error codes. Keep your processors' logs to the same rule.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::Error;

/// Environment variable read by [`LogConfig::from_env`] for the format.
pub const ENV_LOG_FORMAT: &str = "LOG_FORMAT";
/// Environment variable read by [`LogConfig::from_env`] for the filter.
pub const ENV_LOG_FILTER: &str = "RUST_LOG";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;

    /// Case-insensitive `text` or `json`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(Error::InvalidSetting {
                setting: "log format",
                value: s.to_owned(),
                expected: "text or json",
            }),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Logging settings. Defaults: text, `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    format: LogFormat,
    filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl LogConfig {
    /// The defaults, overridden by `LOG_FORMAT` and `RUST_LOG` when set.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a `LOG_FORMAT` other than `text` or `json`.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut config = Self::default();
        if let Some(format) = var(ENV_LOG_FORMAT).filter(|v| !v.trim().is_empty()) {
            config.format = format.parse()?;
        }
        if let Some(filter) = var(ENV_LOG_FILTER).filter(|v| !v.trim().is_empty()) {
            config.filter = filter;
        }
        Ok(config)
    }

    /// The format. Default [`LogFormat::Text`].
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// `RUST_LOG`-style directives (`info`, `warn,kinesis_consumer=debug`...). Default
    /// `info`.
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = directives.into();
        self
    }

    /// Installs the global `tracing` subscriber writing to standard output.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for invalid directives; [`Error::SubscriberAlreadyInstalled`].
    pub fn init(self) -> Result<(), Error> {
        let ansi = self.format == LogFormat::Text && std::io::stdout().is_terminal();
        let subscriber = self.subscriber(std::io::stdout, ansi)?;
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| Error::SubscriberAlreadyInstalled)
    }

    /// The subscriber `init` installs, writing to `writer` (for tests and custom sinks).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for invalid directives.
    pub fn subscriber<W>(
        &self,
        writer: W,
        ansi: bool,
    ) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, Error>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let filter = EnvFilter::try_new(&self.filter).map_err(|e| Error::InvalidSetting {
            setting: "log filter",
            value: format!("{} ({e})", self.filter),
            expected: "RUST_LOG directives such as info or warn,kinesis_consumer=debug",
        })?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        Ok(match self.format {
            LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
            LogFormat::Json => Box::new(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .finish(),
            ),
        })
    }
}

/// `LogConfig::from_env()?.init()`: the one call at the top of `main`.
///
/// # Errors
/// As [`LogConfig::from_env`] and [`LogConfig::init`].
pub fn init() -> Result<(), Error> {
    LogConfig::from_env()?.init()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn lines(config: &LogConfig) -> Vec<String> {
        let buffer = Buffer::default();
        let subscriber = config.subscriber(buffer.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("worker", worker = "w-1");
            let _entered = span.enter();
            tracing::info!(shard_id = "shardId-1", records = 12, "batch processed");
            tracing::debug!("not at info");
            tracing::warn!(target: "kinesis_consumer::lease", lease = "shardId-2", "lease lost");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_carry_level_target_message_fields_and_span() {
        let lines = lines(&LogConfig::default().format(LogFormat::Json));
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "batch processed");
        assert_eq!(first["shard_id"], "shardId-1", "fields at the top level");
        assert_eq!(first["records"], 12);
        assert_eq!(first["span"]["worker"], "w-1");
        assert!(
            first["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{first}"
        );
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["target"], "kinesis_consumer::lease");
        assert_eq!(second["level"], "WARN");
    }

    #[test]
    fn the_filter_follows_rust_log_directives() {
        let lines = lines(&LogConfig::default().filter("warn"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("lease lost") && !lines[0].starts_with('{'));
        let all = lines_at("debug");
        assert_eq!(all.len(), 3);
        assert!(
            LogConfig::default()
                .filter("=[")
                .subscriber(std::io::sink, false)
                .is_err()
        );
    }

    fn lines_at(filter: &str) -> Vec<String> {
        lines(&LogConfig::default().filter(filter))
    }

    #[test]
    fn settings_come_from_log_format_and_rust_log() {
        let config = LogConfig::from_vars(|name| match name {
            ENV_LOG_FORMAT => Some("JSON".into()),
            ENV_LOG_FILTER => Some("debug,hyper=warn".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            config,
            LogConfig::default()
                .format(LogFormat::Json)
                .filter("debug,hyper=warn")
        );
        assert_eq!(
            LogConfig::from_vars(|_| None).unwrap(),
            LogConfig::default()
        );
        assert!(LogConfig::from_vars(|_| Some("xml".into())).is_err());
    }
}
