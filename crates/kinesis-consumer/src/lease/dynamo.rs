//! The DynamoDB lease store, on the KCL 2.x table schema.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
};
use bytes::Bytes;
use kinesis_aggregation::{HashKey, HashKeyRange};

use super::{Lease, LeaseError, LeaseStore, LeaseUpdate, OperationCounts};
use crate::position::Position;

/// Attribute names, exactly as the Java KCL 2.x writes them.
mod attr {
    pub const LEASE_KEY: &str = "leaseKey";
    pub const LEASE_OWNER: &str = "leaseOwner";
    pub const LEASE_COUNTER: &str = "leaseCounter";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
    pub const PENDING: &str = "pendingCheckpoint";
    pub const PENDING_SUB: &str = "pendingCheckpointSubSequenceNumber";
    pub const PENDING_STATE: &str = "pendingCheckpointState";
    pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
    pub const PARENTS: &str = "parentShardId";
    pub const CHILDREN: &str = "childShardIds";
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    /// KCL 3.x: the previous owner during a graceful handoff. Removed when the lease is taken
    /// or evicted: either ends any handoff in progress, and a stale value would make a KCL 3.x
    /// worker believe one is still going on.
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
    /// KCL 3.5: items that are not leases carry an entity type other than `LEASE`.
    pub const ENTITY_TYPE: &str = "entityType";
}

