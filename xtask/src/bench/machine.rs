//! What a figure was measured on: the machine, the toolchain, the code, the load.

use std::path::Path;

use super::exec::{Cmd, capture};

pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
}

impl Machine {
    pub fn probe(root: &Path) -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: field(&cpuinfo, "model name").unwrap_or_else(|| "?".into()),
            memory_gib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / (1024.0 * 1024.0)),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            rustc: capture(&Cmd::new("rustc").arg("-V"), root).unwrap_or_else(|| "?".into()),
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "- `nproc` {}; CPU `{}`; memory {:.1} GiB; Linux {}\n- {}\n",
            self.cores, self.cpu, self.memory_gib, self.kernel, self.rustc
        )
    }
}

/// The 1-minute load average.
pub fn load() -> f64 {
    read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The commit measured, and whether tracked files differ from it.
pub fn commit(root: &Path) -> String {
    let head = capture(
        &Cmd::new("git").args(["rev-parse", "--short", "HEAD"]),
        root,
    )
    .unwrap_or_else(|| "?".into());
    let dirty = capture(
        &Cmd::new("git").args(["status", "--porcelain", "--untracked-files=no"]),
        root,
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("`{head}` + uncommitted changes")
    } else {
        format!("`{head}`")
    }
}

/// UTC now, `2026-11-23 14:05 UTC` (or, for file names, `20261123T140512Z`).
pub fn utc_now(compact: bool) -> String {
    let format = if compact {
        "+%Y%m%dT%H%M%SZ"
    } else {
        "+%Y-%m-%d %H:%M UTC"
    };
    capture(&Cmd::new("date").args(["-u", format]), Path::new("/")).unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("unix time {secs}")
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The value of the first `name: value` line.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nmodel name\t: other\n";
        assert_eq!(
            field(cpuinfo, "model name").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(
            field("MemTotal:  24576 kB\n", "MemTotal").as_deref(),
            Some("24576 kB")
        );
        assert_eq!(field("x: 1", "y"), None);
    }
}
