//! The ring all-reduce cost model, to read measured all-reduce times and predict them on
//! other networks and node counts.
//!
//! A ring all-reduce of `n` bytes over `N` ranks runs 2(N−1) steps (a reduce-scatter, then
//! an all-gather), each sending n/N bytes to the next rank:
//!
//! ```text
//! T(N, n) = 2(N−1)·α + 2(N−1)/N · n · β
//! ```
//!
//! with α the per-message latency and β the seconds per byte (1 / bandwidth, the
//! reduction's arithmetic folded in). Fitted by least squares on relative error to times
//! measured at one N over a range of sizes: the intercept gives α, the slope β.

/// α and β of the ring model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingModel {
    /// Seconds per message step.
    pub latency: f64,
    /// Seconds per byte sent.
    pub seconds_per_byte: f64,
}

impl RingModel {
    /// A network's model from its latency (seconds) and bandwidth (gigabits per second).
    pub fn network(latency: f64, gigabits_per_second: f64) -> RingModel {
        RingModel {
            latency,
            seconds_per_byte: 8.0 / (gigabits_per_second * 1e9),
        }
    }

    /// Least-squares fit to `(bytes, seconds)` measurements of all-reduce over `ranks`
    /// ranks. Needs two sizes at least, and more than one rank.
    pub fn fit(ranks: usize, measurements: &[(f64, f64)]) -> Option<RingModel> {
        if ranks < 2 || measurements.len() < 2 {
            return None;
        }
        let (line_intercept, line_slope) = least_squares(measurements)?;
        let steps = 2.0 * (ranks as f64 - 1.0);
        Some(RingModel {
            latency: line_intercept / steps,
            seconds_per_byte: line_slope / (steps / ranks as f64),
        })
    }

    /// Predicted seconds for one all-reduce of `bytes` over `ranks`.
    pub fn all_reduce_seconds(&self, ranks: usize, bytes: f64) -> f64 {
        if ranks < 2 {
            return 0.0;
        }
        let n = ranks as f64;
        2.0 * (n - 1.0) * self.latency + 2.0 * (n - 1.0) / n * bytes * self.seconds_per_byte
    }

    /// Bandwidth in gigabits per second.
    pub fn gigabits_per_second(&self) -> f64 {
        8.0 / self.seconds_per_byte / 1e9
    }
}

/// Parallel efficiency of one step that computes for `compute` seconds and then
/// all-reduces for `communicate` seconds, without overlap: the share of time computing.
pub fn efficiency(compute: f64, communicate: f64) -> f64 {
    compute / (compute + communicate)
}

/// Intercept and slope of the line through `(x, y)` points that minimizes the squared
/// *relative* errors, Σ((a + b·x − y) / y)²: the sizes span orders of magnitude, and plain
/// least squares would fit the largest few and leave the latency meaningless (negative).
fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let weight = |y: f64| 1.0 / (y * y);
    let w: f64 = points.iter().map(|p| weight(p.1)).sum();
    let mean_x = points.iter().map(|p| weight(p.1) * p.0).sum::<f64>() / w;
    let mean_y = points.iter().map(|p| weight(p.1) * p.1).sum::<f64>() / w;
    let sxx: f64 = points.iter().map(|p| weight(p.1) * (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points
        .iter()
        .map(|p| weight(p.1) * (p.0 - mean_x) * (p.1 - mean_y))
        .sum();
    if sxx == 0.0 || !w.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    Some((mean_y - slope * mean_x, slope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_times_the_model_generated_recovers_its_latency_and_bandwidth() {
        let truth = RingModel::network(20e-6, 10.0);
        for ranks in [2, 4, 8] {
            let sizes = [1e3, 1e5, 1e6, 1.6e7];
            let times: Vec<(f64, f64)> = sizes
                .iter()
                .map(|&b| (b, truth.all_reduce_seconds(ranks, b)))
                .collect();
            let fitted = RingModel::fit(ranks, &times).unwrap();
            assert!((fitted.latency - 20e-6).abs() < 1e-12, "{fitted:?}");
            assert!((fitted.gigabits_per_second() - 10.0).abs() < 1e-6, "{fitted:?}");
        }
    }

    #[test]
    fn the_ring_sends_twice_the_data_less_one_share_whatever_the_rank_count() {
        let m = RingModel::network(0.0, 8.0); // 1 byte per nanosecond
        assert_eq!(m.all_reduce_seconds(1, 1e9), 0.0);
        assert!((m.all_reduce_seconds(2, 1e9) - 1.0).abs() < 1e-12);
        assert!((m.all_reduce_seconds(64, 1e9) - 2.0 * 63.0 / 64.0).abs() < 1e-12);
        assert!(RingModel::fit(1, &[(1.0, 1.0), (2.0, 2.0)]).is_none());
        assert!(RingModel::fit(2, &[(1.0, 1.0), (1.0, 2.0)]).is_none());
        assert_eq!(efficiency(3.0, 1.0), 0.75);
    }
}
