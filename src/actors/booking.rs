//! `BookingSaga`: one actor per booking (or cancellation) in flight. It owns that saga's
//! record while it runs and drives the pure state machine in `domain::saga`: ask
//! `next_action`, perform it against the outside world (wallet via the account shard,
//! card via the payment gateway, reservation via the seller adapter), `apply` the outcome,
//! and persist the new record (with the customer email the transition causes, in the same
//! store write) and flush **before** the next step starts. After a crash, the saga resumes
//! from its last record; every call carries a deterministic key (saga id + step), so a
//! repeated call never charges, debits or books twice.
//!
//! Each step runs under `ctx.wait`, so messages (a customer's cancel, an operator's retry)
//! are handled between steps, never while a call is outstanding. Started and restarted by
//! the `SagaCoordinator` under the `sagas` dynamic supervisor; stops itself when the saga is finished or parked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::account::{AccountShard, ChangeWallet, GetAccount};
use super::notify::{Mailer, OutboxChanged};
use super::search::{InvalidateSku, SearchAggregator};
use super::seller::{
    BookWithSeller, BookingStatusAtSeller, CancelWithSeller, SellerAdapter, SellerCallError,
};
use crate::call_log::CallSink;
use crate::domain::access::Caller;
use crate::domain::account::AccountId;
use crate::domain::lease;
use crate::domain::saga::{
    apply, backoff_delay, email_for, mark_booking_cancelled, next_action, request_cancellation,
    takes_stored_cancel, Action, CancelDecision, SagaConfig, SagaId, SagaKind, SagaRecord,
    SagaState, Step, StepOutcome, Transition,
};
use crate::domain::search::booking_query;
use crate::domain::wallet::{WalletError, WalletOp};
use crate::partner_counts::{self, Partner, Untrusted};
use crate::payments::{self, PaymentGateway};
use crate::sellers::{BookOutcome, BookRequest, CancelOutcome, ReservationStatus, SellerError};
use crate::store::sagas::{SagaWrite, Saved};
use crate::store::{ClusterStore, SagaStore, StoreError};
use crate::supervisor::{ActorHandle, AskError, DynamicSupervisor};
use crate::telemetry::{self, Head, Origin, Scope, TracedExt as _};

/// Everything a saga talks to. Shared by every saga actor.
pub(crate) struct SagaDeps {
    /// Saga records (and, with each step, the outbox).
    pub saga_store: Arc<dyn SagaStore>,
    /// The other nodes, if any: a confirmed booking's SKU is announced to them.
    pub cluster: Arc<dyn ClusterStore>,
    /// Account shards, indexed by `AccountId::shard`.
    pub shards: Vec<ActorHandle<AccountShard>>,
    /// Seller adapters by seller name.
    pub sellers: HashMap<String, ActorHandle<SellerAdapter>>,
    /// Search aggregators (a confirmed booking invalidates cached results with its SKU).
    pub aggregators: Vec<ActorHandle<SearchAggregator>>,
    /// The payment gateway.
    pub gateway: Arc<dyn PaymentGateway>,
    /// The mailer, woken when emails are queued.
    pub mailer: ActorHandle<Mailer>,
    /// Retry budgets and backoff.
    pub config: SagaConfig,
    /// Deadline of one step's call.
    pub step_timeout: Duration,
    /// The dynamic supervisor of saga actors: one child per saga, so a saga never runs
    /// twice (coordinator restarts included).
    pub sagas: DynamicSupervisor<BookingSaga>,
    /// Arbiters saga actors are spread over.
    pub arbiters: Vec<actix_rt::ArbiterHandle>,
    /// Injected panics of saga steps (`[faults]`); default: none.
    pub panics: super::PanicFaults,
}

impl std::fmt::Debug for SagaDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaDeps").finish()
    }
}

impl SagaDeps {
    fn shard(&self, id: AccountId) -> &ActorHandle<AccountShard> {
        &self.shards[id.shard(self.shards.len())]
    }

