//! Aggregation format: the criterion bench of `kinesis-aggregation` (encode, decode, and the
//! MD5 floor over the same bytes), and the same workload in the Python and npm
//! `aws-kinesis-agg` packages.
//!
//! Criterion's figures are read from its JSON files (`<CRITERION_HOME>/<group>/<bench>/new/`:
//! `benchmark.json` for the group, name and throughput, `estimates.json` for the median and
//! its confidence interval), in a directory of this harness emptied before each run, so that
//! nothing stale is read. The peers' scripts print `BENCH_JSON {"versions": {...},
//! "results": {"<key pattern>": {"encode_records_per_s", "decode_records_per_s",
//! "aggregates"}}}`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::exec::{Cmd, capture, run_inherit, run_stdout};
use super::report::{Table, bench_json, ns, num, opt, si, times};
use super::{Ctx, Section, Stamp, Which};

/// The key patterns in the order the bench defines them.
const GROUPS: [&str; 2] = ["aggregation/distinct_keys", "aggregation/16_keys"];
const FUNCTIONS: [&str; 3] = ["md5_floor", "encode", "decode"];
const FLOOR: &str = "md5_floor";

pub struct Prep {
    /// The criterion bench's executable.
    criterion: PathBuf,
    /// `node_modules` of the npm peer; `None` when node is not installed.
    node_path: Option<PathBuf>,
}

/// `cargo bench` of the criterion bench. `--workspace` (the bench name selects the target)
/// builds the dependencies with the workspace's features, as every other build of the
/// harness: see `super::build`.
pub fn bench_args(ctx: &Ctx) -> Vec<String> {
    let mut a: Vec<String> = ["bench", "--workspace", "--bench", "aggregation"]
        .map(String::from)
        .to_vec();
    if !ctx.release {
        // Quick runs in CI: no optimised build of criterion and its dependencies.
        a.extend(["--profile".into(), "dev".into()]);
    }
    a
}

/// Builds the criterion bench; returns its executable (run directly when measuring, so that
/// no wait for cargo's lock on a shared target directory is timed).
pub fn build(ctx: &Ctx) -> Result<PathBuf, String> {
    let cmd = ctx
        .cargo(bench_args(ctx))
        .args(["--no-run", "--message-format=json-render-diagnostics"]);
    let out = run_stdout(&cmd, &ctx.root)?;
    executable(&out).ok_or_else(|| "cargo named no executable for the aggregation bench".into())
}

/// The executable of the `aggregation` bench in cargo's JSON messages.
fn executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "aggregation"
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bench"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// The peers (the bench is built by [`build`]).
pub fn prepare(ctx: &Ctx, criterion: PathBuf) -> Result<Prep, String> {
    run_inherit(
        &Cmd::new("bash").args([ctx.path("scripts/aggregation/setup-venvs.sh"), "agg".into()]),
        &ctx.root,
    )?;
    let node_path = if capture(&Cmd::new("node").arg("--version"), &ctx.root).is_some() {
        Some(install_npm(ctx)?)
    } else {
        eprintln!("bench: node not found: the npm peer is skipped");
        None
    };
    Ok(Prep {
        criterion,
        node_path,
    })
}

/// `npm ci` of scripts/aggregation/node/ into .cache/node/agg/, unless the same lock file is
/// already installed there.
fn install_npm(ctx: &Ctx) -> Result<PathBuf, String> {
    let src = ctx.root.join("scripts/aggregation/node");
    let dir = ctx.root.join(".cache/node/agg");
    let lock = std::fs::read(src.join("package-lock.json")).map_err(|e| e.to_string())?;
    let installed = std::fs::read(dir.join("package-lock.json")).ok();
    let modules = dir.join("node_modules");
    if installed.as_ref() != Some(&lock) || !modules.join("aws-kinesis-agg").exists() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
        let npm = Cmd::new("npm").args([
            "ci",
            "--prefix",
            &dir.display().to_string(),
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ]);
        run_inherit(&npm, &ctx.root)?;
    }
    Ok(modules)
}

