//! `[payments.simulated]`: the simulated gateway's latency, error rate and seed.

use serde::{Deserialize, Serialize};

/// Upper bound on any configured latency, so a typo cannot stall sagas for hours.
const MAX_LATENCY_MS: u64 = 60_000;

/// Settings of the simulated gateway (`[payments.simulated]` in config). Every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedGatewayConfig {
    /// Lowest latency added to every call, in milliseconds.
    pub latency_min_ms: u64,
    /// Highest latency added to every call, in milliseconds (uniform between min and max).
    pub latency_max_ms: u64,
    /// Extra latency for the `tok_slow` card, in milliseconds.
    pub slow_card_extra_ms: u64,
    /// Probability in `[0, 1]` that any new operation fails with `Unavailable`.
    pub error_rate: f64,
    /// Seed of the random source for latency and errors, so runs are reproducible.
    pub seed: u64,
}

impl Default for SimulatedGatewayConfig {
    fn default() -> Self {
        SimulatedGatewayConfig {
            latency_min_ms: 1,
            latency_max_ms: 5,
            slow_card_extra_ms: 300,
            error_rate: 0.0,
            seed: 7,
        }
    }
}

/// A configuration value that is out of range; `key` names it as written in config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key `{key}`: {reason}")]
pub struct GatewayConfigError {
    /// Full config key, e.g. `payments.error_rate`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SimulatedGatewayConfig {
    /// Checks ranges, naming the first bad key.
    pub fn validate(&self) -> Result<(), GatewayConfigError> {
        let bad = |key, reason: String| Err(GatewayConfigError { key, reason });
        if !(self.error_rate.is_finite() && (0.0..=1.0).contains(&self.error_rate)) {
            return bad(
                "payments.simulated.error_rate",
                format!("{} is not within [0, 1]", self.error_rate),
            );
        }
        if self.latency_max_ms > MAX_LATENCY_MS {
            return bad(
                "payments.simulated.latency_max_ms",
                format!(
                    "{} exceeds the limit of {MAX_LATENCY_MS}",
                    self.latency_max_ms
                ),
            );
        }
        if self.latency_min_ms > self.latency_max_ms {
            return bad(
                "payments.simulated.latency_min_ms",
                format!(
                    "{} is above latency_max_ms {}",
                    self.latency_min_ms, self.latency_max_ms
                ),
            );
        }
        if self.slow_card_extra_ms > MAX_LATENCY_MS {
            return bad(
                "payments.simulated.slow_card_extra_ms",
                format!(
                    "{} exceeds the limit of {MAX_LATENCY_MS}",
                    self.slow_card_extra_ms
                ),
            );
        }
        Ok(())
    }
}
