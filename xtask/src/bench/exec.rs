//! Running the benchmark programs: builds inherit the terminal; measured runs are logged,
//! echoed, time-limited and cleaned up.
//!
//! ```text
//!  harness ──spawn (own process group)──► bench program ──► its children (local-aws, …)
//!     ▲  stdout lines (kept: BENCH_JSON)        │
//!     └──────── stdout + stderr ────────────────┴──► .cache/bench/<run>/<label>.log + echo
//! ```
//!
//! Every measured program gets its own process group, so that when it overruns its time
//! limit, or exits leaving an emulator behind, exactly the processes it started are
//! stopped (SIGTERM, then SIGKILL), found by their process group in `/proc`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A command to run, kept as data so that the exact command can be shown in the report.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Set, but not shown: what the report states once for all commands.
    hidden_envs: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            hidden_envs: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn env_hidden(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.hidden_envs.push((k.into(), v.into()));
        self
    }

    fn command(&self, cwd: &Path) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).current_dir(cwd);
        for (k, v) in self.hidden_envs.iter().chain(&self.envs) {
            c.env(k, v);
        }
        c
    }

    /// The command as a reader of the report would type it from the repository root:
    /// `$CARGO_TARGET_DIR` and `$HOME` for those paths, others relative to the root.
    pub fn display(&self, paths: &Paths) -> String {
        let mut words: Vec<String> = self
            .envs
            .iter()
            .map(|(k, v)| format!("{k}={}", paths.show(v)))
            .collect();
        let program = if self.program == paths.cargo {
            "cargo".to_owned()
        } else {
            paths.show(&self.program)
        };
        words.push(program);
        words.extend(self.args.iter().map(|a| paths.show(a)));
        words.join(" ")
    }
}

/// How paths are shown: the roots a reader has under other names.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub home: Option<PathBuf>,
    /// The cargo binary running us (shown as `cargo`).
    pub cargo: String,
}

impl Paths {
    pub fn show(&self, s: &str) -> String {
        let mut out = s.to_owned();
        // Longest prefix first: the target dir may live under $HOME or under the root.
        let mut prefixes: Vec<(String, String)> = vec![
            (
                self.target_dir.display().to_string(),
                "$CARGO_TARGET_DIR".into(),
            ),
            (format!("{}/", self.root.display()), String::new()),
        ];
        if let Some(h) = &self.home {
            prefixes.push((h.display().to_string(), "$HOME".into()));
        }
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (p, name) in prefixes {
            if !p.is_empty() && out.contains(&p) {
                out = out.replace(&p, &name);
            }
        }
        out
    }
}

/// A cargo build (or any preparation step): output straight to the terminal, no time limit.
pub fn run_inherit(cmd: &Cmd, cwd: &Path) -> Result<(), String> {
    let status = cmd
        .command(cwd)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", cmd.program))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{} {}` failed: {status}",
            cmd.program,
            cmd.args.join(" ")
        ))
    }
}

/// A build whose stdout is data (cargo's `--message-format=json…`); stderr to the terminal.
pub fn run_stdout(cmd: &Cmd, cwd: &Path) -> Result<String, String> {
    let out = cmd
        .command(cwd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", cmd.program))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{} {}` failed: {}",
            cmd.program,
            cmd.args.join(" "),
            out.status
        ))
    }
}

