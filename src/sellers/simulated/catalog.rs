//! The base catalog every simulated seller shares (cities, hotels, rooms, routes,
//! flights) and one seller's prices over it ([`PriceList`]).
//!
//! Everything here is a pure function of the seller's seed, name, currency and coverage:
//! the same seed always gives the same offers and prices, which tests, demos and the
//! chaos drill depend on. Latency, faults and bookings are the seller's business
//! (`mod.rs`), not the catalog's.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate, Weekday};

use super::SimulatedSellerConfig;
use crate::domain::money::{Currency, Money};
use crate::sellers::{
    FlightDetails, FlightLeg, FlightQuery, HotelDetails, HotelQuery, Offer, OfferDetails,
    SearchQuery,
};

/// One seller's prices over the shared catalog: which SKUs it carries, its price level
/// per SKU and its per-day noise, all derived from its seed.
#[derive(Debug, Clone)]
pub(super) struct PriceList {
    /// Seller name, written into its offers.
    pub(super) name: String,
    seed: u64,
    currency: Currency,
    /// Share (0..=1) of the catalog's SKUs this seller carries.
    coverage: f64,
}

impl PriceList {
    /// The price list of the seller `config` describes.
    pub(super) fn new(config: &SimulatedSellerConfig) -> Self {
        PriceList {
            name: config.name.clone(),
            seed: config.seed,
            currency: config.currency,
            coverage: config.coverage,
        }
    }

    fn carries(&self, sku: &str) -> bool {
        unit(mix(self.seed, &[sku, "carried"])) < self.coverage
    }

    /// Seller's price level for a SKU, 85..=125 percent of the base price.
    fn markup_percent(&self, sku: &str) -> i64 {
        85 + (mix(self.seed, &[sku, "markup"]) % 41) as i64
    }

    /// Small per-day noise, 97..=103 percent, so the cheapest seller can differ by date.
    fn day_noise_percent(&self, sku: &str, day: NaiveDate) -> i64 {
        97 + (mix(self.seed, &[sku, &day.to_string(), "noise"]) % 7) as i64
    }

    fn sold_out(&self, sku: &str, day: NaiveDate) -> bool {
        mix(self.seed, &[sku, &day.to_string(), "sold-out"]) % 100 < 4
    }

    fn nightly_rate(&self, room: &HotelRoom, night: NaiveDate) -> Option<i64> {
        if self.sold_out(&room.sku, night) {
            return None;
        }
        let weekday = match night.weekday() {
            Weekday::Fri | Weekday::Sat => 125,
            Weekday::Sun => 90,
            _ => 100,
        };
        let rate = room.base_nightly_minor * weekday / 100 * self.markup_percent(&room.sku) / 100
            * self.day_noise_percent(&room.sku, night)
            / 100;
        Some(rate)
    }

    fn hotel_price(
        &self,
        room: &HotelRoom,
        check_in: NaiveDate,
        check_out: NaiveDate,
    ) -> Option<i64> {
        if !self.carries(&room.sku) || check_out <= check_in {
            return None;
        }
        check_in
            .iter_days()
            .take_while(|d| *d < check_out)
            .map(|night| self.nightly_rate(room, night))
            .sum()
    }

    fn leg_fare(&self, flight: &Flight, day: NaiveDate) -> Option<i64> {
        let sku = format!("flight:{}", flight.leg_key);
        if !self.carries(&sku) || self.sold_out(&sku, day) {
            return None;
        }
        let weekday = match day.weekday() {
            Weekday::Fri | Weekday::Sun => 115,
            Weekday::Tue | Weekday::Wed => 90,
            _ => 100,
        };
        Some(
            flight.base_fare_minor * weekday / 100 * self.markup_percent(&sku) / 100
                * self.day_noise_percent(&sku, day)
                / 100,
        )
    }

    fn money(&self, minor: i64) -> Money {
        Money::new(minor, self.currency)
    }

