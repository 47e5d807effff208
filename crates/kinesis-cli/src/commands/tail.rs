//! `kin tail`: follow every shard and print user records as they arrive.
//!
//! ```text
//!  ListShards ─► coordinator ─ starts ─► reader per shard: GetShardIterator, GetRecords loop,
//!      ▲            ▲                    deaggregate_in_range(shard's hash-key range)
//!      │            └──── Records / Ended / Failed ◄───┘
//!      └─ on Ended: list again, start the children whose parents have all ended
//! ```
//!
//! Parents are read before their children (a child's records are newer than everything in
//! its parents), so per partition key the output keeps the stream's order across a split
//! or merge. Children are found through ListShards (ParentShardId / AdjacentParentShardId),
//! not the ChildShards of the last GetRecords page: ferrokinesis leaves those out.
//!
//! A reader that catches up (an empty page) waits `--poll-interval` before reading again:
//! a shard allows 5 GetRecords per second, shared by every consumer.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use kinesis_aggregation::{DeaggregatedRecord, HashKeyRange, ReceivedRecord, deaggregate_in_range};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::aws::Aws;
use crate::cli::{DataFormat, OutputFormat, StartFrom, TailArgs};
use crate::commands::stream::{is_closed, list_shards, shard_range};
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::util;

/// Where a reader starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    Latest,
    TrimHorizon,
    At(SystemTime),
}

enum Event {
    Records {
        shard: String,
        records: Vec<(DeaggregatedRecord, Option<DateTime>)>,
    },
    Ended(String),
    Failed(CliError),
}

pub async fn run(aws: &Aws, out: &Output, args: TailArgs) -> Result<()> {
    let stream = args.stream.clone();
    let shards = list_shards(aws, &stream).await?;
    let start = match (args.since, args.from) {
        (Some(t), _) => Start::At(t),
        (None, StartFrom::Latest) => Start::Latest,
        (None, StartFrom::TrimHorizon) => Start::TrimHorizon,
    };

    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut readers = JoinSet::new();
    let mut known: HashMap<String, Shard> = HashMap::new();
    let mut started: HashSet<String> = HashSet::new();
    let mut ended: HashSet<String> = HashSet::new();
    for shard in &shards {
        known.insert(shard.shard_id().to_owned(), shard.clone());
    }
    let first: Vec<Shard> = match start {
        // Nothing new will arrive in a closed shard: follow the open ones.
        Start::Latest => shards.iter().filter(|s| !is_closed(s)).cloned().collect(),
        // From the oldest record: begin with the shards whose parents have expired.
        _ => shards
            .iter()
            .filter(|s| parents(s).all(|p| !known.contains_key(p)))
            .cloned()
            .collect(),
    };
    for shard in first {
        started.insert(shard.shard_id().to_owned());
        readers.spawn(read_shard(
            aws.clone(),
            stream.clone(),
            shard,
            start,
            args.poll_interval,
            tx.clone(),
        ));
    }
    // Children start where their parents ended: from their beginning, or from --since.
    let child_start = match start {
        Start::At(t) => Start::At(t),
        _ => Start::TrimHorizon,
    };

    let mut printer = Printer::new(out.format, args.data);
    let mut remaining = args.max.unwrap_or(u64::MAX);
    if remaining == 0 {
        return Ok(());
    }
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        // Counted from events, not from the JoinSet: a reader's task may finish before its
        // Ended event is handled, and its children are started only then.
        if started.len() == ended.len() {
            eprintln!("kin: every shard of {stream} has ended");
            return Ok(());
        }
        let event = tokio::select! {
            event = rx.recv() => event,
            _ = &mut interrupt => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::Records { shard, records } => {
                for (record, arrival) in records {
                    printer.print(&shard, &record, arrival.as_ref())?;
                    remaining -= 1;
                    if remaining == 0 {
                        printer.flush()?;
                        return Ok(());
                    }
                }
                printer.flush()?;
            }
            Event::Failed(e) => return Err(e),
            Event::Ended(shard_id) => {
                ended.insert(shard_id);
                for shard in list_shards(aws, &stream).await? {
                    known.entry(shard.shard_id().to_owned()).or_insert(shard);
                }
                let ready: Vec<Shard> = known
                    .values()
                    .filter(|s| !started.contains(s.shard_id()))
                    .filter(|s| parents(s).any(|p| ended.contains(p)))
                    .filter(|s| parents(s).all(|p| ended.contains(p) || !started.contains(p)))
                    .cloned()
                    .collect();
                for shard in ready {
                    started.insert(shard.shard_id().to_owned());
                    readers.spawn(read_shard(
                        aws.clone(),
                        stream.clone(),
                        shard,
                        child_start,
                        args.poll_interval,
                        tx.clone(),
                    ));
                }
            }
        }
    }
}