/// A preparation step whose output only matters on failure (version probes).
pub fn capture(cmd: &Cmd, cwd: &Path) -> Option<String> {
    let out = cmd
        .command(cwd)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What a measured run left.
#[derive(Debug)]
pub struct Run {
    pub stdout: Vec<String>,
    pub status: Option<ExitStatus>,
    pub wall: Duration,
    pub timed_out: bool,
    pub log: PathBuf,
    /// The program's pid, which is also its process group.
    pub pid: u32,
}

impl Run {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// Why the run failed, for the report.
    pub fn failure(&self, label: &str) -> Option<String> {
        if self.timed_out {
            Some(format!(
                "{label} (pid {}): stopped after {:.0} s (time limit); log: {}",
                self.pid,
                self.wall.as_secs_f64(),
                self.log.display()
            ))
        } else if !self.success() {
            Some(format!(
                "{label} (pid {}): {}; log: {}",
                self.pid,
                self.status
                    .map_or("did not run".to_owned(), |s| s.to_string()),
                self.log.display()
            ))
        } else {
            None
        }
    }
}

/// Runs `cmd` with a time limit, its output echoed (prefixed with `label`) and logged to
/// `logs/<label>.log`; returns its stdout lines.
pub fn run_measured(
    cmd: &Cmd,
    cwd: &Path,
    label: &str,
    logs: &Path,
    limit: Duration,
) -> Result<Run, String> {
    let log_path = logs.join(format!("{label}.log"));
    let mut log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let _ = writeln!(log, "$ {} {}", cmd.program, cmd.args.join(" "));
    let log = Arc::new(Mutex::new(log));
    eprintln!("\n--> {label}: {} {}", cmd.program, cmd.args.join(" "));

    let mut child = cmd
        .command(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{label}: starting {}: {e}", cmd.program))?;
    let pgid = child.id();
    let t0 = Instant::now();
    let out = pump(child.stdout.take().expect("piped"), label, &log, true);
    let err = pump(child.stderr.take().expect("piped"), label, &log, false);

    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() > limit => {
                timed_out = true;
                stop_group(pgid);
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let wall = t0.elapsed();
    // Anything the program started and left running (an emulator after a crash).
    stop_group(pgid);
    let stdout = out.join().unwrap_or_default();
    let _ = err.join();
    let run = Run {
        stdout,
        status,
        wall,
        timed_out,
        log: log_path,
        pid: pgid,
    };
    eprintln!(
        "<-- {label}: {} in {:.1} s",
        if run.success() { "ok" } else { "FAILED" },
        wall.as_secs_f64()
    );
    Ok(run)
}

/// Copies one output stream to the log and the terminal; keeps the lines of stdout.
fn pump(
    stream: impl Read + Send + 'static,
    label: &str,
    log: &Arc<Mutex<File>>,
    keep: bool,
) -> thread::JoinHandle<Vec<String>> {
    let (label, log) = (label.to_owned(), Arc::clone(log));
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            buf.clear();
            if let Ok(mut f) = log.lock() {
                let _ = writeln!(f, "{line}");
            }
            eprintln!("  {label} │ {line}");
            if keep {
                kept.push(line);
            }
        }
        kept
    })
}

/// SIGTERM to every process still in group `pgid` (ours: the group was made for the run),
/// then SIGKILL to those still there 5 s later.
fn stop_group(pgid: u32) {
    for signal in ["-TERM", "-KILL"] {
        let members = group_members(pgid);
        if members.is_empty() {
            return;
        }
        for pid in &members {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !group_members(pgid).is_empty() {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Live (not zombie) processes whose process group is `pgid`, from `/proc/<pid>/stat`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name (which may hold spaces): state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first().is_some_and(|s| *s != "Z") && f.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            root: "/work/main".into(),
            target_dir: "/home/u/.cache/rel".into(),
            home: Some("/home/u".into()),
            cargo: "/home/u/.cargo/bin/cargo".into(),
        }
    }

    #[test]
    fn commands_are_shown_as_typed_from_the_root() {
        let cmd = Cmd::new("/home/u/.cargo/bin/cargo")
            .args(["bench", "-p", "x"])
            .env("CRITERION_HOME", "/home/u/.cache/rel/xtask/criterion");
        assert_eq!(
            cmd.display(&paths()),
            "CRITERION_HOME=$CARGO_TARGET_DIR/xtask/criterion cargo bench -p x"
        );
        let cmd = Cmd::new("/work/main/.cache/py/agg/bin/python")
            .arg("/work/main/scripts/aggregation/bench_python.py");
        assert_eq!(
            cmd.display(&paths()),
            ".cache/py/agg/bin/python scripts/aggregation/bench_python.py"
        );
        let cmd = Cmd::new("/home/u/.cache/rel/release/examples/bench_producer")
            .args(["--local-aws", "/home/u/.cache/rel/release/local-aws"]);
        assert_eq!(
            cmd.display(&paths()),
            "$CARGO_TARGET_DIR/release/examples/bench_producer --local-aws $CARGO_TARGET_DIR/release/local-aws"
        );
    }

    #[test]
    fn a_measured_run_keeps_stdout_and_logs_both_streams() {
        let dir = std::env::temp_dir().join(format!("xtask-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cmd = Cmd::new("sh").args(["-c", "echo one; echo two >&2; echo three"]);
        let run = run_measured(&cmd, &dir, "t", &dir, Duration::from_secs(30)).unwrap();
        assert!(run.success());
        assert_eq!(run.stdout, ["one", "three"]);
        let log = std::fs::read_to_string(&run.log).unwrap();
        assert!(log.contains("two") && log.contains("three"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_overrunning_run_is_stopped_with_its_children() {
        let dir = std::env::temp_dir().join(format!("xtask-exec-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A child that would outlive its parent, as an emulator left by a crashed bench.
        let cmd = Cmd::new("sh").args(["-c", "sleep 60 & echo started; sleep 60"]);
        let run = run_measured(&cmd, &dir, "t", &dir, Duration::from_millis(300)).unwrap();
        assert!(run.timed_out && !run.success());
        assert!(run.failure("t").unwrap().contains("time limit"));
        assert!(group_members(run.pid).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