    pub(super) fn hotel_offers(&self, query: &HotelQuery) -> Vec<Offer> {
        if query.validate().is_err() {
            return Vec::new();
        }
        let wanted = query.city_or_hotel.trim().to_lowercase();
        let nights = query.nights() as u32;
        catalog()
            .rooms
            .iter()
            .filter(|room| {
                room.city.to_lowercase() == wanted || room.hotel.to_lowercase().contains(&wanted)
            })
            .filter_map(|room| {
                let price = self.hotel_price(room, query.check_in, query.check_out)?;
                Some(Offer {
                    seller: self.name.clone(),
                    sku: room.sku.clone(),
                    title: format!(
                        "{}, {}: {} room, {} night(s)",
                        room.hotel, room.city, room.room, nights
                    ),
                    price: self.money(price),
                    details: OfferDetails::Hotel(HotelDetails {
                        city: room.city.to_string(),
                        hotel: room.hotel.to_string(),
                        room: room.room.to_string(),
                        check_in: query.check_in,
                        check_out: query.check_out,
                        nights,
                    }),
                })
            })
            .collect()
    }

    pub(super) fn flight_offers(&self, query: &FlightQuery) -> Vec<Offer> {
        if query.validate().is_err() {
            return Vec::new();
        }
        let outbound: Vec<(&Flight, i64)> = catalog()
            .flights_between(&query.from, &query.to)
            .filter_map(|f| Some((f, self.leg_fare(f, query.date)?)))
            .collect();
        let Some(return_date) = query.return_date else {
            return outbound
                .into_iter()
                .map(|(f, fare)| self.flight_offer(vec![(f, query.date)], fare))
                .collect();
        };
        let inbound: Vec<(&Flight, i64)> = catalog()
            .flights_between(&query.to, &query.from)
            .filter_map(|f| Some((f, self.leg_fare(f, return_date)?)))
            .collect();
        let mut offers = Vec::with_capacity(outbound.len() * inbound.len());
        for (out, out_fare) in &outbound {
            for (back, back_fare) in &inbound {
                offers.push(self.flight_offer(
                    vec![(out, query.date), (back, return_date)],
                    out_fare + back_fare,
                ));
            }
        }
        offers
    }

    fn flight_offer(&self, legs: Vec<(&Flight, NaiveDate)>, fare: i64) -> Offer {
        let sku = format!(
            "flight:{}",
            legs.iter()
                .map(|(f, _)| f.leg_key.as_str())
                .collect::<Vec<_>>()
                .join("+")
        );
        let title = legs
            .iter()
            .map(|(f, d)| format!("{} {}->{} {} {}", f.flight, f.from, f.to, d, f.departs))
            .collect::<Vec<_>>()
            .join(", return ");
        Offer {
            seller: self.name.clone(),
            sku,
            title,
            price: self.money(fare),
            details: OfferDetails::Flight(FlightDetails {
                legs: legs
                    .iter()
                    .map(|(f, d)| FlightLeg {
                        flight: f.flight.clone(),
                        from: f.from.to_string(),
                        to: f.to.to_string(),
                        date: *d,
                    })
                    .collect(),
            }),
        }
    }

    /// Prices a SKU for a query straight from the catalog (no search needed), so a booking
    /// is priced exactly as the offer it came from.
    pub(super) fn quote(&self, sku: &str, query: &SearchQuery) -> Option<Money> {
        query.validate().ok()?;
        match query {
            SearchQuery::Hotel(q) => {
                let room = catalog().room(sku)?;
                self.hotel_price(room, q.check_in, q.check_out)
                    .map(|p| self.money(p))
            }
            SearchQuery::Flight(q) => {
                let legs: Vec<&str> = sku.strip_prefix("flight:")?.split('+').collect();
                let dates: Vec<NaiveDate> = std::iter::once(q.date).chain(q.return_date).collect();
                if legs.len() != dates.len() {
                    return None;
                }
                let mut total = 0;
                for (i, (leg, day)) in legs.iter().zip(dates).enumerate() {
                    let flight = catalog().flight(leg)?;
                    let (from, to) = if i == 0 {
                        (&q.from, &q.to)
                    } else {
                        (&q.to, &q.from)
                    };
                    if flight.from != from || flight.to != to {
                        return None;
                    }
                    total += self.leg_fare(flight, day)?;
                }
                Some(self.money(total))
            }
        }
    }
}