    /// A saga's stored record.
    pub(crate) async fn load(&self, saga_id: &str) -> Result<Option<SagaRecord>, StoreError> {
        self.saga_store.load(saga_id).await
    }
}

/// The saga actor.
pub(crate) struct BookingSaga {
    saga_id: String,
    record: Option<SagaRecord>,
    deps: Arc<SagaDeps>,
    /// Traced, when this process did not create the saga (a restart, a lease take-over):
    /// the span its steps here run under, linked to the creating request's trace. It
    /// ends when the actor stops.
    resumed: Option<tracing::Span>,
}

impl std::fmt::Debug for BookingSaga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookingSaga")
            .field("saga_id", &self.saga_id)
            .finish()
    }
}

impl BookingSaga {
    /// An actor for `saga_id`; its record is loaded from the store when it starts, so a
    /// restart always resumes from the last persisted transition.
    pub(crate) fn new(saga_id: String, deps: Arc<SagaDeps>) -> Self {
        BookingSaga {
            saga_id,
            record: None,
            deps,
            resumed: None,
        }
    }

    /// Adds the partner calls made for a step to the record (persisted with the step's
    /// outcome, rolled back with it if that write fails).
    fn note_calls(&mut self, step: Option<Step>, calls: &CallSink) {
        let made = calls.take();
        let (Some(record), Some(step)) = (self.record.as_mut(), step) else {
            return;
        };
        for attempt in made {
            record.calls.record(attempt.for_step(step));
        }
    }

    /// Applies an outcome and returns what to persist, or `None` if the outcome did not fit
    /// (a broken invariant: the saga parks itself by stopping and is reported).
    fn settle(&mut self, outcome: StepOutcome) -> Option<(SagaRecord, Transition)> {
        let record = self.record.as_mut()?;
        let before = record.clone();
        match apply(record, outcome, &self.deps.config, Utc::now()) {
            Ok(tr) => {
                if let Some(m) = &tr.mismatch {
                    let partner = if m.is_seller() {
                        Partner::Seller
                    } else {
                        Partner::Gateway
                    };
                    partner_counts::record(partner, Untrusted::AmountMismatch);
                    tracing::warn!(saga = %self.saga_id, step = m.step.as_str(), partner = partner.as_str(), expected = %m.expected, reported = %m.reported, state = record.state.as_str(), "Partner reported an amount other than the one asked; not taken.");
                }
                Some((before, tr))
            }
            Err(e) => {
                tracing::error!(saga = %self.saga_id, error = %e, "Saga outcome did not fit its state.");
                None
            }
        }
    }
}

impl Actor for BookingSaga {
    type Context = Context<Self>;

    /// Loads the record (before any message is handled), then runs the first step.
    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.deps.saga_store.may_drive(&self.saga_id) {
            tracing::info!(saga = %self.saga_id, "Saga not leased to this node; not run here.");
            ctx.stop();
            return;
        }
        let (deps, id) = (self.deps.clone(), self.saga_id.clone());
        ctx.wait(
            async move { deps.load(&id).await }
                .into_actor(self)
                .map(|loaded, act, ctx| match loaded {
                    Ok(Some(record)) => {
                        act.record = Some(record);
                        ctx.notify(Advance);
                    }
                    Ok(None) => {
                        tracing::error!(saga = %act.saga_id, "Saga record missing; nothing to run.");
                        ctx.stop();
                    }
                    Err(e) => {
                        tracing::error!(saga = %act.saga_id, error = %e, "Saga record unreadable.");
                        ctx.stop();
                    }
                }),
        );
    }
}

