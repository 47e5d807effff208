//! The generated region of `docs/BENCHMARKS.md`.
//!
//! ```text
//! # Benchmarks / intro            ← never touched
//! <!-- harness:begin -->
//! header (how to run, machine)    ← rewritten by every run that writes
//! <!-- harness:aggregation:begin -->
//! section                         ← rewritten only by a run that measured it
//! <!-- harness:aggregation:end -->
//! … producer, consumer …
//! <!-- harness:end -->
//! ## Aggregation format …         ← never touched (hand-written, edited by others)
//! ```
//!
//! Other people edit the rest of the file while benchmarks run, so the file is read again
//! right before writing, only the region changes, and the new file replaces the old one
//! with a rename (a reader sees the old file or the new one, never half of one).

use std::path::Path;

pub const BEGIN: &str = "<!-- harness:begin -->";
pub const END: &str = "<!-- harness:end -->";

fn section_begin(name: &str) -> String {
    format!("<!-- harness:{name}:begin -->")
}

fn section_end(name: &str) -> String {
    format!("<!-- harness:{name}:end -->")
}

/// `doc` with the region rewritten: `header`, then a section per name of `order`: the new
/// body from `fresh` if there is one, else the one already in the region, else `missing(name)`
/// (without markers: a placeholder is regenerated each time).
pub fn splice(
    doc: &str,
    header: &str,
    order: &[&str],
    fresh: &[(&str, String)],
    missing: impl Fn(&str) -> String,
) -> Result<String, String> {
    let (before, region, after) = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            if doc[b + BEGIN.len()..].contains(BEGIN) || doc[e + END.len()..].contains(END) {
                return Err(format!("{BEGIN} or {END} appears twice"));
            }
            let after = doc[e + END.len()..]
                .strip_prefix('\n')
                .unwrap_or(&doc[e + END.len()..]);
            (&doc[..b], &doc[b + BEGIN.len()..e], after)
        }
        (None, None) => {
            // After the title and the intro: before the first second-level heading.
            let at = doc
                .match_indices("\n## ")
                .next()
                .map_or(doc.len(), |(i, _)| i + 1);
            (&doc[..at], "", &doc[at..])
        }
        _ => return Err(format!("{BEGIN} and {END} are not a pair in this order")),
    };
    let mut out = String::with_capacity(doc.len() + 4096);
    out.push_str(before);
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(header.trim_end());
    out.push_str("\n\n");
    for name in order {
        let body = match fresh.iter().find(|(n, _)| n == name) {
            Some((_, b)) => Some(b.clone()),
            None => existing(region, name)?,
        };
        match body {
            Some(b) => {
                out.push_str(&section_begin(name));
                out.push('\n');
                out.push_str(b.trim());
                out.push('\n');
                out.push_str(&section_end(name));
                out.push_str("\n\n");
            }
            None => {
                out.push_str(missing(name).trim());
                out.push_str("\n\n");
            }
        }
    }
    out.push_str(END);
    out.push('\n');
    if !after.is_empty() && !after.starts_with('\n') {
        out.push('\n');
    }
    out.push_str(after);
    Ok(out)
}

/// The body of section `name` in `region`, if it has one.
fn existing(region: &str, name: &str) -> Result<Option<String>, String> {
    let (b, e) = (section_begin(name), section_end(name));
    match (region.find(&b), region.find(&e)) {
        (Some(i), Some(j)) if i < j => Ok(Some(region[i + b.len()..j].trim().to_owned())),
        (None, None) => Ok(None),
        _ => Err(format!("{b} and {e} are not a pair in this order")),
    }
}

/// Rewrites the region of the file at `path` (read now, replaced by a rename).
pub fn update(
    path: &Path,
    header: &str,
    order: &[&str],
    fresh: &[(&str, String)],
    missing: impl Fn(&str) -> String,
) -> Result<(), String> {
    let doc = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let new = splice(&doc, header, order, fresh, missing)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.xtask-{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("doc"),
        std::process::id()
    ));
    std::fs::write(&tmp, new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &[&str] = &["aggregation", "producer", "consumer"];

    fn missing(name: &str) -> String {
        format!("_{name}: not yet_")
    }

    const DOC: &str = "# Benchmarks\n\nIntro.\n\n| a | b |\n\n## Aggregation\n\nHand-written.\n";

    #[test]
    fn the_region_is_created_after_the_intro() {
        let out = splice(DOC, "H", ORDER, &[("producer", "P1".into())], missing).unwrap();
        assert_eq!(
            out,
            "# Benchmarks\n\nIntro.\n\n| a | b |\n\n<!-- harness:begin -->\nH\n\n\
             _aggregation: not yet_\n\n\
             <!-- harness:producer:begin -->\nP1\n<!-- harness:producer:end -->\n\n\
             _consumer: not yet_\n\n<!-- harness:end -->\n\n## Aggregation\n\nHand-written.\n"
        );
    }

    #[test]
    fn a_run_replaces_its_sections_and_keeps_the_others() {
        let first = splice(
            DOC,
            "H1",
            ORDER,
            &[("producer", "P1".into()), ("consumer", "C1".into())],
            missing,
        )
        .unwrap();
        // Someone edits the hand-written part meanwhile.
        let edited = first.replace("Hand-written.", "Hand-written, edited.");
        let second = splice(&edited, "H2", ORDER, &[("producer", "P2".into())], missing).unwrap();
        assert!(second.contains("H2") && !second.contains("H1"));
        assert!(second.contains("P2") && !second.contains("P1"));
        assert!(second.contains("C1"));
        assert!(second.ends_with("## Aggregation\n\nHand-written, edited.\n"));
        // Idempotent: the same run twice gives the same file.
        let third = splice(&second, "H2", ORDER, &[("producer", "P2".into())], missing).unwrap();
        assert_eq!(second, third);
    }

    #[test]
    fn broken_markers_are_refused() {
        let only_begin = format!("{DOC}{BEGIN}\n");
        assert!(splice(&only_begin, "H", ORDER, &[], missing).is_err());
        let reversed = format!("{END}\n{DOC}{BEGIN}\n");
        assert!(splice(&reversed, "H", ORDER, &[], missing).is_err());
        let twice = format!("{BEGIN}\n{END}\n{DOC}{BEGIN}\n{END}\n");
        assert!(splice(&twice, "H", ORDER, &[], missing).is_err());
        let bad_section = format!("{BEGIN}\n<!-- harness:producer:end -->\n{END}\n{DOC}");
        assert!(splice(&bad_section, "H", ORDER, &[], missing).is_err());
    }

    #[test]
    fn update_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("xtask-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(&path, DOC).unwrap();
        update(&path, "H", ORDER, &[("consumer", "C".into())], missing).unwrap();
        let got = std::fs::read_to_string(&path).unwrap();
        assert!(got.contains("<!-- harness:consumer:begin -->\nC\n"));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