/// How long [`DynamoLeaseStore::ensure_table`] waits for a new table by default (DynamoDB
/// takes seconds to tens of seconds).
const DEFAULT_TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Leases in a DynamoDB table with the KCL 2.x schema, shared with (or taken over from, or
/// by) Java KCL applications.
///
/// | attribute | type | field |
/// |---|---|---|
/// | `leaseKey` | S (hash key) | [`Lease::lease_key`] |
/// | `leaseOwner` | S, absent when unowned | [`Lease::owner`] |
/// | `leaseCounter` | N | [`Lease::counter`] |
/// | `checkpoint`, `checkpointSubSequenceNumber` | S, N | [`Lease::checkpoint`] |
/// | `pendingCheckpoint`, `pendingCheckpointSubSequenceNumber` | S, N | [`Lease::pending_checkpoint`] |
/// | `pendingCheckpointState` | B | [`Lease::pending_checkpoint_state`] |
/// | `ownerSwitchesSinceCheckpoint` | N | [`Lease::owner_switches_since_checkpoint`] |
/// | `parentShardId` | SS | [`Lease::parent_shard_ids`] |
/// | `childShardIds` | SS | [`Lease::child_shard_ids`] |
/// | `startingHashKey`, `endingHashKey` | S (decimal) | [`Lease::hash_key_range`] |
///
/// - Every write is an `UpdateItem` that names only the attributes it changes, so attributes
///   this crate does not know (the KCL 3.x `throughputKBps`, multi-stream `streamName`, ...)
///   survive. Writes return the new item (`ReturnValues=ALL_NEW`) and, when their condition
///   fails, the current one (`ReturnValuesOnConditionCheckFailure=ALL_OLD`, or a consistent
///   `GetItem` when the server did not send it): that is how a write whose earlier attempt
///   was applied is recognised (see the [module docs](super#lost-answers)).
/// - Listing is a paginated `Scan` that skips items with an `entityType` other than `LEASE`
///   (KCL 3.5), and items that cannot be read as leases (logged).
/// - Retries are the SDK client's: configure them there (its standard mode retries
///   throttling and transient errors with backoff). This store adds no retry loop of its own,
///   so there is one budget, not two.
#[derive(Debug)]
pub struct DynamoLeaseStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    consistent_scans: bool,
    scan_page_limit: Option<i32>,
    table_active_timeout: Duration,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    scans: AtomicU64,
    gets: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    table_ops: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl DynamoLeaseStore {
    /// A store on `table` (the KCL names it after the application).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLeaseStore {
            client,
            table: table.into(),
            consistent_scans: false,
            scan_page_limit: None,
            table_active_timeout: DEFAULT_TABLE_ACTIVE_TIMEOUT,
            counts: Counts::default(),
        }
    }

    /// Strongly consistent scans (twice the read cost). Default: off, as in the KCL. A stale
    /// scan only delays what the assignment sees by a moment; every write is conditional
    /// anyway.
    pub fn with_consistent_scans(mut self, consistent: bool) -> Self {
        self.consistent_scans = consistent;
        self
    }

    /// At most this many items per scan page (default: DynamoDB's 1 MB pages).
    pub fn with_scan_page_limit(mut self, limit: i32) -> Self {
        self.scan_page_limit = Some(limit.max(1));
        self
    }

    /// How long [`ensure_table`](LeaseStore::ensure_table) waits for a table to become
    /// ACTIVE (default 5 minutes).
    pub fn with_table_active_timeout(mut self, timeout: Duration) -> Self {
        self.table_active_timeout = timeout;
        self
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Requests made so far, by kind.
    pub fn operation_counts(&self) -> OperationCounts {
        let c = &self.counts;
        OperationCounts {
            scans: c.scans.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            updates: c.updates.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            table_ops: c.table_ops.load(Ordering::Relaxed),
        }
    }

    /// Turns an SDK error into a [`LeaseError`] (conditional failures are handled by the
    /// callers before this).
    fn error<E>(&self, operation: &'static str, err: SdkError<E>) -> LeaseError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match err.code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded",
            ) => LeaseError::Throttled {
                operation,
                source: Box::new(err),
            },
            Some("ResourceNotFoundException") => LeaseError::TableMissing {
                table: self.table.clone(),
            },
            _ => LeaseError::Store {
                operation,
                source: Box::new(err),
            },
        }
    }

    /// A consistent read of the raw item.
    async fn get_item(
        &self,
        lease_key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LeaseError> {
        bump(&self.counts.gets);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LEASE_KEY, AttributeValue::S(lease_key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("get lease", e))?;
        Ok(out.item)
    }

    /// The item as it is after a failed condition: the one the server returned, or a re-read.
    async fn item_after_failed_condition(
        &self,
        lease_key: &str,
        returned: Option<HashMap<String, AttributeValue>>,
    ) -> Result<Option<Lease>, LeaseError> {
        let item = match returned {
            Some(item) => Some(item),
            None => self.get_item(lease_key).await?,
        };
        item.map(|item| from_item(&item)).transpose()
    }

    async fn describe(
        &self,
    ) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, LeaseError> {
        bump(&self.counts.table_ops);
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table),
            Err(e) => match self.error("describe table", e) {
                LeaseError::TableMissing { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    fn check_schema(
        &self,
        table: &aws_sdk_dynamodb::types::TableDescription,
    ) -> Result<(), LeaseError> {
        let incompatible = |reason: String| LeaseError::IncompatibleTable {
            table: self.table.clone(),
            reason,
        };
        let keys: Vec<_> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().clone()))
            .collect();
        if keys != [(attr::LEASE_KEY, KeyType::Hash)] {
            return Err(incompatible(format!(
                "its key is {keys:?}, a lease table has the hash key leaseKey only"
            )));
        }
        let key_type = table
            .attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == attr::LEASE_KEY)
            .map(|d| d.attribute_type().clone());
        if key_type
            .as_ref()
            .is_some_and(|t| *t != ScalarAttributeType::S)
        {
            return Err(incompatible(format!("leaseKey is {key_type:?}, not S")));
        }
        Ok(())
    }

    async fn create_table(&self) -> Result<bool, LeaseError> {
        bump(&self.counts.table_ops);
        let built = |e: aws_sdk_dynamodb::error::BuildError| LeaseError::Store {
            operation: "create table",
            source: Box::new(e),
        };
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr::LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(built)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr::LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(built)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Another worker created it first: fine, wait for it like for ours.
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(false),
            Err(e) => Err(self.error("create table", e)),
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn ensure_table(&self) -> Result<bool, LeaseError> {
        let created = match self.describe().await? {
            // The common case, one request: the table is there.
            Some(table) if table.table_status() == Some(&TableStatus::Active) => {
                self.check_schema(&table)?;
                return Ok(false);
            }
            Some(_) => false,
            None => self.create_table().await?,
        };
        // Tokio's clock, so that tests with a paused clock do not wait for real.
        let deadline = tokio::time::Instant::now() + self.table_active_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            match self.describe().await? {
                Some(table) if table.table_status() == Some(&TableStatus::Active) => {
                    self.check_schema(&table)?;
                    return Ok(created);
                }
                Some(table) if table.table_status() == Some(&TableStatus::Deleting) => {
                    return Err(LeaseError::TableMissing {
                        table: self.table.clone(),
                    });
                }
                // Creating (or just created and not yet visible): wait.
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseError::Store {
                    operation: "ensure table",
                    source: format!(
                        "table {} did not become ACTIVE within {:?}",
                        self.table, self.table_active_timeout
                    )
                    .into(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            bump(&self.counts.scans);
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(self.consistent_scans)
                .set_limit(self.scan_page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.error("list leases", e))?;
            for item in out.items() {
                if !is_lease(item) {
                    continue;
                }
                match from_item(item) {
                    Ok(lease) => leases.push(lease),
                    // One bad item must not stop every worker of the application; it is
                    // loud in the logs instead, and `get_lease` reports it as an error.
                    Err(error) => {
                        tracing::warn!(table = %self.table, %error, "skipping an item that is not a valid lease")
                    }
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(leases),
            }
        }
    }

    async fn get_lease(&self, lease_key: &str) -> Result<Option<Lease>, LeaseError> {
        match self.get_item(lease_key).await? {
            Some(item) if is_lease(&item) => from_item(&item).map(Some),
            _ => Ok(None),
        }
    }

    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut expr = Expression::default();
        for (name, value) in to_item(lease) {
            if name != attr::LEASE_KEY {
                expr.set(&name, value);
            }
        }
        let key_name = expr.name(attr::LEASE_KEY);
        expr.condition(format!("attribute_not_exists({key_name})"));
        bump(&self.counts.updates);
        let result = expr
            .apply(self.client.update_item())
            .table_name(&self.table)
            .key(attr::LEASE_KEY, AttributeValue::S(lease.lease_key.clone()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => returned_lease(out.attributes, lease),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let returned = match e.into_err() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                match self
                    .item_after_failed_condition(&lease.lease_key, returned)
                    .await?
                {
                    Some(current) if current == *lease => {
                        tracing::debug!(lease_key = %lease.lease_key, "create applied by an earlier attempt");
                        Ok(current)
                    }
                    _ => Err(LeaseError::AlreadyExists {
                        key: lease.lease_key.clone(),
                    }),
                }
            }
            Err(e) => Err(self.error("create lease", e)),
        }
    }

    async fn update_lease(
        &self,
        observed: &Lease,
        update: &LeaseUpdate,
    ) -> Result<Lease, LeaseError> {
        let expected = update.apply(observed);
        let mut expr = update_expression(update, &expected);
        expr.condition_unchanged(observed);
        bump(&self.counts.updates);
        let result = expr
            .apply(self.client.update_item())
            .table_name(&self.table)
            .key(
                attr::LEASE_KEY,
                AttributeValue::S(observed.lease_key.clone()),
            )
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let key = &observed.lease_key;
        match result {
            Ok(out) => returned_lease(out.attributes, &expected),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let returned = match e.into_err() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                match self.item_after_failed_condition(key, returned).await? {
                    None => Err(LeaseError::NotFound { key: key.clone() }),
                    Some(current) if current == expected => {
                        tracing::info!(
                            lease_key = %key,
                            update = update.name(),
                            counter = current.counter,
                            "conditional write failed against its own result: an earlier attempt was applied and its answer lost"
                        );
                        Ok(current)
                    }
                    Some(current) => Err(LeaseError::LeaseLost {
                        key: key.clone(),
                        current: Some(Box::new(current)),
                    }),
                }
            }
            Err(e) => Err(self.error(update.name(), e)),
        }
    }

    async fn delete_lease(&self, observed: &Lease) -> Result<(), LeaseError> {
        let mut expr = Expression::default();
        expr.condition_unchanged(observed);
        bump(&self.counts.deletes);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(
                attr::LEASE_KEY,
                AttributeValue::S(observed.lease_key.clone()),
            )
            .condition_expression(expr.conditions.join(" AND "))
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let returned = match e.into_err() {
                    aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                match self
                    .item_after_failed_condition(&observed.lease_key, returned)
                    .await?
                {
                    // Gone: deleted by us (an earlier attempt) or by someone else; either
                    // way what the caller wanted.
                    None => Ok(()),
                    Some(current) => Err(LeaseError::LeaseLost {
                        key: observed.lease_key.clone(),
                        current: Some(Box::new(current)),
                    }),
                }
            }
            Err(e) => Err(self.error("delete lease", e)),
        }
    }
}

