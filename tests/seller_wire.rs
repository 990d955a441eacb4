//! Property tests of the seller reply parser (`sellers::wire`) through its public API,
//! beyond the in-module ones (random bytes, random offer structs): random JSON documents,
//! near-valid replies (a valid reply with one field deleted, retyped or pushed past a
//! bound) and valid replies. Whatever arrives, parsing plus validation gives either values
//! that hold the invariants or an `InvalidReply` whose text names the field at fault (or
//! says the JSON is malformed); valid replies come back unchanged.
//!
//! The cargo-fuzz target `fuzz/fuzz_targets/seller_reply.rs` holds the same contract on
//! raw bytes for longer runs.

use chrono::NaiveDate;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;
use wayfare::domain::money::{Currency, Money};
use wayfare::sellers::wire::{
    self, SearchReply, WireBookReply, WireCancelReply, WireOffer, WireStatusReply,
    MAX_AMOUNT_MINOR, MAX_ID_CHARS, MAX_TEXT_CHARS,
};
use wayfare::sellers::{
    BookOutcome, CancelOutcome, FlightDetails, FlightLeg, FlightQuery, HotelDetails, HotelQuery,
    Offer, OfferDetails, ReservationStatus, SellerError,
};

const EUR: Currency = Currency::EUR;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn hotel_query() -> HotelQuery {
    HotelQuery {
        city_or_hotel: "Lisbon".into(),
        check_in: date("2026-05-01"),
        check_out: date("2026-05-03"),
    }
}

fn flight_query(round_trip: bool) -> FlightQuery {
    FlightQuery {
        from: "LIS".into(),
        to: "CDG".into(),
        date: date("2026-05-01"),
        return_date: round_trip.then(|| date("2026-05-08")),
    }
}

/// Where a refusal may point: a field path of one of the reply kinds, or the body itself.
const REFUSAL_STARTS: [&str; 8] = [
    "malformed JSON",
    "reply body of",
    "reply holds",
    "offers[",
    "reservation_id",
    "price",
    "current",
    "fee",
];

/// Checks a refusal is an `InvalidReply` that says where the problem is, short and
/// printable; returns the accepted value otherwise.
fn accepted_or_clear<T: std::fmt::Debug>(result: Result<T, SellerError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(SellerError::InvalidReply(text)) => {
            let names_a_place =
                REFUSAL_STARTS.iter().any(|p| text.starts_with(p)) || text.starts_with("refund");
            assert!(names_a_place, "a refusal that names no field: {text:?}");
            assert!(text.chars().count() <= 400, "a long refusal: {text:?}");
            assert!(
                !text.chars().any(char::is_control),
                "control characters in a refusal: {text:?}"
            );
            None
        }
        Err(other) => panic!("parsing gave {other:?}, not InvalidReply"),
    }
}

fn assert_money(m: Money, min: i64) {
    assert_eq!(m.currency, EUR);
    assert!((min..=MAX_AMOUNT_MINOR).contains(&m.minor), "{m:?}");
}

fn assert_id(s: &str) {
    assert!(!s.trim().is_empty(), "blank id");
    assert!(s.chars().count() <= MAX_ID_CHARS && !s.chars().any(char::is_control));
}

fn assert_offer(o: &Offer) {
    assert_eq!(o.seller, "s");
    assert_money(o.price, 1);
    assert_id(&o.sku);
    assert!(o.title.chars().count() <= MAX_TEXT_CHARS && !o.title.chars().any(char::is_control));
}

