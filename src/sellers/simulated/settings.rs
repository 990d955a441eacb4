//! Settings of a simulated seller: its `[sellers.simulated]` table and the fault knobs a
//! test can turn at runtime.

use serde::Deserialize;

use crate::domain::breaker::InvalidSetting;
use crate::domain::money::Currency;

/// Longest latency a simulated seller may be configured with; longer waits are what
/// `hang_rate` is for.
pub const MAX_SIMULATED_LATENCY_MS: u64 = 60_000;

/// Configuration of one simulated seller, as it appears in `config.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedSellerConfig {
    /// Seller name used in offers and logs. Default `"simulated"`.
    pub name: String,
    /// Seed for which SKUs are carried and how they are priced. Default 1.
    pub seed: u64,
    /// Currency of every price. Default EUR.
    pub currency: Currency,
    /// Each call waits a uniformly drawn latency in `[min, max]` milliseconds. Default
    /// `[20, 80]`.
    pub latency_ms: (u64, u64),
    /// Fraction of the base catalog this seller carries, in `0..=1`. Default 0.8.
    pub coverage: f64,
    /// Probability a call fails with `Unavailable`. Default 0.
    pub error_rate: f64,
    /// Probability a call never completes (until its future is dropped). Default 0.
    pub hang_rate: f64,
    /// Probability a booking is declined as sold out. Default 0.
    pub reject_rate: f64,
    /// Probability a booking or cancellation takes effect but its reply is lost (the call
    /// hangs): the case the saga must reconcile with `booking_status`. Default 0.
    pub lost_reply_rate: f64,
    /// Cancellation fee as a percentage of the booked price, `0..=100`. Default 10.
    pub cancel_fee_percent: u32,
}

impl Default for SimulatedSellerConfig {
    fn default() -> Self {
        SimulatedSellerConfig {
            name: "simulated".to_string(),
            seed: 1,
            currency: Currency::EUR,
            latency_ms: (20, 80),
            coverage: 0.8,
            error_rate: 0.0,
            hang_rate: 0.0,
            reject_rate: 0.0,
            lost_reply_rate: 0.0,
            cancel_fee_percent: 10,
        }
    }
}

impl SimulatedSellerConfig {
    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.name.trim().is_empty() {
            return Err(InvalidSetting::new("name", "must not be empty"));
        }
        let (min, max) = self.latency_ms;
        if min > max {
            return Err(InvalidSetting::new(
                "latency_ms",
                format!("min {min} is above max {max}"),
            ));
        }
        if max > MAX_SIMULATED_LATENCY_MS {
            return Err(InvalidSetting::new(
                "latency_ms",
                format!("max {max} is above {MAX_SIMULATED_LATENCY_MS}"),
            ));
        }
        InvalidSetting::check_fraction("coverage", self.coverage)?;
        self.faults().validate()?;
        if self.cancel_fee_percent > 100 {
            return Err(InvalidSetting::new(
                "cancel_fee_percent",
                "must be within 0..=100",
            ));
        }
        Ok(())
    }

    /// The fault rates of this config.
    pub fn faults(&self) -> FaultRates {
        FaultRates {
            error_rate: self.error_rate,
            hang_rate: self.hang_rate,
            reject_rate: self.reject_rate,
            lost_reply_rate: self.lost_reply_rate,
        }
    }
}

/// Fault probabilities, each within `0..=1`; see the fields of [`SimulatedSellerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// Probability a call fails with `Unavailable`.
    pub error_rate: f64,
    /// Probability a call never completes.
    pub hang_rate: f64,
    /// Probability a booking is declined.
    pub reject_rate: f64,
    /// Probability a booking or cancellation lands but its reply is lost.
    pub lost_reply_rate: f64,
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: FaultRates = FaultRates {
        error_rate: 0.0,
        hang_rate: 0.0,
        reject_rate: 0.0,
        lost_reply_rate: 0.0,
    };

    /// Checks each rate is within `0..=1`, naming the first that is not.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::check_fraction("error_rate", self.error_rate)?;
        InvalidSetting::check_fraction("hang_rate", self.hang_rate)?;
        InvalidSetting::check_fraction("reject_rate", self.reject_rate)?;
        InvalidSetting::check_fraction("lost_reply_rate", self.lost_reply_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        assert!(SimulatedSellerConfig::default().validate().is_ok());
        let bad = |c: SimulatedSellerConfig| c.validate().unwrap_err().key;
        assert_eq!(
            bad(SimulatedSellerConfig {
                error_rate: 1.5,
                ..Default::default()
            }),
            "error_rate"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                hang_rate: -0.1,
                ..Default::default()
            }),
            "hang_rate"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                reject_rate: f64::NAN,
                ..Default::default()
            }),
            "reject_rate"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                coverage: 2.0,
                ..Default::default()
            }),
            "coverage"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                latency_ms: (10, 5),
                ..Default::default()
            }),
            "latency_ms"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                cancel_fee_percent: 101,
                ..Default::default()
            }),
            "cancel_fee_percent"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                name: " ".into(),
                ..Default::default()
            }),
            "name"
        );
    }

    #[test]
    fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
        let c: SimulatedSellerConfig =
            serde_json::from_str(r#"{"name":"b","seed":7,"latency_ms":[1,2]}"#).unwrap();
        assert_eq!(
            (c.name.as_str(), c.seed, c.latency_ms, c.cancel_fee_percent),
            ("b", 7, (1, 2), 10)
        );
        let err =
            serde_json::from_str::<SimulatedSellerConfig>(r#"{"eror_rate":0.1}"#).unwrap_err();
        assert!(err.to_string().contains("eror_rate"), "{err}");
    }
}
