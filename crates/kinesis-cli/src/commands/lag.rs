//! `kin lag APP --stream STREAM [--watch]`: how far behind a consumer application is.
//!
//! ```text
//!  lease table (Scan) ─► per lease checkpointed at a sequence number:
//!      GetShardIterator AFTER_SEQUENCE_NUMBER checkpoint ─► GetRecords limit 1
//!          ─► MillisBehindLatest, and the arrival time of the first unprocessed record
//! ```
//!
//! The age of the next unprocessed record is the time lag a person wants ("the consumer is 3
//! minutes behind"); MillisBehindLatest is what Kinesis reports (ferrokinesis always says 0).
//! A checkpoint inside a KPL aggregate (sub-sequence > 0) is read after its Kinesis record,
//! so the rest of that aggregate does not count.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use kinesis_consumer::Position;
use kinesis_consumer::lease::Lease;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::aws::Aws;
use crate::cli::{LagArgs, OutputFormat};
use crate::commands::leases;
use crate::error::{CliError, Result};
use crate::output::{self, Output, Table};
use crate::util;

/// Shards read at the same time.
const CONCURRENCY: usize = 16;
/// Empty pages followed after the checkpoint before concluding there is nothing to read
/// (real Kinesis can return empty pages while MillisBehindLatest is still positive).
const MAX_EMPTY_PAGES: usize = 5;

/// The lag of one shard.
#[derive(Debug, Clone)]
struct ShardLag {
    shard: String,
    owner: Option<String>,
    checkpoint: Position,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// Read: MillisBehindLatest and the arrival time of the next unprocessed record.
    Measured {
        millis_behind_latest: Option<i64>,
        next_arrival: Option<DateTime>,
    },
    /// Checkpointed at SHARD_END: nothing left.
    Done,
    /// LATEST / AT_TIMESTAMP: the checkpoint says nothing about a record.
    Unknown,
}

pub async fn run(aws: &Aws, out: &Output, args: LagArgs) -> Result<()> {
    let table = args.table.clone().unwrap_or_else(|| args.app.clone());
    let redraw = args.watch && out.format == OutputFormat::Table && std::io::stdout().is_terminal();
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let leases = leases::list(aws, &args.app, &table).await?;
        let stream = stream_name(&args, &leases)?;
        let rows = measure(aws, &stream, leases).await?;
        let now = SystemTime::now();
        if redraw {
            output::write_stdout("\x1b[2J\x1b[H")?;
        }
        render(out, &args.app, &stream, &rows, now, args.watch)?;
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = &mut interrupt => return Ok(()),
        }
    }
}

/// `--stream`, or the stream named in multi-stream lease keys
/// (`account:stream:creationEpoch:shardId`).
fn stream_name(args: &LagArgs, leases: &[Lease]) -> Result<String> {
    if let Some(stream) = &args.stream {
        return Ok(stream.clone());
    }
    let mut streams: Vec<&str> = leases
        .iter()
        .filter_map(|l| match l.lease_key.split(':').collect::<Vec<_>>()[..] {
            [_account, stream, _epoch, _shard] => Some(stream),
            _ => None,
        })
        .collect();
    streams.sort_unstable();
    streams.dedup();
    match streams.as_slice() {
        [one] => Ok((*one).to_owned()),
        _ => Err(CliError::usage(format!(
            "which stream does {} consume? the lease table does not say",
            args.app
        ))
        .with_hint(format!(
            "pass --stream: `kin lag {} --stream STREAM`",
            args.app
        ))),
    }
}

async fn measure(aws: &Aws, stream: &str, leases: Vec<Lease>) -> Result<Vec<ShardLag>> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (index, lease) in leases.into_iter().enumerate() {
        let aws = aws.clone();
        let stream = stream.to_owned();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, shard_lag(&aws, &stream, lease).await)
        });
    }
    let mut rows = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, row) =
            joined.map_err(|e| CliError::failed(format!("a shard reader failed: {e}")))?;
        rows.push((index, row?));
    }
    rows.sort_by_key(|(index, _)| *index);
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

