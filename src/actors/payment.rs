//! `PaymentAdapter`: the one actor between booking sagas and the card gateway. It owns the
//! protections around the gateway, like a seller's adapter does: a per-call timeout, a
//! circuit breaker and a bulkhead (its [`CallGuard`]), with figures in a shared
//! [`PartnerStats`] for `/metrics`, the console and the supervision snapshot.
//!
//! Nothing is retried here: every gateway call carries the saga's idempotency key, and the
//! saga decides when to retry or reconcile. What the guard refuses never reached the
//! gateway (`Unavailable`: nothing happened); a call past its timeout may have (`Timeout`:
//! an unknown outcome the saga reconciles by key). Calls run as futures of the actor's
//! context, so the mailbox keeps moving while the gateway is slow.
//!
//! Sagas reach it through [`SupervisedGateway`], which is itself a [`PaymentGateway`], so
//! the saga code does not know the actor is there. Stateless beyond the guard: a restart
//! starts with a closed breaker and keeps the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::guard::{CallGuard, PartnerStats, Refused};
use crate::call_log::{self, Attempt, CallSink};
pub use crate::config::GatewayAdapterConfig;
use crate::domain::money::Money;
use crate::domain::saga::CallOutcome;
use crate::payments::{
    AuthOutcome, CaptureOutcome, PaymentError, PaymentFuture, PaymentGateway, PaymentOpStatus,
    RefundOutcome, VoidOutcome,
};
use crate::supervisor::{ActorHandle, AskError};
use crate::telemetry::{Origin, TracedExt as _};

/// The adapter actor.
pub struct PaymentAdapter {
    gateway: Arc<dyn PaymentGateway>,
    guard: CallGuard,
    call_timeout: Duration,
    stats: Arc<PartnerStats>,
}

impl std::fmt::Debug for PaymentAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentAdapter")
            .field("in_flight", &self.guard.in_flight())
            .finish()
    }
}

impl PaymentAdapter {
    /// A fresh adapter around `gateway`: breaker closed.
    pub fn new(
        gateway: Arc<dyn PaymentGateway>,
        config: &GatewayAdapterConfig,
        stats: Arc<PartnerStats>,
    ) -> Self {
        PaymentAdapter {
            guard: CallGuard::new(
                config.breaker.clone(),
                config.max_concurrent_calls,
                stats.clone(),
            ),
            gateway,
            call_timeout: Duration::from_millis(config.call_timeout_ms),
            stats,
        }
    }

    /// Runs one gateway call behind the guard and the timeout.
    /// Traced, the call is a span (child of the sender's) with the breaker's and
    /// bulkhead's decision as an event. The attempt (or the guard's refusal) goes to
    /// `calls`; `refusal` tells a decline or rejection from an answer that did it.
    fn guarded<T: Send + 'static>(
        &mut self,
        origin: &Origin,
        operation: &'static str,
        calls: CallSink,
        refusal: fn(&T) -> bool,
        call: impl FnOnce(&dyn PaymentGateway) -> PaymentFuture<T>,
    ) -> ResponseActFuture<Self, Result<T, PaymentError>> {
        let span = match origin.span() {
            Some(parent) => tracing::info_span!(
                parent: parent,
                "gateway.call",
                otel.name = format!("gateway {operation}"),
                operation,
                attempt = 1,
                actor.mailbox_wait_us = origin.waited_us(),
            ),
            None => tracing::Span::none(),
        };
        let started = Instant::now();
        let permit = match self.guard.admit(started) {
            Ok(permit) => permit,
            Err(refused) => {
                let (decision, why, outcome) = match refused {
                    Refused::CircuitOpen => (
                        "circuit_open",
                        "gateway circuit open",
                        CallOutcome::CircuitOpen,
                    ),
                    Refused::BulkheadFull => (
                        "bulkhead_full",
                        "too many gateway calls in flight",
                        CallOutcome::BulkheadFull,
                    ),
                };
                calls.push(Attempt::refused(GATEWAY, operation, outcome));
                span.in_scope(|| tracing::info!(decision, "Gateway not called."));
                return Box::pin(actix::fut::ready(Err(PaymentError::Unavailable(
                    why.into(),
                ))));
            }
        };
        self.stats
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wall = chrono::Utc::now();
        let scope = origin.scope(span);
        let call = scope.in_scope(|| call(&*self.gateway));
        let call = call_log::watch(tokio::time::timeout(self.call_timeout, call).traced(scope));
        Box::pin(call.into_actor(self).map(move |(result, seen), act, _| {
            let result = result.unwrap_or(Err(PaymentError::Timeout));
            act.stats.observe(started.elapsed());
            let (outcome, detail) = match &result {
                Ok(v) if refusal(v) => (CallOutcome::Refused, None),
                Ok(_) => (CallOutcome::Ok, None),
                Err(PaymentError::Timeout) => (CallOutcome::Timeout, None),
                Err(e) => (CallOutcome::Failed, Some(e.to_string())),
            };
            calls.push(Attempt::ended(
                GATEWAY,
                operation,
                (wall, started),
                seen,
                outcome,
                detail,
            ));
            // A gateway that answered is healthy, whatever it answered (a decline, a
            // permanent refusal); silence and unavailability are what the breaker counts.
            let failed = matches!(
                result,
                Err(PaymentError::Timeout | PaymentError::Unavailable(_))
            );
            let timed_out = matches!(result, Err(PaymentError::Timeout));
            act.guard.settle(permit, failed, timed_out, started);
            result
        }))
    }
}

