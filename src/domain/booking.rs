//! What a customer books, and the rules an order must meet before a saga is created for
//! it: a known seller, a SKU that came from a search, dates a search would take (none in
//! the past, none past the search horizon, a stay no longer than a search allows), a
//! price within the configured ceiling, money in the wallet currency, a card token that
//! is a bounded printable token, a well-formed idempotency key. The saga's own request
//! checks (amounts, lengths) run after these, in [`BookingRequest::validate`].

use chrono::{Days, NaiveDate};

use super::account::AccountId;
use super::money::{Currency, Money};
use super::saga::BookingRequest;
use super::search::{booking_query, check_search, MAX_DAYS_AHEAD};
use super::wallet::validate_key;
use super::Invalid;

/// What a customer books: an offer from a search, paid with wallet points and a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingOrder {
    /// Booking account.
    pub account_id: AccountId,
    /// Seller of the offer.
    pub seller: String,
    /// SKU of the offer.
    pub sku: String,
    /// Check-in or outbound date.
    pub start: NaiveDate,
    /// Check-out or return date (equal to `start` for a one-way flight).
    pub end: NaiveDate,
    /// The offer price the customer saw; a seller asking another price fails the booking.
    pub offer_price: Money,
    /// Wallet points to use (zero for none).
    pub wallet_points: Money,
    /// Card token for the rest (`tok_approve`, ... with the simulated gateway).
    pub card_token: String,
    /// The client's idempotency key.
    pub idempotency_key: String,
}

impl BookingOrder {
    /// Checks the order against the sellers that exist, the wallet currency, `today` and
    /// the price ceiling (`bookings.max_offer_price_minor`); the error names the field at
    /// fault.
    pub fn check(
        &self,
        sellers: &[String],
        currency: Currency,
        today: NaiveDate,
        max_offer_price_minor: i64,
    ) -> Result<(), Invalid> {
        if !sellers.contains(&self.seller) {
            return Err(Invalid::new(
                "seller",
                format!("unknown seller {:?}", self.seller),
            ));
        }
        let Some(query) = booking_query(&self.sku, self.start, self.end) else {
            return Err(Invalid::new("sku", "is not a SKU from a search offer"));
        };
        if self.start < today {
            return Err(Invalid::new("start", "must not be in the past"));
        }
        if self.end < self.start {
            return Err(Invalid::new("end", "must not be before start"));
        }
        // The search this offer came from must have been a valid one: its stay, its
        // horizon, its places. Its fields are the order's.
        check_search(&query, today).map_err(|e| {
            let field = match e.field.as_str() {
                "check_in" | "date" => "start",
                "check_out" | "return_date" => "end",
                _ => "sku",
            };
            Invalid::new(field, e.message)
        })?;
        // A one-way flight's query has no end date to check: bound it here.
        let horizon = today
            .checked_add_days(Days::new(MAX_DAYS_AHEAD))
            .unwrap_or(NaiveDate::MAX);
        if self.end > horizon {
            return Err(Invalid::new(
                "end",
                format!("must be at most {MAX_DAYS_AHEAD} days ahead (by {horizon})"),
            ));
        }
        if !(1..=max_offer_price_minor).contains(&self.offer_price.minor) {
            return Err(Invalid::new(
                "offer_price.minor",
                format!("must be between 1 and {max_offer_price_minor}"),
            ));
        }
        check_card_token(&self.card_token)?;
        for (field, money) in [
            ("offer_price", self.offer_price),
            ("wallet_points", self.wallet_points),
        ] {
            if money.currency != currency {
                return Err(Invalid::new(
                    format!("{field}.currency"),
                    format!("must be {currency}"),
                ));
            }
        }
        validate_key("Idempotency-Key", &self.idempotency_key)
    }

    /// The saga's request for this order.
    pub fn into_request(self) -> BookingRequest {
        BookingRequest {
            account_id: self.account_id,
            seller: self.seller,
            sku: self.sku,
            start: self.start,
            end: self.end,
            wallet_points: self.wallet_points,
            card_token: self.card_token,
            offer_price: self.offer_price,
            idempotency_key: self.idempotency_key,
        }
    }
}

