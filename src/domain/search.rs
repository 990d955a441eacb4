//! Search rules the `SearchAggregator` applies: merging offers from many sellers, the
//! wallet markdown, the cache TTL for a query, and the normalized cache key.
//!
//! The merged result is unpersonalized and cacheable; the markdown depends on the caller's
//! wallet and is applied after the cache, never stored in it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::breaker::InvalidSetting;
use super::money::{Currency, Money};
use super::query::{FlightQuery, HotelQuery, Offer, SearchQuery};
use super::Invalid;

/// Merges offers from all sellers: one offer per SKU, the cheapest seller wins, ties go to
/// the seller whose name sorts first (so repeated searches give the same answer), and the
/// result is sorted by price then SKU.
///
/// Offers not priced in `currency` are dropped: prices in different currencies cannot be
/// compared, and adapters already refuse sellers quoting in another currency.
pub fn merge_offers(offers: impl IntoIterator<Item = Offer>, currency: Currency) -> Vec<Offer> {
    let mut best: HashMap<String, Offer> = HashMap::new();
    for offer in offers.into_iter().filter(|o| o.price.currency == currency) {
        match best.get(&offer.sku) {
            Some(kept)
                if (kept.price.minor, &kept.seller) <= (offer.price.minor, &offer.seller) => {}
            _ => {
                best.insert(offer.sku.clone(), offer);
            }
        }
    }
    let mut merged: Vec<Offer> = best.into_values().collect();
    merged.sort_by(|a, b| (a.price.minor, &a.sku).cmp(&(b.price.minor, &b.sku)));
    merged
}

/// A price with the caller's wallet applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Markdown {
    /// The merged offer price.
    pub price: Money,
    /// Wallet value used against it: `min(price, usable wallet)`.
    pub markdown: Money,
    /// What remains to pay: `max(0, price - usable wallet)`.
    pub price_to_pay: Money,
}

/// Applies a wallet to a price. A wallet in another currency, or a negative one, marks
/// nothing down.
pub fn apply_wallet(price: Money, usable_wallet: Money) -> Markdown {
    let usable = if usable_wallet.currency == price.currency {
        usable_wallet.minor.max(0)
    } else {
        0
    };
    let markdown = usable.min(price.minor.max(0));
    Markdown {
        price,
        markdown: Money::new(markdown, price.currency),
        price_to_pay: Money::new(price.minor.max(0) - markdown, price.currency),
    }
}

/// An offer as shown to one caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonalizedOffer {
    /// The merged offer.
    pub offer: Offer,
    /// Its price with the caller's wallet applied.
    pub pricing: Markdown,
}

/// Applies the caller's wallet to each merged offer. Each offer is marked down by the whole
/// usable wallet, since the caller books one of them.
pub fn personalize(offers: &[Offer], usable_wallet: Money) -> Vec<PersonalizedOffer> {
    offers
        .iter()
        .map(|offer| PersonalizedOffer {
            offer: offer.clone(),
            pricing: apply_wallet(offer.price, usable_wallet),
        })
        .collect()
}

/// One row of the TTL table: queries travelling within `max_days_until_travel` days are
/// cached for `ttl_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TtlRule {
    /// Upper bound (inclusive) of days until travel this row covers.
    pub max_days_until_travel: u32,
    /// Cache lifetime in seconds.
    pub ttl_secs: u64,
}

/// Default TTL table: prices close to the travel date move fast, far ones slowly.
pub fn default_ttl_table() -> Vec<TtlRule> {
    [
        (0, 15),
        (1, 30),
        (7, 120),
        (30, 600),
        (90, 1_200),
        (365, 1_800),
    ]
    .into_iter()
    .map(|(max_days_until_travel, ttl_secs)| TtlRule {
        max_days_until_travel,
        ttl_secs,
    })
    .collect()
}

