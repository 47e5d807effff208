//! Test helpers: an EMF validator that follows the specification's rules, and a writer
//! that collects what is written.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// A `Write` whose bytes the test reads back.
#[derive(Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// The lines written since the last call.
    pub fn take_lines(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// CloudWatch units (the specification's `Unit` pattern).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

fn string_1_to(v: &Value, max: usize) -> bool {
    v.as_str()
        .is_some_and(|s| !s.is_empty() && s.chars().count() <= max)
}

fn only_members(
    object: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
    errors: &mut Vec<String>,
) {
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(format!("{what} has an unknown member {key:?}"));
        }
    }
}

fn numbers(v: &Value, what: &str, errors: &mut Vec<String>) -> Option<usize> {
    let Some(items) = v.as_array() else {
        errors.push(format!("{what} is not an array"));
        return None;
    };
    if items.len() > 100 {
        errors.push(format!("{what} has {} values (at most 100)", items.len()));
    }
    if !items.iter().all(Value::is_number) {
        errors.push(format!("{what} holds something other than numbers"));
    }
    Some(items.len())
}

/// Checks one line against the EMF specification: the JSON schema (required members,
/// types, lengths, units), the references (every metric and dimension named in
/// `CloudWatchMetrics` is a root member of the right type) and the limits (100 metrics per
/// directive, 30 dimensions per set, 100 values per metric, 256 KB per event). Metric
/// values may be a number, an array of numbers, or `{"Values": [...], "Counts": [...]}`.
/// Returns the parsed document.
pub fn validate_emf(line: &str) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    if line.len() > 256 * 1024 {
        errors.push(format!("{} bytes (a log event holds 256 KB)", line.len()));
    }
    let doc: Value = match serde_json::from_str(line) {
        Ok(doc) => doc,
        Err(e) => return Err(vec![format!("not JSON: {e}")]),
    };
    let Some(root) = doc.as_object() else {
        return Err(vec!["the root is not an object".into()]);
    };
    let Some(aws) = root.get("_aws").and_then(Value::as_object) else {
        return Err(vec!["no _aws object".into()]);
    };
    only_members(
        aws,
        &["Timestamp", "CloudWatchMetrics", "LogGroupName"],
        "_aws",
        &mut errors,
    );
    if aws.get("Timestamp").is_none_or(|t| t.as_u64().is_none()) {
        errors.push("_aws.Timestamp is not a non-negative integer".into());
    }
    let Some(directives) = aws.get("CloudWatchMetrics").and_then(Value::as_array) else {
        errors.push("_aws.CloudWatchMetrics is not an array".into());
        return Err(errors);
    };
    if directives.is_empty() {
        errors.push("_aws.CloudWatchMetrics is empty".into());
    }
    for (i, directive) in directives.iter().enumerate() {
        let what = format!("CloudWatchMetrics[{i}]");
        let Some(directive) = directive.as_object() else {
            errors.push(format!("{what} is not an object"));
            continue;
        };
        only_members(
            directive,
            &["Namespace", "Dimensions", "Metrics"],
            &what,
            &mut errors,
        );
        if !directive
            .get("Namespace")
            .is_some_and(|n| string_1_to(n, 255))
        {
            errors.push(format!(
                "{what}.Namespace is not a string of 1 to 255 characters"
            ));
        }
        let mut dimension_names = Vec::new();
        match directive.get("Dimensions").and_then(Value::as_array) {
            None => errors.push(format!("{what}.Dimensions is not an array")),
            Some(sets) => {
                if sets.is_empty() {
                    errors.push(format!("{what}.Dimensions is empty (minItems 1)"));
                }
                for set in sets {
                    let Some(set) = set.as_array() else {
                        errors.push(format!("{what}: a dimension set is not an array"));
                        continue;
                    };
                    if set.len() > 30 {
                        errors.push(format!("{what}: a dimension set has {} keys", set.len()));
                    }
                    for name in set {
                        if !string_1_to(name, 255) {
                            errors.push(format!("{what}: dimension reference {name} invalid"));
                            continue;
                        }
                        let name = name.as_str().unwrap();
                        let valid = |v: &String| !v.is_empty() && v.chars().count() <= 1024;
                        match root.get(name) {
                            Some(Value::String(v)) if valid(v) => {}
                            other => errors.push(format!(
                                "{what}: dimension {name:?} is not a root string of 1 to 1024 \
                                 characters: {other:?}"
                            )),
                        }
                        dimension_names.push(name.to_owned());
                    }
                }
            }
        }
        let Some(metrics) = directive.get("Metrics").and_then(Value::as_array) else {
            errors.push(format!("{what}.Metrics is not an array"));
            continue;
        };
        if metrics.len() > 100 {
            errors.push(format!(
                "{what}.Metrics has {} definitions (at most 100)",
                metrics.len()
            ));
        }
        for definition in metrics {
            let Some(definition) = definition.as_object() else {
                errors.push(format!("{what}: a metric definition is not an object"));
                continue;
            };
            only_members(
                definition,
                &["Name", "Unit", "StorageResolution"],
                &what,
                &mut errors,
            );
            let Some(name) = definition.get("Name").filter(|n| string_1_to(n, 255)) else {
                errors.push(format!("{what}: a metric has no valid Name"));
                continue;
            };
            let name = name.as_str().unwrap();
            if let Some(unit) = definition.get("Unit")
                && !unit.as_str().is_some_and(|u| UNITS.contains(&u))
            {
                errors.push(format!("{what}: metric {name:?} has unit {unit}"));
            }
            if let Some(r) = definition.get("StorageResolution")
                && !(r == 1 || r == 60)
            {
                errors.push(format!(
                    "{what}: metric {name:?} has storage resolution {r}"
                ));
            }
            if dimension_names.iter().any(|d| d == name) {
                errors.push(format!("{what}: {name:?} is both a dimension and a metric"));
            }
            let target = format!("metric {name:?}");
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(v @ Value::Array(_)) => {
                    numbers(v, &target, &mut errors);
                }
                Some(Value::Object(h)) => {
                    only_members(
                        h,
                        &["Values", "Counts", "Max", "Min", "Count", "Sum"],
                        &target,
                        &mut errors,
                    );
                    let values = h
                        .get("Values")
                        .and_then(|v| numbers(v, &target, &mut errors));
                    let counts = h
                        .get("Counts")
                        .and_then(|c| numbers(c, &target, &mut errors));
                    if values.is_none() || values != counts {
                        errors.push(format!("{target}: Values and Counts differ in length"));
                    }
                    if h.get("Counts")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.iter().any(|n| n.as_f64().is_none_or(|n| n < 0.0)))
                    {
                        errors.push(format!("{target}: a negative count"));
                    }
                }
                other => errors.push(format!("{target} is not a root number: {other:?}")),
            }
        }
    }
    if errors.is_empty() {
        Ok(doc)
    } else {
        Err(errors)
    }
}