fn parents(shard: &Shard) -> impl Iterator<Item = &str> {
    shard
        .parent_shard_id()
        .into_iter()
        .chain(shard.adjacent_parent_shard_id())
}

async fn read_shard(
    aws: Aws,
    stream: String,
    shard: Shard,
    start: Start,
    poll: Duration,
    tx: mpsc::Sender<Event>,
) {
    let shard_id = shard.shard_id().to_owned();
    let (lo, hi) = shard_range(&shard);
    let range = HashKeyRange::new(lo, hi);
    let event = match follow(&aws, &stream, &shard_id, range, start, poll, &tx).await {
        Ok(()) => Event::Ended(shard_id),
        Err(e) => Event::Failed(e),
    };
    let _ = tx.send(event).await;
}

/// Reads one shard until it ends (its next iterator is null).
async fn follow(
    aws: &Aws,
    stream: &str,
    shard_id: &str,
    range: HashKeyRange,
    start: Start,
    poll: Duration,
    tx: &mpsc::Sender<Event>,
) -> Result<()> {
    let mut last_sequence: Option<String> = None;
    let mut iterator = get_iterator(aws, stream, shard_id, start, None).await?;
    loop {
        let page = match aws
            .kinesis
            .get_records()
            .shard_iterator(&iterator)
            .limit(10_000)
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) if e.code() == Some("ExpiredIteratorException") => {
                iterator =
                    get_iterator(aws, stream, shard_id, start, last_sequence.as_deref()).await?;
                continue;
            }
            Err(e) if e.code() == Some("ProvisionedThroughputExceededException") => {
                tokio::time::sleep(poll.max(Duration::from_millis(200))).await;
                continue;
            }
            Err(e) => return Err(aws.error(e, "kinesis:GetRecords", Some(stream))),
        };
        let empty = page.records().is_empty();
        if let Some(last) = page.records().last() {
            last_sequence = Some(last.sequence_number().to_owned());
        }
        let mut records = Vec::new();
        for r in page.records() {
            let received = ReceivedRecord::new(
                r.sequence_number(),
                r.partition_key().unwrap_or_default(),
                bytes::Bytes::copy_from_slice(r.data().as_ref()),
            );
            let arrival = r.approximate_arrival_timestamp().copied();
            for user in deaggregate_in_range(received, range).records {
                records.push((user, arrival));
            }
        }
        if !records.is_empty()
            && tx
                .send(Event::Records {
                    shard: shard_id.to_owned(),
                    records,
                })
                .await
                .is_err()
        {
            return Ok(());
        }
        match page.next_shard_iterator {
            Some(next) => iterator = next,
            None => return Ok(()),
        }
        if empty {
            tokio::time::sleep(poll).await;
        }
    }
}

/// An iterator at `start`, or just after `after` (to resume once an iterator expired).
async fn get_iterator(
    aws: &Aws,
    stream: &str,
    shard_id: &str,
    start: Start,
    after: Option<&str>,
) -> Result<String> {
    let mut request = aws
        .kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard_id);
    request = match (after, start) {
        (Some(seq), _) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        (None, Start::Latest) => request.shard_iterator_type(ShardIteratorType::Latest),
        (None, Start::TrimHorizon) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        (None, Start::At(t)) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(t)),
    };
    let out = request
        .send()
        .await
        .map_err(|e| aws.error(e, "kinesis:GetShardIterator", Some(stream)))?;
    out.shard_iterator
        .ok_or_else(|| CliError::failed(format!("no shard iterator for {shard_id}")))
}

/// Prints records as they come, through one buffered, locked stdout.
struct Printer {
    format: OutputFormat,
    data: DataFormat,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    fn new(format: OutputFormat, data: DataFormat) -> Printer {
        Printer {
            format,
            data,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    fn print(
        &mut self,
        shard: &str,
        record: &DeaggregatedRecord,
        arrival: Option<&DateTime>,
    ) -> Result<()> {
        let data = match self.data {
            DataFormat::Utf8 => String::from_utf8_lossy(&record.data).into_owned(),
            DataFormat::Hex => util::hex(&record.data),
            DataFormat::Base64 => util::base64(&record.data),
        };
        match self.format {
            OutputFormat::Json => {
                let line = json!({
                    "shard": shard,
                    "key": record.partition_key,
                    "sequence": &*record.sequence_number,
                    "sub_sequence": record.sub_sequence_number,
                    "arrival": arrival.map(util::rfc3339),
                    "data": data,
                });
                writeln!(self.out, "{line}")?;
            }
            OutputFormat::Text | OutputFormat::Table => {
                writeln!(
                    self.out,
                    "{shard}\t{}\t{}\t{}\t{}",
                    util::escape_field(&record.partition_key),
                    record.sequence_number,
                    record.sub_sequence_number,
                    util::escape_field(&data)
                )?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
