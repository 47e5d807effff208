//! Consumer: `bench_consumer` modes, a few per process, against a `local-aws` process.
//!
//! Contract with `crates/kinesis-consumer/examples/bench_consumer.rs`: a process prints, as
//! its last stdout line, `BENCH_JSON {...}` with one key per mode it ran:
//!
//! - `"throughput"`: `{agg_records_per_cpu_s, plain_records_per_cpu_s, agg_records_per_s,
//!   plain_records_per_s}` (medians over the rounds);
//! - `"latency"`: `[{setting, idle_ms, samples, p50_ms, p99_ms, max_ms}]`, one per retrieval
//!   setting (`idle_ms` absent for fan-out);
//! - `"failover"`: `{failover_time_s, trials_s: [..]}`; `"handoff"`: `{trials_s: [..],
//!   shutdown_ms_max}`; `"cold-start"`: `{first_record_ms: [..], all_shards_ms: [..]}`;
//! - `"dynamo-ops"`: `[{lease_taker_s, shards, workers, scans_per_shard_min,
//!   renewals_per_shard_min, checkpoints_per_shard_min, total_per_shard_min}]`;
//! - `"memory"` (a mode to come: overload with bounded buffers): `{buffer_bound_bytes,
//!   rss_before_bytes, peak_rss_bytes}`.
//!
//! Missing keys show as `—`; a mode without its key, as "no machine-readable output".

use serde_json::{Map, Value};

use super::exec::{Cmd, capture};
use super::report::{Table, bench_json, median, mib, num, nums, opt, si, sig3, times};
use super::{Ctx, Section, Stamp, Which};

/// (label, modes and options) of the full run: ~4 minutes in all (the examples' defaults
/// take ~10).
const FULL: &[(&str, &[&str])] = &[
    ("throughput", &["throughput", "--trials", "3"]),
    ("latency", &["latency", "--seconds", "30"]),
    (
        "lease-movement",
        &["failover", "handoff", "cold-start", "--trials", "3"],
    ),
    ("dynamo-ops", &["dynamo-ops", "--seconds", "30"]),
];

pub struct Prep {
    /// The modes `bench_consumer --help` lists.
    modes: Vec<String>,
}

fn binary(ctx: &Ctx) -> String {
    ctx.bin_dir()
        .join("examples/bench_consumer")
        .display()
        .to_string()
}

/// The modes the example offers (it and `local-aws` are built by `super::build`).
pub fn prepare(ctx: &Ctx) -> Result<Prep, String> {
    let help = capture(&Cmd::new(binary(ctx)).arg("--help"), &ctx.root).unwrap_or_default();
    Ok(Prep {
        modes: modes(&help),
    })
}

