//! A customer's cancel stored for a booking (by whichever node received it) instead of
//! handed to the actor driving the booking: the rules for taking it up.
//!
//! - A booking in flight takes it at its next step, through [`super::request_cancellation`]
//!   like a cancel handed over directly ([`takes_stored_cancel`]).
//! - A confirmed booking with a stored cancel awaits its cancellation saga, which is what
//!   `cancel_requested` means for a confirmed booking ([`with_stored_cancel`]): whoever
//!   finishes with the booking (or resumes it) starts that saga.
//! - A failed or cancelled booking has nothing to take; a parked one waits for an
//!   operator, whose retry resumes it first.

use super::record::{is_terminal, SagaKind, SagaRecord, SagaState};

/// Whether the saga driving `r` must take a stored cancel now.
pub fn takes_stored_cancel(r: &SagaRecord) -> bool {
    r.kind == SagaKind::Booking
        && !r.cancel_requested
        && !is_terminal(r.state)
        && r.state != SagaState::NeedsAttention
}

/// `r` as a reader must see it when a cancel is stored for it.
pub fn with_stored_cancel(r: &mut SagaRecord) {
    if r.kind == SagaKind::Booking && r.state == SagaState::Confirmed {
        r.cancel_requested = true;
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::saga::fixtures::booking;
    use crate::domain::saga::new_cancellation;

    #[test]
    fn a_booking_in_flight_takes_it_once() {
        let mut r = booking();
        assert!(takes_stored_cancel(&r));
        r.cancel_requested = true;
        assert!(!takes_stored_cancel(&r), "taken already");
        let mut before = booking();
        with_stored_cancel(&mut before);
        assert!(
            !before.cancel_requested,
            "in flight: taken by its actor, not here"
        );
    }

    #[test]
    fn a_confirmed_booking_awaits_its_cancellation() {
        let mut r = booking();
        r.state = SagaState::Confirmed;
        assert!(!takes_stored_cancel(&r));
        with_stored_cancel(&mut r);
        assert!(r.cancel_requested);
        for state in [
            SagaState::Failed,
            SagaState::Cancelled,
            SagaState::NeedsAttention,
        ] {
            let mut r = booking();
            r.state = state;
            assert!(!takes_stored_cancel(&r), "{state:?}");
            with_stored_cancel(&mut r);
            assert!(!r.cancel_requested, "{state:?}");
        }
        let mut confirmed = booking();
        confirmed.state = SagaState::Confirmed;
        if let Ok(mut cancellation) = new_cancellation(&confirmed, Utc::now()) {
            assert!(!takes_stored_cancel(&cancellation), "not a booking");
            with_stored_cancel(&mut cancellation);
            assert!(!cancellation.cancel_requested);
        }
    }
}
