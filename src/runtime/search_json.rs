//! A search reply as the HTTP API sends it, written from pieces rendered once per cached
//! result instead of serializing every offer of every search.
//!
//! A cached result is shared by every search that hits it; only the wallet markdown
//! differs between callers. So each offer is rendered once, the first time its result is
//! sent, as the JSON before its markdown and the JSON after it ([`Rendered`]). A search
//! then writes each offer's two pieces around its two amounts (`markdown`,
//! `price_to_pay`), and an anonymous hit (no wallet: nothing marked down) sends one
//! complete body, rendered once too and shared without a copy.
//!
//! The bytes are exactly what `serde_json` makes of the typed [`SearchResponse`], with the
//! trailing newline of every JSON reply: the tests below compare the two over random
//! results and wallets, so the typed reply stays the definition.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use actix_web::web::Bytes;

use super::views::SearchResponse;
use crate::actors::search::SearchResult;
use crate::domain::money::Money;
use crate::domain::search::apply_wallet;

/// Where a result's rendering is kept once made; cloned with the result, so every hit on
/// a cache entry shares it.
#[derive(Clone, Default)]
pub(crate) struct RenderSlot(Arc<OnceLock<Rendered>>);

impl std::fmt::Debug for RenderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "RenderSlot(rendered)"
        } else {
            "RenderSlot(empty)"
        })
    }
}

/// Derived from the result it belongs to, so two results are equal whatever their slots.
impl PartialEq for RenderSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One result's offers and sellers as JSON pieces.
#[derive(Debug)]
struct Rendered {
    /// Per offer: the JSON up to `"markdown":`, the price, and the JSON after
    /// `price_to_pay`'s value.
    offers: Vec<(String, Money, String)>,
    /// The `sellers` array.
    sellers: String,
    /// The whole body of an anonymous cache hit.
    anonymous_hit: Bytes,
}

/// The reply to `result` for a caller with `wallet` (`None`: anonymous), as the bytes of
/// `serde_json` applied to the typed reply, newline included.
pub(crate) fn body(result: &SearchResult, wallet: Option<Money>, zero: Money) -> Bytes {
    let rendered = result.rendered.0.get_or_init(|| render(result, zero));
    if wallet.is_none() && result.cached {
        return rendered.anonymous_hit.clone();
    }
    Bytes::from(assemble(
        rendered,
        wallet.unwrap_or(zero),
        result.cached,
        wallet,
    ))
}

fn render(result: &SearchResult, zero: Money) -> Rendered {
    let offers = result
        .offers
        .iter()
        .map(|offer| {
            let mut head = String::with_capacity(160);
            head.push_str("{\"seller\":");
            push_json(&mut head, &offer.seller);
            head.push_str(",\"sku\":");
            push_json(&mut head, &offer.sku);
            head.push_str(",\"title\":");
            push_json(&mut head, &offer.title);
            head.push_str(",\"price\":");
            push_money(&mut head, offer.price);
            head.push_str(",\"markdown\":");
            let mut tail = String::from(",\"details\":");
            push_json(&mut tail, &offer.details);
            tail.push('}');
            (head, offer.price, tail)
        })
        .collect();
    let mut sellers = String::new();
    push_json(&mut sellers, &*result.sellers);
    let mut rendered = Rendered {
        offers,
        sellers,
        anonymous_hit: Bytes::new(),
    };
    rendered.anonymous_hit = Bytes::from(assemble(&rendered, zero, true, None));
    rendered
}

/// The body: each offer's pieces around its amounts for `usable`, then the sellers.
fn assemble(
    rendered: &Rendered,
    usable: Money,
    cached: bool,
    wallet_available: Option<Money>,
) -> Vec<u8> {
    let size: usize = rendered
        .offers
        .iter()
        .map(|(head, _, tail)| head.len() + tail.len() + 96)
        .sum::<usize>()
        + rendered.sellers.len()
        + 128;
    let mut out = String::with_capacity(size);
    out.push_str("{\"offers\":[");
    for (i, (head, price, tail)) in rendered.offers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let marked = apply_wallet(*price, usable);
        out.push_str(head);
        push_money(&mut out, marked.markdown);
        out.push_str(",\"price_to_pay\":");
        push_money(&mut out, marked.price_to_pay);
        out.push_str(tail);
    }
    out.push_str("],\"sellers\":");
    out.push_str(&rendered.sellers);
    out.push_str(if cached {
        ",\"cached\":true"
    } else {
        ",\"cached\":false"
    });
    out.push_str(",\"wallet_available\":");
    match wallet_available {
        Some(money) => push_money(&mut out, money),
        None => out.push_str("null"),
    }
    out.push_str("}\n");
    out.into_bytes()
}

