//! `SagaCoordinator`: the front door of bookings. It creates booking sagas (once per
//! client idempotency key), routes cancellations and operator retries, and, at start-up,
//! resumes every unfinished saga found in the store.
//!
//! The `BookingSaga` actors run under the `sagas` dynamic supervisor (a sibling of the
//! coordinator in the `bookings` subtree, held in `SagaDeps`): each saga is a transient
//! child with a stable handle, restarted after a panic (a fresh actor that reloads its
//! record) by the `[supervisor]` policy, and parked as `needs_attention` when it keeps
//! crashing ([`on_saga_end`]). The number of sagas running at once is bounded by
//! `bookings.max_in_flight` (beyond it, new bookings are refused as overloaded).
//!
//! State owned: none beyond the store; the running sagas are the supervisor's, so they
//! survive a restart of the coordinator itself (a saga never runs twice).

use actix::prelude::*;
use chrono::Utc;
use std::sync::Arc;

use super::booking::{BookingSaga, RequestCancel, SagaDeps};
use crate::domain::account::AccountId;
use crate::domain::saga::{
    new_booking, new_cancellation, park_crashed, retry_needs_attention, BookingId, BookingRequest,
    CancelDecision, SagaId, SagaKind, SagaRecord, SagaState, TraceOrigin,
};
use crate::store::sagas::NewBooking;
use crate::store::StoreError;
use crate::supervisor::{ChildEnd, ChildPermit};
use crate::telemetry::{Origin, TracedExt as _};

/// Why a booking request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// The request is invalid; the text names the field.
    #[error("{field}: {message}")]
    Invalid {
        /// Field at fault.
        field: String,
        /// Why.
        message: String,
    },
    /// No such booking.
    #[error("booking {0} not found")]
    NotFound(String),
    /// The idempotency key was used for another request, or the state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// Too many sagas in flight.
    #[error("too many bookings in flight")]
    Overloaded,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The coordinator actor.
pub(crate) struct SagaCoordinator {
    deps: Arc<SagaDeps>,
}

impl std::fmt::Debug for SagaCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaCoordinator").finish()
    }
}

impl SagaCoordinator {
    /// A coordinator over `deps`.
    pub(crate) fn new(deps: Arc<SagaDeps>) -> Self {
        SagaCoordinator { deps }
    }
}

/// The stored record of saga `id`, or `NotFound`.
async fn load(deps: &SagaDeps, id: &str) -> Result<SagaRecord, BookingError> {
    deps.load(id)
        .await?
        .ok_or_else(|| BookingError::NotFound(id.to_owned()))
}

/// Starts (or finds running) the actor of saga `id` under the dynamic saga supervisor.
/// Admission is decided before a saga is created (`StartBooking`); a saga that exists is
/// always run, so resumed and follow-up sagas are never refused.
pub(crate) fn launch(deps: &Arc<SagaDeps>, id: &str) {
    launch_within(deps, id, None);
}

/// [`launch`], using a slot under the child limit taken before the saga was created.
fn launch_within(deps: &Arc<SagaDeps>, id: &str, permit: Option<ChildPermit>) {
    let arbiter = deps.arbiters[super::bucket(id, deps.arbiters.len())].clone();
    let (d, sid) = (deps.clone(), id.to_owned());
    let factory = move || BookingSaga::new(sid.clone(), d.clone());
    match permit {
        Some(permit) => deps.sagas.start_reserved(permit, id, arbiter, factory),
        None => deps.sagas.start_child(id, arbiter, factory),
    };
}

/// What follows when a saga actor leaves its supervisor: a finished booking may have a
/// cancellation to start; a saga whose actor kept crashing is parked for an operator.
pub(crate) fn on_saga_end(deps: &Arc<SagaDeps>, id: &str, end: ChildEnd) {
    match end {
        ChildEnd::Finished => {
            // Called from wherever the child ended, not necessarily inside an actix
            // runtime: the follow-up (which waits for a flush) runs on a saga arbiter.
            let arbiter = deps.arbiters[super::bucket(id, deps.arbiters.len())].clone();
            let (deps, id) = (deps.clone(), id.to_owned());
            arbiter.spawn(async move {
                if let Err(e) = follow_up(&deps, &id).await {
                    tracing::error!(saga = %id, error = %e, "Cannot start the follow-up of a finished saga.");
                }
            });
        }
        ChildEnd::GaveUp(reason) => {
            let arbiter = deps.arbiters[super::bucket(id, deps.arbiters.len())].clone();
            let (deps, id) = (deps.clone(), id.to_owned());
            arbiter.spawn(async move {
                if let Err(e) = park_crashed_saga(&deps, &id, &reason).await {
                    tracing::error!(saga = %id, error = %e, "Cannot park a saga whose actor kept crashing.");
                }
            });
        }
    }
}