/// The lease in a write's `ALL_NEW` answer (or `expected` if the server sent none).
fn returned_lease(
    attributes: Option<HashMap<String, AttributeValue>>,
    expected: &Lease,
) -> Result<Lease, LeaseError> {
    match attributes {
        Some(item) if !item.is_empty() => from_item(&item),
        _ => Ok(expected.clone()),
    }
}

/// The `SET`/`REMOVE` clauses that turn the item into `expected`, naming only what `update`
/// changes.
fn update_expression(update: &LeaseUpdate, expected: &Lease) -> Expression {
    let mut expr = Expression::default();
    expr.set(attr::LEASE_COUNTER, number(expected.counter));
    let checkpoint = |expr: &mut Expression| {
        let (checkpoint, sub) = expected.checkpoint.to_attributes();
        expr.set(attr::CHECKPOINT, AttributeValue::S(checkpoint));
        expr.set(attr::CHECKPOINT_SUB, number(sub));
        expr.set(attr::OWNER_SWITCHES, number(0));
        expr.remove(attr::PENDING);
        expr.remove(attr::PENDING_SUB);
        expr.remove(attr::PENDING_STATE);
    };
    match update {
        LeaseUpdate::Renew => {}
        LeaseUpdate::Take { owner } => {
            expr.set(attr::LEASE_OWNER, AttributeValue::S(owner.clone()));
            expr.set(
                attr::OWNER_SWITCHES,
                number(expected.owner_switches_since_checkpoint),
            );
            expr.remove(attr::CHECKPOINT_OWNER);
        }
        LeaseUpdate::Evict => {
            expr.remove(attr::LEASE_OWNER);
            expr.remove(attr::CHECKPOINT_OWNER);
        }
        LeaseUpdate::Checkpoint { .. } => checkpoint(&mut expr),
        LeaseUpdate::PrepareCheckpoint { position, state } => {
            let (pending, sub) = position.to_attributes();
            expr.set(attr::PENDING, AttributeValue::S(pending));
            expr.set(attr::PENDING_SUB, number(sub));
            match state {
                Some(state) => expr.set(attr::PENDING_STATE, blob(state)),
                None => expr.remove(attr::PENDING_STATE),
            }
        }
        LeaseUpdate::ShardEnd { child_shard_ids } => {
            checkpoint(&mut expr);
            if !child_shard_ids.is_empty() {
                expr.set(attr::CHILDREN, string_set(child_shard_ids));
            }
        }
    }
    expr
}

