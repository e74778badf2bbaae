//! Run times learned per function and target from completed jobs: an exponential moving mean,
//! starting from the function's prior until the first completion is seen.

use std::collections::HashMap;

use crate::Millis;

#[derive(Debug, Clone, Default)]
pub struct RunTimes {
    /// function → target → mean milliseconds (nested so lookups borrow, never allocate).
    means: HashMap<String, HashMap<String, f64>>,
    priors: HashMap<String, Millis>,
}

/// Weight of the newest observation.
const ALPHA: f64 = 0.2;

impl RunTimes {
    /// What to assume for `function` anywhere before anything was measured.
    pub fn set_prior(&mut self, function: &str, ms: Millis) {
        self.priors.insert(function.to_owned(), ms);
    }

    pub fn observe(&mut self, function: &str, target: &str, ms: Millis) {
        let mean = self
            .means
            .entry(function.to_owned())
            .or_default()
            .entry(target.to_owned())
            .or_insert(ms as f64);
        *mean = *mean * (1.0 - ALPHA) + ms as f64 * ALPHA;
    }

    /// Takes `mean_ms` as the mean of `function` on `target` (a peer reports its own).
    pub fn record(&mut self, function: &str, target: &str, mean_ms: Millis) {
        self.means
            .entry(function.to_owned())
            .or_default()
            .insert(target.to_owned(), mean_ms as f64);
    }

    /// The mean measured for `function` on `target`, if any run was seen there.
    pub fn measured(&self, function: &str, target: &str) -> Option<Millis> {
        self.means
            .get(function)
            .and_then(|by_target| by_target.get(target))
            .map(|m| *m as Millis)
    }

    /// The expected run time of `function` on `target`: measured there, else the function's
    /// prior, else one second.
    pub fn expect(&self, function: &str, target: &str) -> Millis {
        self.measured(function, target)
            .or_else(|| self.priors.get(function).copied())
            .unwrap_or(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_runs_replace_the_prior_and_move_smoothly() {
        let mut r = RunTimes::default();
        r.set_prior("f", 5000);
        assert_eq!(r.expect("f", "pi"), 5000);
        r.observe("f", "pi", 1000);
        assert_eq!(r.expect("f", "pi"), 1000);
        r.observe("f", "pi", 2000);
        assert_eq!(r.expect("f", "pi"), 1200);
        assert_eq!(r.expect("f", "lambda"), 5000);
        assert_eq!(r.expect("g", "pi"), 1000);
    }
}