/// Checks the table is non-empty, strictly ascending in days, with positive TTLs.
pub fn validate_ttl_table(table: &[TtlRule]) -> Result<(), InvalidSetting> {
    if table.is_empty() {
        return Err(InvalidSetting::new(
            "ttl_table",
            "must have at least one row",
        ));
    }
    for (i, rule) in table.iter().enumerate() {
        if rule.ttl_secs == 0 {
            return Err(InvalidSetting::new(
                format!("ttl_table[{i}].ttl_secs"),
                "must be positive",
            ));
        }
        if i > 0 && rule.max_days_until_travel <= table[i - 1].max_days_until_travel {
            return Err(InvalidSetting::new(
                format!("ttl_table[{i}].max_days_until_travel"),
                "rows must be in strictly ascending order of days",
            ));
        }
    }
    Ok(())
}

/// Cache lifetime for a query travelling in `days_until_travel` days: the first row whose
/// bound covers it; past the last row, the last row's TTL; travel in the past, the first
/// row's. An empty table means "do not cache" (zero).
pub fn ttl_for(days_until_travel: i64, table: &[TtlRule]) -> Duration {
    let days = days_until_travel.max(0);
    let rule = table
        .iter()
        .find(|r| i64::from(r.max_days_until_travel) >= days)
        .or(table.last());
    Duration::from_secs(rule.map_or(0, |r| r.ttl_secs))
}

/// Days from `today` to the query's first day of travel (negative when in the past).
pub fn days_until_travel(query: &SearchQuery, today: NaiveDate) -> i64 {
    (query.travel_date() - today).num_days()
}

/// Normalized cache key of a query: `hotel|lisbon|2026-05-01|2026-05-03` or
/// `flight|LIS|CDG|2026-05-01|2026-05-08` (`-` for one way). The place is trimmed,
/// lowercased and its inner whitespace collapsed, so "  Lisbon " and "lisbon" share an entry.
pub fn cache_key(query: &SearchQuery) -> String {
    use std::fmt::Write as _;
    match query {
        SearchQuery::Hotel(q) if q.city_or_hotel.is_ascii() => {
            // The usual place name, written straight into the key (every search computes
            // one): the same key as below, without the intermediate strings.
            let mut key = String::with_capacity(q.city_or_hotel.len() + 32);
            key.push_str("hotel|");
            for (i, word) in q.city_or_hotel.split_whitespace().enumerate() {
                if i > 0 {
                    key.push(' ');
                }
                key.extend(word.chars().map(|c| c.to_ascii_lowercase()));
            }
            let _ = write!(key, "|{}|{}", q.check_in, q.check_out);
            key
        }
        SearchQuery::Hotel(q) => {
            let place = q
                .city_or_hotel
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            format!("hotel|{place}|{}|{}", q.check_in, q.check_out)
        }
        SearchQuery::Flight(q) => {
            let ret = q
                .return_date
                .map_or_else(|| "-".to_string(), |d| d.to_string());
            format!(
                "flight|{}|{}|{}|{ret}",
                q.from.trim().to_uppercase(),
                q.to.trim().to_uppercase(),
                q.date
            )
        }
    }
}

/// How far ahead a search (and so a booking) may look, in days from today: about what
/// sellers put on sale, and a bound on the dates anyone can make wayfare send on.
pub const MAX_DAYS_AHEAD: u64 = 730;

