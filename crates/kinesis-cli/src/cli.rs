//! The command line, as clap sees it. Parsing only: every value is checked here (durations,
//! times, shard ids, templates) so that a bad argument is a usage error (exit 2) before any
//! AWS call is made.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::util;

const AFTER_HELP: &str = "\
Credentials, region and profile come from the usual AWS places (AWS_PROFILE, AWS_REGION,
~/.aws/config, ...); the options override them. AWS_ENDPOINT_URL_KINESIS and
AWS_ENDPOINT_URL are honoured. For the local stack: `kin local > local.env &`, then
`. ./local.env` and `kin --local ...`.

Exit codes:
  0  success
  1  the command failed (AWS error, network, timeout, records that could not be put)
  2  usage: bad arguments or option values, or --local without LOCAL_AWS_* variables
  3  not found: the stream, shard or lease table does not exist
  4  access: no credentials or region, credentials refused, or permission denied";

/// kin: the command line for Amazon Kinesis Data Streams.
#[derive(Debug, Parser)]
#[command(name = "kin", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, named as in the AWS CLI.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// AWS region [default: AWS_REGION, then the profile's region]
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Named profile from ~/.aws/config [default: AWS_PROFILE, then "default"]
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// Kinesis endpoint, e.g. http://127.0.0.1:4567 [default: AWS_ENDPOINT_URL_KINESIS, then AWS]
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Output format [default: table on a terminal, text otherwise]
    #[arg(long, global = true, value_enum, env = "KIN_OUTPUT")]
    pub output: Option<OutputFormat>,

    /// Use the local stack started by `kin local` (reads the LOCAL_AWS_* variables it prints)
    #[arg(long, global = true)]
    pub local: bool,

    /// Never draw progress indicators (they are drawn only when stderr is a terminal)
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// More logging on stderr (-v, -vv); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with headers, for people
    Table,
    /// One JSON document (`tail`: one object per line)
    Json,
    /// Tab-separated values without headers, for scripts
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe, reshard and delete streams
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Put records from arguments, stdin, a file, or generated load
    Put(PutArgs),
    /// Follow every shard of a stream and print its records
    Tail(TailArgs),
    /// Run the local AWS stack (Kinesis, DynamoDB, S3) in the foreground
    Local(LocalArgs),
    /// Show the lease table of a consumer application (KCL-compatible)
    Leases(LeasesArgs),
    /// Show how far behind a consumer application is, per shard
    Lag(LagArgs),
    /// Run the whole pipeline on an embedded local stack and check it: producer, stream,
    /// two workers with the S3 sink, a split half way, exactly-once verdict
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// List the streams of the account in the region
    List,
    /// Create a stream and wait until it is ACTIVE
    #[command(group(ArgGroup::new("capacity").required(true).args(["shards", "on_demand"])))]
    Create {
        /// Stream name
        name: String,
        /// Number of shards (provisioned mode)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        shards: Option<i32>,
        /// On-demand capacity mode instead of provisioned shards
        #[arg(long)]
        on_demand: bool,
        /// Encrypt with this KMS key (id, ARN or alias, e.g. alias/aws/kinesis)
        #[arg(long, value_name = "KEY")]
        encrypt: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show a stream's details and its shards
    Describe {
        /// Stream name
        name: String,
    },
    /// Delete a stream and wait until it is gone
    Delete {
        /// Stream name
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Split or merge shards, or change the shard count, and wait until ACTIVE
    #[command(group(ArgGroup::new("how").required(true).args(["split", "merge", "count"])))]
    Reshard(ReshardArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return as soon as the request is accepted, without waiting
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this long (e.g. 90s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = util::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ReshardArgs {
    /// Stream name
    pub name: String,
    /// Split this shard (an id, or its number: 3 = shardId-000000000003)
    #[arg(long, value_name = "SHARD", value_parser = util::parse_shard_id)]
    pub split: Option<String>,
    /// Where the second child starts [default: the middle of the shard's range]
    #[arg(long, value_name = "HASHKEY", requires = "split", value_parser = util::parse_hash_key)]
    pub at: Option<kinesis_aggregation::HashKey>,
    /// Merge two adjacent shards
    #[arg(long, num_args = 2, value_names = ["SHARD", "ADJACENT"], value_parser = util::parse_shard_id)]
    pub merge: Option<Vec<String>>,
    /// Scale uniformly to N open shards (UpdateShardCount)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub count: Option<i32>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Input, in this order: DATA arguments; --file (`-` for stdin); stdin when it is not a terminal;
else --count generated records of --size bytes.

Partition keys: --key for all records, else --key-template, where {num} is the record's
number (from 0), {line} the line itself and {rand} a random number; {{ and }} are braces.
--format json reads JSON lines {\"key\": \"k\", \"data\": ..., \"hash_key\": \"...\"}: a string
\"data\" is put as its UTF-8 bytes, any other JSON value as its JSON text; without \"key\" the
template applies.

Examples:
  kin put orders --key customer-42 '{\"total\": 12}'
  tail -f app.log | kin put logs
  kin put orders --file orders.jsonl --format json
  kin put load-test --count 100000 --size 512 --rate 2000")]
pub struct PutArgs {
    /// Stream name
    pub stream: String,
    /// Records to put, one per argument
    #[arg(value_name = "DATA", conflicts_with = "file")]
    pub data: Vec<String>,
    /// Partition key of every record
    #[arg(short, long, value_name = "KEY", conflicts_with = "key_template")]
    pub key: Option<String>,
    /// Partition key template: {num}, {line}, {rand}
    #[arg(long, value_name = "TEMPLATE", default_value = "{num}", value_parser = util::parse_template)]
    pub key_template: util::Template,
    /// Read records from this file, one per line (`-`: stdin)
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How lines are read
    #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
    pub format: InputFormat,
    /// Put at most N records; with no other input, generate N records
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Size of each generated record in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 100, requires = "count")]
    pub size: usize,
    /// Put at most N records per second
    #[arg(long, value_name = "N", value_parser = util::parse_rate)]
    pub rate: Option<f64>,
    /// Send every record as its own Kinesis record (no KPL aggregation)
    #[arg(long)]
    pub no_aggregation: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Each line is a record's data
    Lines,
    /// Each line is a JSON object {"key", "data", "hash_key"}
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Output: --output text (the default when not a terminal) prints SHARD KEY SEQUENCE SUB DATA,
tab-separated, one record per line, with control characters in UTF-8 data escaped;
--output json prints one object per line: shard, key, sequence, sub_sequence, arrival, data.
Aggregated (KPL) records are split into their user records. When a shard is closed by a
split or merge, its children are followed after it. Ctrl-C stops (exit 0).")]
pub struct TailArgs {
    /// Stream name
    pub stream: String,
    /// Where to start in every shard
    #[arg(long, value_enum, default_value_t = StartFrom::Latest, conflicts_with = "since")]
    pub from: StartFrom,
    /// Start at this time: RFC 3339 (2026-05-01T12:00:00Z) or an age (90s, 5m, 2h, 1d)
    #[arg(long, value_name = "TIME", value_parser = util::parse_since)]
    pub since: Option<std::time::SystemTime>,
    /// How to print record data
    #[arg(long, value_enum, default_value_t = DataFormat::Utf8)]
    pub data: DataFormat,
    /// Stop after N records
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// How long to wait before reading a shard again once caught up
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = util::parse_duration)]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartFrom {
    /// Only records put from now on
    Latest,
    /// The oldest record still in the stream
    TrimHorizon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataFormat {
    /// UTF-8 text (invalid bytes replaced by U+FFFD)
    Utf8,
    /// Lower-case hexadecimal
    Hex,
    /// Standard base64 with padding
    Base64,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The export lines go to stdout, everything else to stderr; the stack runs until Ctrl-C or
SIGTERM. Command substitution would wait for the end, so go through a file:

  kin local > local.env &
  until [ -s local.env ]; do sleep 0.1; done; . ./local.env
  kin --local stream create orders --shards 2     # or plain `kin`: AWS_ENDPOINT_URL_* are set")]
pub struct LocalArgs {
    /// Kinesis port [default: ephemeral]
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub kinesis_port: u16,
    /// DynamoDB port [default: ephemeral]
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub dynamodb_port: u16,
    /// S3 port [default: ephemeral]
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub s3_port: u16,
    /// Keep state under DIR across restarts [default: in memory]
    #[arg(long, value_name = "DIR")]
    pub persist: Option<PathBuf>,
    /// Throttle writes above 1 MiB/s or 1000 records/s per shard, as AWS does
    #[arg(long)]
    pub enforce_shard_limits: bool,
    /// Shard iterator lifetime
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = util::parse_duration)]
    pub iterator_ttl: Duration,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Starts Kinesis, DynamoDB and S3 in this process on loopback ports (no AWS account), creates
a stream and a bucket, produces records with unique ids through kinesis-producer at a steady
rate, consumes them with kinesis-consumer workers whose S3 sink writes objects and checkpoints
after each write, splits a shard half way, drains, and then reads every object back: each
acknowledged record must be in S3 exactly once. Exit code 1 if not.

Examples:
  kin demo
  kin demo --records 100000 --rate 10000 --workers 3
  kin demo --keep        # leave the stack running afterwards; prints its export lines")]
pub struct DemoArgs {
    /// Records to produce
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub records: u64,
    /// Records per second
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Consumer workers sharing the lease table
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub workers: u64,
    /// Shards of the stream
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub shards: i32,
    /// Do not split a shard half way
    #[arg(long)]
    pub no_split: bool,
    /// How long to wait for the workers to catch up after the producer closed
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = util::parse_duration)]
    pub drain_timeout: Duration,
    /// Keep the stack running afterwards (prints its export lines; Ctrl-C stops it)
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
One row per lease, sorted by lease key: SHARD OWNER CHECKPOINT SUB COUNTER PARENTS CHILDREN
SWITCHES. OWNER is - when nobody holds the lease; CHECKPOINT is a sequence number or
TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END; SWITCHES counts owner changes since the last
checkpoint (a growing value means the shard bounces between workers without progress).
The lease table is a DynamoDB table named after the application: --local uses
LOCAL_AWS_DYNAMODB_ENDPOINT, otherwise AWS_ENDPOINT_URL_DYNAMODB applies (--endpoint-url is
for Kinesis only). `kin lag APP --stream STREAM` shows how far behind each shard is.")]
pub struct LeasesArgs {
    /// Application name (the KCL's application name: the lease table is named after it)
    pub app: String,
    /// Lease table name [default: APP]
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
For every lease checkpointed at a sequence number (or at TRIM_HORIZON), reads the first
record after the checkpoint (GetShardIterator AFTER_SEQUENCE_NUMBER, one GetRecords of
limit 1) and prints SHARD OWNER CHECKPOINT BEHIND_MS NEXT_AGE: MillisBehindLatest as Kinesis
reports it, and the age of the oldest record the application has not checkpointed yet
(- when it has caught up, or for LATEST / AT_TIMESTAMP checkpoints; done for SHARD_END).
Each shard costs 2 Kinesis calls per refresh; ferrokinesis (`kin local`) always reports
BEHIND_MS 0, NEXT_AGE still works.

--watch refreshes every --interval until Ctrl-C: redrawn in place on a terminal, else one
block (one JSON document per line with --output json) per refresh, each with its time.

Examples:
  kin lag orders-app --stream orders
  kin lag orders-app --stream orders --watch --interval 10s")]
pub struct LagArgs {
    /// Application name (the lease table is named after it)
    pub app: String,
    /// The stream the application consumes [default: from multi-stream lease keys]
    #[arg(long, value_name = "STREAM")]
    pub stream: Option<String>,
    /// Lease table name [default: APP]
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    /// Refresh until Ctrl-C
    #[arg(long)]
    pub watch: bool,
    /// Time between refreshes with --watch
    #[arg(long, value_name = "DURATION", default_value = "5s", requires = "watch", value_parser = util::parse_duration)]
    pub interval: Duration,
}
