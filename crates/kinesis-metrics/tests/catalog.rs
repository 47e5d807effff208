//! The catalog, the code and docs/OPERATIONS.md name the same metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kinesis_metrics::MetricKind;
use kinesis_metrics::catalog::{catalog, find};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The operations whose failures the consumer's reader counts as `{operation}.Throttled`
/// and `{operation}.Errors` (its `back_off` calls).
const READER_OPERATIONS: &[&str] = &["GetRecords", "GetShardIterator", "ListShards"];

/// Every `counter!` / `gauge!` / `histogram!` call in the producer and the consumer:
/// name → (kind, label names).
fn emitted() -> BTreeMap<String, (MetricKind, BTreeSet<String>)> {
    let mut files = Vec::new();
    for krate in ["kinesis-producer", "kinesis-consumer"] {
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
    }
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (macro_name, kind) in [
            ("counter!(", MetricKind::Counter),
            ("gauge!(", MetricKind::Gauge),
            ("histogram!(", MetricKind::Histogram),
        ] {
            for (at, _) in code.match_indices(macro_name) {
                let args = &code[at + macro_name.len()..];
                // The macro's arguments: up to the matching parenthesis.
                let mut depth = 1;
                let end = args
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map(|(i, _)| i)
                    .unwrap();
                let args = &args[..end];
                let labels: BTreeSet<String> = args
                    .split("=>")
                    .filter_map(|before| before.rsplit('"').nth(1).map(str::to_owned))
                    .take(args.matches("=>").count())
                    .collect();
                let names: Vec<String> = if let Some(rest) = args.trim().strip_prefix('"') {
                    vec![rest.split('"').next().unwrap().to_owned()]
                } else if let Some(rest) = args.trim().strip_prefix("format!(\"{operation}.") {
                    let suffix = rest.split('"').next().unwrap();
                    READER_OPERATIONS
                        .iter()
                        .map(|op| format!("{op}.{suffix}"))
                        .collect()
                } else if let Some(var) = args
                    .split(',')
                    .next()
                    .map(str::trim)
                    .filter(|v| v.chars().all(|c| c.is_alphanumeric() || c == '_'))
                {
                    // A name chosen at run time: every string in its `let` statement.
                    let statement = code
                        .split(&format!("let {var} = "))
                        .nth(1)
                        .and_then(|rest| rest.split(';').next())
                        .unwrap_or_else(|| panic!("{}: no `let {var}`", file.display()));
                    statement
                        .split('"')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_owned)
                        .collect()
                } else {
                    panic!(
                        "{}: a metric name the test cannot read: {args}",
                        file.display()
                    );
                };
                for name in names {
                    let previous = out.insert(name.clone(), (kind, labels.clone()));
                    if let Some(previous) = previous {
                        assert_eq!(previous, (kind, labels.clone()), "{name} emitted two ways");
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_metric_in_the_code_is_in_the_catalog_with_its_kind_and_labels() {
    let emitted = emitted();
    assert!(emitted.len() >= 25, "the scan found {emitted:?}");
    for (name, (kind, labels)) in &emitted {
        let info = find(name).unwrap_or_else(|| panic!("{name} is emitted but not in the catalog"));
        assert_eq!(info.kind, *kind, "{name}");
        let expected: BTreeSet<String> = info.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(&expected, labels, "{name}'s labels");
    }
    for info in catalog() {
        assert!(
            emitted.contains_key(info.name),
            "{} is in the catalog but not emitted",
            info.name
        );
    }
}

#[test]
fn every_catalog_metric_has_its_row_in_the_operations_guide() {
    let guide = std::fs::read_to_string(root().join("docs/OPERATIONS.md")).unwrap();
    for info in catalog() {
        let row = guide
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", info.name)))
            .unwrap_or_else(|| panic!("no row for {} in docs/OPERATIONS.md", info.name));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let kind = match info.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            _ => "histogram",
        };
        assert_eq!(cells[2], kind, "{row}");
        assert_eq!(cells[3], format!("{:?}", info.unit), "{row}");
        let labels: Vec<String> = info.labels.iter().map(|l| format!("`{l}`")).collect();
        let labels = if labels.is_empty() {
            "—".to_owned()
        } else {
            labels.join(", ")
        };
        assert_eq!(cells[4], labels, "{row}");
        assert_eq!(cells[5], info.level.as_str(), "{row}");
    }
}