/// An update or condition expression with its placeholders.
#[derive(Default)]
struct Expression {
    sets: Vec<String>,
    removes: Vec<String>,
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    /// `#name` for an attribute (placeholders everywhere, so reserved words never matter).
    fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn set(&mut self, attribute: &str, value: AttributeValue) {
        let (name, value) = (self.name(attribute), self.value(value));
        self.sets.push(format!("{name} = {value}"));
    }

    fn remove(&mut self, attribute: &str) {
        let name = self.name(attribute);
        self.removes.push(name);
    }

    fn condition(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// The fencing condition: the counter and the owner the caller saw.
    fn condition_unchanged(&mut self, observed: &Lease) {
        let counter = self.name(attr::LEASE_COUNTER);
        let value = self.value(number(observed.counter));
        self.condition(format!("{counter} = {value}"));
        let owner = self.name(attr::LEASE_OWNER);
        match &observed.owner {
            Some(o) => {
                let value = self.value(AttributeValue::S(o.clone()));
                self.condition(format!("{owner} = {value}"));
            }
            None => self.condition(format!("attribute_not_exists({owner})")),
        }
    }

    fn apply(
        self,
        request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let mut update = String::new();
        if !self.sets.is_empty() {
            update.push_str("SET ");
            update.push_str(&self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            update.push_str(" REMOVE ");
            update.push_str(&self.removes.join(", "));
        }
        request
            .update_expression(update.trim())
            .condition_expression(self.conditions.join(" AND "))
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
    }
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn blob(bytes: &Bytes) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes.to_vec()))
}