impl Actor for PaymentAdapter {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.guard.publish();
    }
}

/// The gateway's name in a saga's partner calls.
const GATEWAY: &str = "gateway";

/// Reserves an amount on a card (manual capture), once per key.
#[derive(Debug, Message)]
#[rtype(result = "Result<AuthOutcome, PaymentError>")]
pub struct AuthorizeCard {
    /// Idempotency key (saga id + step).
    pub key: String,
    /// The card.
    pub card_token: String,
    /// Amount to reserve.
    pub amount: Money,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempt goes (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Captures an authorization, once per key.
#[derive(Debug, Message)]
#[rtype(result = "Result<CaptureOutcome, PaymentError>")]
pub struct CapturePayment {
    /// Idempotency key.
    pub key: String,
    /// The authorization.
    pub authorization_id: String,
    /// Amount to capture.
    pub amount: Money,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempt goes (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Releases an uncaptured authorization, once per key.
#[derive(Debug, Message)]
#[rtype(result = "Result<VoidOutcome, PaymentError>")]
pub struct VoidAuthorization {
    /// Idempotency key.
    pub key: String,
    /// The authorization.
    pub authorization_id: String,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempt goes (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Returns money from a capture, once per key.
#[derive(Debug, Message)]
#[rtype(result = "Result<RefundOutcome, PaymentError>")]
pub struct RefundPayment {
    /// Idempotency key.
    pub key: String,
    /// A capture id, or the authorization whose capture is meant.
    pub payment_id: String,
    /// Amount to return.
    pub amount: Money,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempt goes (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Asks what became of the operation sent with a key (reconciliation).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<PaymentOpStatus>, PaymentError>")]
pub struct PaymentStatusOf {
    /// The key of the operation in doubt.
    pub key: String,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempt goes (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Authorizes through the guard.
impl Handler<AuthorizeCard> for PaymentAdapter {
    type Result = ResponseActFuture<Self, Result<AuthOutcome, PaymentError>>;

    fn handle(&mut self, m: AuthorizeCard, _: &mut Context<Self>) -> Self::Result {
        let refusal = |o: &AuthOutcome| matches!(o, AuthOutcome::Declined { .. });
        self.guarded(&m.origin, "authorize", m.calls, refusal, |gw| {
            gw.authorize(&m.key, &m.card_token, m.amount)
        })
    }
}

/// Captures through the guard.
impl Handler<CapturePayment> for PaymentAdapter {
    type Result = ResponseActFuture<Self, Result<CaptureOutcome, PaymentError>>;

    fn handle(&mut self, m: CapturePayment, _: &mut Context<Self>) -> Self::Result {
        let refusal = |o: &CaptureOutcome| matches!(o, CaptureOutcome::Rejected { .. });
        self.guarded(&m.origin, "capture", m.calls, refusal, |gw| {
            gw.capture(&m.key, &m.authorization_id, m.amount)
        })
    }
}

/// Voids through the guard.
impl Handler<VoidAuthorization> for PaymentAdapter {
    type Result = ResponseActFuture<Self, Result<VoidOutcome, PaymentError>>;

    fn handle(&mut self, m: VoidAuthorization, _: &mut Context<Self>) -> Self::Result {
        let refusal = |o: &VoidOutcome| matches!(o, VoidOutcome::Rejected { .. });
        self.guarded(&m.origin, "void", m.calls, refusal, |gw| {
            gw.void(&m.key, &m.authorization_id)
        })
    }
}

/// Refunds through the guard.
impl Handler<RefundPayment> for PaymentAdapter {
    type Result = ResponseActFuture<Self, Result<RefundOutcome, PaymentError>>;

    fn handle(&mut self, m: RefundPayment, _: &mut Context<Self>) -> Self::Result {
        let refusal = |o: &RefundOutcome| matches!(o, RefundOutcome::Rejected { .. });
        self.guarded(&m.origin, "refund", m.calls, refusal, |gw| {
            gw.refund(&m.key, &m.payment_id, m.amount)
        })
    }
}

/// Looks a key up through the guard.
impl Handler<PaymentStatusOf> for PaymentAdapter {
    type Result = ResponseActFuture<Self, Result<Option<PaymentOpStatus>, PaymentError>>;

    fn handle(&mut self, m: PaymentStatusOf, _: &mut Context<Self>) -> Self::Result {
        self.guarded(
            &m.origin,
            "status",
            m.calls,
            |_| false,
            |gw| gw.status(&m.key),
        )
    }
}

/// The gateway as sagas see it: every call goes through the supervised [`PaymentAdapter`].
#[derive(Debug, Clone)]
pub struct SupervisedGateway {
    handle: ActorHandle<PaymentAdapter>,
}

impl SupervisedGateway {
    /// Calls through `handle`.
    pub fn new(handle: ActorHandle<PaymentAdapter>) -> Self {
        SupervisedGateway { handle }
    }

    fn ask<M>(&self, msg: M) -> PaymentFuture<<M::Result as ReplyOf>::T>
    where
        M: Message + Send + 'static,
        M::Result: ReplyOf + Send,
        PaymentAdapter: Handler<M>,
    {
        let handle = self.handle.clone();
        Box::pin(async move {
            match handle.ask(msg).await {
                Ok(reply) => reply.into_result(),
                Err(e) => Err(ask_error(e)),
            }
        })
    }
}

/// The reply types of the adapter's messages: `Result<T, PaymentError>`.
trait ReplyOf {
    type T;
    fn into_result(self) -> Result<Self::T, PaymentError>;
}

impl<T> ReplyOf for Result<T, PaymentError> {
    type T = T;
    fn into_result(self) -> Result<T, PaymentError> {
        self
    }
}

/// What a failed ask means for a payment: refused at the door, nothing was sent; lost in
/// the adapter (crash, deadline), the call may have gone out.
fn ask_error(e: AskError) -> PaymentError {
    match e {
        AskError::Overloaded { .. } | AskError::Unavailable { .. } => {
            PaymentError::Unavailable(e.to_string())
        }
        AskError::Crashed { .. } | AskError::Timeout { .. } => PaymentError::Timeout,
    }
}

impl PaymentGateway for SupervisedGateway {
    fn authorize(&self, key: &str, card_token: &str, amount: Money) -> PaymentFuture<AuthOutcome> {
        self.ask(AuthorizeCard {
            key: key.to_owned(),
            card_token: card_token.to_owned(),
            amount,
            origin: Origin::current(),
            calls: CallSink::current(),
        })
    }

    fn capture(
        &self,
        key: &str,
        authorization_id: &str,
        amount: Money,
    ) -> PaymentFuture<CaptureOutcome> {
        self.ask(CapturePayment {
            key: key.to_owned(),
            authorization_id: authorization_id.to_owned(),
            amount,
            origin: Origin::current(),
            calls: CallSink::current(),
        })
    }

    fn void(&self, key: &str, authorization_id: &str) -> PaymentFuture<VoidOutcome> {
        self.ask(VoidAuthorization {
            key: key.to_owned(),
            authorization_id: authorization_id.to_owned(),
            origin: Origin::current(),
            calls: CallSink::current(),
        })
    }

    fn refund(&self, key: &str, payment_id: &str, amount: Money) -> PaymentFuture<RefundOutcome> {
        self.ask(RefundPayment {
            key: key.to_owned(),
            payment_id: payment_id.to_owned(),
            amount,
            origin: Origin::current(),
            calls: CallSink::current(),
        })
    }

    fn status(&self, key: &str) -> PaymentFuture<Option<PaymentOpStatus>> {
        self.ask(PaymentStatusOf {
            key: key.to_owned(),
            origin: Origin::current(),
            calls: CallSink::current(),
        })
    }
}
