//! Cancellation sagas: creating one for a confirmed booking, and marking the booking
//! cancelled once its cancellation finishes.

use super::*;

/// A cancellation saga `cancel_id` for the confirmed booking `booking`.
///
/// Steps: cancel with the seller (learning the fee), refund the card part minus the fee,
/// credit back the points not consumed by the fee ([`super::cancellation_split`]), then the
/// `cancelled` email. Seller cancellation is its pivot: a refusal there ends the
/// cancellation `failed` and the booking stays confirmed; after it, the saga only goes
/// forward (parking as `needs_attention` if a refund or credit cannot be done).
pub fn new_cancellation(booking: &SagaRecord, now: DateTime<Utc>) -> Result<SagaRecord, SagaError> {
    if booking.kind != SagaKind::Booking || booking.state != SagaState::Confirmed {
        return Err(SagaError::WrongState {
            expected: "a confirmed booking",
            actual: booking.state,
        });
    }
    let data = SagaData {
        authorization_id: booking.data.authorization_id.clone(),
        reservation_id: booking.data.reservation_id.clone(),
        capture_id: booking.data.capture_id.clone(),
        card_captured: booking.data.card_captured,
        points_captured: booking.data.points_captured,
        ..SagaData::default()
    };
    let mut r = SagaRecord {
        definition_version: DEFINITION_VERSION,
        saga_id: booking.saga_id.cancellation(),
        kind: SagaKind::Cancellation {
            of: booking.booking_id(),
        },
        request: booking.request.clone(),
        state: SagaState::Pending,
        phase: Phase::SellerCancel,
        effects: Default::default(),
        data,
        attempts: Default::default(),
        needs_attention: None,
        resume_state: None,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        history: Vec::new(),
        trace: None,
        calls: Default::default(),
    };
    r.note(
        now,
        None,
        format!("cancellation of booking {} requested", booking.saga_id),
    );
    Ok(r)
}

/// Marks the confirmed `booking` cancelled once its cancellation saga `cancellation` has
/// finished `cancelled`, copying the fee and refunds for the booking's history. The
/// customer email was already written by the cancellation saga's transition.
pub fn mark_booking_cancelled(
    booking: &mut SagaRecord,
    cancellation: &SagaRecord,
    now: DateTime<Utc>,
) -> Result<(), SagaError> {
    let of_this =
        matches!(&cancellation.kind, SagaKind::Cancellation { of } if *of == booking.booking_id());
    if !of_this {
        return Err(SagaError::InvalidRequest(
            "cancellation is not of this booking".into(),
        ));
    }
    if cancellation.state != SagaState::Cancelled {
        return Err(SagaError::WrongState {
            expected: "a finished cancellation",
            actual: cancellation.state,
        });
    }
    if booking.state != SagaState::Confirmed {
        return Err(SagaError::WrongState {
            expected: "confirmed",
            actual: booking.state,
        });
    }
    booking.data.seller_fee = cancellation.data.seller_fee;
    booking.data.refund_amount = cancellation.data.refund_amount;
    booking.data.points_restored = cancellation.data.points_restored;
    let show = |m: Option<Money>| m.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    let note = format!(
        "cancelled by {}: fee {}, refund {}, points restored {}",
        cancellation.saga_id,
        show(cancellation.data.seller_fee),
        show(cancellation.data.refund_amount),
        show(cancellation.data.points_restored)
    );
    set_state(booking, SagaState::Cancelled, now, None, note);
    Ok(())
}