impl BookingSaga {
    /// The scope of one step. Traced, its span continues the creating request's trace when
    /// this process created the saga; otherwise it is a child of the saga's resume span,
    /// which links to that trace. Untraced, or in a trace the head sampler dropped, the
    /// plain span logs have always had (in the latter, the scope carries the decision).
    fn step_scope(&mut self, record: &SagaRecord, action: &Action) -> Scope {
        let plain = || tracing::info_span!("saga_step", saga = %self.saga_id);
        if !telemetry::enabled() {
            return Scope::new(plain(), None);
        }
        let origin = record.trace.as_ref();
        let local = origin.is_some_and(|o| o.process == telemetry::process_id());
        // The stored context decides whether the saga's spans are kept: a saga of an
        // unsampled request stays unsampled here and after a take-over, one trace either way.
        let stored = origin.and_then(|o| telemetry::extract(Some(&o.traceparent), None));
        let head = Head::decide(stored.as_ref());
        if let Head::Drop(marker) = head {
            let _marked = telemetry::mark(Some(marker));
            let span = if telemetry::log_spans() {
                plain()
            } else {
                tracing::Span::none()
            };
            return Scope::new(span, Some(marker));
        }
        let parent = match (&self.resumed, origin) {
            (Some(resumed), _) => Some(resumed.clone()),
            (None, Some(o)) if !local => {
                let resumed = Head::Keep.root(|| {
                    tracing::info_span!(
                        parent: None,
                        "saga.resume",
                        saga = %self.saga_id,
                        booking.id = %record.booking_id(),
                        saga.state = record.state.as_str(),
                    )
                });
                if let Some(linked) = telemetry::span_context(&o.traceparent) {
                    resumed.add_link(linked);
                }
                self.resumed = Some(resumed.clone());
                Some(resumed)
            }
            _ => None,
        };
        let span = Head::Keep.root(|| {
            tracing::info_span!(
                parent: parent.as_ref().and_then(|p| p.id()),
                "saga.step",
                otel.name = format!("saga {}", action.name()),
                saga = %self.saga_id,
                booking.id = %record.booking_id(),
                step = action.name(),
                saga.state = record.state.as_str(),
            )
        });
        if let (true, Some(cx)) = (local, stored) {
            let _ = span.set_parent(cx);
        }
        Scope::new(span, None)
    }
}

/// Performs the next step (internal).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Advance;

/// What to do after a step was persisted.
enum Next {
    Now,
    After(Duration),
    Stop,
}

/// Runs one step under `ctx.wait`: perform, apply, persist + flush, then schedule the next.
impl Handler<Advance> for BookingSaga {
    type Result = ();

    fn handle(&mut self, _: Advance, ctx: &mut Context<Self>) {
        self.deps
            .panics
            .maybe_panic(&format_args!("booking saga {}", self.saga_id));
        let Some(record) = self.record.clone() else {
            ctx.stop();
            return;
        };
        let action = next_action(&record);
        if matches!(action, Action::Done | Action::AwaitOperator { .. }) {
            ctx.stop();
            return;
        }
        let deps = self.deps.clone();
        let span = self.step_scope(&record, &action);
        let served = step_of(&action, &record.kind);
        let calls = CallSink::collecting();
        let sink = calls.clone();
        let step =
            async move { sink.scope(perform(&deps, &record, action)).await }.traced(span.clone());
        let fut = step
            .into_actor(self)
            .then(move |outcome, act, _| {
                act.note_calls(served, &calls);
                let settled = act.settle(outcome);
                let deps = act.deps.clone();
                let now_record = act.record.clone();
                async move {
                    let Some((before, tr)) = settled else {
                        return (Next::Stop, None, false);
                    };
                    let Some(record) = now_record else {
                        return (Next::Stop, None, false);
                    };
                    let stored = persist(&deps, &record, &tr).traced(span.clone()).await;
                    match stored {
                        Ok(saved) => {
                            // In the step's span: the mailer's wake-up is part of the step.
                            after_persist(&deps, &record, &tr).traced(span).await;
                            let next = match tr.retry_attempt {
                                Some(attempt) => Next::After(backoff_delay(
                                    attempt,
                                    &deps.config,
                                    &mut rand::thread_rng(),
                                )),
                                None => Next::Now,
                            };
                            (next, None, saved.cancel_requested)
                        }
                        Err(StoreError::Fenced(what)) => match lease::on_refused_write() {
                            // Another node took the saga over (this node paused past its
                            // lease): it resumes from the last record taken.
                            lease::AfterRefusal::StopHere => {
                                tracing::warn!(saga = %record.saga_id, %what, "Saga taken over by another node; stopping here.");
                                (Next::Stop, None, false)
                            }
                        },
                        Err(e) => {
                            // The step's effect may have happened; its key makes redoing it
                            // safe. Roll back in memory and redo the step later.
                            tracing::error!(saga = %record.saga_id, error = %e, "Cannot persist saga transition; retrying the step.");
                            (Next::After(Duration::from_secs(1)), Some(before), false)
                        }
                    }
                }
                .into_actor(act)
            })
            .map(|(next, rollback, cancel_stored), act, ctx| {
                if let Some(before) = rollback {
                    act.record = Some(before);
                }
                // A cancel stored by any node: taken like one handed over, before the
                // next step (messages are handled in order).
                if cancel_stored && act.record.as_ref().is_some_and(takes_stored_cancel) {
                    ctx.notify(RequestCancel);
                }
                match next {
                    Next::Now => ctx.notify(Advance),
                    Next::After(delay) => {
                        ctx.run_later(delay, |_, ctx| ctx.notify(Advance));
                    }
                    Next::Stop => ctx.stop(),
                }
            });
        ctx.wait(fut);
    }
}

