//! Money: integer minor units plus an ISO 4217 currency code. Never floating point.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 currency code that wayfare knows how to price in.
///
/// Only currencies with two minor digits are accepted: every amount in wayfare is
/// "minor units", and mixing exponents would make `500.00` ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// Currencies accepted from config, clients and sellers (all with two minor digits).
const KNOWN_CURRENCIES: &[&str] = &[
    "AUD", "CAD", "CHF", "CNY", "DKK", "EUR", "GBP", "HKD", "NOK", "NZD", "PLN", "SEK", "SGD",
    "USD",
];

impl Currency {
    /// Euro, the default marketplace currency.
    pub const EUR: Currency = Currency(*b"EUR");
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // Invariant: built only from KNOWN_CURRENCIES, which are ASCII.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }
}

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency code {0:?} (expected one of {KNOWN_CURRENCIES:?})")]
pub struct UnknownCurrency(pub String);

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match KNOWN_CURRENCIES.iter().find(|c| **c == s) {
            Some(c) => {
                let b = c.as_bytes();
                Ok(Currency([b[0], b[1], b[2]]))
            }
            None => Err(UnknownCurrency(s.chars().take(16).collect())),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount of money in minor units (cents) of a currency.
///
/// `minor` is signed so ledger deltas can be expressed, but balances and prices are
/// validated non-negative where they are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct Money {
    /// Amount in minor units: 50000 is 500.00.
    pub minor: i64,
    /// ISO 4217 code.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
}

impl Money {
    /// `minor` units of `currency`.
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// Zero of `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Money { minor: 0, currency }
    }

    /// Sum, or `None` on currency mismatch or overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        Some(Money::new(
            self.minor.checked_add(other.minor)?,
            self.currency,
        ))
    }

    /// Difference, or `None` on currency mismatch or overflow.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        Some(Money::new(
            self.minor.checked_sub(other.minor)?,
            self.currency,
        ))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_refuses_unknown_currencies() {
        assert_eq!("EUR".parse::<Currency>().unwrap(), Currency::EUR);
        assert!("eur".parse::<Currency>().is_err());
        assert!("XYZ".parse::<Currency>().is_err());
        assert!("".parse::<Currency>().is_err());
    }

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let a = Money::new(50_000, Currency::EUR);
        let b = Money::new(10_000, Currency::EUR);
        assert_eq!(a.checked_sub(b).unwrap().minor, 40_000);
        assert!(a.checked_add(Money::new(1, Currency::USD)).is_none());
        assert!(Money::new(i64::MAX, Currency::EUR).checked_add(b).is_none());
        assert_eq!(a.to_string(), "500.00 EUR");
        assert_eq!(Money::new(-5, Currency::EUR).to_string(), "-0.05 EUR");
    }

    #[test]
    fn json_shape_is_minor_units_and_code() {
        let json = serde_json::to_string(&Money::new(123, Currency::EUR)).unwrap();
        assert_eq!(json, r#"{"minor":123,"currency":"EUR"}"#);
        assert!(serde_json::from_str::<Money>(r#"{"minor":1,"currency":"ABC"}"#).is_err());
    }
}
