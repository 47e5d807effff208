//! `cargo xtask bench`: every benchmark in one command, results into `docs/BENCHMARKS.md`.
//!
//! ```text
//!  1. build     cargo bench --no-run (aggregation), cargo build local-aws + bench examples
//!  2. peers     Python venvs (scripts/aggregation/setup-venvs.sh), npm ci into .cache/node/
//!  3. measure   aggregation ─► producer ─► consumer, one program at a time, each logged
//!               to .cache/bench/<time>/<label>.log and read back: criterion's JSON files,
//!               the `BENCH_JSON {...}` line the programs print last
//!  4. report    Markdown tables of figures and of ratios to anchors measured in the same
//!               run (MD5, the plain SDK, the peers); printed, and written between the
//!               `harness:` markers of docs/BENCHMARKS.md (unless --no-write or --quick)
//! ```
//!
//! A section whose build, peer install or benchmark run fails is reported and not written
//! (the previous text stays), and the command exits non-zero: in CI, `--quick` is how the
//! harness and the programs it drives are kept from rotting. A benchmark program that runs
//! but prints no `BENCH_JSON` line is not a failure: its section says "no machine-readable
//! output" (the contract is described in each section module).

mod aggregation;
mod consumer;
mod doc;
mod exec;
mod machine;
mod producer;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use exec::{Cmd, Paths, Run};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tiny sizes and short times in the dev profile: checks that every benchmark still runs
    /// (CI). Its figures mean nothing, so they are never written.
    #[arg(long)]
    quick: bool,
    /// Run only these sections (repeat, or separate with commas); the others keep their text.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Which>,
    /// Print the results only; leave docs/BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
    /// With --quick: build in release anyway.
    #[arg(long)]
    release: bool,
    /// Cargo target directory for the benchmark builds [default: $HOME/.cache/kinesis-rs-release
    /// for release builds; $CARGO_TARGET_DIR, else target/, for --quick]
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Which {
    Aggregation,
    Producer,
    Consumer,
}

impl Which {
    const ALL: [Which; 3] = [Which::Aggregation, Which::Producer, Which::Consumer];

    fn name(self) -> &'static str {
        match self {
            Which::Aggregation => "aggregation",
            Which::Producer => "producer",
            Which::Consumer => "consumer",
        }
    }
}

/// Everything a section needs to build and run its programs.
pub struct Ctx {
    pub root: PathBuf,
    pub quick: bool,
    pub release: bool,
    pub paths: Paths,
    /// This run's logs: `.cache/bench/<time>/`.
    pub logs: PathBuf,
    /// `--locked` on cargo commands (in CI, as every other cargo command there).
    pub locked: bool,
    /// The command that was typed, for the report.
    pub invocation: String,
}

impl Ctx {
    /// `cargo <args> [--locked]` on the benchmark target directory.
    pub fn cargo<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut c = Cmd::new(self.paths.cargo.clone()).args(args);
        if self.locked {
            c = c.arg("--locked");
        }
        c.env_hidden(
            "CARGO_TARGET_DIR",
            self.paths.target_dir.display().to_string(),
        )
    }

    /// The cargo flag of the benchmark profile.
    pub fn release_flag(&self) -> Option<&'static str> {
        self.release.then_some("--release")
    }

    /// Where cargo puts binaries of the benchmark profile.
    pub fn bin_dir(&self) -> PathBuf {
        self.paths
            .target_dir
            .join(if self.release { "release" } else { "debug" })
    }

    pub fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// Runs a benchmark program with a time limit (`full_secs`; 3 minutes in quick mode).
    pub fn run(&self, cmd: &Cmd, label: &str, full_secs: u64) -> Result<Run, String> {
        let limit = Duration::from_secs(if self.quick { 180 } else { full_secs });
        exec::run_measured(cmd, &self.root, label, &self.logs, limit)
    }

    pub fn show(&self, cmd: &Cmd) -> String {
        cmd.display(&self.paths)
    }
}

/// One section of the report.
pub struct Section {
    pub which: Which,
    /// Markdown, from its `###` heading on.
    pub body: String,
    /// Why the section is not to be trusted (then it is not written).
    pub failures: Vec<String>,
}

/// The first lines of every section: when, on what code, under what load, by which commands.
pub struct Stamp {
    started: Instant,
    load0: f64,
    date: String,
    commit: String,
    commands: Vec<String>,
}

