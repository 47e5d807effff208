//! `kin stream list | create | describe | delete | reshard`.
//!
//! Every change waits (unless `--no-wait`) until the stream is ACTIVE again, or gone, by
//! polling `DescribeStreamSummary` with a growing interval (100 ms up to 2 s), bounded by
//! `--timeout`; a spinner shows the status while a terminal is watching.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{
    EncryptionType, ScalingType, Shard, StreamMode, StreamModeDetails, StreamStatus,
};
use kinesis_aggregation::HashKey;
use serde_json::{Value, json};

use crate::aws::Aws;
use crate::cli::{ReshardArgs, StreamCommand, WaitArgs};
use crate::error::{CliError, Kind, Result};
use crate::output::{Output, Table};
use crate::util;

pub async fn run(aws: &Aws, out: &Output, command: StreamCommand) -> Result<()> {
    match command {
        StreamCommand::List => list(aws, out).await,
        StreamCommand::Create {
            name,
            shards,
            on_demand,
            encrypt,
            wait,
        } => create(aws, out, &name, shards, on_demand, encrypt, &wait).await,
        StreamCommand::Describe { name } => describe(aws, out, &name).await,
        StreamCommand::Delete { name, wait } => delete(aws, out, &name, &wait).await,
        StreamCommand::Reshard(args) => reshard(aws, out, args).await,
    }
}

async fn list(aws: &Aws, out: &Output) -> Result<()> {
    let mut names = Vec::new();
    let mut summaries = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = aws.kinesis.list_streams();
        if let Some(t) = &token {
            request = request.next_token(t);
        }
        let page = request
            .send()
            .await
            .map_err(|e| aws.error(e, "kinesis:ListStreams", None))?;
        names.extend(page.stream_names().iter().cloned());
        summaries.extend(page.stream_summaries().iter().cloned());
        match (page.has_more_streams(), page.next_token) {
            (true, Some(t)) => token = Some(t),
            _ => break,
        }
    }
    // Older servers (and some emulators) return names only.
    let mut rows: Vec<(String, String, String)> = names
        .iter()
        .map(|name| {
            summaries
                .iter()
                .find(|s| s.stream_name() == name)
                .map(|s| {
                    (
                        name.clone(),
                        s.stream_status().as_str().to_owned(),
                        s.stream_mode_details()
                            .map(|m| m.stream_mode().as_str().to_owned())
                            .unwrap_or_default(),
                    )
                })
                .unwrap_or_else(|| (name.clone(), String::new(), String::new()))
        })
        .collect();
    for s in &summaries {
        if !names.iter().any(|n| n == s.stream_name()) {
            rows.push((
                s.stream_name().to_owned(),
                s.stream_status().as_str().to_owned(),
                s.stream_mode_details()
                    .map(|m| m.stream_mode().as_str().to_owned())
                    .unwrap_or_default(),
            ));
        }
    }
    rows.sort();
    let json = json!({
        "streams": rows.iter().map(|(name, status, mode)| json!({
            "name": name, "status": status, "mode": mode,
        })).collect::<Vec<_>>(),
    });
    let mut table = Table::new(["NAME", "STATUS", "MODE"]);
    let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    for (name, status, mode) in rows {
        table.row([name, dash(status), dash(mode)]);
    }
    out.emit(&json, &table)
}

async fn create(
    aws: &Aws,
    out: &Output,
    name: &str,
    shards: Option<i32>,
    on_demand: bool,
    encrypt: Option<String>,
    wait: &WaitArgs,
) -> Result<()> {
    let mut request = aws.kinesis.create_stream().stream_name(name);
    if on_demand {
        request = request.stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .map_err(|e| CliError::failed(e.to_string()))?,
        );
    }
    if let Some(n) = shards {
        request = request.shard_count(n);
    }
    request.send().await.map_err(|e| match e.code() {
        Some("ResourceInUseException") => {
            CliError::failed(format!("stream {name} already exists in {}", aws.region))
                .with_hint(format!("`kin stream describe {name}` shows it"))
        }
        _ => aws.error(e, "kinesis:CreateStream", Some(name)),
    })?;
    if let Some(key) = &encrypt {
        // Encryption can only be switched on once the stream is ACTIVE.
        wait_for(aws, out, name, Goal::Active, wait.timeout).await?;
        aws.kinesis
            .start_stream_encryption()
            .stream_name(name)
            .encryption_type(EncryptionType::Kms)
            .key_id(key)
            .send()
            .await
            .map_err(|e| aws.error(e, "kinesis:StartStreamEncryption", Some(name)))?;
    }
    done(aws, out, name, "created", wait).await
}