/// City, its airport, its average nightly rate in minor units and its hotels.
const CITIES: &[(&str, &str, i64, &[&str])] = &[
    (
        "Lisbon",
        "LIS",
        9_000,
        &[
            "Alfama Terrace",
            "Baixa Grand",
            "Belem Riverside",
            "Chiado Rooms",
        ],
    ),
    (
        "Paris",
        "CDG",
        14_000,
        &[
            "Marais Lodge",
            "Rive Gauche",
            "Montmartre View",
            "Opera Palace",
        ],
    ),
    (
        "Berlin",
        "BER",
        10_000,
        &["Mitte Loft", "Kreuzberg Yard", "Tiergarten Park"],
    ),
    (
        "Rome",
        "FCO",
        12_000,
        &["Trastevere Inn", "Colosseo Suites", "Pantheon House"],
    ),
    (
        "Madrid",
        "MAD",
        9_500,
        &["Sol Central", "Retiro Garden", "Malasana Studios"],
    ),
    (
        "Amsterdam",
        "AMS",
        15_000,
        &["Canal House", "Jordaan Nest", "Museum Quarter"],
    ),
];

/// Room types and their price relative to the hotel's double room, in percent.
const ROOMS: &[(&str, i64)] = &[("single", 80), ("double", 100), ("suite", 220)];

/// Departure times of the flights on every route.
const DEPARTURES: &[&str] = &["07:10", "13:45", "19:30"];

#[derive(Debug)]
struct HotelRoom {
    sku: String,
    city: &'static str,
    hotel: &'static str,
    room: &'static str,
    base_nightly_minor: i64,
}

#[derive(Debug)]
struct Flight {
    /// `LIS-CDG:WF101`; the SKU of a one-way offer is `flight:` + this.
    leg_key: String,
    flight: String,
    from: &'static str,
    to: &'static str,
    departs: &'static str,
    base_fare_minor: i64,
}

#[derive(Debug)]
struct Catalog {
    rooms: Vec<HotelRoom>,
    rooms_by_sku: HashMap<String, usize>,
    flights: Vec<Flight>,
    flights_by_leg: HashMap<String, usize>,
}

impl Catalog {
    fn build() -> Catalog {
        let mut rooms = Vec::new();
        for (city, _, base, hotels) in CITIES {
            for (h, hotel) in hotels.iter().enumerate() {
                // Seed 0: the hotel's standing is part of the shared catalog, not of a seller.
                let standing = 70 + (mix(0, &[city, hotel]) % 70) as i64;
                for (room, room_percent) in ROOMS {
                    rooms.push(HotelRoom {
                        sku: format!("hotel:{}:h{}:{room}", city.to_lowercase(), h + 1),
                        city,
                        hotel,
                        room,
                        base_nightly_minor: base * standing / 100 * room_percent / 100,
                    });
                }
            }
        }
        let mut flights = Vec::new();
        let mut number = 100;
        for (_, from, _, _) in CITIES {
            for (_, to, _, _) in CITIES {
                if from == to {
                    continue;
                }
                let route_fare = 4_000 + (mix(0, &[from, to]) % 16_000) as i64;
                for (k, departs) in DEPARTURES.iter().enumerate() {
                    number += 1;
                    let flight = format!("WF{number}");
                    flights.push(Flight {
                        leg_key: format!("{from}-{to}:{flight}"),
                        flight,
                        from,
                        to,
                        departs,
                        // Early and late flights are cheaper than the midday one.
                        base_fare_minor: route_fare * [90, 115, 100][k] / 100,
                    });
                }
            }
        }
        let rooms_by_sku = rooms
            .iter()
            .enumerate()
            .map(|(i, r)| (r.sku.clone(), i))
            .collect();
        let flights_by_leg = flights
            .iter()
            .enumerate()
            .map(|(i, f)| (f.leg_key.clone(), i))
            .collect();
        Catalog {
            rooms,
            rooms_by_sku,
            flights,
            flights_by_leg,
        }
    }

    fn room(&self, sku: &str) -> Option<&HotelRoom> {
        self.rooms_by_sku.get(sku).map(|i| &self.rooms[*i])
    }