pub fn measure(ctx: &Ctx, prep: Prep) -> Section {
    let mut stamp = Stamp::start(ctx);
    let mut failures = Vec::new();

    let home = ctx.paths.target_dir.join("xtask-bench/criterion");
    let _ = std::fs::remove_dir_all(&home);
    // Quick: criterion's analysis (100 000 bootstrap resamples) is slow unoptimised.
    let options: &[&str] = if ctx.quick {
        &[
            "--warm-up-time",
            "0.1",
            "--measurement-time",
            "0.3",
            "--sample-size",
            "10",
            "--nresamples",
            "1000",
        ]
    } else {
        &[]
    };
    let home_env = ("CRITERION_HOME", home.display().to_string());
    // What `cargo bench` runs, without cargo (see `build`); shown as the cargo command.
    let cmd = Cmd::new(prep.criterion.display().to_string())
        .arg("--bench")
        .args(options.iter().copied())
        .env(home_env.0, home_env.1.clone());
    let mut shown = ctx.cargo(bench_args(ctx));
    if !options.is_empty() {
        shown = shown.arg("--").args(options.iter().copied());
    }
    let shown = shown.env(home_env.0, home_env.1);
    let estimates = match ctx.run(&cmd, "aggregation-criterion", 900) {
        Ok(run) => {
            stamp.ran(ctx, &shown, Some(&run));
            failures.extend(run.failure("criterion"));
            read_criterion(&home).unwrap_or_else(|e| {
                failures.push(e);
                Vec::new()
            })
        }
        Err(e) => {
            failures.push(e);
            Vec::new()
        }
    };

    let mut peers = Vec::new();
    let python = Cmd::new(ctx.path(".cache/py/agg/bin/python"))
        .arg(ctx.path("scripts/aggregation/bench_python.py"));
    peers.push((
        "Python",
        peer(ctx, &mut stamp, &mut failures, &python, "python"),
    ));
    if let Some(node_path) = &prep.node_path {
        let node = Cmd::new("node")
            .arg(ctx.path("scripts/aggregation/node/bench_node.js"))
            .env("NODE_PATH", node_path.display().to_string());
        peers.push(("npm", peer(ctx, &mut stamp, &mut failures, &node, "npm")));
    }

    let body = format!(
        "### Aggregation format: kinesis-aggregation vs the MD5 floor, Python and npm\n\n{}\n{}",
        stamp.markdown(ctx, &versions(&peers)),
        render(&estimates, &peers)
    );
    if estimates.is_empty() && failures.is_empty() {
        failures.push("criterion wrote no estimates".into());
    }
    Section {
        which: Which::Aggregation,
        body,
        failures,
    }
}

/// Runs a peer script; its `BENCH_JSON` object, or `Null` after a failure (recorded).
fn peer(ctx: &Ctx, stamp: &mut Stamp, failures: &mut Vec<String>, cmd: &Cmd, label: &str) -> Value {
    let label = format!("aggregation-{label}");
    match ctx.run(cmd, &label, 300) {
        Ok(run) => {
            stamp.ran(ctx, cmd, Some(&run));
            failures.extend(run.failure(&label));
            match bench_json(&run.stdout) {
                Ok(Some(o)) => Value::Object(o),
                Ok(None) => {
                    failures.push(format!("{label}: no BENCH_JSON line"));
                    Value::Null
                }
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    Value::Null
                }
            }
        }
        Err(e) => {
            failures.push(e);
            Value::Null
        }
    }
}

fn versions(peers: &[(&str, Value)]) -> String {
    let list: Vec<String> = peers
        .iter()
        .filter_map(|(name, v)| {
            let vs = v.get("versions")?.as_object()?;
            let all: Vec<String> = vs
                .iter()
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                .collect();
            Some(format!("{name}: {}", all.join(", ")))
        })
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!("Peers: {}.\n", list.join("; "))
    }
}

/// One criterion benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub group: String,
    pub function: String,
    pub median_ns: f64,
    pub low_ns: f64,
    pub high_ns: f64,
    /// Per iteration (one aggregate): user records and aggregate bytes.
    pub elements: Option<f64>,
    pub bytes: Option<f64>,
}

/// Every `<group>/<bench>/new/` result under `home`, in the bench's order.
pub fn read_criterion(home: &Path) -> Result<Vec<Estimate>, String> {
    let mut files = Vec::new();
    find(home, "benchmark.json", &mut files);
    let mut out = Vec::new();
    for f in files {
        let dir = f.parent().expect("a file has a parent");
        if dir.file_name().and_then(|n| n.to_str()) != Some("new") {
            continue;
        }
        let read = |p: PathBuf| -> Result<Value, String> {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        };
        let b = read(f.clone())?;
        let e = read(dir.join("estimates.json"))?;
        let tp = b.get("throughput").cloned().unwrap_or(Value::Null);
        let (elements, bytes) = if let Some(eb) = tp.get("ElementsAndBytes") {
            (num(eb, "elements"), num(eb, "bytes"))
        } else {
            (num(&tp, "Elements"), num(&tp, "Bytes"))
        };
        let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
        out.push(Estimate {
            group: text("group_id"),
            function: text("function_id"),
            median_ns: num(&e, "median.point_estimate").ok_or("estimates.json: no median")?,
            low_ns: num(&e, "median.confidence_interval.lower_bound").unwrap_or(f64::NAN),
            high_ns: num(&e, "median.confidence_interval.upper_bound").unwrap_or(f64::NAN),
            elements,
            bytes,
        });
    }
    let rank = |list: &[&str], x: &str| list.iter().position(|g| *g == x).unwrap_or(list.len());
    out.sort_by(|a, b| {
        (
            rank(&GROUPS, &a.group),
            &a.group,
            rank(&FUNCTIONS, &a.function),
        )
            .cmp(&(
                rank(&GROUPS, &b.group),
                &b.group,
                rank(&FUNCTIONS, &b.function),
            ))
    });
    Ok(out)
}

fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out);
        } else if p.file_name().and_then(|n| n.to_str()) == Some(name) {
            out.push(p);
        }
    }
}

fn pattern(group: &str) -> &str {
    group.rsplit('/').next().unwrap_or(group)
}

pub fn render(estimates: &[Estimate], peers: &[(&str, Value)]) -> String {
    let mut out = String::new();
    let mut t = Table::new(&[
        "key pattern",
        "benchmark",
        "time per aggregate: median [95 % CI]",
        "user records/s",
        "MiB/s",
        "speed vs MD5 floor",
    ]);
    let floor = |group: &str| {
        estimates
            .iter()
            .find(|e| e.group == group && e.function == FLOOR)
    };
    let mut last_group = "";
    for e in estimates {
        let first = e.group != last_group;
        last_group = &e.group;
        let per_s = 1e9 / e.median_ns;
        t.row(vec![
            if first {
                format!(
                    "{} ({} records, {} B)",
                    pattern(&e.group),
                    e.elements.map_or("?".into(), |x| format!("{x:.0}")),
                    e.bytes.map_or("?".into(), |x| format!("{x:.0}")),
                )
            } else {
                String::new()
            },
            e.function.clone(),
            format!("{} [{}–{}]", ns(e.median_ns), ns(e.low_ns), ns(e.high_ns)),
            e.elements.map_or("—".into(), |n| si(n * per_s)),
            e.bytes
                .map_or("—".into(), |b| format!("{:.0}", b * per_s / 1048576.0)),
            match floor(&e.group) {
                Some(_) if e.function == FLOOR => "100 % (anchor)".into(),
                Some(f) => format!("**{:.0} %**", 100.0 * f.median_ns / e.median_ns),
                None => "—".into(),
            },
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render());
        out.push('\n');
    }

    // Rust against each peer: user records per second, same workload.
    let mut header = vec!["key pattern", "direction", "kinesis-aggregation"];
    let names: Vec<String> = peers
        .iter()
        .map(|(n, _)| format!("{n} aws-kinesis-agg"))
        .collect();
    let ratios: Vec<String> = peers
        .iter()
        .map(|(n, _)| format!("kinesis-aggregation ÷ {n}"))
        .collect();
    header.extend(names.iter().map(String::as_str));
    header.extend(ratios.iter().map(String::as_str));
    let mut p = Table::new(&header);
    let mut groups: Vec<&str> = Vec::new();
    for e in estimates {
        if !groups.contains(&e.group.as_str()) {
            groups.push(&e.group);
        }
    }
    for &group in &groups {
        for direction in ["encode", "decode"] {
            let Some(ours) = estimates
                .iter()
                .find(|e| e.group == group && e.function == direction)
                .and_then(|e| Some(e.elements? * 1e9 / e.median_ns))
            else {
                continue;
            };
            let key = format!("results.{}.{direction}_records_per_s", pattern(group));
            let theirs: Vec<Option<f64>> = peers.iter().map(|(_, v)| num(v, &key)).collect();
            let mut row = vec![pattern(group).to_owned(), direction.into(), si(ours)];
            row.extend(theirs.iter().map(|t| t.map_or("—".into(), si)));
            row.extend(
                theirs
                    .iter()
                    .map(|t| t.map_or("—".into(), |t| format!("**{}**", times(ours / t)))),
            );
            p.row(row);
        }
    }
    if !peers.is_empty() && !p.is_empty() {
        // The peers time whole runs of N records, best of M passes.
        let records = peers.iter().find_map(|(_, v)| num(v, "records"));
        let repeats = peers.iter().find_map(|(_, v)| num(v, "repeats"));
        out.push_str(&format!(
            "User records per second on the same workload (peers: {} records, best of {} passes):\n\n",
            opt(records, |x| format!("{x:.0}")),
            opt(repeats, |x| format!("{x:.0}"))
        ));
        out.push_str(&p.render());
        // What kinesis-aggregation cuts from as many records: full aggregates of the bench's size.
        let ours: Vec<String> = groups
            .iter()
            .filter_map(|g| {
                let per = estimates.iter().find(|e| e.group == *g)?.elements?;
                Some(format!("{} {:.0}", pattern(g), (records? / per).ceil()))
            })
            .collect();
        let counts: Vec<String> = peers
            .iter()
            .filter_map(|(n, v)| {
                let r = v.get("results")?.as_object()?;
                let mut r: Vec<_> = r.iter().collect();
                r.sort_by_key(|(k, _)| GROUPS.iter().position(|g| pattern(g) == k.as_str()));
                let c: Vec<String> = r
                    .into_iter()
                    .map(|(k, x)| {
                        format!(
                            "{k} {}",
                            num(x, "aggregates").map_or("?".into(), |a| format!("{a:.0}"))
                        )
                    })
                    .collect();
                Some(format!("{n} {}", c.join(", ")))
            })
            .collect();
        if !counts.is_empty() {
            out.push_str(&format!(
                "\nAggregates cut from those records: kinesis-aggregation {}; {}.\n",
                ours.join(", "),
                counts.join("; ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, group: &str, function: &str, median: f64) {
        let d = dir.join(group.replace('/', "_")).join(function).join("new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("benchmark.json"),
            format!(
                r#"{{"group_id":"{group}","function_id":"{function}","value_str":null,
                "throughput":{{"ElementsAndBytes":{{"elements":410,"bytes":51142}}}},
                "full_id":"{group}/{function}","directory_name":"x","title":"x"}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("estimates.json"),
            format!(
                r#"{{"median":{{"confidence_interval":{{"confidence_level":0.95,
                "lower_bound":{},"upper_bound":{}}},"point_estimate":{median},"standard_error":1.0}}}}"#,
                median - 1000.0,
                median + 1000.0
            ),
        )
        .unwrap();
    }

    #[test]
    fn the_bench_executable_is_found_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"aggregation","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"aggregation","kind":["bench"]},"executable":"/t/release/deps/aggregation-1a2b"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(messages),
            Some(PathBuf::from("/t/release/deps/aggregation-1a2b"))
        );
        assert_eq!(executable("not json\n"), None);
    }

    #[test]
    fn criterion_results_are_read_in_the_bench_order_and_compared() {
        let dir = std::env::temp_dir().join(format!("xtask-crit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, "aggregation/16_keys", "encode", 100_000.0);
        write(&dir, "aggregation/distinct_keys", "decode", 130_000.0);
        write(&dir, "aggregation/distinct_keys", "encode", 102_500.0);
        write(&dir, "aggregation/distinct_keys", "md5_floor", 82_000.0);
        // A previous baseline: ignored.
        std::fs::create_dir_all(dir.join("aggregation_16_keys/encode/base")).unwrap();
        let e = read_criterion(&dir).unwrap();
        let names: Vec<String> = e
            .iter()
            .map(|e| format!("{}/{}", pattern(&e.group), e.function))
            .collect();
        assert_eq!(
            names,
            [
                "distinct_keys/md5_floor",
                "distinct_keys/encode",
                "distinct_keys/decode",
                "16_keys/encode"
            ]
        );
        assert_eq!(e[1].elements, Some(410.0));
        assert_eq!(e[1].low_ns, 101_500.0);

        let python = serde_json::json!({"versions": {"aws-kinesis-agg": "1.2.3"},
            "records": 20000, "repeats": 5,
            "results": {"distinct_keys": {"aggregates": 49, "encode_records_per_s": 200000.0,
                                          "decode_records_per_s": 500000.0}}});
        let md = render(&e, &[("Python", python)]);
        // 410 records in 102.5 µs = 4.0 M/s; 80 % of MD5's speed; 20× Python.
        assert!(md.contains("| distinct_keys (410 records, 51142 B) | md5_floor | 82.0 µs [81.0 µs–83.0 µs] | 5.00 M | 595 | 100 % (anchor) |"), "{md}");
        assert!(
            md.contains("| encode | 102 µs [102 µs–104 µs] | 4.00 M | 476 | **80 %** |"),
            "{md}"
        );
        assert!(
            md.contains("| distinct_keys | encode | 4.00 M | 200 k | **20.0×** |"),
            "{md}"
        );
        assert!(md.contains("| 16_keys | encode | 4.10 M | — | — |"), "{md}");
        assert!(
            md.contains("(peers: 20000 records, best of 5 passes)"),
            "{md}"
        );
        assert!(
            md.contains(
                "kinesis-aggregation distinct_keys 49, 16_keys 49; Python distinct_keys 49."
            ),
            "{md}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