impl Stamp {
    pub fn start(ctx: &Ctx) -> Stamp {
        Stamp {
            started: Instant::now(),
            load0: machine::load(),
            date: machine::utc_now(false),
            commit: machine::commit(&ctx.root),
            commands: Vec::new(),
        }
    }

    /// Records a command that produced figures, with how long it took.
    pub fn ran(&mut self, ctx: &Ctx, cmd: &Cmd, run: Option<&Run>) {
        let shown = ctx.show(cmd);
        self.commands.push(match run {
            Some(r) => format!("{shown}   # {:.0} s", r.wall.as_secs_f64()),
            None => shown,
        });
    }

    pub fn markdown(&self, ctx: &Ctx, extra: &str) -> String {
        let mut s = format!(
            "Measured {} · commit {} · {} profile · load average {:.2} → {:.2} · {:.0} s{}\n",
            self.date,
            self.commit,
            if ctx.release { "release" } else { "dev" },
            self.load0,
            machine::load(),
            self.started.elapsed().as_secs_f64(),
            if ctx.quick {
                " · **--quick: these figures mean nothing**"
            } else {
                ""
            }
        );
        if !extra.is_empty() {
            s.push_str(extra.trim_end());
            s.push('\n');
        }
        s.push_str(&format!(
            "\n```sh\n{}   # this section, which ran:\n{}\n```\n",
            ctx.invocation,
            self.commands.join("\n")
        ));
        s
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let t0 = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?
        .to_path_buf();
    let release = !args.quick || args.release;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let target_dir = match (&args.target_dir, release) {
        (Some(d), _) => d.clone(),
        (None, true) => home
            .as_ref()
            .ok_or("HOME is not set: give --target-dir")?
            .join(".cache/kinesis-rs-release"),
        (None, false) => {
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
        }
    };
    let target_dir = if target_dir.is_relative() {
        std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(target_dir)
    } else {
        target_dir
    };
    let logs = root.join(".cache/bench").join(machine::utc_now(true));
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let invocation = std::iter::once("cargo xtask".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let ctx = Ctx {
        paths: Paths {
            root: root.clone(),
            target_dir,
            home,
            cargo: std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        },
        root,
        quick: args.quick,
        release,
        logs,
        locked: std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false"),
        invocation,
    };
    let write = !args.no_write && !args.quick;
    let selected: Vec<Which> = if args.only.is_empty() {
        Which::ALL.to_vec()
    } else {
        Which::ALL
            .into_iter()
            .filter(|w| args.only.contains(w))
            .collect()
    };
    eprintln!(
        "bench: {} ({} profile, target dir {}, logs {}){}",
        selected
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", "),
        if ctx.release { "release" } else { "dev" },
        ctx.paths.target_dir.display(),
        ctx.paths.show(&ctx.logs.display().to_string()),
        if write {
            ", then docs/BENCHMARKS.md"
        } else {
            ""
        }
    );

    // Build and install everything first: nothing compiles while something is measured.
    let mut sections = Vec::new();
    let Built { criterion, broken } = build(&ctx, &selected);
    let has = |w| selected.contains(&w);
    let built = |w| match broken.iter().find(|(b, _)| *b == w) {
        Some((_, e)) => Err(format!("build: {e}")),
        None => Ok(()),
    };
    let agg = criterion.map(|c| c.and_then(|exe| aggregation::prepare(&ctx, exe)));
    let prod =
        has(Which::Producer).then(|| built(Which::Producer).and_then(|()| producer::prepare(&ctx)));
    let cons =
        has(Which::Consumer).then(|| built(Which::Consumer).and_then(|()| consumer::prepare(&ctx)));
    let prepared_in = t0.elapsed();
    let t1 = Instant::now();
    let failed = |which, e: String| Section {
        which,
        body: String::new(),
        failures: vec![format!("preparation: {e}")],
    };
    if let Some(p) = agg {
        sections.push(p.map_or_else(
            |e| failed(Which::Aggregation, e),
            |p| aggregation::measure(&ctx, p),
        ));
    }
    if let Some(p) = prod {
        sections.push(p.map_or_else(
            |e| failed(Which::Producer, e),
            |p| producer::measure(&ctx, p),
        ));
    }
    if let Some(p) = cons {
        sections.push(p.map_or_else(
            |e| failed(Which::Consumer, e),
            |p| consumer::measure(&ctx, p),
        ));
    }
    let measured_in = t1.elapsed();

    let machine = machine::Machine::probe(&ctx.root);
    println!("\n{}", header(&machine));
    for s in &sections {
        if s.failures.is_empty() {
            println!("{}\n", s.body.trim());
        } else {
            println!(
                "### {}: FAILED\n\n{}\n",
                s.which.name(),
                s.failures
                    .iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    let good: Vec<(&str, String)> = sections
        .iter()
        .filter(|s| s.failures.is_empty())
        .map(|s| (s.which.name(), s.body.clone()))
        .collect();
    if write && !good.is_empty() {
        let path = ctx.root.join("docs/BENCHMARKS.md");
        let order: Vec<&str> = Which::ALL.iter().map(|w| w.name()).collect();
        doc::update(&path, &header(&machine), &order, &good, |name| {
            format!("_No {name} figures from the harness yet: `cargo xtask bench --only {name}`._")
        })?;
        eprintln!(
            "bench: wrote the {} section(s) of docs/BENCHMARKS.md",
            good.iter().map(|g| g.0).collect::<Vec<_>>().join(", ")
        );
    }
    eprintln!(
        "bench: builds and installs {:.0} s, benchmarks {:.0} s; logs in {}",
        prepared_in.as_secs_f64(),
        measured_in.as_secs_f64(),
        ctx.paths.show(&ctx.logs.display().to_string())
    );
    let failures: Vec<String> = sections
        .iter()
        .flat_map(|s| {
            s.failures
                .iter()
                .map(|f| format!("{}: {f}", s.which.name()))
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} failure(s), not written:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

/// Builds every program of the selected sections.
///
/// One cargo command for the criterion bench and one for `local-aws` and the bench examples,
/// both over the whole workspace (the target names select what is built): dependencies then
/// get the workspace's features, as in `cargo test --workspace`. Building `-p local-aws`, then `-p kinesis-producer`, … would resolve
/// features per package and rebuild shared dependencies (ring, rustls, …) each time, in a
/// target directory that others share. If the combined build fails, each section's programs
/// are built alone to tell which sections are affected.
fn build(ctx: &Ctx, selected: &[Which]) -> Built {
    let criterion = selected
        .contains(&Which::Aggregation)
        .then(|| aggregation::build(ctx).map_err(|e| format!("build: {e}")));
    let mut broken = Vec::new();
    let examples: Vec<(Which, &str)> = [
        (Which::Producer, "bench_producer"),
        (Which::Consumer, "bench_consumer"),
    ]
    .into_iter()
    .filter(|(w, _)| selected.contains(w))
    .collect();
    let cargo_build = |examples: &[(Which, &str)]| {
        let mut args = vec!["build", "--workspace", "--bin", "local-aws"];
        args.extend(ctx.release_flag());
        for (_, e) in examples {
            args.extend(["--example", e]);
        }
        exec::run_inherit(&ctx.cargo(args), &ctx.root)
    };
    if !examples.is_empty()
        && let Err(e) = cargo_build(&examples)
    {
        if examples.len() == 1 {
            broken.push((examples[0].0, e));
        } else {
            for one in &examples {
                if let Err(e) = cargo_build(std::slice::from_ref(one)) {
                    broken.push((one.0, e));
                }
            }
        }
    }
    Built { criterion, broken }
}

/// What [`build`] leaves: the criterion executable (if the aggregation section is selected,
/// or why there is none), and the other sections that cannot run.
struct Built {
    criterion: Option<Result<PathBuf, String>>,
    broken: Vec<(Which, String)>,
}

/// The region's header: how it is made, and the machine of the last run.
fn header(m: &machine::Machine) -> String {
    format!(
        "## Harness results (`cargo xtask bench`)

Generated: everything between the `harness:` markers is rewritten by `cargo xtask bench`
(crate `xtask`): change the generator, not the text. Each section comes from one run and says
when. Ratios compare figures measured in the same run, which is what survives a shared, noisy
machine: absolute figures move with the load, ratios much less. The hand-written sections below
explain the workloads and the figures.

```sh
cargo xtask bench                      # every section (release builds; ~7 min on 2 cores after the builds)
cargo xtask bench --only aggregation   # one section (aggregation, producer, consumer); the others keep their text
cargo xtask bench --quick --no-write   # seconds per benchmark in the dev profile: checks they still run (CI)
```

Release builds go to `$HOME/.cache/kinesis-rs-release` (`--target-dir` to change it). The peers
are installed from their registries into `.cache/` (Python venvs by
`scripts/aggregation/setup-venvs.sh`, npm packages by `npm ci` from `scripts/aggregation/node/`).
The raw output of every program is kept in `.cache/bench/<time>/`.

Machine of the last run:

{}",
        m.markdown()
    )
}