/// Runs one body through every reply kind as `HttpSeller` does, checking whatever comes
/// out.
fn check_body(body: &[u8]) {
    if let Some(reply) = accepted_or_clear(wire::parse_json::<SearchReply>(body)) {
        let q = hotel_query();
        if let Some(offers) = accepted_or_clear(wire::hotel_offers("s", EUR, &q, reply.clone())) {
            for o in &offers {
                assert_offer(o);
                let OfferDetails::Hotel(h) = &o.details else {
                    panic!("a flight accepted in a hotel search")
                };
                assert!(h.check_in == q.check_in && h.check_out == q.check_out);
                assert_eq!(i64::from(h.nights), q.nights());
            }
        }
        for fq in [flight_query(false), flight_query(true)] {
            if let Some(offers) =
                accepted_or_clear(wire::flight_offers("s", EUR, &fq, reply.clone()))
            {
                for o in &offers {
                    assert_offer(o);
                    let OfferDetails::Flight(f) = &o.details else {
                        panic!("a hotel accepted in a flight search")
                    };
                    assert_eq!(f.legs.len(), 1 + usize::from(fq.return_date.is_some()));
                    assert_eq!((&*f.legs[0].from, &*f.legs[0].to), ("LIS", "CDG"));
                    f.legs.iter().for_each(|l| assert_id(&l.flight));
                }
            }
        }
    }
    if let Some(reply) = accepted_or_clear(wire::parse_json::<WireBookReply>(body)) {
        match accepted_or_clear(wire::book_outcome(EUR, reply)) {
            Some(BookOutcome::Confirmed {
                reservation_id,
                price,
            }) => {
                assert_id(&reservation_id);
                assert_money(price, 1);
            }
            Some(BookOutcome::Rejected { reason }) => {
                assert!(reason.chars().count() <= MAX_TEXT_CHARS)
            }
            Some(BookOutcome::PriceChanged { current }) => assert_money(current, 1),
            None => {}
        }
    }
    if let Some(reply) = accepted_or_clear(wire::parse_json::<WireCancelReply>(body)) {
        if let Some(CancelOutcome::Cancelled {
            reservation_id,
            fee,
            refund,
        }) = accepted_or_clear(wire::cancel_outcome(EUR, reply))
        {
            assert_id(&reservation_id);
            assert_money(fee, 0);
            assert_money(refund, 0);
        }
    }
    if let Some(reply) = accepted_or_clear(wire::parse_json::<WireStatusReply>(body)) {
        match accepted_or_clear(wire::reservation_status(EUR, reply)).flatten() {
            Some(ReservationStatus::Booked {
                reservation_id,
                price,
            }) => {
                assert_id(&reservation_id);
                assert_money(price, 1);
            }
            Some(ReservationStatus::Cancelled {
                reservation_id,
                fee,
            }) => {
                assert_id(&reservation_id);
                assert_money(fee, 0);
            }
            Some(ReservationStatus::Declined) | None => {}
        }
    }
}

/// Any JSON value, nested a few levels, with the reply vocabulary mixed in so objects
/// sometimes look like replies.
fn json_value() -> impl Strategy<Value = Value> {
    let word = prop_oneof![
        Just("confirmed"),
        Just("rejected"),
        Just("price_changed"),
        Just("cancelled"),
        Just("not_booked"),
        Just("booked"),
        Just("declined"),
        Just("unknown"),
        Just("hotel"),
        Just("flight"),
        Just("EUR"),
        Just("2026-05-01"),
        Just("LIS"),
    ]
    .prop_map(|s| Value::from(s.to_owned()));
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        word,
    ];
    let key = prop_oneof![
        3 => prop_oneof![
            Just("offers"), Just("sku"), Just("title"), Just("price"), Just("minor"),
            Just("currency"), Just("details"), Just("vertical"), Just("status"),
            Just("reservation_id"), Just("reason"), Just("current"), Just("fee"),
            Just("refund"), Just("legs"), Just("flight"), Just("from"), Just("to"),
            Just("date"), Just("nights"), Just("check_in"), Just("check_out"),
        ]
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..7)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Printable text of `1..=max` characters that is not blank.
fn id(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9:_-][^\\p{{Cc}}]{{0,{}}}", max - 1)).unwrap()
}

fn price(min: i64) -> impl Strategy<Value = Money> {
    prop_oneof![
        min..=1_000_000i64,
        Just(min),
        Just(MAX_AMOUNT_MINOR),
        min..=MAX_AMOUNT_MINOR
    ]
    .prop_map(|minor| Money::new(minor, EUR))
}

fn hotel_offer() -> impl Strategy<Value = Offer> {
    let q = hotel_query();
    (
        id(MAX_ID_CHARS),
        "[^\\p{Cc}]{0,30}",
        price(1),
        id(20),
        id(20),
        id(10),
    )
        .prop_map(move |(sku, title, price, city, hotel, room)| Offer {
            seller: "s".into(),
            sku,
            title,
            price,
            details: OfferDetails::Hotel(HotelDetails {
                city,
                hotel,
                room,
                check_in: q.check_in,
                check_out: q.check_out,
                nights: q.nights() as u32,
            }),
        })
}

