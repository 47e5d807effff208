//! Rendering results: `table` for people, `json` for programs, `text` (tab-separated, no
//! headers) for shell pipelines. Results go to stdout; progress, status and errors to
//! stderr, so that `kin ... | jq` always sees clean data. No colour anywhere.
//!
//! Default format: `table` when stdout is a terminal, `text` otherwise (what `cut`, `awk`
//! and `while read` want); `--output` or `KIN_OUTPUT` choose explicitly.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::error::Result;

/// Where results go, and how.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: OutputFormat,
    /// Whether progress indicators may be drawn on stderr.
    pub progress: bool,
}

impl Output {
    pub fn new(global: &GlobalArgs) -> Output {
        let format = global.output.unwrap_or(if std::io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Text
        });
        Output {
            format,
            progress: !global.no_progress && std::io::stderr().is_terminal(),
        }
    }

    /// Prints a result: `json` as given, otherwise the table.
    pub fn emit(&self, json: &Value, table: &Table) -> Result<()> {
        match self.format {
            OutputFormat::Json => print_json(json),
            OutputFormat::Table => write_stdout(&table.render_aligned()),
            OutputFormat::Text => write_stdout(&table.render_tsv()),
        }
    }

    /// A spinner on stderr with a message, or nothing when not drawing progress.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// A progress bar with a known total, or a counting spinner without one.
    pub fn bar(&self, total: Option<u64>, unit: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                format!("{{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left) {{msg}}"),
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                format!("{{spinner}} {{pos}} {unit} ({{per_sec}}, {{elapsed}}) {{msg}}"),
            ),
        };
        bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

pub fn print_json(value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    write_stdout(&text)
}

/// Writes to stdout, turning a closed pipe into [`crate::error::Kind::BrokenPipe`].
pub fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Rows of cells under headers. A table may have a block of `key: value` details above
/// its rows (`stream describe`).
#[derive(Debug, Default)]
pub struct Table {
    details: Vec<(String, String)>,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Text-mode prefix of each row when details are present, so that both kinds of line
    /// can be told apart (`shard\t...`).
    row_tag: Option<String>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            ..Table::default()
        }
    }

    pub fn detail(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.details.push((key.into(), value.into()));
    }

    pub fn row_tag(&mut self, tag: impl Into<String>) {
        self.row_tag = Some(tag.into());
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    fn render_aligned(&self) -> String {
        let mut out = String::new();
        if !self.details.is_empty() {
            let width = self.details.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in &self.details {
                out.push_str(&format!("{k:<width$}  {v}\n"));
            }
            if !self.headers.is_empty() {
                out.push('\n');
            }
        }
        if self.headers.is_empty() {
            return out;
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            line.push('\n');
            line
        };
        out.push_str(&line(&self.headers));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    fn render_tsv(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.details {
            out.push_str(&format!("{k}\t{v}\n"));
        }
        for row in &self.rows {
            if let Some(tag) = &self.row_tag {
                out.push_str(tag);
                out.push('\t');
            }
            out.push_str(&row.join("\t"));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_tsv() {
        let mut t = Table::new(["NAME", "STATUS"]);
        t.row(["orders", "ACTIVE"]);
        t.row(["a", "CREATING"]);
        assert_eq!(
            t.render_aligned(),
            "NAME    STATUS\norders  ACTIVE\na       CREATING\n"
        );
        assert_eq!(t.render_tsv(), "orders\tACTIVE\na\tCREATING\n");

        let mut d = Table::new(["SHARD"]);
        d.detail("name", "x");
        d.row_tag("shard");
        d.row(["shardId-0"]);
        assert_eq!(d.render_aligned(), "name  x\n\nSHARD\nshardId-0\n");
        assert_eq!(d.render_tsv(), "name\tx\nshard\tshardId-0\n");
    }
}
