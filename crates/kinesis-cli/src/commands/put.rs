//! `kin put`: records from arguments, lines, JSON lines or a generator, through the producer.
//!
//! ```text
//!  source (args | file/stdin lines | --count generator) ─► pacer (--rate) ─► Producer::put
//!     (Ctrl-C stops reading)                                   (its await is the backpressure)
//!                                                                    │ PutHandle
//!                                    collector task ◄── channel ─────┘
//!                            (counts outcomes, retries, failures; drives the progress bar)
//! ```
//!
//! The summary (records, bytes, rate, retries, failures) is the command's result on stdout;
//! exit 1 when any record failed, 3 when the stream does not exist.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_producer::{BuildError, Producer, PutFailure, PutHandle, Record};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::aws::Aws;
use crate::cli::{InputFormat, PutArgs};
use crate::error::{CliError, Kind, Result};
use crate::output::{Output, Table};
use crate::util::{self, Rng, Template};

pub async fn run(aws: &Aws, out: &Output, args: PutArgs) -> Result<()> {
    let mut source = Source::open(&args).await?;
    // The producer starts without a shard map when it cannot list shards, and retries
    // until the records' TTL: ask once first, so that a missing stream, missing
    // credentials or a dead endpoint fail at once with the right message.
    aws.kinesis
        .describe_stream_summary()
        .stream_name(&args.stream)
        .send()
        .await
        .map_err(|e| aws.error(e, "kinesis:DescribeStreamSummary", Some(&args.stream)))?;
    let producer = Producer::builder(aws.kinesis.clone())
        .stream(&args.stream)
        .aggregation(!args.no_aggregation)
        .build()
        .await
        .map_err(|e| build_error(aws, &args.stream, e))?;

    let total = match &source {
        Source::Args(items) => Some(items.len() as u64),
        Source::Generate { count, .. } => Some(*count),
        Source::Lines { .. } => args.count,
    };
    let progress = out.bar(
        total.map(|t| t.min(args.count.unwrap_or(u64::MAX))),
        "records",
    );
    let (tx, rx) = mpsc::channel::<PutHandle>(8192);
    let collector = tokio::spawn(collect(rx, progress.clone()));

    let keys = Keys {
        fixed: args.key.clone(),
        template: args.key_template.clone(),
        rng: Rng::from_clock(),
    };
    let started = Instant::now();
    let mut fed = Fed::default();
    let outcome = feed(&producer, &mut source, keys, &args, started, tx, &mut fed).await;
    progress.set_message("flushing");
    producer.close().await;
    let stats = collector.await.unwrap_or_default();
    progress.finish_and_clear();
    let elapsed = started.elapsed();

    let interrupted = matches!(outcome, Ok(true));
    summary(out, &stats, &fed, elapsed, interrupted)?;
    outcome?;
    let fed = fed.records;
    if let Some(first) = &stats.first_failure {
        if stats.stream_gone {
            return Err(aws.stream_not_found(&args.stream));
        }
        return Err(CliError::failed(format!(
            "{} of {fed} records failed; first: {first}",
            stats.failed
        )));
    }
    if interrupted {
        return Err(
            CliError::new(Kind::Failed, "interrupted: stopped reading input")
                .with_hint("the records read before Ctrl-C were put; see the summary"),
        );
    }
    Ok(())
}

fn build_error(aws: &Aws, stream: &str, e: BuildError) -> CliError {
    match e {
        BuildError::StreamNotFound { .. } => aws.stream_not_found(stream),
        BuildError::ListShards { code, message, .. } => {
            if code.contains("Dispatch") || code.contains("Timeout") || message.contains("dispatch")
            {
                CliError::failed(format!("cannot reach {}: {message}", aws.kinesis_endpoint))
                    .with_hint("check --endpoint-url, --region and the network; for the local stack, is `kin local` running?")
            } else if message.to_ascii_lowercase().contains("credentials") {
                crate::aws::missing_credentials()
            } else {
                aws.service_error(&code, &message, "kinesis:ListShards", Some(stream))
            }
        }
        other => CliError::failed(other.to_string()),
    }
}

/// Records handed to the producer so far.
#[derive(Debug, Default)]
struct Fed {
    records: u64,
    bytes: u64,
}

