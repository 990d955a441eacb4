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
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::booking::{BookingSaga, RequestCancel, SagaDeps};
use crate::domain::account::AccountId;
use crate::domain::saga::{
    is_terminal, new_booking, new_cancellation, park_crashed, retry_needs_attention, BookingId,
    BookingRequest, CancelDecision, SagaId, SagaKind, SagaRecord, SagaState, SagaTally,
};
use crate::store::{decode_record, get_record, Op, StoreError, Tree};
use crate::supervisor::{ChildEnd, ChildPermit};

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

/// What a client idempotency key was used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenBooking {
    request: BookingRequest,
    saga_id: String,
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

    fn persist(
        &self,
        ops: Vec<Op>,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>>, BookingError> {
        self.deps.store.write(ops)?;
        Ok(self.deps.store.flush())
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
    #[cfg(feature = "postgres")]
    if let Some(cluster) = &deps.cluster {
        // Under this node's lease (parked rows are never claimed; a retry takes them).
        cluster.save(&record, None, None).await?;
        cluster.forget(id);
        deps.tally.replace(Some(before), &record);
        tracing::error!(saga = %record.saga_id, reason, "Saga actor kept crashing; parked as needs_attention.");
        return Ok(());
    }
    deps.store
        .write(vec![Op::put(Tree::Sagas, id.as_bytes().to_vec(), &record)])?;
    deps.tally.replace(Some(before), &record);
    deps.store.flush().await?;
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
        start_cancellation(deps, &record).await?;
    }
    Ok(())
}

/// Creates (once) and launches the cancellation saga of a confirmed booking.
///
/// The record is durable before the saga acts and before the customer hears 202: a
/// cancellation that reached the seller must never be forgotten by a crash (found by the
/// crash test with partners in their own processes: a kill -9 between the unflushed write
/// and the next flush lost a cancellation the seller had already made).
async fn start_cancellation(
    deps: &Arc<SagaDeps>,
    booking: &SagaRecord,
) -> Result<(), BookingError> {
    let id = booking.saga_id.cancellation().to_string();
    #[cfg(feature = "postgres")]
    if let Some(cluster) = &deps.cluster {
        // Created once cluster-wide; launched by whichever node created it (or, if that
        // node died, by the node that claims it).
        let record = match deps.load(&id).await? {
            Some(existing) => existing,
            None => new_cancellation(booking, Utc::now())
                .map_err(|e| BookingError::Conflict(format!("booking cannot be cancelled: {e}")))?,
        };
        if cluster
            .start_follow_up(&record, &booking.saga_id.to_string())
            .await?
        {
            deps.tally.replace(None, &record);
            launch(deps, &id);
        }
        return Ok(());
    }
    if deps.load(&id).await?.is_none() {
        let record = new_cancellation(booking, Utc::now())
            .map_err(|e| BookingError::Conflict(format!("booking cannot be cancelled: {e}")))?;
        deps.store
            .write(vec![Op::put(Tree::Sagas, id.as_bytes().to_vec(), &record)])?;
        deps.tally.replace(None, &record);
    }
    // Also when the record was there: it may be this process's own unflushed write.
    deps.store.flush().await?;
    launch(deps, &id);
    Ok(())
}

impl Actor for SagaCoordinator {
    type Context = Context<Self>;

