//! Producer: `bench_producer` (kinesis-producer and the plain SDK) and aiokpl, each run in
//! its own process against its own `local-aws` process.
//!
//! Contract with `crates/kinesis-producer/examples/bench_producer.rs`: every `--scenario`
//! process prints, as its last stdout line, `BENCH_JSON {...}` with `"scenario"` and:
//!
//! - `cpu` and `sdk`: `records`, `ok`, `failed`, `wall_s`, `cpu_s`, `records_per_s`,
//!   `cpu_us_per_record`; `cpu` also `user_records_per_kinesis_record`,
//!   `user_records_per_call`, `bytes_per_kinesis_record`;
//! - `saturation`: `records`, `ok`, `in_stream_distinct`, `duplicates`, `saturation_pct`
//!   (bytes accepted per full second, mean, % of 1 MiB/s per shard), `steady_pct` (the same
//!   from the 6th second), `throttled_requests_per_min`, `user_records_per_kinesis_record`;
//! - `memory`: `buffer_bound_bytes`, `rss_before_bytes`, `peak_rss_bytes` (VmHWM), `ok`,
//!   `expired`.
//!
//! Missing keys show as `—`; no line at all, as "no machine-readable output". aiokpl's
//! script prints `key=value` words (`cpu_per_record_us`, `records/s`), read as such.

use serde_json::{Map, Value, json};

use super::exec::{Cmd, Run, capture, run_inherit};
use super::report::{Table, bench_json, key_values, mib, num, opt, si, sig3, times};
use super::{Ctx, Section, Stamp, Which};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rust,
    Aiokpl,
}

struct Spec {
    label: &'static str,
    /// What the row is called in the tables.
    title: &'static str,
    kind: Kind,
    args: &'static [&'static str],
    in_quick: bool,
    /// The aiokpl run it is compared with.
    peer: Option<&'static str>,
}

const SPECS: &[Spec] = &[
    Spec {
        label: "cpu-default",
        title: "kinesis-producer, default rate limit (150 %)",
        kind: Kind::Rust,
        args: &["--scenario", "cpu"],
        in_quick: true,
        peer: Some("aiokpl-default"),
    },
    Spec {
        label: "cpu-default-batch",
        title: "kinesis-producer, default rate limit (150 %), put_batch(500)",
        kind: Kind::Rust,
        args: &["--scenario", "cpu", "--batch", "500"],
        in_quick: false,
        peer: Some("aiokpl-default"),
    },
    Spec {
        label: "cpu-open",
        title: "kinesis-producer, limiter opened",
        kind: Kind::Rust,
        args: &["--scenario", "cpu", "--rate-limit", "100000"],
        in_quick: true,
        peer: Some("aiokpl-open"),
    },
    Spec {
        label: "cpu-open-batch",
        title: "kinesis-producer, limiter opened, put_batch(500)",
        kind: Kind::Rust,
        args: &[
            "--scenario",
            "cpu",
            "--rate-limit",
            "100000",
            "--batch",
            "500",
        ],
        in_quick: false,
        peer: Some("aiokpl-open"),
    },
    Spec {
        label: "cpu-open-no-aggregation",
        title: "kinesis-producer, limiter opened, no aggregation",
        kind: Kind::Rust,
        args: &[
            "--scenario",
            "cpu",
            "--rate-limit",
            "100000",
            "--no-aggregation",
        ],
        in_quick: false,
        peer: Some("aiokpl-open"),
    },
    Spec {
        label: "sdk",
        title: "plain SDK: PutRecords × 500, un-aggregated, 4 in flight",
        kind: Kind::Rust,
        args: &["--scenario", "sdk"],
        in_quick: true,
        peer: Some("aiokpl-open"),
    },
    Spec {
        label: "aiokpl-default",
        title: "aiokpl, default limits (100 %)",
        kind: Kind::Aiokpl,
        args: &[],
        in_quick: true,
        peer: None,
    },
    Spec {
        label: "aiokpl-open",
        title: "aiokpl, limits opened",
        kind: Kind::Aiokpl,
        args: &["--unlimited"],
        in_quick: false,
        peer: None,
    },
    Spec {
        label: "saturation",
        title: "1 shard, shard limits enforced, put as fast as possible",
        kind: Kind::Rust,
        args: &["--scenario", "saturation"],
        in_quick: true,
        peer: None,
    },
    Spec {
        label: "memory-8mib",
        title: "8 MiB",
        kind: Kind::Rust,
        args: &["--scenario", "memory", "--buffer-mib", "8"],
        in_quick: true,
        peer: None,
    },
    Spec {
        label: "memory-32mib",
        title: "32 MiB",
        kind: Kind::Rust,
        args: &["--scenario", "memory", "--buffer-mib", "32"],
        in_quick: false,
        peer: None,
    },
];

