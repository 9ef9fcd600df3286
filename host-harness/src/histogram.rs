//! Histograms as Envoy 1.40 shows them in `/stats`: samples binned with two significant
//! digits (libcircllhist), quantiles P0 … P100 read from the bins.
//!
//! Observed on the binary (`proxy_record_metric` on a histogram, then `/stats` after a flush):
//! samples 5, 10, 100, 1234 show `P0(5.05,5.05) P25(5.05,5.05) P50(10.5,10.5) P75(105,105)
//! P90(1250,1250) …`; samples 5, 5, 5, 5, 100 show `P0(5.02,5.02) P25(5.04,5.04)
//! P50(5.06,5.06) P75(5.08,5.08) P90(105,105) …`. So quantile q reads the sample of rank
//! max(1, ⌈q·n⌉), and the k-th of the c samples of a bin [lo, lo + w) reads lo + w·k/(c+1).

use std::collections::BTreeMap;

/// Envoy's supported quantiles, as `/stats` prints them.
pub const QUANTILES: [(f64, &str); 10] = [
    (0.0, "P0"),
    (0.25, "P25"),
    (0.5, "P50"),
    (0.75, "P75"),
    (0.9, "P90"),
    (0.95, "P95"),
    (0.99, "P99"),
    (0.995, "P99.5"),
    (0.999, "P99.9"),
    (1.0, "P100"),
];

/// A histogram's samples by bin. A bin is (exponent, mantissa 10..=99) for [m·10^e,
/// (m+1)·10^e); 0 has a bin of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    bins: BTreeMap<(i32, u64), u64>,
    zeros: u64,
    count: u64,
    sum: u128,
}

fn bin_of(v: u64) -> (i32, u64) {
    // v = m · 10^e with m in 10..=99 (e = -1 for 1..=9: m = 10·v).
    if v < 10 {
        return (-1, v * 10);
    }
    let mut e = 0i32;
    let mut m = v;
    while m >= 100 {
        m /= 10;
        e += 1;
    }
    (e, m)
}

fn bin_bounds((e, m): (i32, u64)) -> (f64, f64) {
    let scale = 10f64.powi(e);
    (m as f64 * scale, scale)
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.count += 1;
        self.sum += u128::from(v);
        if v == 0 {
            self.zeros += 1;
        } else {
            *self.bins.entry(bin_of(v)).or_insert(0) += 1;
        }
    }

    /// How many samples were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the samples as recorded (not binned).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// The value Envoy shows for quantile `q` (0..=1); `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank <= self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        // BTreeMap orders by (exponent, mantissa): ascending values.
        for (bin, c) in &self.bins {
            if rank <= seen + c {
                let k = rank - seen;
                let (lo, w) = bin_bounds(*bin);
                return Some(lo + w * k as f64 / (*c + 1) as f64);
            }
            seen += c;
        }
        None
    }

    /// The `/stats` value: `P0(i,c) P25(i,c) …`, or Envoy's "No recorded values". The
    /// harness has no flush interval, so the interval column repeats the cumulative one (as
    /// Envoy shows it after the first flush that saw the samples).
    pub fn stats_value(&self) -> String {
        if self.count == 0 {
            return "No recorded values".to_string();
        }
        let parts: Vec<String> = QUANTILES
            .iter()
            .map(|(q, label)| {
                let v = self
                    .quantile(*q)
                    .map(format_g)
                    .unwrap_or_else(|| "nan".into());
                format!("{label}({v},{v})")
            })
            .collect();
        parts.join(" ")
    }
}

/// C's `%g` (6 significant digits, trailing zeros dropped), as Envoy prints quantiles.
pub fn format_g(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-5..6).contains(&exp) {
        let s = format!("{:.5e}", v);
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = trim_zeros(mantissa);
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", e.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(samples: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for s in samples {
            h.record(*s);
        }
        h
    }

    #[test]
    fn matches_what_envoy_showed() {
        assert_eq!(
            hist(&[5, 10, 100, 1234]).stats_value(),
            "P0(5.05,5.05) P25(5.05,5.05) P50(10.5,10.5) P75(105,105) P90(1250,1250) \
             P95(1250,1250) P99(1250,1250) P99.5(1250,1250) P99.9(1250,1250) P100(1250,1250)"
        );
        assert_eq!(
            hist(&[5, 5, 5, 5, 100]).stats_value(),
            "P0(5.02,5.02) P25(5.04,5.04) P50(5.06,5.06) P75(5.08,5.08) P90(105,105) \
             P95(105,105) P99(105,105) P99.5(105,105) P99.9(105,105) P100(105,105)"
        );
        assert_eq!(Histogram::default().stats_value(), "No recorded values");
    }

    #[test]
    fn bins_have_two_significant_digits() {
        assert_eq!(bin_of(7), (-1, 70));
        assert_eq!(bin_of(42), (0, 42));
        assert_eq!(bin_of(1234), (2, 12));
        assert_eq!(bin_of(u64::MAX).1, 18);
        let h = hist(&[0, 0, 3]);
        assert_eq!(h.quantile(0.5), Some(0.0));
        assert_eq!(h.quantile(1.0), Some(3.05));
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum(), 3);
    }

    #[test]
    fn numbers_print_like_printf_g() {
        assert_eq!(format_g(5.05), "5.05");
        assert_eq!(format_g(1250.0), "1250");
        assert_eq!(format_g(10.5), "10.5");
        assert_eq!(format_g(125000.0), "125000");
        assert_eq!(format_g(1250000.0), "1.25e+06");
        assert_eq!(format_g(3.333333333), "3.33333");
    }
}