/// Parks a saga whose actor exhausted its restart budget as `needs_attention`, with the
/// last failure as the reason, so it shows in the booking, `/health` and metrics and an
/// operator's `RetrySaga` resumes it.
async fn park_crashed_saga(
    deps: &Arc<SagaDeps>,
    id: &str,
    reason: &str,
) -> Result<(), BookingError> {
    let Some(mut record) = deps.load(id).await? else {
        return Ok(());
    };
    let before = record.state;
    if park_crashed(&mut record, reason, Utc::now()).is_err() {
        return Ok(()); // Finished or already parked: nothing to record.
    }
    deps.saga_store.park(&record, before).await?;
    tracing::error!(saga = %record.saga_id, reason, "Saga actor kept crashing; parked as needs_attention.");
    Ok(())
}

/// After a booking saga stops: a cancel requested in flight becomes a cancellation saga
/// once the booking is confirmed.
async fn follow_up(deps: &Arc<SagaDeps>, id: &str) -> Result<(), BookingError> {
    let Some(record) = deps.load(id).await? else {
        return Ok(());
    };
    if record.kind == SagaKind::Booking
        && record.cancel_requested
        && record.state == SagaState::Confirmed
    {
        start_cancellation(deps, &record, None).await?;
    }
    Ok(())
}

/// Creates (once, cluster-wide) and launches the cancellation saga of a confirmed booking.
///
/// The record is durable before the saga acts and before the customer hears 202: a
/// cancellation that reached the seller must never be forgotten by a crash. With several
/// nodes it is launched by whichever node created it (or, if that node died, by the node
/// that claims it).
///
/// A new cancellation keeps `trace` (the cancel request's), or else the booking's: its
/// steps then continue, or link to, that trace.
async fn start_cancellation(
    deps: &Arc<SagaDeps>,
    booking: &SagaRecord,
    trace: Option<TraceOrigin>,
) -> Result<(), BookingError> {
    let id = booking.saga_id.cancellation().to_string();
    let record = match deps.load(&id).await? {
        Some(existing) => existing,
        None => {
            let mut record = new_cancellation(booking, Utc::now())
                .map_err(|e| BookingError::Conflict(format!("booking cannot be cancelled: {e}")))?;
            record.trace = trace.or_else(|| booking.trace.clone());
            record
        }
    };
    if deps
        .saga_store
        .start_follow_up(&record, &booking.saga_id.to_string())
        .await?
    {
        launch(deps, &id);
    }
    Ok(())
}

impl Actor for SagaCoordinator {
    type Context = Context<Self>;