/// Checks a search before it fans out: the query's own rules, no travel before `today`
/// and none more than [`MAX_DAYS_AHEAD`] days after it. The error names the field as the
/// client spells it.
pub fn check_search(query: &SearchQuery, today: NaiveDate) -> Result<(), Invalid> {
    query
        .validate()
        .map_err(|e| Invalid::new(e.field, e.problem))?;
    let (first, last) = match query {
        SearchQuery::Hotel(q) => (("check_in", q.check_in), ("check_out", q.check_out)),
        SearchQuery::Flight(q) => (
            ("date", q.date),
            ("return_date", q.return_date.unwrap_or(q.date)),
        ),
    };
    if first.1 < today {
        return Err(Invalid::new(
            first.0,
            format!("must not be before today ({today})"),
        ));
    }
    let horizon = today
        .checked_add_days(chrono::Days::new(MAX_DAYS_AHEAD))
        .unwrap_or(NaiveDate::MAX);
    for (field, date) in [first, last] {
        if date > horizon {
            return Err(Invalid::new(
                field,
                format!("must be at most {MAX_DAYS_AHEAD} days ahead (by {horizon})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::query::{FlightQuery, HotelDetails, HotelQuery, OfferDetails};

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn offer(seller: &str, sku: &str, minor: i64) -> Offer {
        Offer {
            seller: seller.into(),
            sku: sku.into(),
            title: sku.into(),
            price: Money::new(minor, Currency::EUR),
            details: OfferDetails::Hotel(HotelDetails {
                city: "Lisbon".into(),
                hotel: "H".into(),
                room: "double".into(),
                check_in: date("2026-05-01"),
                check_out: date("2026-05-02"),
                nights: 1,
            }),
        }
    }

    #[test]
    fn merge_keeps_cheapest_per_sku_sorted_by_price_then_sku() {
        let merged = merge_offers(
            vec![
                offer("a", "x", 300),
                offer("b", "x", 200),
                offer("c", "y", 200),
                offer("a", "z", 100),
                offer("c", "x", 250),
            ],
            Currency::EUR,
        );
        let got: Vec<(&str, &str, i64)> = merged
            .iter()
            .map(|o| (o.seller.as_str(), o.sku.as_str(), o.price.minor))
            .collect();
        assert_eq!(got, vec![("a", "z", 100), ("b", "x", 200), ("c", "y", 200)]);
    }

    #[test]
    fn merge_breaks_ties_by_seller_name_whatever_the_arrival_order() {
        let forward = merge_offers(
            vec![offer("b", "x", 100), offer("a", "x", 100)],
            Currency::EUR,
        );
        let backward = merge_offers(
            vec![offer("a", "x", 100), offer("b", "x", 100)],
            Currency::EUR,
        );
        assert_eq!(forward[0].seller, "a");
        assert_eq!(forward, backward);
    }

    proptest::proptest! {
        #[test]
        fn merge_invariants_hold_for_any_offers(
            raw in proptest::collection::vec((0u8..4, 0u8..6, 1i64..1_000), 0..40),
        ) {
            let offers: Vec<Offer> = raw
                .iter()
                .map(|(seller, sku, minor)| offer(&format!("s{seller}"), &format!("k{sku}"), *minor))
                .collect();
            let merged = merge_offers(offers.clone(), Currency::EUR);
            let mut reversed = offers.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(&merged, &merge_offers(reversed, Currency::EUR), "order-independent");
            let skus: std::collections::HashSet<&str> = offers.iter().map(|o| o.sku.as_str()).collect();
            proptest::prop_assert_eq!(merged.len(), skus.len(), "one offer per sku");
            for m in &merged {
                let cheapest = offers.iter().filter(|o| o.sku == m.sku).map(|o| o.price.minor).min();
                proptest::prop_assert_eq!(Some(m.price.minor), cheapest);
            }
            for pair in merged.windows(2) {
                proptest::prop_assert!((pair[0].price.minor, &pair[0].sku) < (pair[1].price.minor, &pair[1].sku));
            }
        }
    }

    #[test]
    fn merge_drops_foreign_currency() {
        let mut usd = offer("a", "x", 1);
        usd.price.currency = Currency::USD;
        let merged = merge_offers(vec![usd, offer("b", "x", 500)], Currency::EUR);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].seller, "b");
    }

    #[test]
    fn wallet_markdown_never_goes_below_zero() {
        let eur = |m| Money::new(m, Currency::EUR);
        assert_eq!(
            apply_wallet(eur(500), eur(200)),
            Markdown {
                price: eur(500),
                markdown: eur(200),
                price_to_pay: eur(300)
            }
        );
        assert_eq!(
            apply_wallet(eur(500), eur(900)),
            Markdown {
                price: eur(500),
                markdown: eur(500),
                price_to_pay: eur(0)
            }
        );
        assert_eq!(apply_wallet(eur(500), eur(-50)).price_to_pay, eur(500));
        assert_eq!(
            apply_wallet(eur(500), Money::new(100, Currency::USD)).markdown,
            eur(0)
        );
        let personal = personalize(&[offer("a", "x", 300)], eur(100));
        assert_eq!(personal[0].pricing.price_to_pay, eur(200));
    }

    #[test]
    fn ttl_grows_with_days_until_travel() {
        let table = default_ttl_table();
        assert!(validate_ttl_table(&table).is_ok());
        assert_eq!(ttl_for(0, &table), Duration::from_secs(15));
        assert_eq!(ttl_for(-3, &table), Duration::from_secs(15));
        assert_eq!(ttl_for(1, &table), Duration::from_secs(30));
        assert_eq!(ttl_for(2, &table), Duration::from_secs(120));
        assert_eq!(ttl_for(7, &table), Duration::from_secs(120));
        assert_eq!(ttl_for(60, &table), Duration::from_secs(1_200));
        assert_eq!(ttl_for(5_000, &table), Duration::from_secs(1_800));
        assert_eq!(ttl_for(3, &[]), Duration::ZERO);
        let mut previous = Duration::ZERO;
        for days in 0..400 {
            let ttl = ttl_for(days, &table);
            assert!(ttl >= previous, "monotone in days");
            previous = ttl;
        }
    }

    #[test]
    fn ttl_table_validation_names_the_row() {
        let bad = vec![
            TtlRule {
                max_days_until_travel: 5,
                ttl_secs: 10,
            },
            TtlRule {
                max_days_until_travel: 5,
                ttl_secs: 20,
            },
        ];
        assert_eq!(
            validate_ttl_table(&bad).unwrap_err().key,
            "ttl_table[1].max_days_until_travel"
        );
        let zero = vec![TtlRule {
            max_days_until_travel: 5,
            ttl_secs: 0,
        }];
        assert_eq!(
            validate_ttl_table(&zero).unwrap_err().key,
            "ttl_table[0].ttl_secs"
        );
        assert_eq!(validate_ttl_table(&[]).unwrap_err().key, "ttl_table");
    }

    proptest::proptest! {
        /// An ASCII place gets the key the general rule gives it.
        #[test]
        fn the_ascii_key_is_the_general_key(place in "[ -~\t\n\x0b\x0c\r\u{e9}\u{3a3}\u{a0}]{0,24}") {
            let q = HotelQuery {
                city_or_hotel: place.clone(),
                check_in: date("2026-05-01"),
                check_out: date("2026-05-03"),
            };
            let general = format!(
                "hotel|{}|2026-05-01|2026-05-03",
                place.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
            );
            proptest::prop_assert_eq!(cache_key(&SearchQuery::Hotel(q)), general);
        }
    }

    #[test]
    fn cache_key_normalizes_place_and_distinguishes_queries() {
        let hotel = |place: &str| {
            cache_key(&SearchQuery::Hotel(HotelQuery {
                city_or_hotel: place.into(),
                check_in: date("2026-05-01"),
                check_out: date("2026-05-03"),
            }))
        };
        assert_eq!(hotel("  Lisbon "), "hotel|lisbon|2026-05-01|2026-05-03");
        assert_eq!(hotel("baixa   GRAND"), hotel("Baixa Grand"));
        assert_ne!(hotel("Lisbon"), hotel("Paris"));
        let flight = |ret: Option<&str>| {
            cache_key(&SearchQuery::Flight(FlightQuery {
                from: "LIS".into(),
                to: "CDG".into(),
                date: date("2026-05-01"),
                return_date: ret.map(date),
            }))
        };
        assert_eq!(flight(None), "flight|LIS|CDG|2026-05-01|-");
        assert_eq!(
            flight(Some("2026-05-08")),
            "flight|LIS|CDG|2026-05-01|2026-05-08"
        );
        let q = SearchQuery::Flight(FlightQuery {
            from: "LIS".into(),
            to: "CDG".into(),
            date: date("2026-05-11"),
            return_date: None,
        });
        assert_eq!(days_until_travel(&q, date("2026-05-01")), 10);
    }
}

/// The pricing context a seller needs to book `sku` for the dates of a booking: the
/// query whose search produced the offer. `None` when the SKU is not one wayfare issues
/// (`hotel:{city}:...` or `flight:{FROM}-{TO}:{flight}[+{FROM}-{TO}:{flight}]`).
pub fn booking_query(sku: &str, start: NaiveDate, end: NaiveDate) -> Option<SearchQuery> {
    if let Some(rest) = sku.strip_prefix("hotel:") {
        let city = rest.split(':').next().filter(|c| !c.is_empty())?;
        return Some(SearchQuery::Hotel(HotelQuery {
            city_or_hotel: city.to_owned(),
            check_in: start,
            check_out: end,
        }));
    }
    let legs: Vec<&str> = sku.strip_prefix("flight:")?.split('+').collect();
    let (route, _) = legs.first()?.split_once(':')?;
    let (from, to) = route.split_once('-')?;
    Some(SearchQuery::Flight(FlightQuery {
        from: from.to_owned(),
        to: to.to_owned(),
        date: start,
        return_date: (legs.len() == 2).then_some(end),
    }))
}

#[cfg(test)]
mod booking_query_tests {
    use super::*;

    #[test]
    fn rebuilds_the_query_of_an_offer() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let q = booking_query("hotel:lisbon:h2:single", d("2027-01-01"), d("2027-01-04")).unwrap();
        assert_eq!(q.vertical(), crate::domain::query::Vertical::Hotel);
        let q = booking_query(
            "flight:LIS-CDG:WF101+CDG-LIS:WF116",
            d("2027-01-01"),
            d("2027-01-04"),
        )
        .unwrap();
        match q {
            SearchQuery::Flight(f) => {
                assert_eq!((f.from.as_str(), f.to.as_str()), ("LIS", "CDG"));
                assert_eq!(f.return_date, Some(d("2027-01-04")));
            }
            _ => panic!("flight expected"),
        }
        assert!(booking_query("car:x", d("2027-01-01"), d("2027-01-01")).is_none());
        assert!(booking_query("flight:LISCDG", d("2027-01-01"), d("2027-01-01")).is_none());
    }

    #[test]
    fn a_search_may_not_travel_before_today() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let hotel = |check_in| {
            SearchQuery::Hotel(HotelQuery {
                city_or_hotel: "Lisbon".into(),
                check_in,
                check_out: d("2027-01-05"),
            })
        };
        assert_eq!(
            check_search(&hotel(d("2027-01-01")), d("2027-01-01")),
            Ok(())
        );
        let late = check_search(&hotel(d("2027-01-01")), d("2027-01-02")).unwrap_err();
        assert_eq!(late.field, "check_in");
        let flight = SearchQuery::Flight(FlightQuery {
            from: "LIS".into(),
            to: "CDG".into(),
            date: d("2027-01-01"),
            return_date: None,
        });
        assert_eq!(
            check_search(&flight, d("2027-01-02")).unwrap_err().field,
            "date"
        );
        let backwards = hotel(d("2027-01-09"));
        assert_eq!(
            check_search(&backwards, d("2027-01-01")).unwrap_err().field,
            "check_out"
        );
    }

    #[test]
    fn a_search_may_not_look_past_the_horizon() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let today = d("2027-01-01");
        let last = today + chrono::Days::new(MAX_DAYS_AHEAD);
        let stay = |check_in: NaiveDate, nights| {
            SearchQuery::Hotel(HotelQuery {
                city_or_hotel: "Lisbon".into(),
                check_in,
                check_out: check_in + chrono::Days::new(nights),
            })
        };
        assert_eq!(
            check_search(&stay(last - chrono::Days::new(1), 1), today),
            Ok(())
        );
        let over = check_search(&stay(last, 1), today).unwrap_err();
        assert_eq!(over.field, "check_out");
        let far = check_search(&stay(d("9999-01-01"), 1), today).unwrap_err();
        assert_eq!(far.field, "check_in");
        let flight = SearchQuery::Flight(FlightQuery {
            from: "LIS".into(),
            to: "CDG".into(),
            date: today,
            return_date: Some(last + chrono::Days::new(1)),
        });
        assert_eq!(
            check_search(&flight, today).unwrap_err().field,
            "return_date"
        );
    }
}