const AIOKPL_RECORDS: (&str, &str) = ("2000", "50000");

pub struct Prep {
    aiokpl_version: String,
}

/// The peer (`bench_producer` and `local-aws` are built by `super::build`).
pub fn prepare(ctx: &Ctx) -> Result<Prep, String> {
    run_inherit(
        &Cmd::new("bash").args([
            ctx.path("scripts/aggregation/setup-venvs.sh"),
            "aiokpl".into(),
        ]),
        &ctx.root,
    )?;
    let aiokpl_version = capture(
        &Cmd::new(ctx.path(".cache/py/aiokpl/bin/python")).args([
            "-c",
            "from importlib.metadata import version as v; \
             print('aiokpl', v('aiokpl') + ', botocore', v('botocore') + ', Python', __import__('sys').version.split()[0])",
        ]),
        &ctx.root,
    )
    .unwrap_or_else(|| "aiokpl ?".into());
    Ok(Prep { aiokpl_version })
}

fn command(ctx: &Ctx, spec: &Spec) -> Cmd {
    let local_aws = ctx.bin_dir().join("local-aws").display().to_string();
    match spec.kind {
        Kind::Rust => {
            let mut c = Cmd::new(
                ctx.bin_dir()
                    .join("examples/bench_producer")
                    .display()
                    .to_string(),
            )
            .args(spec.args.iter().copied());
            if ctx.quick {
                c = c.arg("--quick");
            }
            c.args(["--local-aws", &local_aws])
        }
        Kind::Aiokpl => Cmd::new("bash")
            .args([
                ctx.path("scripts/producer/bench-aiokpl.sh"),
                "--records".into(),
                (if ctx.quick {
                    AIOKPL_RECORDS.0
                } else {
                    AIOKPL_RECORDS.1
                })
                .into(),
            ])
            .args(spec.args.iter().copied())
            .env("LOCAL_AWS_BIN", local_aws),
    }
}

/// A run's figures: its `BENCH_JSON` object, aiokpl's words in the same names, or `None`.
fn figures(kind: Kind, run: &Run) -> Result<Option<Value>, String> {
    if let Some(o) = bench_json(&run.stdout)? {
        return Ok(Some(Value::Object(o)));
    }
    if kind == Kind::Aiokpl {
        let kv = Value::Object(key_values(&run.stdout));
        let mut o = Map::new();
        for (ours, theirs) in [
            ("cpu_us_per_record", "cpu_per_record_us"),
            ("records_per_s", "records/s"),
            ("ok", "ok"),
            ("failed", "failed"),
            ("wall_s", "wall_s"),
        ] {
            if let Some(x) = num(&kv, theirs) {
                o.insert(ours.into(), json!(x));
            }
        }
        return Ok((!o.is_empty()).then_some(Value::Object(o)));
    }
    Ok(None)
}

pub fn measure(ctx: &Ctx, prep: Prep) -> Section {
    let mut stamp = Stamp::start(ctx);
    let mut failures = Vec::new();
    let mut results: Vec<(&Spec, Option<Value>)> = Vec::new();
    let mut silent = Vec::new();
    for spec in SPECS.iter().filter(|s| s.in_quick || !ctx.quick) {
        let cmd = command(ctx, spec);
        let label = format!("producer-{}", spec.label);
        let figures = match ctx.run(&cmd, &label, 300) {
            Ok(run) => {
                stamp.ran(ctx, &cmd, Some(&run));
                failures.extend(run.failure(&label));
                figures(spec.kind, &run).unwrap_or_else(|e| {
                    failures.push(format!("{label}: {e}"));
                    None
                })
            }
            Err(e) => {
                failures.push(e);
                None
            }
        };
        if figures.is_none() {
            silent.push(format!("`{}`", spec.label));
        }
        results.push((spec, figures));
    }
    let mut notes = format!("Peer: {}.\n", prep.aiokpl_version);
    if !silent.is_empty() {
        notes.push_str(&format!(
            "No machine-readable output (no `BENCH_JSON` line) from {}: their figures are in the logs only.\n",
            silent.join(", ")
        ));
    }
    let body = format!(
        "### Producer: CPU per record vs the plain SDK and aiokpl, saturation, memory under overload\n\n{}\n{}",
        stamp.markdown(ctx, &notes),
        render(&results)
    );
    Section {
        which: Which::Producer,
        body,
        failures,
    }
}