/// Writes the record, the email the transition causes and (for a finished cancellation)
/// the cancelled booking, in one atomic write, then flushes.
async fn persist(
    deps: &SagaDeps,
    record: &SagaRecord,
    tr: &Transition,
) -> Result<Saved, StoreError> {
    let email = match tr.email {
        Some(kind) => {
            let to = account_email(deps, record.request.account_id).await;
            Some(email_for(record, kind, &to, Utc::now()))
        }
        None => None,
    };
    let mut cancelled = None;
    if let (SagaKind::Cancellation { of }, SagaState::Cancelled) = (&record.kind, tr.to) {
        if tr.state_changed() {
            let of = SagaId::Booking(*of).to_string();
            if let Some(mut booking) = deps.load(&of).await? {
                let before = booking.state;
                match mark_booking_cancelled(&mut booking, record, Utc::now()) {
                    Ok(()) => cancelled = Some((before, booking)),
                    Err(e) => {
                        tracing::error!(booking = %of, error = %e, "Cannot mark booking cancelled.")
                    }
                }
            }
        }
    }
    let write = SagaWrite {
        record,
        was: Some(tr.from),
        email: email.as_ref(),
        finished: cancelled
            .as_ref()
            .map(|(before, booking)| (*before, booking)),
    };
    // Traced, the write (applied when called, for sled) and its flush are one span.
    let span = if telemetry::exporting() {
        tracing::info_span!(
            "store.save_saga",
            otel.kind = "client",
            db.operation.name = "save_saga",
            saga = %record.saga_id,
            saga.state = record.state.as_str(),
        )
    } else {
        tracing::Span::none()
    };
    let saved = span.in_scope(|| deps.saga_store.save(write));
    saved.instrument(span).await
}

/// Side effects that need no durability of their own: wake the mailer, invalidate the
/// search cache for a booked SKU.
async fn after_persist(deps: &SagaDeps, record: &SagaRecord, tr: &Transition) {
    if tr.email.is_some() {
        let _ = deps
            .mailer
            .ask(OutboxChanged {
                origin: Origin::current(),
            })
            .await;
    }
    if tr.state_changed() && tr.to == SagaState::Confirmed && record.kind == SagaKind::Booking {
        // The other nodes' caches (none for a process alone); this node's just below.
        if let Err(e) = deps.cluster.announce_booked(&record.request.sku).await {
            tracing::warn!(sku = %record.request.sku, error = %e, "Cannot announce a booked SKU to the other nodes.");
        }
        for aggregator in &deps.aggregators {
            let _ = aggregator
                .ask(InvalidateSku {
                    sku: record.request.sku.clone(),
                })
                .await;
        }
    }
}