/// Longest card token accepted: gateway vault tokens are short opaque words.
pub const MAX_CARD_TOKEN_LEN: usize = 128;

/// A card token is a vault reference, never free text: 1 to [`MAX_CARD_TOKEN_LEN`]
/// printable ASCII characters without spaces (empty: no card, when points pay it all).
fn check_card_token(token: &str) -> Result<(), Invalid> {
    if token.is_empty() {
        return Ok(());
    }
    if token.len() > MAX_CARD_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(
            "card_token",
            format!("must be 1 to {MAX_CARD_TOKEN_LEN} printable ASCII characters, no spaces"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2030, 5, 1).unwrap()
    }

    fn order() -> BookingOrder {
        let eur = |minor| Money::new(minor, Currency::EUR);
        BookingOrder {
            account_id: AccountId::demo(1),
            seller: "alpha".into(),
            sku: "hotel:Lisbon:h1".into(),
            start: today(),
            end: today().succ_opt().unwrap(),
            offer_price: eur(10_000),
            wallet_points: eur(0),
            card_token: "tok_approve".into(),
            idempotency_key: "k-1".into(),
        }
    }

    fn field_of(order: &BookingOrder) -> Option<String> {
        order
            .check(&["alpha".into()], Currency::EUR, today(), 1_000_000)
            .err()
            .map(|e| e.field)
    }

    #[test]
    fn a_good_order_passes() {
        assert_eq!(field_of(&order()), None);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Spoil = Box<dyn Fn(&mut BookingOrder)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("seller", Box::new(|o| o.seller = "zulu".into())),
            ("sku", Box::new(|o| o.sku = "room-42".into())),
            ("start", Box::new(|o| o.start = today().pred_opt().unwrap())),
            (
                "start",
                Box::new(|o| {
                    o.start = "9999-01-01".parse().unwrap();
                    o.end = "9999-01-02".parse().unwrap();
                }),
            ),
            ("end", Box::new(|o| o.end = today() + Days::new(60))),
            ("end", Box::new(|o| o.end = today().pred_opt().unwrap())),
            (
                "offer_price.minor",
                Box::new(|o| o.offer_price = Money::new(1_000_001, Currency::EUR)),
            ),
            (
                "offer_price.minor",
                Box::new(|o| o.offer_price = Money::new(0, Currency::EUR)),
            ),
            ("card_token", Box::new(|o| o.card_token = "tok\n\0x".into())),
            (
                "card_token",
                Box::new(|o| o.card_token = "tok approve".into()),
            ),
            ("card_token", Box::new(|o| o.card_token = "t".repeat(129))),
            (
                "end",
                Box::new(|o| {
                    o.sku = "flight:LIS-CDG:WF1".into();
                    o.end = today() + Days::new(MAX_DAYS_AHEAD + 1);
                }),
            ),
            (
                "offer_price.currency",
                Box::new(|o| o.offer_price = Money::new(10_000, Currency::USD)),
            ),
            (
                "wallet_points.currency",
                Box::new(|o| o.wallet_points = Money::new(0, "GBP".parse().unwrap())),
            ),
            (
                "Idempotency-Key",
                Box::new(|o| o.idempotency_key = "".into()),
            ),
            (
                "Idempotency-Key",
                Box::new(|o| o.idempotency_key = "has space".into()),
            ),
        ];
        for (field, spoil) in cases {
            let mut o = order();
            spoil(&mut o);
            assert_eq!(field_of(&o).as_deref(), Some(field), "{o:?}");
        }
    }

    #[test]
    fn the_request_carries_the_order() {
        let request = order().into_request();
        assert_eq!(request.account_id, AccountId::demo(1));
        assert_eq!(request.idempotency_key, "k-1");
        assert!(request.validate().is_ok());
    }
}
