//! The invariant checker: one method per invariant of the crate docs, over one set of
//! [`Observations`]. Checks whose facts were not observed (`None`) are skipped, never
//! passed by default.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wayfare::domain::saga::SagaState;
use wayfare::sellers::ReservationStatus;

use crate::observations::{
    BookingSeen, Observations, PaymentsSeen, SellerSeen, Violation, CREDIT_KEY_PREFIX,
};

/// Checks every invariant of the module docs against `seen`; empty means all hold.
pub fn check(seen: &Observations) -> Vec<Violation> {
    let mut checker = Checker {
        seen,
        bookings: seen.bookings.iter().map(|b| (b.id.as_str(), b)).collect(),
        known_ids: seen
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(String::as_str))
            .collect(),
        out: Vec::new(),
    };
    checker.sagas_settle();
    checker.one_booking_per_key();
    checker.balance_is_ledger();
    if let Some(payments) = &seen.payments {
        checker.capture_only_when_confirmed(payments);
    }
    if let Some(sellers) = &seen.sellers {
        checker.reserved_once(sellers);
    }
    checker.out
}

/// The checks, one method per invariant, over one set of observations.
struct Checker<'a> {
    seen: &'a Observations,
    /// Bookings by id.
    bookings: HashMap<&'a str, &'a BookingSeen>,
    /// Every booking id a key was answered with.
    known_ids: BTreeSet<&'a str>,
    out: Vec<Violation>,
}

impl<'a> Checker<'a> {
    fn violation(&mut self, invariant: &'static str, detail: String) {
        self.out.push(Violation { invariant, detail });
    }