fn flight_offer(q: FlightQuery) -> impl Strategy<Value = Offer> {
    (
        id(MAX_ID_CHARS),
        "[^\\p{Cc}]{0,30}",
        price(1),
        vec("[A-Z]{2}[0-9]{1,4}", 2),
    )
        .prop_map(move |(sku, title, price, numbers)| {
            let mut legs = vec![FlightLeg {
                flight: numbers[0].clone(),
                from: q.from.clone(),
                to: q.to.clone(),
                date: q.date,
            }];
            if let Some(back) = q.return_date {
                legs.push(FlightLeg {
                    flight: numbers[1].clone(),
                    from: q.to.clone(),
                    to: q.from.clone(),
                    date: back,
                });
            }
            Offer {
                seller: "s".into(),
                sku,
                title,
                price,
                details: OfferDetails::Flight(FlightDetails { legs }),
            }
        })
}

fn to_body(offers: &[Offer]) -> Value {
    serde_json::to_value(SearchReply {
        offers: offers.iter().map(WireOffer::from).collect(),
    })
    .unwrap()
}

fn book_outcome() -> impl Strategy<Value = BookOutcome> {
    prop_oneof![
        (id(MAX_ID_CHARS), price(1)).prop_map(|(reservation_id, price)| {
            BookOutcome::Confirmed {
                reservation_id,
                price,
            }
        }),
        "[^\\p{Cc}]{0,40}".prop_map(|reason| BookOutcome::Rejected { reason }),
        price(1).prop_map(|current| BookOutcome::PriceChanged { current }),
    ]
}

fn cancel_outcome() -> impl Strategy<Value = CancelOutcome> {
    prop_oneof![
        (id(MAX_ID_CHARS), price(0), price(0)).prop_map(|(reservation_id, fee, refund)| {
            CancelOutcome::Cancelled {
                reservation_id,
                fee,
                refund,
            }
        }),
        Just(CancelOutcome::NotBooked),
    ]
}

fn status() -> impl Strategy<Value = Option<ReservationStatus>> {
    prop_oneof![
        (id(MAX_ID_CHARS), price(1)).prop_map(|(reservation_id, price)| Some(
            ReservationStatus::Booked {
                reservation_id,
                price
            }
        )),
        (id(MAX_ID_CHARS), price(0)).prop_map(|(reservation_id, fee)| Some(
            ReservationStatus::Cancelled {
                reservation_id,
                fee
            }
        )),
        Just(Some(ReservationStatus::Declined)),
        Just(None),
    ]
}

/// A valid reply of any kind, as JSON.
fn valid_reply() -> impl Strategy<Value = Value> {
    prop_oneof![
        vec(hotel_offer(), 0..4).prop_map(|o| to_body(&o)),
        vec(flight_offer(flight_query(false)), 0..4).prop_map(|o| to_body(&o)),
        vec(flight_offer(flight_query(true)), 0..4).prop_map(|o| to_body(&o)),
        book_outcome().prop_map(|o| serde_json::to_value(WireBookReply::from(&o)).unwrap()),
        cancel_outcome().prop_map(|o| serde_json::to_value(WireCancelReply::from(&o)).unwrap()),
        status().prop_map(|s| serde_json::to_value(WireStatusReply::from(s.as_ref())).unwrap()),
    ]
}

