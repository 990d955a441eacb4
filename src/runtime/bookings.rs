//! Bookings: orders checked against the domain's rules and handed to the saga
//! coordinator; reads, cancellations and operator retries, each with the caller's right
//! checked here, below HTTP.

use super::{Booking, BookingOrder, BookingPage, Runtime};
use crate::actors::coordinator::{
    BookingError, CancelBooking, GetSaga, ListBookings, RetrySaga, StartBooking,
};
use crate::domain::access::Caller;
use crate::domain::account::AccountId;
use crate::domain::saga::{BookingId, SagaCounts, SagaId, SagaKind, SagaRecord};
use crate::domain::Invalid;
use crate::error::Error;

impl Runtime {
    /// Starts a booking saga for an offer from a search; the same `idempotency_key` (with
    /// the same request) returns the same booking. The booking proceeds in the
    /// background: poll [`booking`](Self::booking).
    pub async fn book(&self, order: BookingOrder) -> Result<(Booking, bool), Error> {
        self.book_as(Caller::Operator, order).await
    }

    /// [`book`](Self::book), if `caller` may act on the order's account.
    pub async fn book_as(
        &self,
        caller: Caller,
        order: BookingOrder,
    ) -> Result<(Booking, bool), Error> {
        // One message checks both the caller's right and that the account exists.
        self.account_as(caller, order.account_id).await?;
        let today = chrono::Utc::now().date_naive();
        let currency = self.inner.config.accounts.currency;
        let ceiling = self.inner.config.bookings.max_offer_price_minor;
        order.check(&self.inner.seller_names, currency, today, ceiling)?;
        let request = order.into_request();
        let (record, replayed) = self
            .inner
            .coordinator
            .ask(StartBooking {
                request,
                origin: crate::telemetry::Origin::current(),
            })
            .await??;
        let booking = if replayed {
            self.view(record.saga_id.booking(), record).await?
        } else {
            // Made by this request, whose reply is the first to name its id: no
            // cancellation of it can exist yet, so none is looked up (a store read, or a
            // round trip to PostgreSQL, per booking).
            Booking::from_records(record, None)
        };
        Ok((booking.seen_by(caller), replayed))
    }

    /// A booking with its state and timed history.
    pub async fn booking(&self, id: BookingId) -> Result<Booking, Error> {
        self.booking_as(Caller::Operator, id).await
    }

    /// [`booking`](Self::booking), if `caller` may see it: only the booking account's key
    /// (or the operator).
    pub async fn booking_as(&self, caller: Caller, id: BookingId) -> Result<Booking, Error> {
        // Before the look-up: a made-up key learns nothing about which bookings exist.
        self.authenticate(caller).await?;
        let record = self.saga(SagaId::Booking(id)).await?;
        if record.kind != SagaKind::Booking {
            return Err(BookingError::NotFound(id.to_string()).into());
        }
        self.authorize_booking(caller, &record).await?;
        Ok(self.view(id, record).await?.seen_by(caller))
    }

    /// A booking belongs to its account: the caller must be allowed to act on that.
    /// Another customer's booking is answered like one that does not exist, so booking ids
    /// cannot be probed.
    async fn authorize_booking(&self, caller: Caller, record: &SagaRecord) -> Result<(), Error> {
        if caller == Caller::Operator {
            return Ok(());
        }
        match self.authorize(caller, record.request.account_id).await {
            Err(Error::NotFound { .. }) => Err(Error::NotFound {
                what: "booking",
                id: record.booking_id().to_string(),
            }),
            other => other,
        }
    }

    async fn saga(&self, id: SagaId) -> Result<SagaRecord, Error> {
        Ok(self
            .inner
            .coordinator
            .ask(GetSaga {
                id,
                origin: crate::telemetry::Origin::current(),
            })
            .await??)
    }

    /// The booking `id` as customers see it, with its cancellation when one was started.
    async fn view(&self, id: BookingId, record: SagaRecord) -> Result<Booking, Error> {
        let cancellation = match self.saga(SagaId::Cancellation(id)).await {
            Ok(c) => Some(c),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Booking::from_records(record, cancellation))
    }

    /// Cancels a booking: a confirmed one through a cancellation saga (seller fee, refund
    /// minus the fee, points restored); one still in flight is compensated (before the
    /// seller reservation) or cancelled right after it is confirmed.
    pub async fn cancel_booking(&self, id: BookingId) -> Result<Booking, Error> {
        self.cancel_booking_as(Caller::Operator, id).await
    }

    /// [`cancel_booking`](Self::cancel_booking), if `caller` may act on the booking.
    pub async fn cancel_booking_as(&self, caller: Caller, id: BookingId) -> Result<Booking, Error> {
        self.booking_as(caller, id).await?;
        let record = self
            .inner
            .coordinator
            .ask(CancelBooking {
                id,
                origin: crate::telemetry::Origin::current(),
            })
            .await??;
        Ok(self.view(id, record).await?.seen_by(caller))
    }

    /// One page of an account's bookings, in booking-id order: those after booking `after`
    /// (the previous page's `next_after`), at most `limit` (1 to `accounts.max_page_size`).
    pub async fn account_bookings(
        &self,
        account: AccountId,
        after: Option<BookingId>,
        limit: usize,
    ) -> Result<BookingPage, Error> {
        self.account(account).await?;
        self.bookings_page(Caller::Operator, account, after, limit)
            .await
    }

    /// [`account_bookings`](Self::account_bookings), if `caller` may act on the account.
    pub async fn account_bookings_as(
        &self,
        caller: Caller,
        account: AccountId,
        after: Option<BookingId>,
        limit: usize,
    ) -> Result<BookingPage, Error> {
        // One message checks both the caller's right and that the account exists.
        self.account_as(caller, account).await?;
        self.bookings_page(caller, account, after, limit).await
    }

    async fn bookings_page(
        &self,
        caller: Caller,
        account: AccountId,
        after: Option<BookingId>,
        limit: usize,
    ) -> Result<BookingPage, Error> {
        let max = self.inner.config.accounts.max_page_size;
        if limit == 0 || limit > max {
            return Err(Invalid::new("limit", format!("must be between 1 and {max}")).into());
        }
        let page = self
            .inner
            .coordinator
            .ask(ListBookings {
                account,
                after,
                limit,
                origin: crate::telemetry::Origin::current(),
            })
            .await??;
        Ok(BookingPage {
            bookings: page
                .bookings
                .into_iter()
                .map(|(r, c)| Booking::from_records(r, c).seen_by(caller))
                .collect(),
            next_after: page.next_after,
        })
    }

    /// Operator: resumes a saga parked as `needs_attention`.
    pub async fn retry_saga(&self, id: SagaId) -> Result<SagaRecord, Error> {
        Ok(self
            .inner
            .coordinator
            .ask(RetrySaga {
                id,
                origin: crate::telemetry::Origin::current(),
            })
            .await??)
    }

    /// Saga figures: counts by state, the first `parked_listed` parked sagas, running
    /// actors, crashes. Kept by the writers of saga records: no scan, no ask.
    pub fn saga_counts(&self, parked_listed: usize) -> SagaCounts {
        let deps = &self.inner.saga_deps;
        SagaCounts {
            running: deps.sagas.len(),
            crashes: deps.sagas.crashes(),
            ..deps.saga_store.counts(parked_listed)
        }
    }
}
