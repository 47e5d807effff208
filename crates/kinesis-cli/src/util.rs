//! Small parsers and encoders the commands share: durations, times, shard ids, key
//! templates, hex and base64. Written here rather than pulled in as crates: each is a few
//! lines and fully tested below.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::primitives::{DateTime, DateTimeFormat};
use kinesis_aggregation::HashKey;

/// `500ms`, `90s`, `5m`, `2h`, `1d`, `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: use e.g. 500ms, 90s, 5m, 2h, 1d");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        total += unit
            .checked_mul(u32::try_from(n).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// RFC 3339 (`2026-05-01T12:00:00Z`) or an age relative to now (`5m`).
pub fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(age) = parse_duration(s) {
        return SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("{s:?} reaches before 1970"));
    }
    let t = DateTime::from_str(s, DateTimeFormat::DateTime).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-05-01T12:00:00Z) nor an age (5m, 2h)")
    })?;
    SystemTime::try_from(t).map_err(|_| format!("{s:?} is out of range"))
}

/// A shard id, or its number: `3` means `shardId-000000000003`.
pub fn parse_shard_id(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a shard number"))?;
        return Ok(format!("shardId-{n:012}"));
    }
    if s.is_empty() {
        return Err("a shard id cannot be empty".into());
    }
    Ok(s.to_owned())
}

pub fn parse_hash_key(s: &str) -> Result<HashKey, String> {
    s.parse()
        .map_err(|e| format!("{e} (a hash key is a decimal number from 0 to 2^128-1)"))
}

pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of records per second"
        )),
    }
}

/// A partition-key template: literal text with `{num}` (or `{n}`), `{line}` and `{rand}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    N,
    Line,
    Rand,
}

pub fn parse_template(s: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let part = match name.as_str() {
                    "num" | "n" => Part::N,
                    "line" => Part::Line,
                    "rand" => Part::Rand,
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}} in {s:?}: use {{num}}, {{line}} or {{rand}}"
                        ));
                    }
                };
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(part);
            }
            '}' => return Err(format!("unmatched }} in {s:?}: write }}}} for a brace")),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    if parts.is_empty() {
        return Err("the key template is empty: partition keys need 1 to 256 characters".into());
    }
    Ok(Template(parts))
}

impl Template {
    pub fn render(&self, n: u64, line: &str, rng: &mut Rng) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::N => {
                    let _ = write!(out, "{n}");
                }
                Part::Line => out.push_str(line),
                Part::Rand => {
                    let _ = write!(out, "{}", rng.next());
                }
            }
        }
        out
    }
}

/// xorshift64*: random partition keys need spread, not secrecy.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn from_clock() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub fn hex(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(out, "{b:02x}");
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Text for one tab-separated field on one line: control characters (newlines, tabs) and
/// backslashes escaped, so that every record stays one line with a fixed number of fields.
pub fn escape_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `1.5 KiB`-style sizes for summaries.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// RFC 3339 for an SDK timestamp.
pub fn rfc3339(t: &DateTime) -> String {
    t.fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| t.secs().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "m", "5x", "1.5s", "-3s", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since() {
        let t = parse_since("2026-05-01T12:00:00Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_777_636_800);
        let since = parse_since("5m").unwrap();
        let age = SystemTime::now().duration_since(since).unwrap();
        assert!(age >= Duration::from_secs(300) && age < Duration::from_secs(310));
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn shard_ids() {
        assert_eq!(parse_shard_id("3").unwrap(), "shardId-000000000003");
        assert_eq!(
            parse_shard_id("shardId-000000000012").unwrap(),
            "shardId-000000000012"
        );
        assert!(parse_shard_id("").is_err());
    }

    #[test]
    fn templates() {
        let mut rng = Rng(1);
        let t = parse_template("user-{num}-{line}").unwrap();
        assert_eq!(t.render(7, "x", &mut rng), "user-7-x");
        let t = parse_template("{{{n}}}").unwrap();
        assert_eq!(t.render(1, "", &mut rng), "{1}");
        let t = parse_template("{rand}").unwrap();
        assert_ne!(t.render(0, "", &mut rng), t.render(0, "", &mut rng));
        assert!(parse_template("{nope}").unwrap_err().contains("{nope}"));
        assert!(parse_template("a}b").is_err());
        assert!(parse_template("").is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(hex(b"\x00\xffA"), "00ff41");
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(escape_field("a\tb\nc\\d\u{1}"), "a\\tb\\nc\\\\d\\u{1}");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
