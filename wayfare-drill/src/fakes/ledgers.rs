//! The partners' own books, read from the fakes running as their own processes
//! (`GET /_fake/ledger` of `examples/fake_gateway.rs` and `examples/fake_seller.rs`) and
//! turned into what the invariant checker reads ([`PaymentsSeen`], [`crate::SellerSeen`]).

use std::collections::BTreeSet;

use serde::Deserialize;
use wayfare::domain::money::Money;
use wayfare::payments::simulated::{LedgerAuthorization, LedgerCapture, LedgerRefund, LedgerVoid};
use wayfare::payments::GatewayLedger;

use super::journaled::SellerLedger;
use crate::PaymentsSeen;

/// The fake gateway's `GET /_fake/ledger` reply (the rows the checks use).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FakeGatewayLedger {
    /// Authorizations that took effect.
    pub authorizations: Vec<GatewayRow>,
    /// Captures.
    pub captures: Vec<GatewayRow>,
    /// Voids.
    pub voids: Vec<GatewayRow>,
    /// Refunds.
    pub refunds: Vec<GatewayRow>,
    /// Declined authorizations.
    #[serde(default)]
    pub declines: Vec<GatewayRow>,
    /// Requests refused for good (a capture of a voided authorization, ...).
    #[serde(default)]
    pub rejections: Vec<GatewayRow>,
}

/// One row of the fake gateway's ledger; which fields are set depends on the list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GatewayRow {
    /// The caller's idempotency key.
    pub key: String,
    /// Authorization concerned (authorizations, captures, voids).
    pub authorization_id: Option<String>,
    /// Capture concerned (captures, refunds).
    pub capture_id: Option<String>,
    /// Refund reference.
    pub refund_id: Option<String>,
    /// Amount moved.
    pub amount: Option<Money>,
    /// Card of an authorization, when the gateway lists it.
    pub card_token: Option<String>,
    /// Decline or rejection reason.
    pub reason: Option<String>,
}

/// A row missing a field its list must have.
fn field<T: Clone>(value: &Option<T>, list: &str, name: &str, key: &str) -> Result<T, String> {
    value
        .clone()
        .ok_or_else(|| format!("fake gateway ledger: {list} row of key {key} has no {name}"))
}

impl FakeGatewayLedger {
    /// The gateway's books as the checker reads them; open authorizations are those
    /// neither captured nor voided. Rows lacking a field their list needs are an error.
    pub fn seen(&self) -> Result<PaymentsSeen, String> {
        let mut ledger = GatewayLedger::default();
        for a in &self.authorizations {
            ledger.authorizations.push(LedgerAuthorization {
                key: a.key.clone(),
                authorization_id: field(&a.authorization_id, "authorizations", "id", &a.key)?,
                card_token: a.card_token.clone().unwrap_or_default(),
                amount: field(&a.amount, "authorizations", "amount", &a.key)?,
            });
        }
        for c in &self.captures {
            ledger.captures.push(LedgerCapture {
                key: c.key.clone(),
                capture_id: field(&c.capture_id, "captures", "capture_id", &c.key)?,
                authorization_id: field(&c.authorization_id, "captures", "auth id", &c.key)?,
                amount: field(&c.amount, "captures", "amount", &c.key)?,
            });
        }
        for v in &self.voids {
            ledger.voids.push(LedgerVoid {
                key: v.key.clone(),
                authorization_id: field(&v.authorization_id, "voids", "auth id", &v.key)?,
            });
        }
        for r in &self.refunds {
            ledger.refunds.push(LedgerRefund {
                key: r.key.clone(),
                refund_id: field(&r.refund_id, "refunds", "refund_id", &r.key)?,
                capture_id: field(&r.capture_id, "refunds", "capture_id", &r.key)?,
                amount: field(&r.amount, "refunds", "amount", &r.key)?,
            });
        }
        let closed: BTreeSet<&str> = ledger
            .captures
            .iter()
            .map(|c| c.authorization_id.as_str())
            .chain(ledger.voids.iter().map(|v| v.authorization_id.as_str()))
            .collect();
        let open_authorizations = ledger
            .authorizations
            .iter()
            .map(|a| a.authorization_id.clone())
            .filter(|id| !closed.contains(id.as_str()))
            .collect();
        Ok(PaymentsSeen {
            ledger,
            open_authorizations,
        })
    }
}

/// `GET {base_url}_fake/ledger` of a fake gateway (`base_url` ends with `/`).
pub async fn fetch_gateway(
    http: &reqwest::Client,
    base_url: &str,
) -> Result<FakeGatewayLedger, String> {
    fetch(http, base_url).await
}

/// `GET {base_url}_fake/ledger` of a fake seller (`base_url` ends with `/`).
pub async fn fetch_seller(http: &reqwest::Client, base_url: &str) -> Result<SellerLedger, String> {
    fetch(http, base_url).await
}

async fn fetch<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base_url: &str,
) -> Result<T, String> {
    let url = format!("{base_url}_fake/ledger");
    let reply = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !reply.status().is_success() {
        return Err(format!("{url}: HTTP {}", reply.status()));
    }
    reply.json().await.map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_ledger_becomes_payments_seen() {
        let json = serde_json::json!({
            "authorizations": [
                {"status": "authorized", "authorization_id": "auth_1", "amount": {"minor": 100, "currency": "EUR"}, "key": "b1:authorize"},
                {"status": "authorized", "authorization_id": "auth_2", "amount": {"minor": 50, "currency": "EUR"}, "key": "b2:authorize"},
                {"status": "authorized", "authorization_id": "auth_3", "amount": {"minor": 70, "currency": "EUR"}, "key": "b3:authorize"}
            ],
            "captures": [{"status": "captured", "capture_id": "cap_4", "authorization_id": "auth_1", "amount": {"minor": 100, "currency": "EUR"}, "key": "b1:capture"}],
            "voids": [{"status": "voided", "authorization_id": "auth_2", "key": "b2:void"}],
            "refunds": [], "declines": [], "rejections": []
        });
        let ledger: FakeGatewayLedger = serde_json::from_value(json).unwrap();
        let seen = ledger.seen().unwrap();
        assert_eq!(seen.ledger.captures[0].authorization_id, "auth_1");
        assert_eq!(seen.open_authorizations, vec!["auth_3".to_string()]);
        let broken: FakeGatewayLedger = serde_json::from_value(serde_json::json!({
            "authorizations": [{"key": "b1:authorize"}], "captures": [], "voids": [], "refunds": []
        }))
        .unwrap();
        assert!(broken.seen().unwrap_err().contains("b1:authorize"));
    }
}
