//! Fuzzes the seller reply parser (`sellers::wire`): the bytes are parsed as every reply
//! kind and validated as `HttpSeller` does. Whatever the bytes, the result is a value or
//! an `InvalidReply` whose text is short and printable, never a panic. Accepted values
//! satisfy the invariants the rest of wayfare relies on and survive a trip through the
//! wire shape unchanged.
//!
//! Run with: `scripts/fuzz.sh 30` (or `cargo +nightly fuzz run seller_reply` in `fuzz/`).

#![no_main]

use chrono::NaiveDate;
use libfuzzer_sys::fuzz_target;
use wayfare::domain::money::{Currency, Money};
use wayfare::sellers::wire::{
    self, SearchReply, WireBookReply, WireCancelReply, WireError, WireOffer, WireStatusReply,
    MAX_AMOUNT_MINOR, MAX_ID_CHARS, MAX_TEXT_CHARS,
};
use wayfare::sellers::{
    BookOutcome, CancelOutcome, FlightQuery, HotelQuery, Offer, OfferDetails, ReservationStatus,
    SellerError,
};

const CURRENCY: Currency = Currency::EUR;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A refusal is an `InvalidReply` whose text a log line can carry as is.
fn refusal<T>(result: Result<T, SellerError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(SellerError::InvalidReply(text)) => {
            assert!(!text.is_empty(), "an empty refusal");
            assert!(text.chars().count() <= 400, "a long refusal: {text:?}");
            assert!(
                !text.chars().any(char::is_control),
                "control characters: {text:?}"
            );
            None
        }
        Err(other) => panic!("parsing a body gave {other:?}"),
    }
}

fn good_money(m: Money, min: i64) {
    assert_eq!(m.currency, CURRENCY);
    assert!((min..=MAX_AMOUNT_MINOR).contains(&m.minor), "{m:?}");
}

fn good_id(s: &str) {
    assert!(
        !s.trim().is_empty() && s.chars().count() <= MAX_ID_CHARS,
        "{s:?}"
    );
    assert!(!s.chars().any(char::is_control), "{s:?}");
}

fn offers_round_trip(
    offers: &[Offer],
    revalidate: impl Fn(SearchReply) -> Result<Vec<Offer>, SellerError>,
) {
    for o in offers {
        good_money(o.price, 1);
        good_id(&o.sku);
        assert!(o.title.chars().count() <= MAX_TEXT_CHARS);
    }
    let wire = SearchReply {
        offers: offers.iter().map(WireOffer::from).collect(),
    };
    let body = serde_json::to_vec(&wire).unwrap();
    let again = revalidate(wire::parse_json(&body).unwrap()).expect("accepted offers re-validate");
    assert_eq!(again, offers, "offers changed across the wire shape");
}

fuzz_target!(|body: &[u8]| {
    let hotel = HotelQuery {
        city_or_hotel: "Lisbon".into(),
        check_in: date("2026-05-01"),
        check_out: date("2026-05-03"),
    };
    if let Some(reply) = refusal(wire::parse_json::<SearchReply>(body)) {
        let validate = |r| wire::hotel_offers("s", CURRENCY, &hotel, r);
        if let Some(offers) = refusal(validate(reply.clone())) {
            for o in &offers {
                let OfferDetails::Hotel(h) = &o.details else {
                    panic!("a flight in a hotel search")
                };
                assert!(h.check_in == hotel.check_in && h.check_out == hotel.check_out);
                assert_eq!(i64::from(h.nights), hotel.nights());
            }
            offers_round_trip(&offers, validate);
        }
        for return_date in [None, Some(date("2026-05-08"))] {
            let flight = FlightQuery {
                from: "LIS".into(),
                to: "CDG".into(),
                date: date("2026-05-01"),
                return_date,
            };
            let validate = |r| wire::flight_offers("s", CURRENCY, &flight, r);
            if let Some(offers) = refusal(validate(reply.clone())) {
                for o in &offers {
                    let OfferDetails::Flight(f) = &o.details else {
                        panic!("a hotel in a flight search")
                    };
                    assert_eq!(f.legs.len(), 1 + usize::from(return_date.is_some()));
                    assert!(f.legs[0].from == "LIS" && f.legs[0].to == "CDG");
                    f.legs.iter().for_each(|l| good_id(&l.flight));
                }
                offers_round_trip(&offers, validate);
            }
        }
    }
    if let Some(reply) = refusal(wire::parse_json::<WireBookReply>(body)) {
        if let Some(outcome) = refusal(wire::book_outcome(CURRENCY, reply)) {
            match &outcome {
                BookOutcome::Confirmed {
                    reservation_id,
                    price,
                } => {
                    good_id(reservation_id);
                    good_money(*price, 1);
                }
                BookOutcome::Rejected { reason } => {
                    assert!(reason.chars().count() <= MAX_TEXT_CHARS)
                }
                BookOutcome::PriceChanged { current } => good_money(*current, 1),
            }
            let again = wire::book_outcome(CURRENCY, WireBookReply::from(&outcome)).unwrap();
            assert_eq!(again, outcome);
        }
    }
    if let Some(reply) = refusal(wire::parse_json::<WireCancelReply>(body)) {
        if let Some(outcome) = refusal(wire::cancel_outcome(CURRENCY, reply)) {
            if let CancelOutcome::Cancelled {
                reservation_id,
                fee,
                refund,
            } = &outcome
            {
                good_id(reservation_id);
                good_money(*fee, 0);
                good_money(*refund, 0);
            }
            let again = wire::cancel_outcome(CURRENCY, WireCancelReply::from(&outcome)).unwrap();
            assert_eq!(again, outcome);
        }
    }
    if let Some(reply) = refusal(wire::parse_json::<WireStatusReply>(body)) {
        if let Some(status) = refusal(wire::reservation_status(CURRENCY, reply)) {
            match &status {
                Some(ReservationStatus::Booked {
                    reservation_id,
                    price,
                }) => {
                    good_id(reservation_id);
                    good_money(*price, 1);
                }
                Some(ReservationStatus::Cancelled {
                    reservation_id,
                    fee,
                }) => {
                    good_id(reservation_id);
                    good_money(*fee, 0);
                }
                Some(ReservationStatus::Declined) | None => {}
            }
            let again =
                wire::reservation_status(CURRENCY, WireStatusReply::from(status.as_ref())).unwrap();
            assert_eq!(again, status);
        }
    }
    let _ = refusal(wire::parse_json::<WireError>(body));
});
