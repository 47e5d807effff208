//! `s3-sink` worker processes: the real binary, configured only through its environment
//! variables, as ECS would run it.
//!
//! ```text
//!  SinkProcess::spawn ─► env_clear + AWS_ENDPOINT_URL_* / credentials / sink settings
//!        │                 stdout + stderr ─► a log file (its tail goes into failure messages)
//!        ├─ kill9()      SIGKILL: no flush, no checkpoint, no lease release (a crash)
//!        ├─ terminate()  SIGTERM: flush, checkpoint, release; waits for a clean exit
//!        └─ drop         SIGKILL if still running, so a failed test leaves no process behind
//! ```

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// One running (or finished) `s3-sink` process.
pub struct SinkProcess {
    pub name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl SinkProcess {
    /// Starts the binary with exactly `env` (nothing inherited: no profile, no stray
    /// `AWS_*` of the machine running the tests).
    pub fn spawn(name: &str, log_dir: &Path, env: &[(String, String)]) -> SinkProcess {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_s3-sink"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting the s3-sink binary");
        SinkProcess {
            name: name.to_owned(),
            child,
            log,
            status: None,
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) -> ExitStatus {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        self.status = Some(status);
        assert_eq!(status.signal(), Some(9), "{}: {status:?}", self.name);
        status
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        // `sh` is everywhere; a `kill` binary or a libc binding is not needed for one signal.
        let sent = Command::new("sh")
            .args(["-c", "kill -s TERM \"$0\"", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -s TERM {}", self.child.id());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?} of SIGTERM\n{}",
                self.name,
                self.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of the process's log, headed by its name.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- {} ({}), last {} lines ---\n{}",
            self.name,
            self.log.display(),
            lines.len() - from,
            lines[from..].join("\n")
        )
    }

    /// Log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