    /// Resumes what the store says this process must run: every unfinished saga
    /// (forward or compensating) from its last record, and the cancellations requested of
    /// confirmed bookings. With several nodes there is nothing to resume here: sagas are
    /// run by whichever node claims their expired lease (the cluster duties).
    fn started(&mut self, ctx: &mut Context<Self>) {
        let deps = self.deps.clone();
        ctx.spawn(
            async move {
                let resumable = match deps.saga_store.resumable().await {
                    Ok(resumable) => resumable,
                    Err(e) => {
                        tracing::error!(error = %e, "Cannot read the sagas to resume them.");
                        return;
                    }
                };
                let resumed = resumable.unfinished.len();
                for id in &resumable.unfinished {
                    // Resuming is not admission: every unfinished saga must finish.
                    launch(&deps, id);
                }
                if resumed > 0 {
                    tracing::info!(resumed, "Unfinished sagas resumed.");
                }
                for record in resumable.cancellations {
                    if let Err(e) = start_cancellation(&deps, &record, None).await {
                        tracing::error!(saga = %record.saga_id, error = %e, "Cannot start a requested cancellation.");
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// Starts a booking saga, or returns the one started before with the same client key.
#[derive(Debug, Message)]
#[rtype(result = "Result<(SagaRecord, bool), BookingError>")]
pub(crate) struct StartBooking {
    /// The validated request (its `idempotency_key` is the client's).
    pub request: BookingRequest,
    /// The request's span: the saga keeps its trace context.
    pub origin: Origin,
}

/// Reads a saga record.
#[derive(Debug, Message)]
#[rtype(result = "Result<SagaRecord, BookingError>")]
pub(crate) struct GetSaga {
    /// Saga id.
    pub id: SagaId,
    /// The sender's span and when it sent this.
    pub origin: Origin,
}

/// A customer cancels a booking.
#[derive(Debug, Message)]
#[rtype(result = "Result<SagaRecord, BookingError>")]
pub(crate) struct CancelBooking {
    /// Booking id.
    pub id: BookingId,
    /// The request's span: a cancellation saga it creates keeps its trace context.
    pub origin: Origin,
}

/// An operator resumes a saga parked as `needs_attention`.
#[derive(Debug, Message)]
#[rtype(result = "Result<SagaRecord, BookingError>")]
pub(crate) struct RetrySaga {
    /// Saga id.
    pub id: SagaId,
    /// The sender's span and when it sent this.
    pub origin: Origin,
}

/// One page of an account's bookings, in booking-id order, each with its cancellation.
#[derive(Debug, Message)]
#[rtype(result = "Result<BookingRecords, BookingError>")]
pub(crate) struct ListBookings {
    /// Account.
    pub account: AccountId,
    /// Only bookings whose id sorts after this one (the previous page's `next_after`).
    pub after: Option<BookingId>,
    /// At most this many (the caller bounds it).
    pub limit: usize,
    /// The sender's span and when it sent this.
    pub origin: Origin,
}

/// A page of [`ListBookings`].
#[derive(Debug, Clone)]
pub(crate) struct BookingRecords {
    /// Each booking's record with its cancellation saga's, when one was started.
    pub bookings: Vec<(SagaRecord, Option<SagaRecord>)>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<BookingId>,
}

/// Creates the saga (record, client key and account index in one durable write), then
/// starts it. The key is global to the store, so the same key sent to two nodes makes one
/// booking.
impl Handler<StartBooking> for SagaCoordinator {
    type Result = ResponseFuture<Result<(SagaRecord, bool), BookingError>>;

    fn handle(&mut self, msg: StartBooking, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.handling("coordinator start_booking");
        let _enter = span.enter();
        let deps = self.deps.clone();
        let request = msg.request;
        let mut record = match new_record(BookingId::new(), &request) {
            Ok(record) => record,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        record.trace = trace_origin(&msg.origin);
        let key = format!("{}/{}", request.account_id, request.idempotency_key);
        // A slot is taken before the saga exists, so concurrent bookings cannot all pass
        // the limit while their records are flushed. Without one, a replay of a key is
        // still answered; only a new booking is refused.
        let permit = match deps.sagas.reserve() {
            Ok(permit) => permit,
            Err(_) => {
                let found = deps.saga_store.find_booking(&record, &key);
                return Box::pin(
                    async move {
                        match found.await? {
                            Some(NewBooking::Existing(saga_id)) => {
                                Ok((load(&deps, &saga_id).await?, true))
                            }
                            Some(NewBooking::KeyReused) => Err(key_reused(&request)),
                            _ => Err(BookingError::Overloaded),
                        }
                    }
                    .traced(span.clone()),
                );
            }
        };
        // Called here, not in the future: a store that applies writes as they are called
        // (sled) sees the requests in the order this actor handles them, so two requests
        // with one key cannot both create a saga.
        let created = deps.saga_store.create_booking(&record, &key);
        Box::pin(
            async move {
                match created.await? {
                    NewBooking::Created => {
                        // Durable first, then started: a crash in between resumes it.
                        launch_within(&deps, &record.saga_id.to_string(), Some(permit));
                        Ok((record, false))
                    }
                    NewBooking::Existing(saga_id) => {
                        drop(permit);
                        Ok((load(&deps, &saga_id).await?, true))
                    }
                    NewBooking::KeyReused => Err(key_reused(&request)),
                }
            }
            .traced(span.clone()),
        )
    }
}

/// The trace context a new saga keeps: the sender's (kept or not), while spans are
/// exported.
fn trace_origin(origin: &Origin) -> Option<TraceOrigin> {
    let traceparent = origin.traceparent()?;
    Some(TraceOrigin {
        traceparent,
        process: crate::telemetry::process_id(),
    })
}

/// A new booking's record, or which field of the request is wrong.
fn new_record(booking: BookingId, request: &BookingRequest) -> Result<SagaRecord, BookingError> {
    new_booking(booking, request.clone(), Utc::now()).map_err(|e| {
        let text = e.to_string();
        let detail = text.trim_start_matches("invalid booking request: ");
        let (field, message) = detail.split_once(": ").unwrap_or(("booking", detail));
        BookingError::Invalid {
            field: field.to_owned(),
            message: message.to_owned(),
        }
    })
}

fn key_reused(request: &BookingRequest) -> BookingError {
    BookingError::Conflict(format!(
        "Idempotency-Key {:?} was already used for a different booking",
        request.idempotency_key
    ))
}

/// Reads the last persisted record.
impl Handler<GetSaga> for SagaCoordinator {
    type Result = ResponseFuture<Result<SagaRecord, BookingError>>;
    fn handle(&mut self, msg: GetSaga, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let span = msg.origin.handling("coordinator get_saga");
        Box::pin(async move { load(&deps, &msg.id.to_string()).await }.traced(span))
    }
}

/// In flight here: the saga decides between steps. In flight with no actor here (another
/// node drives it, or it is being resumed): the cancel is stored and the saga takes it at
/// its next step. Confirmed: a cancellation saga starts. Failed or cancelled: nothing to
/// do (answers the booking as it is).
impl Handler<CancelBooking> for SagaCoordinator {
    type Result = ResponseFuture<Result<SagaRecord, BookingError>>;

    fn handle(&mut self, msg: CancelBooking, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let id = SagaId::Booking(msg.id).to_string();
        let trace = trace_origin(&msg.origin);
        let span = msg.origin.handling("coordinator cancel_booking");
        Box::pin(
            async move {
            let record = load(&deps, &id).await?;
            if record.kind != SagaKind::Booking {
                return Err(BookingError::NotFound(id));
            }
            let running = deps.sagas.child(&id);
            match (running, record.state) {
                (_, SagaState::Failed | SagaState::Cancelled) => {}
                (_, SagaState::NeedsAttention) => {
                    return Err(BookingError::Conflict(
                        "the booking needs an operator's attention before it can be cancelled"
                            .into(),
                    ))
                }
                (None, SagaState::Confirmed) => start_cancellation(&deps, &record, trace).await?,
                (Some(saga), _) => {
                    let decision = saga.ask(RequestCancel).await.map_err(|e| {
                        tracing::warn!(booking = %id, error = %e, "Cancel request did not reach the saga.");
                        BookingError::Conflict(format!("the booking is changing state ({e}); retry"))
                    })??;
                    if decision == CancelDecision::StartCancellationSaga {
                        let record = load(&deps, &id).await?;
                        start_cancellation(&deps, &record, trace).await?;
                    }
                }
                (None, _) => {
                    deps.saga_store.request_cancel(&id).await?;
                    // Stored first, then read again: a booking confirmed meanwhile, whose
                    // actor may have ended before it could see the request, is cancelled
                    // from here (starting its cancellation twice creates it once).
                    let now = load(&deps, &id).await?;
                    if now.state != SagaState::Confirmed {
                        return Ok(now);
                    }
                    start_cancellation(&deps, &now, trace).await?;
                }
            }
            load(&deps, &id).await
        }
            .traced(span),
        )
    }
}

/// Resumes a parked saga with a fresh retry budget.
impl Handler<RetrySaga> for SagaCoordinator {
    type Result = ResponseFuture<Result<SagaRecord, BookingError>>;

    fn handle(&mut self, msg: RetrySaga, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let span = msg.origin.handling("coordinator retry_saga");
        Box::pin(
            async move {
                let id = msg.id.to_string();
                let mut record = load(&deps, &id).await?;
                let before = record.state;
                retry_needs_attention(&mut record, Utc::now())
                    .map_err(|e| BookingError::Conflict(e.to_string()))?;
                if !deps.saga_store.retry_parked(&record, before).await? {
                    return Err(BookingError::Conflict(
                        "the saga is no longer parked (another operator retried it)".into(),
                    ));
                }
                launch(&deps, &id);
                Ok(record)
            }
            .traced(span),
        )
    }
}

/// Scans one page of the account's booking index (one entry more, to tell whether another
/// page follows) and reads each booking with its cancellation.
impl Handler<ListBookings> for SagaCoordinator {
    type Result = ResponseFuture<Result<BookingRecords, BookingError>>;
    fn handle(&mut self, msg: ListBookings, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let span = msg.origin.handling("coordinator list_bookings");
        Box::pin(async move { list_bookings(&deps, msg).await }.traced(span))
    }
}

/// One page of an account's bookings, each with its cancellation.
async fn list_bookings(deps: &SagaDeps, msg: ListBookings) -> Result<BookingRecords, BookingError> {
    let ids = booking_ids(deps, &msg).await?;
    let more = ids.len() > msg.limit;
    let mut bookings = Vec::with_capacity(ids.len().min(msg.limit));
    for id in ids.into_iter().take(msg.limit) {
        // An index entry without its saga is what a crash left of a creation that was
        // never acknowledged (the sled store writes the saga last).
        let Some(record) = deps.load(&id).await? else {
            continue;
        };
        let cancellation = deps
            .load(&record.saga_id.cancellation().to_string())
            .await?;
        bookings.push((record, cancellation));
    }
    let next_after = if more {
        bookings.last().map(|(r, _)| r.saga_id.booking())
    } else {
        None
    };
    Ok(BookingRecords {
        bookings,
        next_after,
    })
}

/// Ids of up to `limit + 1` of the account's bookings after `after`, in id order (the
/// extra one tells whether another page follows).
async fn booking_ids(deps: &SagaDeps, msg: &ListBookings) -> Result<Vec<String>, BookingError> {
    let after = msg.after.map(|id| id.to_string());
    Ok(deps
        .saga_store
        .account_bookings(msg.account, after.as_deref(), msg.limit.saturating_add(1))
        .await?)
}