/// `Money` as its derived `Serialize` writes it.
fn push_money(out: &mut String, money: Money) {
    let _ = write!(
        out,
        "{{\"minor\":{},\"currency\":\"{}\"}}",
        money.minor,
        money.currency.code()
    );
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) {
    // Plain data (strings, numbers, enums): serializing it cannot fail.
    out.push_str(&serde_json::to_string(value).expect("search JSON serializes"));
}

/// The typed reply the bytes must equal; what library callers get.
pub(crate) fn typed(result: &SearchResult, wallet: Option<Money>, zero: Money) -> SearchResponse {
    let usable = wallet.unwrap_or(zero);
    SearchResponse {
        offers: result
            .offers
            .iter()
            .map(|o| super::views::personalize(o, usable))
            .collect(),
        sellers: result.sellers.to_vec(),
        cached: result.cached,
        wallet_available: wallet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::search::{SellerOutcome, SellerStatus};
    use crate::domain::money::Currency;
    use crate::sellers::{HotelDetails, Offer, OfferDetails};
    use proptest::prelude::*;

    fn offer(n: u32, price: i64, title: &str) -> Offer {
        Offer {
            seller: format!("seller-{}", n % 3),
            sku: format!("H-{n}"),
            title: title.to_owned(),
            price: Money::new(price, Currency::EUR),
            details: OfferDetails::Hotel(HotelDetails {
                hotel: format!("Hotel \"{n}\""),
                city: "Lisbon".into(),
                room: "double\u{e9}\n".into(),
                check_in: chrono::NaiveDate::from_ymd_opt(2027, 3, 10).unwrap(),
                check_out: chrono::NaiveDate::from_ymd_opt(2027, 3, 12).unwrap(),
                nights: 2,
            }),
        }
    }

    fn result(prices: &[i64], titles: &str, cached: bool) -> SearchResult {
        let offers = prices
            .iter()
            .enumerate()
            .map(|(i, p)| offer(i as u32, *p, titles))
            .collect();
        SearchResult {
            offers: Arc::new(offers),
            sellers: Arc::new(vec![
                SellerOutcome {
                    seller: "alpha".into(),
                    status: SellerStatus::Ok,
                    offers: prices.len(),
                    elapsed_ms: 12,
                    stale_age_ms: None,
                },
                SellerOutcome {
                    seller: "beta".into(),
                    status: SellerStatus::Throttled,
                    offers: 0,
                    elapsed_ms: 3,
                    stale_age_ms: Some(1500),
                },
            ]),
            cached,
            rendered: RenderSlot::default(),
        }
    }

    fn expected(result: &SearchResult, wallet: Option<Money>) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec(&typed(result, wallet, Money::zero(Currency::EUR))).unwrap();
        bytes.push(b'\n');
        bytes
    }

    proptest! {
        #[test]
        fn the_bytes_are_the_typed_reply_serialized(
            prices in proptest::collection::vec(0i64..1_000_000, 0..8),
            wallet in proptest::option::of(-100i64..2_000_000),
            title in "[ -~\u{e9}\u{1F600}\"\\\\]{0,12}",
            cached: bool,
        ) {
            let result = result(&prices, &title, cached);
            let wallet = wallet.map(|w| Money::new(w, Currency::EUR));
            let zero = Money::zero(Currency::EUR);
            // Twice: the first renders, the second reuses the pieces.
            for _ in 0..2 {
                let bytes = body(&result, wallet, zero);
                let want = expected(&result, wallet);
                prop_assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&want));
            }
        }
    }

    #[test]
    fn an_anonymous_hit_shares_one_body_and_a_wallet_marks_it_down() {
        let result = result(&[50_000, 20_000], "Room", true);
        let zero = Money::zero(Currency::EUR);
        let first = body(&result, None, zero);
        let again = body(&result.clone(), None, zero);
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes, not a copy");
        let personal = body(&result, Some(Money::new(10_000, Currency::EUR)), zero);
        let text = std::str::from_utf8(&personal).unwrap();
        assert!(
            text.contains(r#""price":{"minor":50000,"currency":"EUR"},"markdown":{"minor":10000,"currency":"EUR"},"price_to_pay":{"minor":40000,"currency":"EUR"}"#),
            "{text}"
        );
        assert!(text.ends_with("\"wallet_available\":{\"minor\":10000,\"currency\":\"EUR\"}}\n"));
    }
}