fn string_set(set: &BTreeSet<String>) -> AttributeValue {
    AttributeValue::Ss(set.iter().cloned().collect())
}

/// Whether an item is a lease: the KCL 3.5 tags other entities with `entityType`; a missing
/// tag means a lease.
fn is_lease(item: &HashMap<String, AttributeValue>) -> bool {
    match item.get(attr::ENTITY_TYPE) {
        None => true,
        Some(AttributeValue::S(kind)) => kind == "LEASE",
        Some(_) => false,
    }
}

/// The item the KCL 2.x would write for `lease` (absent fields are absent attributes; empty
/// sets are absent too, as DynamoDB has no empty sets).
pub(super) fn to_item(lease: &Lease) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::new();
    let mut put = |name: &str, value| {
        item.insert(name.to_owned(), value);
    };
    put(attr::LEASE_KEY, AttributeValue::S(lease.lease_key.clone()));
    if let Some(owner) = &lease.owner {
        put(attr::LEASE_OWNER, AttributeValue::S(owner.clone()));
    }
    put(attr::LEASE_COUNTER, number(lease.counter));
    let (checkpoint, sub) = lease.checkpoint.to_attributes();
    put(attr::CHECKPOINT, AttributeValue::S(checkpoint));
    put(attr::CHECKPOINT_SUB, number(sub));
    if let Some(pending) = &lease.pending_checkpoint {
        let (pending, sub) = pending.to_attributes();
        put(attr::PENDING, AttributeValue::S(pending));
        put(attr::PENDING_SUB, number(sub));
    }
    if let Some(state) = &lease.pending_checkpoint_state {
        put(attr::PENDING_STATE, blob(state));
    }
    put(
        attr::OWNER_SWITCHES,
        number(lease.owner_switches_since_checkpoint),
    );
    if !lease.parent_shard_ids.is_empty() {
        put(attr::PARENTS, string_set(&lease.parent_shard_ids));
    }
    if !lease.child_shard_ids.is_empty() {
        put(attr::CHILDREN, string_set(&lease.child_shard_ids));
    }
    if let Some(range) = &lease.hash_key_range {
        put(
            attr::STARTING_HASH_KEY,
            AttributeValue::S(range.start.to_string()),
        );
        put(
            attr::ENDING_HASH_KEY,
            AttributeValue::S(range.end.to_string()),
        );
    }
    item
}

