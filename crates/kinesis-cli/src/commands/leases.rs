//! `kin leases APP`: the lease table of a consumer application, as the KCL (Java or
//! kinesis-consumer) keeps it in DynamoDB.
//!
//! One Scan of the table through [`DynamoLeaseStore::list_leases`], sorted by lease key.
//! A missing table is "not found" (exit 3): most often the application name or the region is
//! wrong, or no worker has run yet.

use aws_sdk_kinesis::error::DisplayErrorContext;
use kinesis_consumer::lease::{DynamoLeaseStore, Lease, LeaseError, LeaseStore};
use serde_json::{Value, json};

use crate::aws::Aws;
use crate::cli::LeasesArgs;
use crate::error::{CliError, Kind, Result};
use crate::output::{Output, Table};

pub async fn run(aws: &Aws, out: &Output, args: LeasesArgs) -> Result<()> {
    let table_name = args.table.as_deref().unwrap_or(&args.app);
    let leases = list(aws, &args.app, table_name).await?;
    let json = json!({
        "application": args.app,
        "table": table_name,
        "leases": leases.iter().map(lease_json).collect::<Vec<_>>(),
    });
    let mut table = Table::new([
        "SHARD",
        "OWNER",
        "CHECKPOINT",
        "SUB",
        "COUNTER",
        "PARENTS",
        "CHILDREN",
        "SWITCHES",
    ]);
    for lease in &leases {
        let (checkpoint, sub) = lease.checkpoint.to_attributes();
        table.row([
            lease.lease_key.clone(),
            lease.owner.clone().unwrap_or_else(|| "-".into()),
            checkpoint,
            sub.to_string(),
            lease.counter.to_string(),
            joined(lease.parent_shard_ids.iter()),
            joined(lease.child_shard_ids.iter()),
            lease.owner_switches_since_checkpoint.to_string(),
        ]);
    }
    if leases.is_empty() {
        eprintln!("kin: lease table {table_name} has no leases yet");
    }
    out.emit(&json, &table)
}

/// Every lease of the table, sorted by lease key.
pub async fn list(aws: &Aws, app: &str, table: &str) -> Result<Vec<Lease>> {
    let store = DynamoLeaseStore::new(aws.dynamodb.clone(), table);
    let mut leases = store
        .list_leases()
        .await
        .map_err(|e| lease_error(aws, app, table, e))?;
    leases.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
    Ok(leases)
}

fn lease_json(lease: &Lease) -> Value {
    let (checkpoint, sub) = lease.checkpoint.to_attributes();
    json!({
        "lease_key": lease.lease_key,
        "shard": lease.shard_id(),
        "owner": lease.owner,
        "checkpoint": checkpoint,
        "sub_sequence": sub,
        "pending_checkpoint": lease.pending_checkpoint.as_ref().map(ToString::to_string),
        "counter": lease.counter,
        "parents": lease.parent_shard_ids,
        "children": lease.child_shard_ids,
        "owner_switches_since_checkpoint": lease.owner_switches_since_checkpoint,
    })
}

fn joined<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    let ids: Vec<&str> = ids.map(String::as_str).collect();
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(",")
    }
}

/// A lease table error as a message with its fix.
pub fn lease_error(aws: &Aws, app: &str, table: &str, err: LeaseError) -> CliError {
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        LeaseError::TableMissing { .. } => CliError::new(
            Kind::NotFound,
            format!("no lease table {table} in {}", aws.region),
        )
        .with_hint(format!(
            "has a worker of application {app} run in this region? (check the name, --table, --region and --profile)"
        )),
        LeaseError::IncompatibleTable { .. } | LeaseError::InvalidLease { .. } => {
            CliError::failed(err.to_string())
                .with_hint("pass the lease table of a KCL application with --table")
        }
        _ if ["AccessDenied", "UnrecognizedClient", "InvalidSignature", "ExpiredToken"]
            .iter()
            .any(|code| detail.contains(code)) =>
        {
            CliError::new(
                Kind::Access,
                format!("DynamoDB refused to read lease table {table}: {detail}"),
            )
            .with_hint(
                "the identity in use needs dynamodb:Scan on the table, or pick another --profile",
            )
        }
        _ if detail.contains("dispatch failure") || detail.contains("timeout") => {
            CliError::failed(format!(
                "cannot reach DynamoDB at {}: {detail}",
                aws.dynamodb_endpoint
            ))
            .with_hint(
                "check AWS_ENDPOINT_URL_DYNAMODB, --region and the network; for the local stack use --local",
            )
        }
        _ => CliError::failed(format!("reading lease table {table}: {detail}")),
    }
}
