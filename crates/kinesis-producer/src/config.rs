//! Settings, their defaults (the KPL's where it has one), and environment variables.

use std::time::Duration;

use crate::error::{BuildError, ConfigError};

/// Prefix of every environment variable read by `ProducerBuilder::from_env`.
pub const ENV_PREFIX: &str = "KINESIS_PRODUCER_";

/// The largest buffer bound (a Tokio semaphore's permit limit).
const MAX_BUFFER: usize = tokio::sync::Semaphore::MAX_PERMITS;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub aggregation_enabled: bool,
    pub aggregation_max_count: usize,
    pub aggregation_max_size: usize,
    pub collection_max_count: usize,
    pub collection_max_size: usize,
    pub record_max_buffered_time: Duration,
    pub record_ttl: Duration,
    pub rate_limit: u32,
    pub max_in_flight_requests: usize,
    pub request_timeout: Duration,
    pub max_user_record_size: usize,
    pub max_buffered_bytes: usize,
    pub max_buffered_records: usize,
    pub preserve_order_per_shard: bool,
    /// Reload the shard map this often even when no result says it is stale (zero: never).
    pub shard_map_refresh_interval: Duration,
    /// `ListShards` page size (`None`: the service default). Small pages only in tests.
    pub list_shards_page_size: Option<i32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            aggregation_enabled: true,
            aggregation_max_count: u32::MAX as usize,
            aggregation_max_size: 51_200,
            collection_max_count: 500,
            collection_max_size: 5 * 1024 * 1024,
            record_max_buffered_time: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            rate_limit: 150,
            max_in_flight_requests: 24,
            request_timeout: Duration::from_secs(6),
            max_user_record_size: 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_buffered_records: 100_000,
            preserve_order_per_shard: false,
            shard_map_refresh_interval: Duration::from_secs(60),
            list_shards_page_size: None,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let bad = |s: &str| Err(BuildError::InvalidConfig(s.to_owned()));
        if !(1..=500).contains(&self.collection_max_count) {
            return bad("collection_max_count must be 1..=500 (the PutRecords limit)");
        }
        if self.collection_max_size > 5 * 1024 * 1024 || self.collection_max_size == 0 {
            return bad("collection_max_size must be 1..=5 MiB (the PutRecords limit)");
        }
        if self.max_user_record_size == 0 || self.max_user_record_size > 10 * 1024 * 1024 {
            return bad("max_user_record_size must be 1 B..=10 MiB");
        }
        if self.collection_max_size < self.max_user_record_size + 256 {
            return bad("collection_max_size must hold one maximal user record");
        }
        // A record larger than the whole buffer would wait forever.
        if self.max_buffered_bytes < self.max_user_record_size + crate::producer::RECORD_OVERHEAD {
            return bad(
                "max_buffered_bytes must be at least max_user_record_size + RECORD_OVERHEAD",
            );
        }
        // The buffer bounds are semaphore permits.
        if self.max_buffered_bytes > MAX_BUFFER || self.max_buffered_records > MAX_BUFFER {
            return bad("max_buffered_bytes and max_buffered_records must be at most 2^61 - 1");
        }
        if self.max_buffered_records == 0 || self.max_in_flight_requests == 0 {
            return bad("max_buffered_records and max_in_flight_requests must be at least 1");
        }
        if self.record_ttl.is_zero() || self.request_timeout.is_zero() {
            return bad("record_ttl and request_timeout must be positive");
        }
        if self.rate_limit == 0 {
            return bad("rate_limit must be at least 1 (%)");
        }
        Ok(())
    }

    /// Applies `KINESIS_PRODUCER_*` variables from `vars`. Unknown names are ignored (so
    /// that other settings may share the prefix); bad values are errors. Returns the stream
    /// if `KINESIS_PRODUCER_STREAM` was set.
    pub(crate) fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Option<String>, ConfigError> {
        let mut stream = None;
        for (name, value) in vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let v = value.trim();
            let int = |expected| {
                v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                    name: name.clone(),
                    value: value.clone(),
                    expected,
                })
            };
            let ms = |_: ()| int("milliseconds, a non-negative integer").map(Duration::from_millis);
            let size = |_: ()| int("a non-negative integer").map(|n| n as usize);
            match key {
                "STREAM" => stream = Some(v.to_owned()),
                "AGGREGATION_ENABLED" => {
                    self.aggregation_enabled = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            return Err(ConfigError::Invalid {
                                name,
                                value,
                                expected: "true or false",
                            });
                        }
                    }
                }
                "PRESERVE_ORDER_PER_SHARD" => {
                    self.preserve_order_per_shard = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            return Err(ConfigError::Invalid {
                                name,
                                value,
                                expected: "true or false",
                            });
                        }
                    }
                }
                "AGGREGATION_MAX_COUNT" => self.aggregation_max_count = size(())?,
                "AGGREGATION_MAX_SIZE" => self.aggregation_max_size = size(())?,
                "COLLECTION_MAX_COUNT" => self.collection_max_count = size(())?,
                "COLLECTION_MAX_SIZE" => self.collection_max_size = size(())?,
                "RECORD_MAX_BUFFERED_TIME_MS" => self.record_max_buffered_time = ms(())?,
                "RECORD_TTL_MS" => self.record_ttl = ms(())?,
                "RATE_LIMIT" => {
                    self.rate_limit = u32::try_from(int("a percentage")?).unwrap_or(u32::MAX)
                }
                "MAX_CONNECTIONS" | "MAX_IN_FLIGHT_REQUESTS" => {
                    self.max_in_flight_requests = size(())?
                }
                "REQUEST_TIMEOUT_MS" => self.request_timeout = ms(())?,
                "SHARD_MAP_REFRESH_INTERVAL_MS" => self.shard_map_refresh_interval = ms(())?,
                "MAX_USER_RECORD_SIZE" => self.max_user_record_size = size(())?,
                "MAX_BUFFERED_BYTES" => self.max_buffered_bytes = size(())?,
                "MAX_BUFFERED_RECORDS" => self.max_buffered_records = size(())?,
                _ => {}
            }
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_kpls_and_valid() {
        let c = Config::default();
        assert!(c.aggregation_enabled);
        assert_eq!(c.aggregation_max_size, 51_200);
        assert_eq!(c.collection_max_count, 500);
        assert_eq!(c.collection_max_size, 5_242_880);
        assert_eq!(c.record_max_buffered_time, Duration::from_millis(100));
        assert_eq!(c.record_ttl, Duration::from_secs(30));
        assert_eq!(c.rate_limit, 150);
        assert_eq!(c.request_timeout, Duration::from_secs(6));
        assert_eq!(c.max_user_record_size, 1_048_576);
        assert_eq!(c.shard_map_refresh_interval, Duration::from_secs(60));
        c.validate().unwrap();
    }

    #[test]
    fn env_overrides_and_reports_bad_values() {
        let mut c = Config::default();
        let stream = c
            .apply_env(vars(&[
                ("KINESIS_PRODUCER_STREAM", "orders"),
                ("KINESIS_PRODUCER_RECORD_MAX_BUFFERED_TIME_MS", "250"),
                ("KINESIS_PRODUCER_RECORD_TTL_MS", "60000"),
                ("KINESIS_PRODUCER_AGGREGATION_ENABLED", "false"),
                ("KINESIS_PRODUCER_RATE_LIMIT", "80"),
                ("KINESIS_PRODUCER_MAX_CONNECTIONS", "4"),
                ("KINESIS_PRODUCER_SOMETHING_ELSE", "ignored"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(stream.as_deref(), Some("orders"));
        assert_eq!(c.record_max_buffered_time, Duration::from_millis(250));
        assert_eq!(c.record_ttl, Duration::from_secs(60));
        assert!(!c.aggregation_enabled);
        assert_eq!(c.rate_limit, 80);
        assert_eq!(c.max_in_flight_requests, 4);

        let err = Config::default()
            .apply_env(vars(&[("KINESIS_PRODUCER_RECORD_TTL_MS", "soon")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("KINESIS_PRODUCER_RECORD_TTL_MS"),
            "{err}"
        );
    }

    #[test]
    fn contradictions_are_refused() {
        let c = Config {
            max_buffered_bytes: 1000,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(BuildError::InvalidConfig(_))));
        let c = Config {
            collection_max_count: 501,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_buffered_records: usize::MAX,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
