//! What one test reports: headline figures (compared across brokers by `report`) plus details
//! (counts kept for the record). It owns the JSON shape of results and exact percentiles; it
//! never measures anything itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which direction is an improvement, so the comparison table can say who wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput-like figures.
    Higher,
    /// Latency, memory and loss figures.
    Lower,
}

/// One comparable number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// E.g. `deliveries/s`, `p99`.
    pub name: String,
    /// The measured value in `unit`.
    pub value: f64,
    /// E.g. `msg/s`, `us`, `bytes`.
    pub unit: String,
    /// Whether a larger value is better.
    pub better: Better,
}

/// One test's outcome, printed by the generator as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestResult {
    /// The test name given on the command line (e.g. `qos1`, `fanout`).
    pub test: String,
    /// `3.1.1` or `5`.
    pub protocol: String,
    /// The numbers the comparison table shows.
    pub figures: Vec<Figure>,
    /// Raw counts and settings, kept in the JSON for whoever audits a figure.
    pub details: BTreeMap<String, serde_json::Value>,
}

impl TestResult {
    /// An empty result for `test`, to be filled with `figure` and `detail`.
    pub fn new(test: &str, protocol: &str) -> TestResult {
        TestResult {
            test: test.to_string(),
            protocol: protocol.to_string(),
            figures: Vec::new(),
            details: BTreeMap::new(),
        }
    }

    /// Adds a comparable figure.
    pub fn figure(&mut self, name: &str, value: f64, unit: &str, better: Better) {
        self.figures.push(Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            better,
        });
    }

    /// Adds a raw detail.
    pub fn detail(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.details.insert(key.to_string(), value.into());
    }
}

/// Exact percentiles over a sample set, sorted once.
pub struct Percentiles {
    sorted: Vec<u64>,
}

impl Percentiles {
    /// Sorts the samples (any unit; the caller knows which).
    pub fn new(mut samples: Vec<u64>) -> Percentiles {
        samples.sort_unstable();
        Percentiles { sorted: samples }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile: the smallest sample with at least `q` of all samples at or
    /// below it: p99.9 of 1,000 samples is the 999th smallest.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = (q * n as f64).ceil() as usize;
        self.sorted.get(rank.clamp(1, n) - 1).copied()
    }

    /// The largest sample.
    pub fn max(&self) -> Option<u64> {
        self.sorted.last().copied()
    }

    /// The arithmetic mean.
    pub fn mean(&self) -> Option<f64> {
        if self.sorted.is_empty() {
            return None;
        }
        let sum: u128 = self.sorted.iter().map(|&v| u128::from(v)).sum();
        Some(sum as f64 / self.sorted.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_thousand() {
        let p = Percentiles::new((1..=1000).rev().collect());
        assert_eq!(p.quantile(0.5), Some(500));
        assert_eq!(p.quantile(0.99), Some(990));
        assert_eq!(p.quantile(0.999), Some(999));
        assert_eq!(p.quantile(1.0), Some(1000));
        assert_eq!(p.max(), Some(1000));
        assert_eq!(p.mean(), Some(500.5));
    }

    #[test]
    fn empty_samples_have_no_percentiles() {
        let p = Percentiles::new(Vec::new());
        assert_eq!(p.quantile(0.5), None);
        assert_eq!(p.mean(), None);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let p = Percentiles::new(vec![7]);
        assert_eq!(p.quantile(0.0), Some(7));
        assert_eq!(p.quantile(0.999), Some(7));
    }
}
