//! [`Slo`]: the latency objective behind goodput, one definition for the
//! load generator, the simulator and the study.
//!
//! A request is *good* when it succeeded and each of its latencies is within
//! its objective: TTFT, TPOT (requests with one output token have none and
//! pass, as in `vllm bench serve`, which counts their TPOT as 0) and
//! end-to-end latency. An objective left at infinity is not checked; in JSON
//! it is written as `null` and `null` (or a missing field) reads back as
//! "not checked".

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A latency objective (see the module docs). Seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// TTFT at most (`f64::INFINITY`: not checked).
    #[serde(with = "unbounded")]
    pub ttft_secs: f64,
    /// TPOT at most (`f64::INFINITY`: not checked).
    #[serde(with = "unbounded")]
    pub tpot_secs: f64,
    /// End-to-end latency at most (`f64::INFINITY`: not checked).
    #[serde(with = "unbounded", default = "infinity")]
    pub e2e_secs: f64,
}

impl Default for Slo {
    /// 2 s TTFT, 0.2 s TPOT, end-to-end latency not checked.
    fn default() -> Self {
        Slo::new(2.0, 0.2)
    }
}

impl Slo {
    /// TTFT and TPOT objectives; end-to-end latency not checked.
    pub fn new(ttft_secs: f64, tpot_secs: f64) -> Slo {
        Slo {
            ttft_secs,
            tpot_secs,
            e2e_secs: f64::INFINITY,
        }
    }

    /// No objective at all: every successful request is good.
    pub fn unbounded() -> Slo {
        Slo {
            ttft_secs: f64::INFINITY,
            tpot_secs: f64::INFINITY,
            e2e_secs: f64::INFINITY,
        }
    }

    /// Whether a successful request with these latencies meets the
    /// objective. A NaN latency never does.
    pub fn met(&self, ttft: f64, tpot: Option<f64>, e2e: f64) -> bool {
        ttft <= self.ttft_secs && tpot.is_none_or(|t| t <= self.tpot_secs) && e2e <= self.e2e_secs
    }
}

impl std::fmt::Display for Slo {
    /// `TTFT ≤ 2000 ms, TPOT ≤ 200 ms` (unchecked objectives left out;
    /// `no latency objective` if none is checked).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("TTFT", self.ttft_secs),
            ("TPOT", self.tpot_secs),
            ("E2E", self.e2e_secs),
        ]
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(name, v)| format!("{name} ≤ {} ms", v * 1e3))
        .collect();
        if parts.is_empty() {
            f.write_str("no latency objective")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

fn infinity() -> f64 {
    f64::INFINITY
}

/// `f64::INFINITY` ⇄ `null`.
mod unbounded {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_objective_is_checked_and_infinity_is_not() {
        let slo = Slo {
            e2e_secs: 5.0,
            ..Slo::default()
        };
        assert!(slo.met(1.0, Some(0.1), 4.0));
        assert!(
            slo.met(2.0, None, 5.0),
            "bounds are inclusive; no TPOT passes"
        );
        assert!(!slo.met(2.1, None, 3.0));
        assert!(!slo.met(1.0, Some(0.3), 3.0));
        assert!(!slo.met(1.0, Some(0.1), 5.5));
        assert!(!slo.met(f64::NAN, None, 1.0));
        assert!(Slo::unbounded().met(1e9, Some(1e9), 1e9));
        assert!(Slo::default().met(1.0, None, 1e9));
    }

    #[test]
    fn display_names_checked_objectives() {
        assert_eq!(Slo::default().to_string(), "TTFT ≤ 2000 ms, TPOT ≤ 200 ms");
        let e2e = Slo {
            e2e_secs: 1.5,
            ..Slo::unbounded()
        };
        assert_eq!(e2e.to_string(), "E2E ≤ 1500 ms");
        assert_eq!(Slo::unbounded().to_string(), "no latency objective");
    }

    #[test]
    fn unchecked_objectives_round_trip_as_null() {
        let json = serde_json::to_string(&Slo::default()).unwrap();
        assert_eq!(json, r#"{"ttft_secs":2.0,"tpot_secs":0.2,"e2e_secs":null}"#);
        assert_eq!(serde_json::from_str::<Slo>(&json).unwrap(), Slo::default());
        // Summaries written before the end-to-end objective existed.
        let old: Slo = serde_json::from_str(r#"{"ttft_secs":1.5,"tpot_secs":0.1}"#).unwrap();
        assert_eq!(old, Slo::new(1.5, 0.1));
    }
}