fn render(results: &[(&Spec, Option<Value>)]) -> String {
    let get = |label: &str| {
        results
            .iter()
            .find(|(s, _)| s.label == label)
            .and_then(|(_, v)| v.as_ref())
    };
    let is = |s: &Spec, scenario: &str| s.args.get(1) == Some(&scenario);
    let mut out = String::new();

    let sdk = get("sdk");
    let sdk_cpu = sdk.and_then(|v| num(v, "cpu_us_per_record"));
    let sdk_rate = sdk.and_then(|v| num(v, "records_per_s"));
    let mut t = Table::new(&[
        "run",
        "CPU µs per user record",
        "user records/s",
        "user records per Kinesis record",
        "CPU vs plain SDK",
        "records/s vs plain SDK",
        "aiokpl's CPU ÷ this",
    ]);
    let mut any = false;
    for (spec, v) in results
        .iter()
        .filter(|(s, _)| s.kind == Kind::Aiokpl || is(s, "cpu") || is(s, "sdk"))
    {
        let cpu = v.as_ref().and_then(|v| num(v, "cpu_us_per_record"));
        let rate = v.as_ref().and_then(|v| num(v, "records_per_s"));
        any |= cpu.is_some();
        let peer_cpu = spec
            .peer
            .and_then(get)
            .and_then(|p| num(p, "cpu_us_per_record"));
        let anchor = spec.label == "sdk" && sdk_cpu.is_some();
        t.row(vec![
            spec.title.into(),
            opt(cpu, sig3),
            opt(rate, si),
            opt(
                v.as_ref()
                    .and_then(|v| num(v, "user_records_per_kinesis_record")),
                sig3,
            ),
            if anchor {
                "1 (anchor)".into()
            } else {
                ratio(cpu, sdk_cpu, false)
            },
            if anchor {
                "1 (anchor)".into()
            } else {
                ratio(rate, sdk_rate, false)
            },
            if spec.kind == Kind::Aiokpl {
                "—".into()
            } else {
                ratio(peer_cpu, cpu, true)
            },
        ]);
    }
    if any {
        out.push_str(&t.render());
        out.push_str(
            "\nRatios: CPU and records/s of each run over the plain SDK's in the same run; \
             \"aiokpl's CPU ÷ this\" compares with aiokpl under the same kind of limit \
             (default, or opened).\n\n",
        );
    }

    if let Some(v) = get("saturation") {
        let mut t = Table::new(&[
            "run",
            "accepted, mean of full seconds",
            "steady state (from the 6th s)",
            "throttled requests/min",
            "put / Ok / in the stream / duplicates",
        ]);
        let pct = |k| opt(num(v, k), |x| format!("**{x:.1} %**"));
        let n = |k| opt(num(v, k), |x| format!("{x:.0}"));
        t.row(vec![
            "1 shard, `local-aws --enforce-shard-limits`".into(),
            pct("saturation_pct"),
            pct("steady_pct"),
            opt(num(v, "throttled_requests_per_min"), sig3),
            format!(
                "{} / {} / {} / {}",
                n("records"),
                n("ok"),
                n("in_stream_distinct"),
                n("duplicates")
            ),
        ]);
        out.push_str(
            "Shard saturation (% of the 1 MiB/s write limit, as the shard accepted it):\n\n",
        );
        out.push_str(&t.render());
        out.push('\n');
    }

    let mut t = Table::new(&[
        "`max_buffered_bytes`",
        "RSS before",
        "peak RSS (VmHWM)",
        "growth",
        "growth ÷ bound",
        "records Ok / expired",
    ]);
    for (spec, v) in results.iter().filter(|(s, _)| is(s, "memory")) {
        let Some(v) = v else { continue };
        let (before, peak, bound) = (
            num(v, "rss_before_bytes"),
            num(v, "peak_rss_bytes"),
            num(v, "buffer_bound_bytes"),
        );
        let growth = before.zip(peak).map(|(b, p)| p - b);
        t.row(vec![
            bound.map_or_else(|| spec.title.to_owned(), mib),
            opt(before, mib),
            opt(peak, mib),
            opt(growth, mib),
            growth
                .zip(bound)
                .map_or("—".into(), |(g, b)| format!("**{}**", times(g / b))),
            format!(
                "{} / {}",
                opt(num(v, "ok"), |x| format!("{x:.0}")),
                opt(num(v, "expired"), |x| format!("{x:.0}"))
            ),
        ]);
    }
    if !t.is_empty() {
        out.push_str("Memory under overload (1 throttled shard, puts as fast as possible):\n\n");
        out.push_str(&t.render());
    }
    out
}