async fn delete(aws: &Aws, out: &Output, name: &str, wait: &WaitArgs) -> Result<()> {
    aws.kinesis
        .delete_stream()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| aws.error(e, "kinesis:DeleteStream", Some(name)))?;
    let status = if wait.no_wait {
        "DELETING"
    } else {
        wait_for(aws, out, name, Goal::Gone, wait.timeout).await?;
        "DELETED"
    };
    let mut table = Table::new(["STREAM", "STATUS"]);
    table.row([name, status]);
    out.emit(&json!({"stream": name, "status": status}), &table)
}

async fn reshard(aws: &Aws, out: &Output, args: ReshardArgs) -> Result<()> {
    let name = args.name.as_str();
    let action = if let Some(shard_id) = &args.split {
        let shards = list_shards(aws, name).await?;
        let shard = find_shard(&shards, shard_id, name)?;
        if shard
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some()
        {
            return Err(CliError::usage(format!(
                "{shard_id} is closed: only open shards can be split"
            ))
            .with_hint(format!(
                "`kin stream describe {name}` shows the open shards"
            )));
        }
        let (start, end) = shard_range(shard);
        let at = match args.at {
            Some(at) if at > start && at <= end => at,
            Some(at) => {
                return Err(CliError::usage(format!(
                    "--at {at} is outside {shard_id}, whose range is {start}..={end} (the new shard must start after {start})"
                )));
            }
            // The middle: the second child gets the upper half, rounded up.
            None => HashKey(start.0 + (end.0 - start.0) / 2 + 1),
        };
        aws.kinesis
            .split_shard()
            .stream_name(name)
            .shard_to_split(shard_id)
            .new_starting_hash_key(at.to_string())
            .send()
            .await
            .map_err(|e| aws.error(e, "kinesis:SplitShard", Some(name)))?;
        format!("split {shard_id} at {at}")
    } else if let Some(pair) = &args.merge {
        let (a, b) = (&pair[0], &pair[1]);
        aws.kinesis
            .merge_shards()
            .stream_name(name)
            .shard_to_merge(a)
            .adjacent_shard_to_merge(b)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("InvalidArgumentException") => CliError::usage(format!(
                    "cannot merge {a} and {b}: {}",
                    e.message().unwrap_or("invalid shards")
                ))
                .with_hint(format!(
                    "both must be open and adjacent in hash-key range: `kin stream describe {name}`"
                )),
                _ => aws.error(e, "kinesis:MergeShards", Some(name)),
            })?;
        format!("merged {a} and {b}")
    } else if let Some(count) = args.count {
        aws.kinesis
            .update_shard_count()
            .stream_name(name)
            .target_shard_count(count)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .map_err(|e| aws.error(e, "kinesis:UpdateShardCount", Some(name)))?;
        format!("scaling to {count} shards")
    } else {
        unreachable!("clap requires one of --split, --merge, --count")
    };
    eprintln!("kin: {name}: {action}");
    done(aws, out, name, "resharded", &args.wait).await
}

/// After a change: wait (unless told not to) and print the stream's state.
async fn done(aws: &Aws, out: &Output, name: &str, what: &str, wait: &WaitArgs) -> Result<()> {
    if !wait.no_wait {
        wait_for(aws, out, name, Goal::Active, wait.timeout).await?;
    }
    let summary = aws
        .kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| aws.error(e, "kinesis:DescribeStreamSummary", Some(name)))?;
    let (status, open) = summary
        .stream_description_summary()
        .map(|s| (s.stream_status().as_str().to_owned(), s.open_shard_count()))
        .unwrap_or_default();
    let mut table = Table::new(["STREAM", "STATUS", "OPEN SHARDS"]);
    table.row([name.to_owned(), status.clone(), open.to_string()]);
    out.emit(
        &json!({"stream": name, "result": what, "status": status, "open_shards": open}),
        &table,
    )
}