async fn account_email(deps: &SagaDeps, id: AccountId) -> String {
    let msg = GetAccount {
        id,
        caller: Caller::Operator,
        span: tracing::Span::current(),
        origin: Origin::current(),
    };
    match deps.shard(id).ask(msg).await {
        Ok(Ok(a)) => a.email,
        // The email still goes out; the transport logs the missing address.
        _ => String::new(),
    }
}

/// Performs `action` against the outside world and says how it went.
async fn perform(deps: &SagaDeps, record: &SagaRecord, action: Action) -> StepOutcome {
    let timeout = deps.step_timeout;
    match action {
        Action::HoldWallet {
            key,
            account_id,
            amount,
        } => {
            let op = WalletOp::Hold {
                hold_id: key.clone(),
                amount,
            };
            wallet(deps, account_id, key, op).await
        }
        Action::CaptureWallet {
            key,
            hold_key,
            account_id,
            ..
        } => {
            wallet(
                deps,
                account_id,
                key,
                WalletOp::Capture { hold_id: hold_key },
            )
            .await
        }
        Action::ReleaseHold {
            key,
            hold_key,
            account_id,
        } => {
            wallet(
                deps,
                account_id,
                key,
                WalletOp::Release { hold_id: hold_key },
            )
            .await
        }
        Action::CreditPoints {
            key,
            account_id,
            amount,
        } => wallet(deps, account_id, key, WalletOp::Credit { amount }).await,
        Action::AuthorizePayment {
            key,
            card_token,
            amount,
        } => {
            let gw = deps.gateway.authorize(&key, &card_token, amount);
            payments::authorize_step_outcome(within(timeout, gw).await)
        }
        Action::CapturePayment {
            key,
            authorization_id,
            amount,
        } => {
            let gw = deps.gateway.capture(&key, &authorization_id, amount);
            payments::capture_step_outcome(within(timeout, gw).await)
        }
        Action::VoidPayment {
            key,
            authorization_id,
        } => {
            let gw = deps.gateway.void(&key, &authorization_id);
            payments::void_step_outcome(within(timeout, gw).await)
        }
        Action::Refund {
            key,
            payment_id,
            amount,
        } => {
            let gw = deps.gateway.refund(&key, &payment_id, amount);
            payments::refund_step_outcome(within(timeout, gw).await)
        }
        Action::ReconcilePayment { key, operation, .. } => {
            let gw = deps.gateway.status(&key);
            payments::status_step_outcome(within(timeout, gw).await, operation)
        }
        Action::Reserve {
            key,
            seller,
            sku,
            start,
            end,
            price,
        } => {
            let Some(query) = booking_query(&sku, start, end) else {
                return StepOutcome::Permanent {
                    reason: format!("sku {sku:?} is not a bookable offer"),
                };
            };
            let request = BookRequest {
                idempotency_key: key,
                sku,
                query,
                expected_price: price,
            };
            match seller_call(
                deps,
                &seller,
                BookWithSeller {
                    request,
                    origin: Origin::current(),
                    calls: CallSink::current(),
                },
            )
            .await
            {
                Ok(BookOutcome::Confirmed {
                    reservation_id,
                    price,
                }) => StepOutcome::Reserved {
                    reservation_id,
                    price,
                },
                Ok(BookOutcome::Rejected { reason }) => StepOutcome::Refused { reason },
                Ok(BookOutcome::PriceChanged { current }) => StepOutcome::Refused {
                    reason: format!(
                        "price changed: the seller now asks {current} instead of {}",
                        record.request.offer_price
                    ),
                },
                // Any failed book call has an unknown outcome: reconcile before undoing.
                Err(CallFailure::NotCalled(reason)) => StepOutcome::Transient { reason },
                Err(CallFailure::Unknown(_)) => StepOutcome::TimedOut,
            }
        }
        Action::ReconcileReservation { key, seller, .. } => {
            let msg = BookingStatusAtSeller {
                idempotency_key: key,
                origin: Origin::current(),
                calls: CallSink::current(),
            };
            match seller_call(deps, &seller, msg).await {
                Ok(Some(ReservationStatus::Booked {
                    reservation_id,
                    price,
                })) => StepOutcome::Reserved {
                    reservation_id,
                    price,
                },
                Ok(_) => StepOutcome::NotFound,
                Err(CallFailure::NotCalled(reason)) | Err(CallFailure::Unknown(reason)) => {
                    StepOutcome::Transient { reason }
                }
            }
        }
        Action::CancelReservation {
            reservation_key,
            seller,
            ..
        } => {
            let msg = CancelWithSeller {
                idempotency_key: reservation_key,
                origin: Origin::current(),
                calls: CallSink::current(),
            };
            match seller_call(deps, &seller, msg).await {
                Ok(_) => StepOutcome::Completed,
                Err(CallFailure::NotCalled(reason)) => StepOutcome::Transient { reason },
                Err(CallFailure::Unknown(_)) => StepOutcome::TimedOut,
            }
        }
        Action::CancelWithSeller {
            reservation_key,
            seller,
            ..
        } => {
            let msg = CancelWithSeller {
                idempotency_key: reservation_key,
                origin: Origin::current(),
                calls: CallSink::current(),
            };
            match seller_call(deps, &seller, msg).await {
                Ok(CancelOutcome::Cancelled {
                    fee,
                    reservation_id,
                    ..
                }) => StepOutcome::SellerCancelled {
                    fee,
                    reservation_id,
                },
                Ok(CancelOutcome::NotBooked) => StepOutcome::Refused {
                    reason: "the seller has no such reservation".into(),
                },
                Err(CallFailure::NotCalled(reason)) => StepOutcome::Transient { reason },
                Err(CallFailure::Unknown(_)) => StepOutcome::TimedOut,
            }
        }
        Action::AwaitOperator { reason } => StepOutcome::Permanent { reason },
        Action::Done => StepOutcome::Completed,
    }
}

