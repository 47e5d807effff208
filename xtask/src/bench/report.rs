//! What the benchmark programs print, and what the harness writes: `BENCH_JSON` lines in,
//! numbers and Markdown tables out.

use serde_json::{Map, Value};

/// The prefix of the one line a benchmark program prints for the harness (its last on stdout).
pub const PREFIX: &str = "BENCH_JSON ";

/// The merged objects of every `BENCH_JSON` line of `stdout` (later keys win); `None` when
/// the program printed none. A line that is not a JSON object breaks the contract: an error.
pub fn bench_json(stdout: &[String]) -> Result<Option<Map<String, Value>>, String> {
    let mut merged: Option<Map<String, Value>> = None;
    for line in stdout {
        let Some(json) = line.strip_prefix(PREFIX) else {
            continue;
        };
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(o)) => merged.get_or_insert_with(Map::new).extend(o),
            Ok(_) => return Err("a BENCH_JSON line that is not a JSON object".into()),
            Err(e) => return Err(format!("a BENCH_JSON line that is not valid JSON: {e}")),
        }
    }
    Ok(merged)
}

/// `key=value` pairs with numeric values from lines of text (the aiokpl script's output:
/// `delivered ok=100000 failed=0 ... cpu_per_record_us=165.2`), the last occurrence winning.
pub fn key_values(stdout: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for word in stdout.iter().flat_map(|l| l.split_whitespace()) {
        if let Some((k, v)) = word.split_once('=')
            && let Ok(x) = v.parse::<f64>()
            && let Some(n) = serde_json::Number::from_f64(x)
        {
            out.insert(k.to_owned(), Value::Number(n));
        }
    }
    out
}

/// A number at `path` (keys separated by `.`), if there is one.
pub fn num(v: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
}

/// The numbers of an array at `key`.
pub fn nums(v: &Value, key: &str) -> Vec<f64> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Three significant digits, no exponent: 0.00123, 1.23, 12.3, 123, 1234.
pub fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return "?".into();
    }
    let a = x.abs();
    let decimals = if a >= 100.0 || a == 0.0 {
        0
    } else {
        (2 - a.log10().floor() as i32).max(0) as usize
    };
    format!("{x:.decimals$}")
}

/// A rate or count with a unit prefix: 3.93 M, 51.3 k, 987.
pub fn si(x: f64) -> String {
    match x.abs() {
        a if a >= 1e9 => format!("{} G", sig3(x / 1e9)),
        a if a >= 1e6 => format!("{} M", sig3(x / 1e6)),
        a if a >= 1e3 => format!("{} k", sig3(x / 1e3)),
        _ => sig3(x),
    }
}

/// A ratio: `16.7×`.
pub fn times(x: f64) -> String {
    format!("{}×", sig3(x))
}

/// A duration given in nanoseconds, in the unit that suits it.
pub fn ns(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{} s", sig3(x / 1e9)),
        x if x >= 1e6 => format!("{} ms", sig3(x / 1e6)),
        x if x >= 1e3 => format!("{} µs", sig3(x / 1e3)),
        x => format!("{} ns", sig3(x)),
    }
}

pub fn mib(bytes: f64) -> String {
    format!("{} MiB", sig3(bytes / (1024.0 * 1024.0)))
}

/// An optional figure, `—` when absent.
pub fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "—".to_owned(), f)
}

/// A Markdown table.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() < 2
    }

    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.rows[0]);
        out.push_str(&format!(
            "|{}|\n",
            vec!["---"; self.rows[0].len()].join("|")
        ));
        for r in &self.rows[1..] {
            out.push_str(&line(r));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn bench_json_lines_are_found_and_merged() {
        let out = lines(&[
            "scenario=cpu records=10",
            r#"BENCH_JSON {"a": 1, "b": {"c": 2}}"#,
            "noise",
            r#"BENCH_JSON {"a": 3}"#,
        ]);
        let got = Value::Object(bench_json(&out).unwrap().unwrap());
        assert_eq!(got, json!({"a": 3, "b": {"c": 2}}));
        assert_eq!(num(&got, "b.c"), Some(2.0));
        assert_eq!(num(&got, "b.d"), None);
    }

    #[test]
    fn no_bench_json_is_none_and_a_broken_one_an_error() {
        assert_eq!(bench_json(&lines(&["x", "y"])).unwrap(), None);
        assert!(bench_json(&lines(&["BENCH_JSON {"])).is_err());
        assert!(bench_json(&lines(&["BENCH_JSON [1]"])).is_err());
    }

    #[test]
    fn key_values_reads_the_aiokpl_output() {
        let out = lines(&[
            "scenario=aiokpl shards=4 records=2000 aggregation=True",
            "  delivered ok=2000 failed=0 wall_s=0.52 records/s=3846 cpu_s=0.40 cpu_per_record_us=201.500 cores_busy=0.77",
        ]);
        let kv = Value::Object(key_values(&out));
        assert_eq!(num(&kv, "cpu_per_record_us"), Some(201.5));
        assert_eq!(num(&kv, "records/s"), Some(3846.0));
        assert_eq!(num(&kv, "ok"), Some(2000.0));
        assert_eq!(num(&kv, "aggregation"), None);
    }

    #[test]
    fn numbers_are_written_with_three_significant_digits() {
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(123.45), "123");
        assert_eq!(sig3(0.0), "0");
        assert_eq!(si(3_930_000.0), "3.93 M");
        assert_eq!(si(51_300.0), "51.3 k");
        assert_eq!(si(987.0), "987");
        assert_eq!(times(16.66), "16.7×");
        assert_eq!(ns(102_345.0), "102 µs");
        assert_eq!(ns(1_500_000.0), "1.50 ms");
        assert_eq!(mib(8.0 * 1024.0 * 1024.0), "8.00 MiB");
        assert_eq!(opt(None, sig3), "—");
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new(&["a", "b"]);
        assert!(t.is_empty());
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(t.render(), "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