    /// Resumes every unfinished saga (forward or compensating) from its last record. In a
    /// cluster, only counts them: sagas are resumed by whichever node claims their
    /// expired lease (`actors::cluster`).
    fn started(&mut self, ctx: &mut Context<Self>) {
        #[cfg(feature = "postgres")]
        if let Some(cluster) = self.deps.cluster.clone() {
            let deps = self.deps.clone();
            ctx.spawn(
                async move {
                    match cluster.db.saga_records().await {
                        Ok(rows) => {
                            let records: Vec<SagaRecord> = rows
                                .iter()
                                .filter_map(|(id, bytes)| {
                                    decode_record(Tree::Sagas, id.as_bytes(), bytes).ok()
                                })
                                .collect();
                            deps.tally.init_once(|| SagaTally::from_records(&records));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "Cannot count sagas in the database.")
                        }
                    }
                }
                .into_actor(self),
            );
            return;
        }
        let _ = ctx;
        let entries = match self.deps.store.scan(Tree::Sagas, b"", None, usize::MAX) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, "Cannot scan sagas to resume them.");
                return;
            }
        };
        let records: Vec<Result<SagaRecord, StoreError>> = entries
            .iter()
            .map(|(key, value)| decode_record::<SagaRecord>(Tree::Sagas, key, value))
            .collect();
        // Before any saga runs (the first start; a restarted coordinator keeps the tally
        // its sagas have been updating all along).
        self.deps
            .tally
            .init_once(|| SagaTally::from_records(records.iter().flatten()));
        let mut resumed = 0;
        for record in records {
            match record {
                Ok(r) if !is_terminal(r.state) && r.state != SagaState::NeedsAttention => {
                    // Resuming is not admission: every unfinished saga must finish.
                    launch(&self.deps, &r.saga_id.to_string());
                    resumed += 1;
                }
                Ok(r)
                    if r.kind == SagaKind::Booking
                        && r.cancel_requested
                        && r.state == SagaState::Confirmed =>
                {
                    let deps = self.deps.clone();
                    actix::spawn(async move {
                        if let Err(e) = start_cancellation(&deps, &r).await {
                            tracing::error!(saga = %r.saga_id, error = %e, "Cannot start a requested cancellation.");
                        }
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "Unreadable saga record left as is."),
            }
        }
        if resumed > 0 {
            tracing::info!(resumed, "Unfinished sagas resumed.");
        }
    }
}

/// Starts a booking saga, or returns the one started before with the same client key.
#[derive(Debug, Message)]
#[rtype(result = "Result<(SagaRecord, bool), BookingError>")]
pub(crate) struct StartBooking {
    /// The validated request (its `idempotency_key` is the client's).
    pub request: BookingRequest,
}

/// Reads a saga record.
#[derive(Debug, Message)]
#[rtype(result = "Result<SagaRecord, BookingError>")]
pub(crate) struct GetSaga {
    /// Saga id.
    pub id: SagaId,
}

/// A customer cancels a booking.
#[derive(Debug, Message)]
#[rtype(result = "Result<SagaRecord, BookingError>")]
pub(crate) struct CancelBooking {
    /// Booking id.
    pub id: BookingId,
}

/// An operator resumes a saga parked as `needs_attention`.
#[derive(Debug, Message)]
#[rtype(result = "Result<SagaRecord, BookingError>")]
pub(crate) struct RetrySaga {
    /// Saga id.
    pub id: SagaId,
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
}

/// A page of [`ListBookings`].
#[derive(Debug, Clone)]
pub(crate) struct BookingRecords {
    /// Each booking's record with its cancellation saga's, when one was started.
    pub bookings: Vec<(SagaRecord, Option<SagaRecord>)>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<BookingId>,
}

/// A saga parked as `needs_attention`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParkedSaga {
    /// Saga id.
    pub id: String,
    /// Why it is parked.
    pub reason: String,
}

/// Saga figures for health and metrics.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SagaCounts {
    /// Sagas per customer-visible state.
    pub by_state: std::collections::BTreeMap<String, u64>,
    /// Parked sagas: id and reason (health lists the first 20).
    pub parked: Vec<ParkedSaga>,
    /// How many sagas are parked.
    pub needs_attention: usize,
    /// Times a saga became parked since start (parked at start-up included).
    pub parks: u64,
    /// Saga actors running now.
    pub running: usize,
    /// Saga actor crashes since start.
    pub crashes: u64,
}

/// Creates the saga (record, key and account index in one durable write), then starts it.
impl Handler<StartBooking> for SagaCoordinator {
    type Result = ResponseFuture<Result<(SagaRecord, bool), BookingError>>;