/// `a ÷ b` as `N×`; bold when `bold`; `—` if either is missing.
fn ratio(a: Option<f64>, b: Option<f64>, bold: bool) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            if bold {
                format!("**{}**", times(a / b))
            } else {
                times(a / b)
            }
        }
        _ => "—".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(label: &str) -> &'static Spec {
        SPECS.iter().find(|s| s.label == label).unwrap()
    }

    #[test]
    fn tables_compare_with_the_sdk_and_aiokpl_of_the_same_run() {
        let results = vec![
            (
                spec("cpu-default"),
                Some(
                    json!({"scenario": "cpu", "cpu_us_per_record": 4.0, "records_per_s": 51300.0,
                            "user_records_per_kinesis_record": 409.8}),
                ),
            ),
            (spec("cpu-open"), None),
            (
                spec("sdk"),
                Some(
                    json!({"scenario": "sdk", "cpu_us_per_record": 2.0, "records_per_s": 80000.0}),
                ),
            ),
            (
                spec("aiokpl-default"),
                Some(json!({"cpu_us_per_record": 180.0, "records_per_s": 5400.0})),
            ),
            (
                spec("saturation"),
                Some(
                    json!({"saturation_pct": 93.71, "steady_pct": 94.7, "records": 300041,
                            "ok": 300041, "in_stream_distinct": 300041, "duplicates": 0,
                            "throttled_requests_per_min": 134.0}),
                ),
            ),
            (
                spec("memory-8mib"),
                Some(
                    json!({"buffer_bound_bytes": 8388608, "rss_before_bytes": 11744051.2,
                            "peak_rss_bytes": 26214400.0, "ok": 167793, "expired": 0}),
                ),
            ),
        ];
        let md = render(&results);
        assert!(md.contains("| kinesis-producer, default rate limit (150 %) | 4.00 | 51.3 k | 410 | 2.00× | 0.641× | **45.0×** |"), "{md}");
        assert!(
            md.contains("| kinesis-producer, limiter opened | — | — | — | — | — | — |"),
            "{md}"
        );
        assert!(md.contains("| plain SDK: PutRecords × 500, un-aggregated, 4 in flight | 2.00 | 80.0 k | — | 1 (anchor) | 1 (anchor) | — |"), "{md}");
        assert!(
            md.contains(
                "| aiokpl, default limits (100 %) | 180 | 5.40 k | — | 90.0× | 0.0675× | — |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| **93.7 %** | **94.7 %** | 134 | 300041 / 300041 / 300041 / 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 8.00 MiB | 11.2 MiB | 25.0 MiB | 13.8 MiB | **1.73×** | 167793 / 0 |"),
            "{md}"
        );
    }

    #[test]
    fn aiokpl_words_are_read_when_there_is_no_bench_json() {
        let run = Run {
            stdout: vec![
                "scenario=aiokpl shards=4 records=2000".into(),
                "  delivered ok=2000 failed=0 wall_s=0.52 records/s=3846 cpu_s=0.40 cpu_per_record_us=201.500".into(),
            ],
            status: None,
            wall: std::time::Duration::ZERO,
            timed_out: false,
            log: "x".into(),
            pid: 0,
        };
        let v = figures(Kind::Aiokpl, &run).unwrap().unwrap();
        assert_eq!(num(&v, "cpu_us_per_record"), Some(201.5));
        assert_eq!(num(&v, "records_per_s"), Some(3846.0));
        assert_eq!(figures(Kind::Rust, &run).unwrap(), None);
    }
}