/// Reads the source into the producer; returns whether Ctrl-C stopped it.
async fn feed(
    producer: &Producer,
    source: &mut Source,
    mut keys: Keys,
    args: &PutArgs,
    started: Instant,
    tx: mpsc::Sender<PutHandle>,
    fed: &mut Fed,
) -> Result<bool> {
    let limit = args.count.unwrap_or(u64::MAX);
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    while fed.records < limit {
        let n = fed.records;
        let item = tokio::select! {
            item = source.next(n, &mut keys) => item?,
            _ = &mut interrupt => return Ok(true),
        };
        let Some(record) = item else { break };
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = &mut interrupt => return Ok(true),
            }
        }
        let size = (record.data().len() + record.partition_key().len()) as u64;
        let handle = producer.put(record).await.map_err(|e| {
            CliError::failed(format!("record {n} refused: {e}"))
                .with_hint("partition keys need 1 to 256 characters; records at most 1 MiB")
        })?;
        fed.records += 1;
        fed.bytes += size;
        if tx.send(handle).await.is_err() {
            break;
        }
    }
    Ok(false)
}

#[derive(Debug, Default)]
struct Stats {
    ok: u64,
    failed: u64,
    retries: u64,
    aggregated: u64,
    first_failure: Option<String>,
    stream_gone: bool,
}

async fn collect(mut rx: mpsc::Receiver<PutHandle>, progress: indicatif::ProgressBar) -> Stats {
    let mut stats = Stats::default();
    while let Some(handle) = rx.recv().await {
        match handle.await {
            Ok(outcome) => {
                stats.ok += 1;
                stats.retries += outcome.attempts().len().saturating_sub(1) as u64;
                stats.aggregated += u64::from(outcome.is_aggregated());
            }
            Err(failure) => {
                stats.failed += 1;
                stats.retries += failure.attempts().len().saturating_sub(1) as u64;
                stats.stream_gone |= matches!(failure, PutFailure::StreamNotFound { .. });
                if stats.first_failure.is_none() {
                    stats.first_failure = Some(failure.to_string());
                }
                progress.set_message(format!("{} failed", stats.failed));
            }
        }
        progress.inc(1);
    }
    stats
}

fn summary(
    out: &Output,
    stats: &Stats,
    fed: &Fed,
    elapsed: Duration,
    interrupted: bool,
) -> Result<()> {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = stats.ok as f64 / secs;
    let (records, bytes) = (fed.records, fed.bytes);
    let json: Value = json!({
        "records": records,
        "succeeded": stats.ok,
        "failed": stats.failed,
        "bytes": bytes,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_second": rate.round() as u64,
        "retries": stats.retries,
        "aggregated": stats.aggregated,
        "interrupted": interrupted,
    });
    let mut table = Table::new([
        "RECORDS",
        "FAILED",
        "BYTES",
        "SECONDS",
        "RECORDS/S",
        "RETRIES",
    ]);
    table.row([
        records.to_string(),
        stats.failed.to_string(),
        if out.format == crate::cli::OutputFormat::Table {
            util::human_bytes(bytes)
        } else {
            bytes.to_string()
        },
        format!("{secs:.2}"),
        format!("{rate:.0}"),
        stats.retries.to_string(),
    ]);
    out.emit(&json, &table)
}

struct Keys {
    fixed: Option<String>,
    template: Template,
    rng: Rng,
}

impl Keys {
    fn key(&mut self, n: u64, line: &str) -> String {
        match &self.fixed {
            Some(k) => k.clone(),
            None => self.template.render(n, line, &mut self.rng),
        }
    }
}

enum Source {
    Args(std::vec::IntoIter<String>),
    Lines {
        lines: tokio::io::Lines<BufReader<Box<dyn AsyncRead + Unpin + Send>>>,
        format: InputFormat,
        name: String,
        line_no: u64,
    },
    Generate {
        count: u64,
        size: usize,
    },
}