    fn handle(&mut self, msg: StartBooking, _: &mut Context<Self>) -> Self::Result {
        #[cfg(feature = "postgres")]
        if self.deps.cluster.is_some() {
            return Box::pin(start_in_cluster(self.deps.clone(), msg.request));
        }
        let deps = self.deps.clone();
        let result = (|| {
            let request = msg.request;
            let key = format!("{}/{}", request.account_id, request.idempotency_key);
            if let Some(seen) =
                get_record::<SeenBooking>(&*self.deps.store, Tree::BookingKeys, key.as_bytes())?
            {
                if seen.request != request {
                    return Err(key_reused(&request));
                }
                return Ok(Err(seen.saga_id));
            }
            // A slot is taken before the saga exists, so concurrent bookings cannot all
            // pass the limit while their records are flushed.
            let permit = self
                .deps
                .sagas
                .reserve()
                .map_err(|_| BookingError::Overloaded)?;
            let booking = BookingId::new();
            let id = booking.to_string();
            let record = new_record(booking, &request)?;
            let mut index = request.account_id.to_string().into_bytes();
            index.push(b'/');
            index.extend_from_slice(id.as_bytes());
            let flush = self.persist(vec![
                Op::put(Tree::Sagas, id.as_bytes().to_vec(), &record),
                Op::put(
                    Tree::BookingKeys,
                    key.into_bytes(),
                    &SeenBooking {
                        request,
                        saga_id: id.clone(),
                    },
                ),
                Op::put(Tree::AccountBookings, index, &()),
            ])?;
            self.deps.tally.replace(None, &record);
            Ok(Ok((flush, permit, record)))
        })();
        Box::pin(async move {
            match result? {
                Err(existing) => Ok((load(&deps, &existing).await?, true)),
                Ok((flush, permit, record)) => {
                    flush.await?;
                    // Durable first, then started: a crash in between resumes it at start-up.
                    launch_within(&deps, &record.saga_id.to_string(), Some(permit));
                    Ok((record, false))
                }
            }
        })
    }
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

/// [`StartBooking`] in a cluster: the saga and its idempotency key are created in one
/// database transaction, leased to this node; the key is global, so the same key sent to
/// two nodes makes one booking.
#[cfg(feature = "postgres")]
async fn start_in_cluster(
    deps: Arc<SagaDeps>,
    request: BookingRequest,
) -> Result<(SagaRecord, bool), BookingError> {
    use super::cluster::NewSaga;
    let Some(cluster) = deps.cluster.clone() else {
        return Err(BookingError::Conflict("not in a cluster".into()));
    };
    let permit = deps.sagas.reserve().map_err(|_| BookingError::Overloaded)?;
    let booking = BookingId::new();
    let record = new_record(booking, &request)?;
    let key = format!("{}/{}", request.account_id, request.idempotency_key);
    match cluster.create_booking(&record, &key).await? {
        NewSaga::Created => {
            deps.tally.replace(None, &record);
            launch_within(&deps, &record.saga_id.to_string(), Some(permit));
            Ok((record, false))
        }
        NewSaga::Existing(saga_id) => {
            drop(permit);
            Ok((load(&deps, &saga_id).await?, true))
        }
        NewSaga::KeyReused => Err(key_reused(&request)),
    }
}

/// Reads the last persisted record.
impl Handler<GetSaga> for SagaCoordinator {
    type Result = ResponseFuture<Result<SagaRecord, BookingError>>;
    fn handle(&mut self, msg: GetSaga, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        Box::pin(async move { load(&deps, &msg.id.to_string()).await })
    }
}

/// In flight: the saga decides between steps. Confirmed: a cancellation saga starts.
/// Failed or cancelled: nothing to do (answers the booking as it is).
impl Handler<CancelBooking> for SagaCoordinator {
    type Result = ResponseFuture<Result<SagaRecord, BookingError>>;

    fn handle(&mut self, msg: CancelBooking, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let id = SagaId::Booking(msg.id).to_string();
        Box::pin(async move {
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
                (None, SagaState::Confirmed) => start_cancellation(&deps, &record).await?,
                (Some(saga), _) => {
                    let decision = saga.ask(RequestCancel).await.map_err(|e| {
                        tracing::warn!(booking = %id, error = %e, "Cancel request did not reach the saga.");
                        BookingError::Conflict(format!("the booking is changing state ({e}); retry"))
                    })??;
                    if decision == CancelDecision::StartCancellationSaga {
                        let record = load(&deps, &id).await?;
                        start_cancellation(&deps, &record).await?;
                    }
                }
                (None, _) => {
                    // One node: resumed at start-up. In a cluster: driven by another node
                    // (or about to be claimed); it decides between steps, so ask again
                    // once it has moved on.
                    return Err(BookingError::Conflict(
                        "the booking is in progress elsewhere or being recovered; retry shortly"
                            .into(),
                    ));
                }
            }
            load(&deps, &id).await
        })
    }
}

/// Resumes a parked saga with a fresh retry budget.
impl Handler<RetrySaga> for SagaCoordinator {
    type Result = ResponseFuture<Result<SagaRecord, BookingError>>;