/// Reads a lease item as the KCL 2.x writes it. Missing counters and switch counts read as 0
/// and a missing sub-sequence number as 0, as in the KCL.
pub(super) fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
    let key = match item.get(attr::LEASE_KEY) {
        Some(AttributeValue::S(key)) => key.clone(),
        _ => {
            return Err(LeaseError::InvalidLease {
                key: String::new(),
                reason: "no leaseKey string".into(),
            });
        }
    };
    let invalid = |reason: String| LeaseError::InvalidLease {
        key: key.clone(),
        reason,
    };
    let string = |name: &str| -> Result<Option<&String>, LeaseError> {
        match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(format!("{name} is {other:?}, not a string"))),
        }
    };
    let number = |name: &str| -> Result<Option<u64>, LeaseError> {
        match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(n)) => n
                .parse()
                .map(Some)
                .map_err(|_| invalid(format!("{name} = {n} is not a counter"))),
            Some(other) => Err(invalid(format!("{name} is {other:?}, not a number"))),
        }
    };
    let set = |name: &str| -> Result<BTreeSet<String>, LeaseError> {
        match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(BTreeSet::new()),
            Some(AttributeValue::Ss(values)) => Ok(values.iter().cloned().collect()),
            // Tolerated: a single string where a set is expected.
            Some(AttributeValue::S(value)) => Ok([value.clone()].into()),
            Some(other) => Err(invalid(format!("{name} is {other:?}, not a string set"))),
        }
    };
    let position = |name: &str, sub_name: &str| -> Result<Option<Position>, LeaseError> {
        let Some(text) = string(name)? else {
            return Ok(None);
        };
        Position::from_attributes(text, number(sub_name)?)
            .map(Some)
            .map_err(|e| invalid(format!("{name}: {e}")))
    };
    let hash_key = |name: &str| -> Result<Option<HashKey>, LeaseError> {
        string(name)?
            .map(|s| s.parse().map_err(|e| invalid(format!("{name}: {e}"))))
            .transpose()
    };

    let checkpoint = position(attr::CHECKPOINT, attr::CHECKPOINT_SUB)?
        .ok_or_else(|| invalid("no checkpoint".into()))?;
    let hash_key_range = match (
        hash_key(attr::STARTING_HASH_KEY)?,
        hash_key(attr::ENDING_HASH_KEY)?,
    ) {
        (Some(start), Some(end)) => Some(HashKeyRange::new(start, end)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "only one of startingHashKey and endingHashKey".into(),
            ));
        }
    };
    let pending_checkpoint_state = match item.get(attr::PENDING_STATE) {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::B(blob)) => Some(Bytes::copy_from_slice(blob.as_ref())),
        Some(other) => {
            return Err(invalid(format!(
                "pendingCheckpointState is {other:?}, not binary"
            )));
        }
    };
    Ok(Lease {
        owner: string(attr::LEASE_OWNER)?.cloned(),
        counter: number(attr::LEASE_COUNTER)?.unwrap_or(0),
        checkpoint,
        pending_checkpoint: position(attr::PENDING, attr::PENDING_SUB)?,
        pending_checkpoint_state,
        owner_switches_since_checkpoint: number(attr::OWNER_SWITCHES)?.unwrap_or(0),
        parent_shard_ids: set(attr::PARENTS)?,
        child_shard_ids: set(attr::CHILDREN)?,
        hash_key_range,
        lease_key: key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::conformance::full_lease;

    #[test]
    fn items_round_trip() {
        for lease in [
            full_lease("shardId-000000000001"),
            Lease::new("shardId-000000000002", Position::Latest),
        ] {
            assert_eq!(from_item(&to_item(&lease)).unwrap(), lease);
        }
    }

    #[test]
    fn non_lease_items_are_recognised() {
        let mut item = to_item(&full_lease("shardId-1"));
        assert!(is_lease(&item));
        item.insert("entityType".into(), AttributeValue::S("LEASE".into()));
        assert!(is_lease(&item));
        item.insert(
            "entityType".into(),
            AttributeValue::S("WORKER_METRICS".into()),
        );
        assert!(!is_lease(&item));
    }

    #[test]
    fn invalid_items_say_why() {
        let mut item = to_item(&full_lease("shardId-1"));
        item.remove("checkpoint");
        let err = from_item(&item).unwrap_err();
        assert!(err.to_string().contains("no checkpoint"), "{err}");
        let mut item = to_item(&full_lease("shardId-1"));
        item.insert("leaseCounter".into(), AttributeValue::S("1".into()));
        assert!(from_item(&item).is_err());
        let mut item = to_item(&full_lease("shardId-1"));
        item.remove("endingHashKey");
        assert!(from_item(&item).is_err());
    }

    #[test]
    fn expressions_use_placeholders_and_the_fencing_condition() {
        let observed = full_lease("shardId-1");
        let update = LeaseUpdate::Take {
            owner: "worker-b".into(),
        };
        let mut expr = update_expression(&update, &update.apply(&observed));
        expr.condition_unchanged(&observed);
        assert_eq!(
            expr.sets,
            [
                "#leaseCounter = :v0",
                "#leaseOwner = :v1",
                "#ownerSwitchesSinceCheckpoint = :v2"
            ]
        );
        assert_eq!(expr.removes, ["#checkpointOwner"]);
        assert_eq!(
            expr.conditions,
            ["#leaseCounter = :v3", "#leaseOwner = :v4"]
        );
        assert_eq!(expr.values[":v0"], AttributeValue::N("42".into()));
        assert_eq!(expr.values[":v2"], AttributeValue::N("3".into()));
        assert_eq!(expr.values[":v3"], AttributeValue::N("41".into()));
    }
}