/// The words of the `Modes:` line of the usage text.
fn modes(help: &str) -> Vec<String> {
    help.lines()
        .find_map(|l| l.strip_prefix("Modes:"))
        .map(|m| {
            m.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub fn measure(ctx: &Ctx, prep: Prep) -> Section {
    let mut stamp = Stamp::start(ctx);
    let mut failures = Vec::new();
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    if ctx.quick {
        runs.push(("all".into(), vec!["--quick".into()]));
    } else {
        runs.extend(
            FULL.iter()
                .map(|(l, a)| (l.to_string(), a.iter().map(|s| s.to_string()).collect())),
        );
        if prep.modes.iter().any(|m| m == "memory") {
            runs.push(("memory".into(), vec!["memory".into()]));
        }
    }
    let local_aws = ctx.bin_dir().join("local-aws").display().to_string();
    let mut merged = Map::new();
    let mut silent = Vec::new();
    for (label, args) in &runs {
        let cmd = Cmd::new(binary(ctx))
            .args(args.iter().cloned())
            .args(["--local-aws", &local_aws]);
        let label = format!("consumer-{label}");
        match ctx.run(&cmd, &label, 600) {
            Ok(run) => {
                stamp.ran(ctx, &cmd, Some(&run));
                failures.extend(run.failure(&label));
                match bench_json(&run.stdout) {
                    Ok(Some(o)) => merged.extend(o),
                    Ok(None) => silent.push(format!("`{}`", args.join(" "))),
                    Err(e) => failures.push(format!("{label}: {e}")),
                }
            }
            Err(e) => failures.push(e),
        }
    }
    let notes = if silent.is_empty() {
        String::new()
    } else {
        format!(
            "No machine-readable output (no `BENCH_JSON` line) from {}: their figures are in the logs only.\n",
            silent.join(", ")
        )
    };
    let body = format!(
        "### Consumer: throughput, latency, lease movement, DynamoDB requests, memory\n\n{}\n{}",
        stamp.markdown(ctx, &notes),
        render(&Value::Object(merged))
    );
    Section {
        which: Which::Consumer,
        body,
        failures,
    }
}

fn list(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

fn ms(x: f64) -> String {
    format!("{} ms", sig3(x))
}

fn s(x: f64) -> String {
    format!("{} s", sig3(x))
}

pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let mut add = |title: &str, t: Table, after: String| {
        if !t.is_empty() {
            out.push_str(&format!("{title}\n\n{}", t.render()));
            if !after.is_empty() {
                out.push_str(&format!("\n{after}\n"));
            }
            out.push('\n');
        }
    };

    if let Some(tp) = v.get("throughput") {
        let mut t = Table::new(&[
            "input",
            "user records per CPU-second",
            "user records/s (wall)",
        ]);
        let (agg, plain) = (
            num(tp, "agg_records_per_cpu_s"),
            num(tp, "plain_records_per_cpu_s"),
        );
        t.row(vec![
            "KPL aggregates".into(),
            opt(agg, |x| format!("**{}**", si(x))),
            opt(num(tp, "agg_records_per_s"), si),
        ]);
        t.row(vec![
            "plain records".into(),
            opt(plain, |x| format!("**{}**", si(x))),
            opt(num(tp, "plain_records_per_s"), si),
        ]);
        let ratio = agg.zip(plain).map_or(String::new(), |(a, p)| {
            format!(
                "Per CPU-second, aggregates deliver **{}** the user records of plain records.",
                times(a / p)
            )
        });
        add(
            "Deaggregate and dispatch (one worker, no-op processor):",
            t,
            ratio,
        );
    }

    let latency = list(v.get("latency"));
    let mut t = Table::new(&[
        "retrieval",
        "samples",
        "p50",
        "p99",
        "max",
        "p99 ÷ polling interval",
    ]);
    for l in &latency {
        let p99 = num(l, "p99_ms");
        t.row(vec![
            l.get("setting")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .into(),
            opt(num(l, "samples"), |x| format!("{x:.0}")),
            opt(num(l, "p50_ms"), ms),
            opt(p99, ms),
            opt(num(l, "max_ms"), ms),
            p99.zip(num(l, "idle_ms"))
                .map_or("—".into(), |(p, i)| times(p / i)),
        ]);
    }
    add(
        "Put → process latency (the settings side by side, same records):",
        t,
        String::new(),
    );

    let mut t = Table::new(&["what", "trials", "median", "vs the configured time"]);
    if let Some(f) = v.get("failover") {
        let trials = nums(f, "trials_s");
        let m = median(&trials);
        let ft = num(f, "failover_time_s");
        t.row(vec![
            format!("failover after a kill (failover time {})", opt(ft, s)),
            trials
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            opt(m, |x| format!("**{}**", s(x))),
            m.zip(ft).map_or("—".into(), |(m, ft)| {
                format!(
                    "{} (target ≤ failover + 2 s: {})",
                    times(m / ft),
                    if m <= ft + 2.0 { "met" } else { "**not met**" }
                )
            }),
        ]);
    }
    if let Some(h) = v.get("handoff") {
        let trials = nums(h, "trials_s");
        let m = median(&trials);
        t.row(vec![
            format!(
                "handoff after `shutdown()` (which took ≤ {})",
                opt(num(h, "shutdown_ms_max"), ms)
            ),
            trials
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            opt(m, |x| format!("**{}**", s(x))),
            m.map_or("—".into(), |m| {
                format!(
                    "target ≤ 2 s: {}",
                    if m <= 2.0 { "met" } else { "**not met**" }
                )
            }),
        ]);
    }
    if let Some(c) = v.get("cold-start") {
        for (what, key) in [
            ("cold start to the first record", "first_record_ms"),
            ("cold start to every shard", "all_shards_ms"),
        ] {
            let trials = nums(c, key);
            t.row(vec![
                what.into(),
                trials
                    .iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " ms",
                opt(median(&trials), |x| format!("**{}**", ms(x))),
                "target ≤ 3 s".into(),
            ]);
        }
    }
    add("Lease movement (seconds unless said):", t, String::new());

    let ops = list(v.get("dynamo-ops"));
    let anchor = ops
        .iter()
        .max_by(|a, b| {
            num(a, "lease_taker_s")
                .unwrap_or(0.0)
                .total_cmp(&num(b, "lease_taker_s").unwrap_or(0.0))
        })
        .and_then(|a| Some((num(a, "lease_taker_s")?, num(a, "total_per_shard_min")?)));
    let mut t = Table::new(&[
        "lease taker",
        "shards × workers",
        "scans",
        "renewals + takes",
        "checkpoints",
        "total per shard-minute",
        "vs the slowest taker",
    ]);
    for o in &ops {
        let total = num(o, "total_per_shard_min");
        t.row(vec![
            opt(num(o, "lease_taker_s"), s),
            format!(
                "{} × {}",
                opt(num(o, "shards"), |x| format!("{x:.0}")),
                opt(num(o, "workers"), |x| format!("{x:.0}"))
            ),
            opt(num(o, "scans_per_shard_min"), sig3),
            opt(num(o, "renewals_per_shard_min"), sig3),
            opt(num(o, "checkpoints_per_shard_min"), sig3),
            opt(total, |x| format!("**{}**", sig3(x))),
            match (total, anchor) {
                (Some(t), Some((_, a))) if a > 0.0 => times(t / a),
                _ => "—".into(),
            },
        ]);
    }
    add(
        "DynamoDB requests per shard-minute in steady state (the KCL 2.x defaults come to ≈ 60; its taker runs every 20 s):",
        t,
        String::new(),
    );

    if let Some(m) = v.get("memory") {
        let (before, peak, bound) = (
            num(m, "rss_before_bytes"),
            num(m, "peak_rss_bytes"),
            num(m, "buffer_bound_bytes"),
        );
        let growth = before.zip(peak).map(|(b, p)| p - b);
        let mut t = Table::new(&[
            "configured bound",
            "RSS before",
            "peak RSS",
            "growth",
            "growth ÷ bound",
        ]);
        t.row(vec![
            opt(bound, mib),
            opt(before, mib),
            opt(peak, mib),
            opt(growth, mib),
            growth
                .zip(bound)
                .map_or("—".into(), |(g, b)| format!("**{}**", times(g / b))),
        ]);
        add("Memory under overload:", t, String::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_mode_renders_with_its_anchor() {
        let v = json!({
            "throughput": {"agg_records_per_cpu_s": 1.27e6, "plain_records_per_cpu_s": 7.3e5,
                           "agg_records_per_s": 1.56e6},
            "latency": [{"setting": "polling 1500 ms", "idle_ms": 1500, "samples": 2000,
                         "p50_ms": 753.0, "p99_ms": 1489.0, "max_ms": 1504.0},
                        {"setting": "fan-out", "samples": 2000, "p50_ms": 12.0, "p99_ms": 30.0}],
            "failover": {"failover_time_s": 10, "trials_s": [8.66, 9.43, 10.09]},
            "handoff": {"trials_s": [0.46, 0.15, 0.86], "shutdown_ms_max": 1.1},
            "cold-start": {"first_record_ms": [14, 12, 10], "all_shards_ms": [15, 17, 12]},
            "dynamo-ops": [{"lease_taker_s": 1, "shards": 4, "workers": 2, "scans_per_shard_min": 30.5,
                            "renewals_per_shard_min": 19.0, "checkpoints_per_shard_min": 40.0,
                            "total_per_shard_min": 89.5},
                           {"lease_taker_s": 20, "shards": 4, "workers": 2, "total_per_shard_min": 61.0}],
            "memory": {"buffer_bound_bytes": 8388608, "rss_before_bytes": 10485760, "peak_rss_bytes": 27262976}
        });
        let md = render(&v);
        assert!(
            md.contains("| KPL aggregates | **1.27 M** | 1.56 M |"),
            "{md}"
        );
        assert!(md.contains("| plain records | **730 k** | — |"), "{md}");
        assert!(md.contains("aggregates deliver **1.74×**"), "{md}");
        assert!(
            md.contains("| polling 1500 ms | 2000 | 753 ms | 1489 ms | 1504 ms | 0.993× |"),
            "{md}"
        );
        assert!(
            md.contains("| fan-out | 2000 | 12.0 ms | 30.0 ms | — | — |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 8.66, 9.43, 10.09 | **9.43 s** | 0.943× (target ≤ failover + 2 s: met) |"
            ),
            "{md}"
        );
        assert!(md.contains("| handoff after `shutdown()` (which took ≤ 1.10 ms) | 0.46, 0.15, 0.86 | **0.460 s** | target ≤ 2 s: met |"), "{md}");
        assert!(
            md.contains("| cold start to the first record | 14, 12, 10 ms | **12.0 ms** |"),
            "{md}"
        );
        assert!(
            md.contains("| 1.00 s | 4 × 2 | 30.5 | 19.0 | 40.0 | **89.5** | 1.47× |"),
            "{md}"
        );
        assert!(
            md.contains("| 20.0 s | 4 × 2 | — | — | — | **61.0** | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| 8.00 MiB | 10.0 MiB | 26.0 MiB | 16.0 MiB | **2.00×** |"),
            "{md}"
        );
    }

    #[test]
    fn modes_are_read_from_the_usage() {
        let usage = "Usage: bench_consumer [MODE ...] [OPTIONS]\n\n\
                     Modes: throughput latency cold-start dynamo-ops memory (default: all)\n";
        assert_eq!(
            modes(usage),
            [
                "throughput",
                "latency",
                "cold-start",
                "dynamo-ops",
                "memory"
            ]
        );
        assert!(modes("no such line").is_empty());
    }

    #[test]
    fn nothing_to_render_without_figures() {
        assert_eq!(render(&json!({})), "");
    }
}