    fn flight(&self, leg_key: &str) -> Option<&Flight> {
        self.flights_by_leg.get(leg_key).map(|i| &self.flights[*i])
    }

    fn flights_between<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
    ) -> impl Iterator<Item = &'a Flight> + 'a {
        self.flights
            .iter()
            .filter(move |f| f.from == from && f.to == to)
    }
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::build)
}

/// Cities of the base catalog with their airport codes, for demos and docs.
pub fn catalog_cities() -> impl Iterator<Item = (&'static str, &'static str)> {
    CITIES.iter().map(|(city, airport, _, _)| (*city, *airport))
}

/// A stable hash of a seed and some strings. Hand-written (FNV-1a then splitmix64) rather
/// than `DefaultHasher`, whose output may change between Rust releases: catalog prices must
/// not move when the toolchain does.
fn mix(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for part in parts {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ["ab", "c"] and ["a", "bc"] differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a hash to `[0, 1)`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn seller(name: &str, seed: u64) -> PriceList {
        PriceList::new(&SimulatedSellerConfig {
            name: name.into(),
            seed,
            latency_ms: (0, 0),
            coverage: 1.0,
            ..Default::default()
        })
    }

    fn lisbon(check_in: &str, check_out: &str) -> HotelQuery {
        HotelQuery {
            city_or_hotel: "Lisbon".into(),
            check_in: date(check_in),
            check_out: date(check_out),
        }
    }

    fn lis_cdg(ret: Option<&str>) -> FlightQuery {
        FlightQuery {
            from: "LIS".into(),
            to: "CDG".into(),
            date: date("2026-05-04"),
            return_date: ret.map(date),
        }
    }

    #[test]
    fn catalog_is_deterministic_and_prices_sum_nights() {
        let a = seller("a", 1);
        let q = lisbon("2026-05-04", "2026-05-07"); // Mon..Thu: three nights
        let offers = a.hotel_offers(&q);
        assert_eq!(
            offers,
            seller("a", 1).hotel_offers(&q),
            "same seed, same offers"
        );
        assert!(
            offers.len() >= 6,
            "lisbon has 4 hotels with three room types each, got {}",
            offers.len()
        );
        for offer in &offers {
            let room = catalog().room(&offer.sku).unwrap();
            let nights: i64 = [date("2026-05-04"), date("2026-05-05"), date("2026-05-06")]
                .iter()
                .map(|n| a.nightly_rate(room, *n).unwrap())
                .sum();
            assert_eq!(offer.price.minor, nights);
            assert!(offer.sku.starts_with("hotel:lisbon:h"));
        }
        // The same SKU for a single night is cheaper than for three.
        let one = a.hotel_offers(&lisbon("2026-05-04", "2026-05-05"));
        let sku = &offers[0].sku;
        let single = one.iter().find(|o| &o.sku == sku).map(|o| o.price.minor);
        if let Some(single) = single {
            assert!(single < offers[0].price.minor);
        }
    }

    /// Pinned prices: demos, tests and recorded runs rely on a seed giving the same offers
    /// forever, so a change here is a behaviour change, not a refactoring.
    #[test]
    fn seeds_give_pinned_prices() {
        let q = lisbon("2026-05-04", "2026-05-07");
        let pinned: Vec<(usize, i64)> = (1..=3)
            .map(|seed| {
                let offers = seller("s", seed).hotel_offers(&q);
                (offers.len(), offers.iter().map(|o| o.price.minor).sum())
            })
            .collect();
        let flights: Vec<i64> = (1..=3)
            .map(|seed| {
                let offers = seller("s", seed).flight_offers(&lis_cdg(Some("2026-05-08")));
                offers.iter().map(|o| o.price.minor).sum()
            })
            .collect();
        assert_eq!(
            format!("{pinned:?} {flights:?}"),
            "[(8, 309932), (9, 362123), (10, 361656)] [274485, 255747, 265293]"
        );
    }

    #[test]
    fn weekend_nights_cost_more_than_midweek() {
        let a = seller("a", 3);
        let room = catalog().room("hotel:paris:h1:double").unwrap();
        let wed = a.nightly_rate(room, date("2026-05-06")).unwrap_or(0);
        let sat = a.nightly_rate(room, date("2026-05-09")).unwrap_or(i64::MAX);
        assert!(sat > wed, "saturday {sat} vs wednesday {wed}");
    }

    #[test]
    fn sellers_share_skus_but_price_differently() {
        let (a, b) = (seller("a", 1), seller("b", 2));
        let q = lisbon("2026-05-04", "2026-05-06");
        let pa: HashMap<String, i64> = a
            .hotel_offers(&q)
            .into_iter()
            .map(|o| (o.sku, o.price.minor))
            .collect();
        let pb: HashMap<String, i64> = b
            .hotel_offers(&q)
            .into_iter()
            .map(|o| (o.sku, o.price.minor))
            .collect();
        let shared: Vec<&String> = pa.keys().filter(|k| pb.contains_key(*k)).collect();
        assert!(shared.len() > 3, "sellers overlap");
        assert!(
            shared.iter().any(|k| pa[*k] != pb[*k]),
            "at different prices"
        );
    }

    #[test]
    fn coverage_limits_the_catalog_a_seller_carries() {
        let partial = PriceList::new(&SimulatedSellerConfig {
            coverage: 0.5,
            latency_ms: (0, 0),
            ..Default::default()
        });
        let all = seller("all", 1);
        let q = lisbon("2026-05-04", "2026-05-06");
        assert!(partial.hotel_offers(&q).len() < all.hotel_offers(&q).len());
    }

    #[test]
    fn hotel_name_search_matches_case_insensitively() {
        let offers = seller("a", 1).hotel_offers(&HotelQuery {
            city_or_hotel: "  alfama ".into(),
            ..lisbon("2026-05-04", "2026-05-06")
        });
        assert!(!offers.is_empty());
        assert!(offers.iter().all(|o| o.title.starts_with("Alfama Terrace")));
        assert!(seller("a", 1)
            .hotel_offers(&HotelQuery {
                city_or_hotel: "Atlantis".into(),
                ..lisbon("2026-05-04", "2026-05-06")
            })
            .is_empty());
    }

    #[test]
    fn round_trip_is_two_legs_summed() {
        let a = seller("a", 1);
        let one_way = a.flight_offers(&lis_cdg(None));
        let back = a.flight_offers(&FlightQuery {
            from: "CDG".into(),
            to: "LIS".into(),
            date: date("2026-05-08"),
            return_date: None,
        });
        let round = a.flight_offers(&lis_cdg(Some("2026-05-08")));
        assert!(!round.is_empty());
        for offer in &round {
            let legs: Vec<&str> = offer
                .sku
                .strip_prefix("flight:")
                .unwrap()
                .split('+')
                .collect();
            assert_eq!(legs.len(), 2);
            let out = one_way
                .iter()
                .find(|o| o.sku == format!("flight:{}", legs[0]))
                .unwrap();
            let ret = back
                .iter()
                .find(|o| o.sku == format!("flight:{}", legs[1]))
                .unwrap();
            assert_eq!(offer.price.minor, out.price.minor + ret.price.minor);
            let q = SearchQuery::Flight(lis_cdg(Some("2026-05-08")));
            assert_eq!(a.quote(&offer.sku, &q), Some(offer.price));
        }
        assert!(a
            .flight_offers(&FlightQuery {
                from: "LIS".into(),
                to: "JFK".into(),
                date: date("2026-05-04"),
                return_date: None
            })
            .is_empty());
    }

    #[test]
    fn quote_refuses_legs_that_do_not_match_the_query() {
        let a = seller("a", 1);
        let offer = a.flight_offers(&lis_cdg(None)).remove(0);
        let reversed = SearchQuery::Flight(FlightQuery {
            from: "CDG".into(),
            to: "LIS".into(),
            ..lis_cdg(None)
        });
        assert_eq!(a.quote(&offer.sku, &reversed), None);
        assert_eq!(
            a.quote(
                &offer.sku,
                &SearchQuery::Flight(lis_cdg(Some("2026-05-09")))
            ),
            None
        );
        assert_eq!(
            a.quote(
                "hotel:nowhere:h1:double",
                &SearchQuery::Hotel(lisbon("2026-05-04", "2026-05-06"))
            ),
            None
        );
    }
}