/// The step an action serves, for its partner calls; `None` for an action that calls no
/// partner.
fn step_of(action: &Action, kind: &SagaKind) -> Option<Step> {
    Some(match action {
        Action::AuthorizePayment { .. } => Step::Authorize,
        Action::Reserve { .. } => Step::Reserve,
        Action::ReconcileReservation { .. } => Step::ReconcileReservation,
        Action::CapturePayment { .. } => Step::CapturePayment,
        Action::ReconcilePayment {
            operation: Step::Authorize,
            ..
        } => Step::ReconcileAuthorization,
        Action::ReconcilePayment { .. } => Step::ReconcileCapture,
        Action::VoidPayment { .. } => Step::VoidPayment,
        Action::CancelReservation { .. } => Step::CancelReservation,
        Action::Refund { .. } if matches!(kind, SagaKind::Cancellation { .. }) => {
            Step::CancellationRefund
        }
        Action::Refund { .. } => Step::RefundPayment,
        Action::CancelWithSeller { .. } => Step::SellerCancel,
        Action::HoldWallet { .. }
        | Action::CaptureWallet { .. }
        | Action::ReleaseHold { .. }
        | Action::CreditPoints { .. }
        | Action::AwaitOperator { .. }
        | Action::Done => return None,
    })
}

/// How a seller call failed.
enum CallFailure {
    /// The seller was not called (breaker, bulkhead, mailbox full): safe to retry.
    NotCalled(String),
    /// The call may have reached the seller.
    Unknown(String),
}

/// A gateway call bounded by the step deadline; no answer in time is an unknown outcome.
async fn within<T>(
    timeout: Duration,
    call: payments::PaymentFuture<T>,
) -> Result<T, payments::PaymentError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(reply) => reply,
        Err(_) => Err(payments::PaymentError::Timeout),
    }
}