impl Source {
    async fn open(args: &PutArgs) -> Result<Source> {
        use std::io::IsTerminal;
        if !args.data.is_empty() {
            return Ok(Source::Args(args.data.clone().into_iter()));
        }
        let reader: Box<dyn AsyncRead + Unpin + Send>;
        let name;
        match args.file.as_deref() {
            Some(path) if path != Path::new("-") => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    let kind = if e.kind() == std::io::ErrorKind::NotFound {
                        Kind::Usage
                    } else {
                        Kind::Failed
                    };
                    CliError::new(kind, format!("cannot open {}: {e}", path.display()))
                })?;
                reader = Box::new(file);
                name = path.display().to_string();
            }
            Some(_) => {
                reader = Box::new(tokio::io::stdin());
                name = "stdin".into();
            }
            None if !std::io::stdin().is_terminal() && args.count.is_none() => {
                reader = Box::new(tokio::io::stdin());
                name = "stdin".into();
            }
            None => {
                let Some(count) = args.count else {
                    return Err(CliError::usage("nothing to put").with_hint(
                        "give DATA arguments, --file FILE, pipe lines into stdin, or --count N to generate records",
                    ));
                };
                if args.size == 0 {
                    return Err(CliError::usage("--size must be at least 1 byte"));
                }
                return Ok(Source::Generate {
                    count,
                    size: args.size,
                });
            }
        }
        Ok(Source::Lines {
            lines: BufReader::new(reader).lines(),
            format: args.format,
            name,
            line_no: 0,
        })
    }

    async fn next(&mut self, n: u64, keys: &mut Keys) -> Result<Option<Record>> {
        match self {
            Source::Args(items) => Ok(items
                .next()
                .map(|data| Record::new(keys.key(n, &data), data.into_bytes()))),
            Source::Generate { count, size } => {
                if n >= *count {
                    return Ok(None);
                }
                Ok(Some(Record::new(keys.key(n, ""), generated(n, *size))))
            }
            Source::Lines {
                lines,
                format,
                name,
                line_no,
            } => {
                let line = lines
                    .next_line()
                    .await
                    .map_err(|e| CliError::failed(format!("reading {name}: {e}")))?;
                let Some(mut line) = line else {
                    return Ok(None);
                };
                *line_no += 1;
                if line.ends_with('\r') {
                    line.pop();
                }
                match format {
                    InputFormat::Lines => Ok(Some(Record::new(keys.key(n, &line), line.into_bytes()))),
                    InputFormat::Json => json_record(&line, n, keys)
                        .map(Some)
                        .map_err(|e| CliError::failed(format!("{name}, line {line_no}: {e}")).with_hint(
                            "each line must be a JSON object {\"key\": \"k\", \"data\": ...}; plain lines need --format lines",
                        )),
                }
            }
        }
    }
}

fn json_record(line: &str, n: u64, keys: &mut Keys) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".into());
    };
    let data = match object.remove("data") {
        Some(Value::String(s)) => Bytes::from(s),
        Some(other) => Bytes::from(other.to_string()),
        None => return Err("no \"data\" field".into()),
    };
    let text = std::str::from_utf8(&data).unwrap_or("").to_owned();
    let key = match object.remove("key") {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => keys.key(n, &text),
        Some(other) => other.to_string(),
    };
    let mut record = Record::new(key, data);
    match object.remove("hash_key") {
        Some(Value::String(h)) => record = record.with_explicit_hash_key(h),
        Some(Value::Null) | None => {}
        Some(other) => {
            return Err(format!(
                "\"hash_key\" must be a decimal string, not {other}"
            ));
        }
    }
    Ok(record)
}

/// `size` printable bytes starting with the record number: easy to spot in `kin tail`.
fn generated(n: u64, size: usize) -> Bytes {
    let mut data = format!("{n} ").into_bytes();
    let filler = b"abcdefghijklmnopqrstuvwxyz";
    while data.len() < size {
        data.push(filler[data.len() % filler.len()]);
    }
    data.truncate(size);
    Bytes::from(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            fixed: None,
            template: util::parse_template("k-{n}").unwrap(),
            rng: Rng::from_clock(),
        }
    }

    #[test]
    fn json_lines() {
        let r = json_record(r#"{"key":"a","data":"hello"}"#, 0, &mut keys()).unwrap();
        assert_eq!((r.partition_key(), &r.data()[..]), ("a", &b"hello"[..]));
        let r = json_record(r#"{"data":{"x":1}}"#, 4, &mut keys()).unwrap();
        assert_eq!(
            (r.partition_key(), &r.data()[..]),
            ("k-4", &br#"{"x":1}"#[..])
        );
        let r = json_record(r#"{"key":7,"data":"d","hash_key":"12"}"#, 0, &mut keys()).unwrap();
        assert_eq!(
            (r.partition_key(), r.explicit_hash_key()),
            ("7", Some("12"))
        );
        assert!(
            json_record("nope", 0, &mut keys())
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(json_record("[1]", 0, &mut keys()).is_err());
        assert!(
            json_record(r#"{"key":"a"}"#, 0, &mut keys())
                .unwrap_err()
                .contains("data")
        );
    }

    #[test]
    fn generated_records() {
        assert_eq!(&generated(12, 8)[..], b"12 defgh");
        assert_eq!(&generated(12345, 3)[..], b"123");
    }
}