async fn describe(aws: &Aws, out: &Output, name: &str) -> Result<()> {
    let summary = aws
        .kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| aws.error(e, "kinesis:DescribeStreamSummary", Some(name)))?;
    let s = summary
        .stream_description_summary()
        .ok_or_else(|| CliError::failed("DescribeStreamSummary returned no description"))?;
    let shards = list_shards(aws, name).await?;

    let mode = s
        .stream_mode_details()
        .map(|m| m.stream_mode().as_str().to_owned())
        .unwrap_or_else(|| "PROVISIONED".into());
    let encryption = s
        .encryption_type()
        .map(|e| e.as_str().to_owned())
        .unwrap_or_else(|| "NONE".into());
    let created = util::rfc3339(s.stream_creation_timestamp());

    let shard_json: Vec<Value> = shards
        .iter()
        .map(|shard| {
            let (start, end) = shard_range(shard);
            let range = shard.sequence_number_range();
            json!({
                "id": shard.shard_id(),
                "state": if is_closed(shard) { "closed" } else { "open" },
                "parent": shard.parent_shard_id(),
                "adjacent_parent": shard.adjacent_parent_shard_id(),
                "starting_hash_key": start.to_string(),
                "ending_hash_key": end.to_string(),
                "starting_sequence_number": range.map(|r| r.starting_sequence_number()),
                "ending_sequence_number": range.and_then(|r| r.ending_sequence_number()),
            })
        })
        .collect();
    let json = json!({
        "name": s.stream_name(),
        "arn": s.stream_arn(),
        "status": s.stream_status().as_str(),
        "mode": mode,
        "open_shards": s.open_shard_count(),
        "retention_hours": s.retention_period_hours(),
        "encryption": encryption,
        "key_id": s.key_id(),
        "created": created,
        "consumers": s.consumer_count(),
        "shards": shard_json,
    });

    let mut table = Table::new([
        "SHARD",
        "STATE",
        "PARENT",
        "ADJACENT PARENT",
        "STARTING HASH KEY",
        "ENDING HASH KEY",
    ]);
    table.detail("name", s.stream_name());
    table.detail("arn", s.stream_arn());
    table.detail("status", s.stream_status().as_str());
    table.detail("mode", mode);
    table.detail("open shards", s.open_shard_count().to_string());
    table.detail("retention", format!("{} h", s.retention_period_hours()));
    table.detail(
        "encryption",
        match s.key_id() {
            Some(key) => format!("{encryption} ({key})"),
            None => encryption,
        },
    );
    table.detail("created", created);
    table.row_tag("shard");
    for shard in &shards {
        let (start, end) = shard_range(shard);
        table.row([
            shard.shard_id().to_owned(),
            if is_closed(shard) { "closed" } else { "open" }.to_owned(),
            shard.parent_shard_id().unwrap_or("-").to_owned(),
            shard.adjacent_parent_shard_id().unwrap_or("-").to_owned(),
            start.to_string(),
            end.to_string(),
        ]);
    }
    out.emit(&json, &table)
}

/// Every shard of the stream, open and closed, in ListShards order.
pub async fn list_shards(aws: &Aws, stream: &str) -> Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(t) => aws.kinesis.list_shards().next_token(t),
            None => aws.kinesis.list_shards().stream_name(stream),
        };
        let page = request
            .send()
            .await
            .map_err(|e| aws.error(e, "kinesis:ListShards", Some(stream)))?;
        shards.extend(page.shards().iter().cloned());
        match page.next_token {
            Some(t) if !page.shards().is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(shards)
}

fn find_shard<'a>(shards: &'a [Shard], id: &str, stream: &str) -> Result<&'a Shard> {
    shards.iter().find(|s| s.shard_id() == id).ok_or_else(|| {
        CliError::new(Kind::NotFound, format!("stream {stream} has no shard {id}"))
            .with_hint(format!("`kin stream describe {stream}` lists its shards"))
    })
}

pub fn is_closed(shard: &Shard) -> bool {
    shard
        .sequence_number_range()
        .and_then(|r| r.ending_sequence_number())
        .is_some()
}

/// A shard's hash-key range; the whole space if the server left it out.
pub fn shard_range(shard: &Shard) -> (HashKey, HashKey) {
    let parse = |s: &str, default: HashKey| s.parse().unwrap_or(default);
    shard
        .hash_key_range()
        .map(|r| {
            (
                parse(r.starting_hash_key(), HashKey::MIN),
                parse(r.ending_hash_key(), HashKey::MAX),
            )
        })
        .unwrap_or((HashKey::MIN, HashKey::MAX))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Active,
    Gone,
}

async fn wait_for(
    aws: &Aws,
    out: &Output,
    name: &str,
    goal: Goal,
    timeout: Duration,
) -> Result<()> {
    let target = match goal {
        Goal::Active => "ACTIVE",
        Goal::Gone => "deleted",
    };
    let spinner = out.spinner(format!("waiting for {name} to be {target}"));
    let started = Instant::now();
    let mut interval = Duration::from_millis(100);
    let result = loop {
        let status = match aws
            .kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(o) => o
                .stream_description_summary()
                .map(|s| s.stream_status().clone()),
            Err(e) if e.code() == Some("ResourceNotFoundException") && goal == Goal::Gone => {
                break Ok(());
            }
            Err(e) => break Err(aws.error(e, "kinesis:DescribeStreamSummary", Some(name))),
        };
        if goal == Goal::Active && status == Some(StreamStatus::Active) {
            break Ok(());
        }
        let now = status.as_ref().map(|s| s.as_str()).unwrap_or("unknown");
        spinner.set_message(format!("waiting for {name} to be {target} (now {now})"));
        if started.elapsed() >= timeout {
            break Err(CliError::failed(format!(
                "stream {name} is still {now} after {}s",
                timeout.as_secs()
            ))
            .with_hint(format!(
                "the change goes on in the background: `kin stream describe {name}` shows its status; --timeout waits longer"
            )));
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(started.elapsed()))).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(2));
    };
    spinner.finish_and_clear();
    result
}
