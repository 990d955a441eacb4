//! `FaultyGateway`: a [`PaymentGateway`] around another that fails or hangs on purpose
//! (`faults.payment_failure_rate`, `faults.payment_hang_rate`).
//!
//! - **fail**: `Unavailable` before the call reaches the gateway (no money moved);
//! - **hang**: no answer ever (the saga's step timeout ends the wait). At even odds the
//!   gateway acted first, so the saga meets both "request lost" and "reply lost" and must
//!   reconcile with [`PaymentGateway::status`], which can itself fail or hang.

use std::sync::Arc;

use super::{
    AuthOutcome, CaptureOutcome, PaymentError, PaymentFuture, PaymentGateway, PaymentOpStatus,
    RefundOutcome, VoidOutcome,
};
use crate::domain::money::Money;
use crate::faults::{roll, Fault, FaultCounters};

/// A gateway that misbehaves on purpose; see the module docs.
pub struct FaultyGateway {
    inner: Arc<dyn PaymentGateway>,
    failure_rate: f64,
    hang_rate: f64,
    counters: Arc<FaultCounters>,
}

impl std::fmt::Debug for FaultyGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyGateway")
            .field("failure_rate", &self.failure_rate)
            .field("hang_rate", &self.hang_rate)
            .finish()
    }
}

impl FaultyGateway {
    /// Wraps `inner`; each call fails with probability `failure_rate` or hangs with
    /// probability `hang_rate`; fired faults are counted in `counters`.
    pub fn new(
        inner: Arc<dyn PaymentGateway>,
        failure_rate: f64,
        hang_rate: f64,
        counters: Arc<FaultCounters>,
    ) -> Self {
        FaultyGateway {
            inner,
            failure_rate,
            hang_rate,
            counters,
        }
    }

    /// Runs `call` (made only if the gateway is to be reached) under the drawn fault.
    fn faulty<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> PaymentFuture<T>,
    ) -> PaymentFuture<T> {
        if roll(self.hang_rate) {
            self.counters.count(Fault::PaymentHang);
            if roll(0.5) {
                let call = call();
                return Box::pin(async move {
                    let _ = call.await;
                    std::future::pending().await
                });
            }
            return Box::pin(std::future::pending());
        }
        if roll(self.failure_rate) {
            self.counters.count(Fault::PaymentFailure);
            return Box::pin(async {
                Err(PaymentError::Unavailable(
                    "injected fault (faults.payment_failure_rate)".into(),
                ))
            });
        }
        call()
    }
}

impl PaymentGateway for FaultyGateway {
    fn authorize(&self, key: &str, card_token: &str, amount: Money) -> PaymentFuture<AuthOutcome> {
        self.faulty(|| self.inner.authorize(key, card_token, amount))
    }

    fn capture(
        &self,
        key: &str,
        authorization_id: &str,
        amount: Money,
    ) -> PaymentFuture<CaptureOutcome> {
        self.faulty(|| self.inner.capture(key, authorization_id, amount))
    }

    fn void(&self, key: &str, authorization_id: &str) -> PaymentFuture<VoidOutcome> {
        self.faulty(|| self.inner.void(key, authorization_id))
    }

    fn refund(&self, key: &str, payment_id: &str, amount: Money) -> PaymentFuture<RefundOutcome> {
        self.faulty(|| self.inner.refund(key, payment_id, amount))
    }

    fn status(&self, key: &str) -> PaymentFuture<Option<PaymentOpStatus>> {
        self.faulty(|| self.inner.status(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;
    use crate::payments::{SimulatedGateway, SimulatedGatewayConfig};
    use std::time::Duration;

    #[tokio::test]
    async fn failures_move_no_money_and_hangs_never_answer() {
        let gw = SimulatedGateway::new(SimulatedGatewayConfig {
            latency_min_ms: 0,
            latency_max_ms: 0,
            ..Default::default()
        });
        let counters = Arc::new(FaultCounters::default());
        let eur = Money::new(1_000, Currency::EUR);
        let failing = FaultyGateway::new(Arc::new(gw.clone()), 1.0, 0.0, counters.clone());
        assert!(matches!(
            failing.authorize("a:authorize", "tok_approve", eur).await,
            Err(PaymentError::Unavailable(_))
        ));
        assert!(gw.ledger().authorizations.is_empty());
        assert_eq!(counters.snapshot().payment_failures, 1);

        let hanging = FaultyGateway::new(Arc::new(gw.clone()), 0.0, 1.0, counters.clone());
        for i in 0..20 {
            let call = hanging.authorize(&format!("h{i}:authorize"), "tok_approve", eur);
            let waited = tokio::time::timeout(Duration::from_millis(20), call).await;
            assert!(waited.is_err(), "a hung call answered");
        }
        // Some hung calls acted before hanging (at even odds; 20 calls all missing it is
        // a one-in-a-million event).
        assert!(!gw.ledger().authorizations.is_empty());
        assert_eq!(counters.snapshot().payment_hangs, 20);

        let fine = FaultyGateway::new(Arc::new(gw.clone()), 0.0, 0.0, counters.clone());
        assert!(matches!(
            fine.authorize("b:authorize", "tok_approve", eur).await,
            Ok(AuthOutcome::Authorized { .. })
        ));
        assert_eq!(counters.snapshot().total(), 21);
    }
}