    fn handle(&mut self, msg: RetrySaga, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        Box::pin(async move {
            let id = msg.id.to_string();
            let mut record = load(&deps, &id).await?;
            let before = record.state;
            retry_needs_attention(&mut record, Utc::now())
                .map_err(|e| BookingError::Conflict(e.to_string()))?;
            #[cfg(feature = "postgres")]
            if let Some(cluster) = &deps.cluster {
                if !cluster.take_parked(&record).await? {
                    return Err(BookingError::Conflict(
                        "the saga is no longer parked (another operator retried it)".into(),
                    ));
                }
                deps.tally.replace(Some(before), &record);
                launch(&deps, &id);
                return Ok(record);
            }
            deps.store
                .write(vec![Op::put(Tree::Sagas, id.as_bytes().to_vec(), &record)])?;
            deps.tally.replace(Some(before), &record);
            deps.store.flush().await?;
            launch(&deps, &id);
            Ok(record)
        })
    }
}

/// Scans one page of the account's booking index (one entry more, to tell whether another
/// page follows) and reads each booking with its cancellation.
impl Handler<ListBookings> for SagaCoordinator {
    type Result = ResponseFuture<Result<BookingRecords, BookingError>>;
    fn handle(&mut self, msg: ListBookings, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        Box::pin(async move { list_bookings(&deps, msg).await })
    }
}

/// One page of an account's bookings, each with its cancellation.
async fn list_bookings(deps: &SagaDeps, msg: ListBookings) -> Result<BookingRecords, BookingError> {
    let ids = booking_ids(deps, &msg).await?;
    let more = ids.len() > msg.limit;
    let mut bookings = Vec::with_capacity(ids.len().min(msg.limit));
    for id in ids.into_iter().take(msg.limit) {
        let record = load(deps, &id).await?;
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
    #[cfg(feature = "postgres")]
    if let Some(cluster) = &deps.cluster {
        let rows = cluster
            .db
            .account_sagas(msg.account.0, after.as_deref(), msg.limit.saturating_add(1))
            .await
            .map_err(StoreError::from)?;
        return Ok(rows.into_iter().map(|r| r.id).collect());
    }
    {
        let mut prefix = msg.account.to_string().into_bytes();
        prefix.push(b'/');
        let after = after.map(|id| {
            let mut key = prefix.clone();
            key.extend_from_slice(id.as_bytes());
            key
        });
        let entries = deps.store.scan(
            Tree::AccountBookings,
            &prefix,
            after.as_deref(),
            msg.limit.saturating_add(1),
        )?;
        Ok(entries
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            .collect())
    }
}

/// The [`SagaTally`] shared by every writer of saga records: the coordinator (new sagas,
/// cancellations, retries, parked crashes) and the saga actors (each persisted step).
/// Readers take a [`SagaCounts`] in O(parked listed), without a scan or an ask.
#[derive(Debug, Default)]
pub(crate) struct SharedTally {
    tally: std::sync::Mutex<Option<SagaTally>>,
}

impl SharedTally {
    /// Installs the tally built by `build` unless one is installed.
    pub(crate) fn init_once(&self, build: impl FnOnce() -> SagaTally) {
        let mut tally = self.lock();
        if tally.is_none() {
            *tally = Some(build());
        }
    }

    /// A saga record was written over one in state `before` (`None`: a new record).
    pub(crate) fn replace(&self, before: Option<SagaState>, after: &SagaRecord) {
        if let Some(tally) = self.lock().as_mut() {
            tally.replace(before, after);
        }
    }

    /// Counts by state, with the first `parked_listed` parked sagas; `running` and
    /// `crashes` come from the saga supervisor.
    pub(crate) fn counts(&self, parked_listed: usize) -> SagaCounts {
        let tally = self.lock();
        let Some(tally) = tally.as_ref() else {
            return SagaCounts::default();
        };
        SagaCounts {
            by_state: tally
                .by_state()
                .iter()
                .map(|(state, n)| ((*state).to_owned(), *n))
                .collect(),
            parked: tally
                .parked(parked_listed)
                .map(|(id, reason)| ParkedSaga {
                    id: id.to_owned(),
                    reason: reason.to_owned(),
                })
                .collect(),
            needs_attention: tally.parked_count(),
            parks: tally.parks(),
            running: 0,
            crashes: 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SagaTally>> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}