async fn seller_call<M, T>(deps: &SagaDeps, seller: &str, msg: M) -> Result<T, CallFailure>
where
    M: Message<Result = Result<T, SellerCallError>> + Send + 'static,
    T: Send + 'static,
    SellerAdapter: Handler<M>,
{
    let Some(handle) = deps.sellers.get(seller) else {
        return Err(CallFailure::NotCalled(format!("unknown seller {seller}")));
    };
    match handle.ask_within(msg, deps.step_timeout).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(SellerCallError::Failed(SellerError::Timeout))) => {
            Err(CallFailure::Unknown("seller timed out".into()))
        }
        Ok(Err(SellerCallError::Failed(e))) => Err(CallFailure::Unknown(e.to_string())),
        Ok(Err(e)) => Err(CallFailure::NotCalled(e.to_string())),
        Err(AskError::Overloaded { .. }) | Err(AskError::Unavailable { .. }) => {
            Err(CallFailure::NotCalled("seller adapter unavailable".into()))
        }
        Err(e) => Err(CallFailure::Unknown(e.to_string())),
    }
}

async fn wallet(deps: &SagaDeps, id: AccountId, key: String, op: WalletOp) -> StepOutcome {
    let is_release = matches!(op, WalletOp::Release { .. });
    let msg = ChangeWallet {
        id,
        key,
        op,
        span: tracing::Span::current(),
        origin: Origin::current(),
    };
    match deps.shard(id).ask_within(msg, deps.step_timeout).await {
        Ok(Ok(_)) => StepOutcome::Completed,
        Ok(Err(e)) => {
            use super::account::AccountError as E;
            match e {
                E::Wallet(WalletError::InsufficientFunds { .. }) => StepOutcome::Refused {
                    reason: e.to_string(),
                },
                E::NotFound(_) => StepOutcome::Refused {
                    reason: e.to_string(),
                },
                E::KeyConflict(_) => StepOutcome::Refused {
                    reason: "the hold was released before it landed".into(),
                },
                E::Store(_) => StepOutcome::Transient {
                    reason: e.to_string(),
                },
                // Releasing a hold that never landed: released by definition (the shard
                // tombstones its key so a late hold is refused).
                E::Wallet(WalletError::UnknownHold(_)) if is_release => StepOutcome::Completed,
                E::Wallet(_) | E::AlreadyExists(_) | E::Access(_) => StepOutcome::Permanent {
                    reason: e.to_string(),
                },
            }
        }
        Err(AskError::Timeout { .. }) | Err(AskError::Crashed { .. }) => StepOutcome::TimedOut,
        Err(e) => StepOutcome::Transient {
            reason: e.to_string(),
        },
    }
}

/// A customer asks to cancel; decided between steps. An error means the request could not
/// be made durable and was not taken: nothing changed, the customer must retry.
#[derive(Debug, Message)]
#[rtype(result = "Result<CancelDecision, StoreError>")]
pub(crate) struct RequestCancel;

/// Records the request in the saga and tells the coordinator what follows. The new record
/// is persisted under `ctx.wait`, so no step (and no stop) can overtake the durable write,
/// and it replaces the saga's record only once durable: a cancel that could not be stored
/// is refused, never acknowledged and then forgotten by a restart.
impl Handler<RequestCancel> for BookingSaga {
    type Result = ResponseFuture<Result<CancelDecision, StoreError>>;

    fn handle(&mut self, _: RequestCancel, ctx: &mut Context<Self>) -> Self::Result {
        let Some(current) = self.record.as_ref() else {
            return Box::pin(async { Ok(CancelDecision::AlreadyFinal) });
        };
        let mut next = current.clone();
        let (decision, tr) = request_cancellation(&mut next, Utc::now());
        let deps = self.deps.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        ctx.wait(
            async move {
                let stored = persist(&deps, &next, &tr).await;
                (stored, next)
            }
            .into_actor(self)
            .map(move |(stored, next), act, _| {
                let answer = match stored {
                    Ok(_) => {
                        act.record = Some(next);
                        Ok(decision)
                    }
                    Err(e) => {
                        tracing::error!(saga = %next.saga_id, error = %e, "Cannot persist a cancel request; refused.");
                        Err(e)
                    }
                };
                let _ = reply.send(answer);
            }),
        );
        Box::pin(async move { answer.await.unwrap_or(Ok(CancelDecision::AlreadyFinal)) })
    }
}