async fn shard_lag(aws: &Aws, stream: &str, lease: Lease) -> Result<ShardLag> {
    let shard = lease.shard_id().to_owned();
    let request = aws
        .kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(&shard);
    let request = match &lease.checkpoint {
        Position::Sequence(s) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(s.sequence()),
        Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Position::ShardEnd => return Ok(row(lease, shard, State::Done)),
        _ => return Ok(row(lease, shard, State::Unknown)),
    };
    let mut iterator = request
        .send()
        .await
        .map_err(|e| aws.error(e, "kinesis:GetShardIterator", Some(stream)))?
        .shard_iterator;
    let mut millis_behind_latest = None;
    let mut next_arrival = None;
    for _ in 0..MAX_EMPTY_PAGES {
        let Some(it) = iterator.take() else { break };
        let page = aws
            .kinesis
            .get_records()
            .shard_iterator(it)
            .limit(1)
            .send()
            .await
            .map_err(|e| aws.error(e, "kinesis:GetRecords", Some(stream)))?;
        millis_behind_latest = page.millis_behind_latest;
        if let Some(record) = page.records().first() {
            next_arrival = record.approximate_arrival_timestamp().copied();
            break;
        }
        if millis_behind_latest.unwrap_or(0) <= 0 {
            break;
        }
        iterator = page.next_shard_iterator;
    }
    let state = State::Measured {
        millis_behind_latest,
        next_arrival,
    };
    Ok(row(lease, shard, state))
}

fn row(lease: Lease, shard: String, state: State) -> ShardLag {
    ShardLag {
        shard,
        owner: lease.owner,
        checkpoint: lease.checkpoint,
        state,
    }
}

/// How long ago `arrival` was, as of `now` (0 for clock skew into the future).
fn age(arrival: &DateTime, now: SystemTime) -> Duration {
    SystemTime::try_from(*arrival)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

/// `1.234s`, `12m05s`, `3h02m`: short enough for a column.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.3}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

fn render(
    out: &Output,
    app: &str,
    stream: &str,
    rows: &[ShardLag],
    now: SystemTime,
    watch: bool,
) -> Result<()> {
    let time = util::rfc3339(&DateTime::from(now));
    let mut table = Table::new(["SHARD", "OWNER", "CHECKPOINT", "BEHIND_MS", "NEXT_AGE"]);
    table.detail("application", app);
    table.detail("stream", stream);
    table.detail("time", time.clone());
    table.row_tag("shard");
    let mut shards = Vec::new();
    for r in rows {
        let (behind, arrival, age_ms, age_text) = match &r.state {
            State::Measured {
                millis_behind_latest,
                next_arrival,
            } => {
                let age = next_arrival.as_ref().map(|a| age(a, now));
                (
                    *millis_behind_latest,
                    next_arrival.as_ref().map(util::rfc3339),
                    age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                    age.map(human).unwrap_or_else(|| "-".into()),
                )
            }
            State::Done => (None, None, None, "done".into()),
            State::Unknown => (None, None, None, "-".into()),
        };
        shards.push(json!({
            "shard": r.shard,
            "owner": r.owner,
            "checkpoint": r.checkpoint.to_string(),
            "millis_behind_latest": behind,
            "next_record_arrival": arrival,
            "next_record_age_ms": age_ms,
            "finished": matches!(r.state, State::Done),
        }));
        table.row([
            r.shard.clone(),
            r.owner.clone().unwrap_or_else(|| "-".into()),
            r.checkpoint.to_string(),
            behind.map_or_else(|| "-".into(), |b| b.to_string()),
            age_text,
        ]);
    }
    let json = json!({
        "application": app,
        "stream": stream,
        "time": time,
        "shards": shards,
    });
    if watch && out.format == OutputFormat::Json {
        // One document per line, like `kin tail`.
        let mut line = serde_json::to_string(&json).expect("JSON values serialize");
        line.push('\n');
        return output::write_stdout(&line);
    }
    out.emit(&json, &table)?;
    if watch && out.format == OutputFormat::Table {
        output::write_stdout("\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(1234)), "1.234s");
        assert_eq!(human(Duration::from_secs(725)), "12m05s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 120)), "3h02m");
    }

    #[test]
    fn stream_from_multi_stream_lease_keys() {
        let args = |stream: Option<&str>| LagArgs {
            app: "app".into(),
            stream: stream.map(Into::into),
            table: None,
            watch: false,
            interval: Duration::from_secs(5),
        };
        let multi = [
            Lease::new("123:orders:1700000000:shardId-0", Position::Latest),
            Lease::new("123:orders:1700000000:shardId-1", Position::Latest),
        ];
        assert_eq!(stream_name(&args(None), &multi).unwrap(), "orders");
        assert_eq!(stream_name(&args(Some("x")), &multi).unwrap(), "x");
        let single = [Lease::new("shardId-0", Position::Latest)];
        assert!(stream_name(&args(None), &single).is_err());
        let two = [
            Lease::new("1:a:1:shardId-0", Position::Latest),
            Lease::new("1:b:1:shardId-0", Position::Latest),
        ];
        assert!(stream_name(&args(None), &two).is_err());
    }
}
