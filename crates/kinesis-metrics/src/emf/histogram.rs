//! Histogram values of one interval, in log-scale bins, reduced to at most N points.
//!
//! A value lands in a bin 1/16 of an octave wide (about 4.4 %); each bin keeps the count and
//! the sum of its values. A point is `(mean of the bin's values, count)`: the sum and the
//! average of what is written are exact, the minimum, maximum and percentiles are within a
//! bin's width. When more than N bins are in use, neighbouring bins are merged (counts and
//! sums added) until N remain.
//!
//! Zero and values too small for a bin (|v| < 2⁻³⁰) share one bin; negative values have
//! bins of their own; infinities are clamped to ±f64::MAX and NaN is ignored.

use std::collections::BTreeMap;

/// Bins per octave.
const PER_OCTAVE: f64 = 16.0;
/// Values smaller than this in magnitude go to the zero bin.
const SMALLEST: f64 = 1.0 / (1u64 << 30) as f64;

/// The values recorded since the last flush.
#[derive(Debug, Default)]
pub(crate) struct Bins {
    /// Bin index (ordered as the values are) → (count, sum).
    bins: BTreeMap<i64, (u64, f64)>,
}

/// The bin of `value`: negative values below the zero bin (index 0), ordered as the
/// values themselves.
fn index(value: f64) -> i64 {
    let magnitude = value.abs();
    if magnitude < SMALLEST {
        return 0;
    }
    // log2 of a finite f64 ≥ 2⁻³⁰ is in [-30, 1024): shifting by 31 octaves keeps the index
    // of positive values ≥ 1.
    let bin = ((magnitude.log2() + 31.0) * PER_OCTAVE).floor() as i64 + 1;
    if value < 0.0 { -bin } else { bin }
}

impl Bins {
    pub(crate) fn record(&mut self, value: f64, count: u64) {
        if value.is_nan() || count == 0 {
            return;
        }
        let value = value.clamp(f64::MIN, f64::MAX);
        let bin = self.bins.entry(index(value)).or_insert((0, 0.0));
        bin.0 += count;
        bin.1 += value * count as f64;
    }

    /// At most `max` points `(value, count)` in increasing value order.
    pub(crate) fn points(&self, max: usize) -> Vec<(f64, u64)> {
        let max = max.max(1);
        let bins: Vec<(u64, f64)> = self.bins.values().copied().collect();
        // Merge runs of `per` neighbouring bins: ceil(len / per) ≤ max.
        let per = bins.len().div_ceil(max).max(1);
        bins.chunks(per)
            .map(|run| {
                let count: u64 = run.iter().map(|b| b.0).sum();
                let sum: f64 = run.iter().map(|b| b.1).sum();
                ((sum / count as f64).clamp(f64::MIN, f64::MAX), count)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_small_values_stay_exact() {
        let mut bins = Bins::default();
        for v in [0.0, 1.0, 1.0, 2.0, 3.0, 250.0, 250.0, 250.0] {
            bins.record(v, 1);
        }
        bins.record(-4.0, 2);
        assert_eq!(
            bins.points(100),
            [
                (-4.0, 2),
                (0.0, 1),
                (1.0, 2),
                (2.0, 1),
                (3.0, 1),
                (250.0, 3)
            ]
        );
    }

    #[test]
    fn many_values_are_reduced_to_the_limit_with_exact_count_and_sum() {
        let mut bins = Bins::default();
        let mut sum = 0.0;
        for i in 0..100_000u32 {
            // 0.001 ms to about 100 s: hundreds of bins.
            let v = 0.001 * 1.0002f64.powi(i as i32);
            sum += v;
            bins.record(v, 1);
        }
        let points = bins.points(100);
        assert!(points.len() <= 100 && points.len() > 50, "{}", points.len());
        assert_eq!(points.iter().map(|p| p.1).sum::<u64>(), 100_000);
        let written: f64 = points.iter().map(|(v, c)| v * *c as f64).sum();
        assert!((written - sum).abs() / sum < 1e-9, "{written} vs {sum}");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "increasing");
    }

    #[test]
    fn a_bin_is_about_four_percent_wide() {
        let mut bins = Bins::default();
        // One bin spans 2^(6 + 10/16) ≈ 98.7 to 2^(6 + 11/16) ≈ 103.1.
        bins.record(99.0, 1);
        bins.record(101.0, 1);
        bins.record(104.0, 1);
        let points = bins.points(100);
        assert_eq!(points, [(100.0, 2), (104.0, 1)]);
    }

    #[test]
    fn odd_values_do_not_break_anything() {
        let mut bins = Bins::default();
        bins.record(f64::NAN, 1);
        bins.record(f64::INFINITY, 1);
        bins.record(f64::NEG_INFINITY, 1);
        bins.record(1e-300, 1);
        bins.record(5.0, 0);
        let points = bins.points(100);
        assert_eq!(points.len(), 3, "{points:?}");
        assert!(points.iter().all(|(v, _)| v.is_finite()));
        assert!(Bins::default().points(100).is_empty());
    }
}