/// JSON pointers of every node below the root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// One change that keeps a reply almost valid.
#[derive(Debug, Clone)]
enum Mutation {
    /// Drop the node (a missing field, a shorter array).
    Remove,
    /// Put another value there (a wrong type, a wrong tag).
    Replace(Value),
    /// Add a field the reply does not know, next to the node.
    Stray(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = prop_oneof![
        Just(Value::from(-1)),
        Just(Value::from(0)),
        Just(Value::from(MAX_AMOUNT_MINOR + 1)),
        Just(Value::from(i64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(1e300)),
        Just(Value::from(0.5)),
        Just(Value::from("")),
        Just(Value::from(" ")),
        Just(Value::from("x".repeat(MAX_TEXT_CHARS + 1))),
        Just(Value::from("a\u{0}b")),
        Just(Value::from("USD")),
        Just(Value::from("eur")),
        Just(Value::from("2026-02-30")),
        Just(Value::from("2026-05-02")),
        Just(Value::from("lis")),
        Just(Value::from("hotel")),
        Just(Value::from("flight")),
        Just(Value::Null),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({})),
    ];
    prop_oneof![
        2 => Just(Mutation::Remove),
        4 => edge.prop_map(Mutation::Replace),
        2 => json_value().prop_map(Mutation::Replace),
        1 => ("[a-z_]{1,10}", json_value()).prop_map(|(k, v)| Mutation::Stray(k, v)),
    ]
}

fn mutate(mut doc: Value, at: prop::sample::Index, m: Mutation) -> Value {
    let mut all = Vec::new();
    pointers(&doc, String::new(), &mut all);
    if all.is_empty() {
        return doc;
    }
    let target = &all[at.index(all.len())];
    let (parent, last) = target.rsplit_once('/').unwrap();
    let last = last.replace("~1", "/").replace("~0", "~");
    let Some(node) = doc.pointer_mut(parent) else {
        return doc;
    };
    match (node, m) {
        (Value::Object(map), Mutation::Remove) => {
            map.remove(&last);
        }
        (Value::Object(map), Mutation::Replace(v)) => {
            map.insert(last, v);
        }
        (Value::Object(map), Mutation::Stray(k, v)) => {
            map.insert(k, v);
        }
        (Value::Array(items), Mutation::Remove) => {
            items.remove(last.parse::<usize>().unwrap());
        }
        (Value::Array(items), Mutation::Replace(v) | Mutation::Stray(_, v)) => {
            items[last.parse::<usize>().unwrap()] = v;
        }
        _ => {}
    }
    doc
}

// 256 cases per property by default; PROPTEST_CASES raises it (scripts/hostile.sh --long).
proptest! {
    #[test]
    fn arbitrary_json_never_panics_and_refusals_name_a_field(doc in json_value()) {
        check_body(&serde_json::to_vec(&doc).unwrap());
    }

    #[test]
    fn near_valid_replies_are_accepted_sound_or_refused_clearly(
        doc in valid_reply(),
        edits in vec((any::<prop::sample::Index>(), mutation()), 1..3),
    ) {
        let mut doc = doc;
        for (at, m) in edits {
            doc = mutate(doc, at, m);
        }
        check_body(&serde_json::to_vec(&doc).unwrap());
    }

    #[test]
    fn truncated_and_spliced_bodies_never_panic(doc in valid_reply(), cut in any::<prop::sample::Index>(), junk in vec(any::<u8>(), 0..8)) {
        let mut body = serde_json::to_vec(&doc).unwrap();
        let at = cut.index(body.len() + 1);
        body.truncate(at);
        body.extend_from_slice(&junk);
        check_body(&body);
    }

    #[test]
    fn valid_hotel_replies_round_trip(offers in vec(hotel_offer(), 0..6)) {
        let body = serde_json::to_vec(&to_body(&offers)).unwrap();
        let back = wire::hotel_offers("s", EUR, &hotel_query(), wire::parse_json(&body).unwrap());
        prop_assert_eq!(back.unwrap(), offers);
    }

    #[test]
    fn valid_flight_replies_round_trip(
        (q, offers) in any::<bool>().prop_flat_map(|round_trip| {
            let q = flight_query(round_trip);
            (Just(q.clone()), vec(flight_offer(q), 0..6))
        })
    ) {
        let body = serde_json::to_vec(&to_body(&offers)).unwrap();
        let back = wire::flight_offers("s", EUR, &q, wire::parse_json(&body).unwrap());
        prop_assert_eq!(back.unwrap(), offers);
    }

    #[test]
    fn valid_booking_replies_round_trip(book in book_outcome(), cancel in cancel_outcome(), state in status()) {
        let body = serde_json::to_vec(&WireBookReply::from(&book)).unwrap();
        prop_assert_eq!(wire::book_outcome(EUR, wire::parse_json(&body).unwrap()).unwrap(), book);
        let body = serde_json::to_vec(&WireCancelReply::from(&cancel)).unwrap();
        prop_assert_eq!(wire::cancel_outcome(EUR, wire::parse_json(&body).unwrap()).unwrap(), cancel);
        let body = serde_json::to_vec(&WireStatusReply::from(state.as_ref())).unwrap();
        prop_assert_eq!(wire::reservation_status(EUR, wire::parse_json(&body).unwrap()).unwrap(), state);
    }
}

/// A seller that quotes control characters in a tag used to get them into the refusal
/// text (serde_json quotes unknown variants raw), and from there into log lines.
#[test]
fn control_characters_in_a_reply_do_not_reach_the_refusal() {
    let body = br#"{"status":"con\u0007firmed\u001b[31m"}"#;
    match wire::parse_json::<WireBookReply>(body) {
        Err(SellerError::InvalidReply(text)) => {
            assert!(text.starts_with("malformed JSON"), "{text}");
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        other => panic!("{other:?}"),
    }
}