    fn booking(&self, id: &str) -> Option<&'a BookingSeen> {
        self.bookings.get(id).copied()
    }

    /// Every booking and cancellation terminal or parked with a reason.
    fn sagas_settle(&mut self) {
        let seen = self.seen;
        for b in &seen.bookings {
            if !b.is_settled() {
                self.violation(
                    "sagas_settle",
                    format!(
                        "booking {} is {} (cancellation {:?})",
                        b.id,
                        b.state.as_str(),
                        b.cancellation.as_ref().map(|c| c.state.as_str())
                    ),
                );
            }
        }
        for id in self.known_ids.clone() {
            if !self.bookings.contains_key(id) {
                self.violation(
                    "sagas_settle",
                    format!("booking {id} could not be read at the end"),
                );
            }
        }
    }

    /// One booking per key, and accounts list exactly their keys' bookings.
    fn one_booking_per_key(&mut self) {
        let seen = self.seen;
        let mut by_account: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for k in &seen.keys {
            if k.ids.len() > 1 {
                self.violation(
                    "one_booking_per_key",
                    format!(
                        "idempotency key {} answered with bookings {:?}",
                        k.key, k.ids
                    ),
                );
            }
            by_account
                .entry(k.account.as_str())
                .or_default()
                .extend(k.ids.iter().map(String::as_str));
        }
        for a in &seen.accounts {
            let Some(listed) = &a.listed else {
                self.violation(
                    "one_booking_per_key",
                    format!("account {} bookings could not be listed", a.id),
                );
                continue;
            };
            let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
            let expected = by_account.get(a.id.as_str()).cloned().unwrap_or_default();
            if listed != expected {
                let extra: Vec<&&str> = listed.difference(&expected).collect();
                let missing: Vec<&&str> = expected.difference(&listed).collect();
                self.violation(
                    "one_booking_per_key",
                    format!(
                        "account {} lists bookings no key was answered with {extra:?}, \
                         and lacks {missing:?}",
                        a.id
                    ),
                );
            }
        }
    }

    /// Balances are ledgers, hold nothing once settled, and match what bookings imply.
    fn balance_is_ledger(&mut self) {
        let seen = self.seen;
        for a in &seen.accounts {
            let (Some(balance), Some(ledger)) = (a.balance, &a.ledger) else {
                self.violation(
                    "balance_is_ledger",
                    format!("account {} or its ledger could not be read", a.id),
                );
                continue;
            };
            let sum: i64 = ledger.iter().map(|e| e.delta).sum();
            if sum != balance {
                self.violation(
                    "balance_is_ledger",
                    format!(
                        "account {}: balance {balance} but its {} ledger entries sum to {sum}",
                        a.id,
                        ledger.len()
                    ),
                );
            }
            let mine: Vec<&BookingSeen> =
                seen.bookings.iter().filter(|b| b.account == a.id).collect();
            if mine
                .iter()
                .any(|b| !b.is_settled() || b.parked_reason().is_some())
            {
                continue; // in flight or the operator's to settle
            }
            if a.held != 0 {
                self.violation(
                    "balance_is_ledger",
                    format!(
                        "account {}: {} points held with no booking in flight",
                        a.id, a.held
                    ),
                );
            }
            let mut expected: i64 = a.credited.unwrap_or_else(|| {
                ledger
                    .iter()
                    .filter(|e| e.key.starts_with(CREDIT_KEY_PREFIX))
                    .map(|e| e.delta)
                    .sum()
            });
            for b in &mine {
                let points = b.wallet_points.minor;
                let restored = b
                    .cancellation
                    .as_ref()
                    .and_then(|c| c.points_restored)
                    .map(|m| m.minor);
                match (b.state, restored) {
                    (SagaState::Confirmed, None) => expected -= points,
                    (SagaState::Confirmed | SagaState::Cancelled, Some(r)) => {
                        expected -= points - r
                    }
                    _ => {}
                }
            }
            if balance != expected {
                self.violation(
                    "balance_is_ledger",
                    format!(
                        "account {}: balance {balance}, but its credits and its bookings' final \
                         states imply {expected}",
                        a.id
                    ),
                );
            }
        }
    }

    /// No capture without confirmation; confirmed bookings are paid once; no
    /// authorization of a settled booking left open.
    fn capture_only_when_confirmed(&mut self, payments: &PaymentsSeen) {
        let seen = self.seen;
        let gateway = &payments.ledger;
        let booking_of_key = |key: &str| key.split(':').next().unwrap_or("").to_owned();
        let mut refunded: HashMap<&str, i64> = HashMap::new();
        for r in &gateway.refunds {
            *refunded.entry(r.capture_id.as_str()).or_default() += r.amount.minor;
        }
        let mut captures_of_booking: HashMap<String, usize> = HashMap::new();
        let mut captures_of_auth: HashMap<&str, usize> = HashMap::new();
        for c in &gateway.captures {
            let id = booking_of_key(&c.key);
            *captures_of_booking.entry(id.clone()).or_default() += 1;
            *captures_of_auth
                .entry(c.authorization_id.as_str())
                .or_default() += 1;
            let Some(b) = self.booking(id.as_str()) else {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "capture {} under key {} of no known booking",
                        c.capture_id, c.key
                    ),
                );
                continue;
            };
            if b.parked_reason().is_some() || !b.is_settled() {
                continue;
            }
            let back = refunded.get(c.capture_id.as_str()).copied().unwrap_or(0);
            let fine = match b.state {
                SagaState::Confirmed => true,
                SagaState::Cancelled => back > 0,
                _ => back >= c.amount.minor,
            };
            if !fine {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "booking {} is {} but {} was captured ({}) and {back} refunded",
                        b.id,
                        b.state.as_str(),
                        c.amount,
                        c.capture_id
                    ),
                );
            }
        }
        for (auth, n) in &captures_of_auth {
            if *n > 1 {
                self.violation(
                    "capture_only_when_confirmed",
                    format!("authorization {auth} captured {n} times"),
                );
            }
        }
        for b in &seen.bookings {
            if b.state != SagaState::Confirmed || b.parked_reason().is_some() || b.card_minor() <= 0
            {
                continue;
            }
            let n = captures_of_booking.get(&b.id).copied().unwrap_or(0);
            if n != 1 {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "confirmed booking {} with {} to pay by card has {n} captures",
                        b.id,
                        b.card_minor()
                    ),
                );
            }
        }
        let auth_keys: HashMap<&str, &str> = gateway
            .authorizations
            .iter()
            .map(|a| (a.authorization_id.as_str(), a.key.as_str()))
            .collect();
        for auth in &payments.open_authorizations {
            let id = auth_keys.get(auth.as_str()).map(|k| booking_of_key(k));
            let known = id
                .as_deref()
                .is_some_and(|id| self.booking(id).is_some() || self.known_ids.contains(id));
            if !known {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "authorization {auth} of no known booking ({}) is still open",
                        id.unwrap_or_default()
                    ),
                );
                continue;
            }
            let settled = id
                .as_deref()
                .and_then(|id| self.booking(id))
                .is_some_and(|b| b.is_settled() && b.parked_reason().is_none());
            if settled {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "authorization {auth} of settled booking {} is still open",
                        id.unwrap_or_default()
                    ),
                );
            }
        }
    }

    /// At most one reservation per booking, none orphaned, a live one per confirmed booking.
    fn reserved_once(&mut self, sellers: &[SellerSeen]) {
        let seen = self.seen;
        let all_ids: BTreeSet<&str> = self
            .known_ids
            .iter()
            .copied()
            .chain(
                seen.accounts
                    .iter()
                    .flat_map(|a| a.listed.iter().flatten().map(String::as_str)),
            )
            .collect();
        let mut live: BTreeSet<(&str, &str)> = BTreeSet::new();
        for s in sellers {
            let mut made = 0;
            for (key, status) in &s.reservations {
                if matches!(
                    status,
                    ReservationStatus::Booked { .. } | ReservationStatus::Cancelled { .. }
                ) {
                    made += 1;
                }
                if !all_ids.contains(key.as_str()) {
                    self.violation(
                        "reserved_once",
                        format!("seller {} holds key {key} of no known booking", s.name),
                    );
                    continue;
                }
                let Some(b) = self.booking(key.as_str()) else {
                    continue; // reported as unreadable above
                };
                if b.seller != s.name {
                    self.violation(
                        "reserved_once",
                        format!(
                            "booking {key} of seller {} was sent to seller {}",
                            b.seller, s.name
                        ),
                    );
                }
                if let ReservationStatus::Booked { .. } = status {
                    live.insert((s.name.as_str(), key.as_str()));
                    let settled = b.is_settled() && b.parked_reason().is_none();
                    if settled && b.state != SagaState::Confirmed {
                        self.violation(
                            "reserved_once",
                            format!(
                                "seller {} holds a live reservation of {} booking {key}",
                                s.name,
                                b.state.as_str()
                            ),
                        );
                    }
                }
            }
            if made != s.reservations_made {
                self.violation(
                    "reserved_once",
                    format!(
                        "seller {} made {} reservations for {made} keys",
                        s.name, s.reservations_made
                    ),
                );
            }
        }
        for b in &seen.bookings {
            let cancelling = b.cancellation.is_some();
            if b.state == SagaState::Confirmed
                && !cancelling
                && b.parked_reason().is_none()
                && !live.contains(&(b.seller.as_str(), b.id.as_str()))
            {
                self.violation(
                    "reserved_once",
                    format!(
                        "confirmed booking {} has no live reservation at {}",
                        b.id, b.seller
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::{AccountSeen, KeySeen, LedgerLine};
    use wayfare::domain::money::{Currency, Money};
    use wayfare::payments::simulated::{LedgerAuthorization, LedgerCapture};
    use wayfare::payments::GatewayLedger;

    const EUR: Currency = Currency::EUR;

    fn line(key: &str, delta: i64) -> LedgerLine {
        LedgerLine {
            key: key.into(),
            delta,
        }
    }

    /// One account credited 10000 that booked 1000 with 300 in points: all consistent.
    fn clean() -> Observations {
        let credit = format!("{CREDIT_KEY_PREFIX}1");
        Observations {
            accounts: vec![AccountSeen {
                id: "acct".into(),
                balance: Some(9_700),
                held: 0,
                ledger: Some(vec![line(&credit, 10_000), line("b1:capture-wallet", -300)]),
                listed: Some(vec!["b1".into()]),
                credited: None,
            }],
            bookings: vec![BookingSeen {
                id: "b1".into(),
                account: "acct".into(),
                seller: "alpha".into(),
                state: SagaState::Confirmed,
                needs_attention: None,
                offer_price: Money::new(1_000, EUR),
                wallet_points: Money::new(300, EUR),
                cancellation: None,
                history: vec![],
            }],
            keys: vec![KeySeen {
                key: "k1".into(),
                account: "acct".into(),
                ids: ["b1".to_owned()].into(),
            }],
            payments: Some(PaymentsSeen {
                ledger: GatewayLedger {
                    authorizations: vec![LedgerAuthorization {
                        key: "b1:authorize".into(),
                        authorization_id: "auth-1".into(),
                        card_token: "tok_approve".into(),
                        amount: Money::new(700, EUR),
                    }],
                    captures: vec![LedgerCapture {
                        key: "b1:capture".into(),
                        capture_id: "cap-1".into(),
                        authorization_id: "auth-1".into(),
                        amount: Money::new(700, EUR),
                    }],
                    ..GatewayLedger::default()
                },
                open_authorizations: vec![],
            }),
            sellers: Some(vec![SellerSeen {
                name: "alpha".into(),
                reservations: vec![(
                    "b1".into(),
                    ReservationStatus::Booked {
                        reservation_id: "alpha-1".into(),
                        price: Money::new(1_000, EUR),
                    },
                )],
                reservations_made: 1,
            }]),
        }
    }

    fn gateway(seen: &mut Observations) -> &mut GatewayLedger {
        &mut seen.payments.as_mut().expect("payments observed").ledger
    }

    fn seller(seen: &mut Observations) -> &mut SellerSeen {
        &mut seen.sellers.as_mut().expect("sellers observed")[0]
    }

    fn found(seen: &Observations) -> Vec<&'static str> {
        check(seen).into_iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_consistent_world_has_no_violations() {
        assert_eq!(check(&clean()), vec![]);
    }

    #[test]
    fn a_balance_off_its_ledger_is_found() {
        let mut seen = clean();
        seen.accounts[0].balance = Some(9_000);
        assert!(
            found(&seen).contains(&"balance_is_ledger"),
            "{:?}",
            check(&seen)
        );
    }

    #[test]
    fn a_capture_of_a_failed_booking_is_found() {
        let mut seen = clean();
        seen.bookings[0].state = SagaState::Failed;
        let v = check(&seen);
        assert!(
            v.iter()
                .any(|v| v.invariant == "capture_only_when_confirmed"
                    && v.detail.contains("b1 is failed")),
            "{v:?}"
        );
    }

    #[test]
    fn a_double_capture_and_an_unpaid_confirmation_are_found() {
        let mut seen = clean();
        let again = gateway(&mut seen).captures[0].clone();
        gateway(&mut seen).captures.push(again);
        assert!(found(&seen).contains(&"capture_only_when_confirmed"));
        let mut seen = clean();
        gateway(&mut seen).captures.clear();
        assert!(found(&seen).contains(&"capture_only_when_confirmed"));
    }

    #[test]
    fn an_open_authorization_of_no_booking_is_found() {
        let mut seen = clean();
        gateway(&mut seen).authorizations.push(LedgerAuthorization {
            key: "ghost:authorize".into(),
            authorization_id: "auth-9".into(),
            card_token: "tok_approve".into(),
            amount: Money::new(700, EUR),
        });
        seen.payments
            .as_mut()
            .unwrap()
            .open_authorizations
            .push("auth-9".into());
        assert_eq!(found(&seen), vec!["capture_only_when_confirmed"]);
    }

    #[test]
    fn two_bookings_for_one_key_are_found() {
        let mut seen = clean();
        seen.keys[0].ids.insert("b2".into());
        assert!(found(&seen).contains(&"one_booking_per_key"));
        let mut seen = clean();
        seen.accounts[0].listed = Some(vec!["b1".into(), "b9".into()]);
        assert!(found(&seen).contains(&"one_booking_per_key"));
    }

    #[test]
    fn orphan_and_missing_reservations_are_found() {
        let mut seen = clean();
        seller(&mut seen).reservations.push((
            "stray".into(),
            ReservationStatus::Booked {
                reservation_id: "alpha-2".into(),
                price: Money::new(1, EUR),
            },
        ));
        seller(&mut seen).reservations_made = 2;
        assert!(found(&seen).contains(&"reserved_once"));
        let mut seen = clean();
        seller(&mut seen).reservations.clear();
        seller(&mut seen).reservations_made = 0;
        assert!(found(&seen).contains(&"reserved_once"));
    }

    #[test]
    fn an_unsettled_saga_is_found_and_a_parked_one_is_not() {
        let mut seen = clean();
        seen.bookings[0].state = SagaState::SellerConfirmed;
        assert!(found(&seen).contains(&"sagas_settle"));
        let mut seen = clean();
        seen.bookings[0].state = SagaState::NeedsAttention;
        seen.bookings[0].needs_attention = Some("capture kept failing".into());
        assert!(
            !found(&seen).contains(&"sagas_settle"),
            "{:?}",
            check(&seen)
        );
    }

    #[test]
    fn a_credit_known_to_the_observer_replaces_the_drill_credits() {
        let mut seen = clean();
        seen.accounts[0].credited = Some(10_000);
        assert_eq!(check(&seen), vec![]);
        seen.accounts[0].credited = Some(12_000);
        assert!(found(&seen).contains(&"balance_is_ledger"));
    }

    #[test]
    fn unobserved_books_skip_their_checks_and_nothing_else() {
        let mut seen = clean();
        seen.payments = None;
        seen.sellers = None;
        assert_eq!(check(&seen), vec![]);
        seen.accounts[0].balance = Some(9_000);
        assert!(found(&seen).contains(&"balance_is_ledger"));
    }
}
