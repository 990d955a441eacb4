//! Loyalty wallet arithmetic: credits, holds, captures and releases, as pure functions
//! over a [`Wallet`]. Every change is a [`LedgerEntry`]; the balance is the fold of the
//! ledger (see `fold_ledger`) and is cached in the account record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::account::WalletView;
use super::money::{Currency, Money};
use super::Invalid;

/// Largest single wallet amount accepted (10 billion in major units), so sums of many
/// operations stay far from `i64` overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// Longest idempotency key or hold id accepted.
pub const MAX_KEY_LEN: usize = 128;

/// A wallet: owned points and the holds reserved against them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Currency of every amount in the wallet.
    pub currency: Currency,
    /// Points owned, in minor units: credits minus captures. Never negative.
    pub balance: i64,
    /// Open holds by hold id, in minor units. Their sum never exceeds `balance`.
    pub holds: BTreeMap<String, i64>,
}

/// A change to a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum WalletOp {
    /// Adds points (loyalty credit, refund of points).
    Credit {
        /// Positive amount.
        amount: Money,
    },
    /// Reserves points for a booking.
    Hold {
        /// Id the capture or release will name.
        hold_id: String,
        /// Positive amount, at most the available points.
        amount: Money,
    },
    /// Spends a hold: its points leave the balance.
    Capture {
        /// The hold.
        hold_id: String,
    },
    /// Cancels a hold: its points become available again.
    Release {
        /// The hold.
        hold_id: String,
    },
}

/// Why a wallet operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// A hold larger than the available points.
    #[error("insufficient points: {available} available, {requested} requested")]
    InsufficientFunds {
        /// Points available.
        available: Money,
        /// Points asked for.
        requested: Money,
    },
    /// Capture or release of a hold that does not exist (or is already settled).
    #[error("no open hold {0:?}")]
    UnknownHold(String),
    /// A second hold with an id already open.
    #[error("hold {0:?} is already open")]
    DuplicateHold(String),
    /// The operation's input is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    /// Position in the account's ledger, from 1.
    pub seq: u64,
    /// Idempotency key of the operation.
    pub key: String,
    /// The operation.
    pub op: WalletOp,
    /// Change of the balance (credits positive, captures negative, holds zero).
    pub delta: i64,
    /// Balance after this entry.
    pub balance_after: i64,
    /// Sum of open holds after this entry.
    pub held_after: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// Validates an idempotency key or hold id: 1..=128 printable ASCII characters.
pub fn validate_key(field: &'static str, key: &str) -> Result<(), Invalid> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

impl Wallet {
    /// An empty wallet.
    pub fn new(currency: Currency) -> Self {
        Wallet {
            currency,
            balance: 0,
            holds: BTreeMap::new(),
        }
    }

    /// Sum of open holds.
    pub fn held(&self) -> i64 {
        self.holds.values().sum()
    }

    /// Points that can be held now.
    pub fn available(&self) -> i64 {
        self.balance - self.held()
    }

    /// Callers' view.
    pub fn view(&self) -> WalletView {
        let m = |minor| Money::new(minor, self.currency);
        WalletView {
            balance: m(self.balance),
            held: m(self.held()),
            available: m(self.available()),
        }
    }

    fn check_amount(&self, amount: Money) -> Result<i64, Invalid> {
        if amount.currency != self.currency {
            return Err(Invalid::new(
                "amount.currency",
                format!("must be the wallet currency {}", self.currency),
            ));
        }
        if amount.minor <= 0 || amount.minor > MAX_AMOUNT_MINOR {
            return Err(Invalid::new(
                "amount.minor",
                format!("must be between 1 and {MAX_AMOUNT_MINOR}"),
            ));
        }
        Ok(amount.minor)
    }

    /// Checks `op` against this wallet and returns the wallet after it, or why not.
    /// Returns the balance delta alongside.
    pub fn apply(&self, op: &WalletOp) -> Result<(Wallet, i64), WalletError> {
        let mut next = self.clone();
        let delta = match op {
            WalletOp::Credit { amount } => {
                let minor = self.check_amount(*amount)?;
                next.balance = self.balance.checked_add(minor).ok_or_else(|| {
                    Invalid::new("amount.minor", "would overflow the wallet balance")
                })?;
                minor
            }
            WalletOp::Hold { hold_id, amount } => {
                validate_key("hold_id", hold_id)?;
                let minor = self.check_amount(*amount)?;
                if self.holds.contains_key(hold_id) {
                    return Err(WalletError::DuplicateHold(hold_id.clone()));
                }
                if minor > self.available() {
                    return Err(WalletError::InsufficientFunds {
                        available: Money::new(self.available(), self.currency),
                        requested: *amount,
                    });
                }
                next.holds.insert(hold_id.clone(), minor);
                0
            }
            WalletOp::Capture { hold_id } => {
                let minor = next
                    .holds
                    .remove(hold_id)
                    .ok_or_else(|| WalletError::UnknownHold(hold_id.clone()))?;
                next.balance -= minor;
                -minor
            }
            WalletOp::Release { hold_id } => {
                next.holds
                    .remove(hold_id)
                    .ok_or_else(|| WalletError::UnknownHold(hold_id.clone()))?;
                0
            }
        };
        Ok((next, delta))
    }
}

/// Replays a ledger from an empty wallet: the source of truth for the cached balance.
pub fn fold_ledger<'a>(
    currency: Currency,
    entries: impl IntoIterator<Item = &'a LedgerEntry>,
) -> Result<Wallet, WalletError> {
    entries
        .into_iter()
        .try_fold(Wallet::new(currency), |w, e| w.apply(&e.op).map(|(w, _)| w))
}

/// The result of a wallet change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalletReceipt {
    /// The ledger entry recorded (or recorded before, for a replay).
    pub entry: LedgerEntry,
    /// Wallet figures now.
    pub wallet: WalletView,
    /// True when the key had been used before and this is the first result again.
    pub replayed: bool,
}

/// A page of ledger entries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerPage {
    /// Entries after the requested sequence number.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[schema(required = true)]
    pub next_after: Option<u64>,
}

impl LedgerPage {
    /// The page of up to `limit` entries, from `limit + 1` read (the extra one says that
    /// another page follows).
    pub fn of(mut entries: Vec<LedgerEntry>, limit: usize) -> LedgerPage {
        let next_after = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        LedgerPage {
            entries,
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    fn hold(id: &str, minor: i64) -> WalletOp {
        WalletOp::Hold {
            hold_id: id.into(),
            amount: eur(minor),
        }
    }

    #[test]
    fn hold_capture_release_arithmetic() {
        let w = Wallet::new(Currency::EUR);
        let (w, d) = w
            .apply(&WalletOp::Credit {
                amount: eur(10_000),
            })
            .unwrap();
        assert_eq!((w.balance, d), (10_000, 10_000));
        let (w, _) = w.apply(&hold("h1", 3_000)).unwrap();
        let (w, _) = w.apply(&hold("h2", 2_000)).unwrap();
        assert_eq!((w.balance, w.held(), w.available()), (10_000, 5_000, 5_000));
        let (w, d) = w
            .apply(&WalletOp::Capture {
                hold_id: "h1".into(),
            })
            .unwrap();
        assert_eq!((w.balance, w.held(), d), (7_000, 2_000, -3_000));
        let (w, _) = w
            .apply(&WalletOp::Release {
                hold_id: "h2".into(),
            })
            .unwrap();
        assert_eq!((w.balance, w.held(), w.available()), (7_000, 0, 7_000));
        assert_eq!(
            w.apply(&WalletOp::Capture {
                hold_id: "h1".into()
            }),
            Err(WalletError::UnknownHold("h1".into()))
        );
    }

    #[test]
    fn refuses_holds_beyond_the_available_points_and_bad_amounts() {
        let (w, _) = Wallet::new(Currency::EUR)
            .apply(&WalletOp::Credit { amount: eur(100) })
            .unwrap();
        assert!(matches!(
            w.apply(&hold("h", 101)),
            Err(WalletError::InsufficientFunds { .. })
        ));
        let (w2, _) = w.apply(&hold("h", 100)).unwrap();
        assert!(matches!(
            w2.apply(&hold("h", 1)),
            Err(WalletError::DuplicateHold(_))
        ));
        for bad in [0, -1, MAX_AMOUNT_MINOR + 1] {
            assert!(matches!(
                w.apply(&WalletOp::Credit { amount: eur(bad) }),
                Err(WalletError::Invalid(_))
            ));
        }
        let usd = WalletOp::Credit {
            amount: Money::new(1, Currency::USD),
        };
        assert!(
            matches!(w.apply(&usd), Err(WalletError::Invalid(i)) if i.field == "amount.currency")
        );
        assert!(matches!(
            w.apply(&hold("has space", 1)),
            Err(WalletError::Invalid(_))
        ));
    }

    fn arb_op() -> impl Strategy<Value = WalletOp> {
        let id = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from);
        prop_oneof![
            (-10i64..50_000).prop_map(|m| WalletOp::Credit { amount: eur(m) }),
            (id.clone(), -10i64..60_000).prop_map(|(h, m)| WalletOp::Hold {
                hold_id: h,
                amount: eur(m)
            }),
            id.clone().prop_map(|h| WalletOp::Capture { hold_id: h }),
            id.prop_map(|h| WalletOp::Release { hold_id: h }),
        ]
    }

    proptest! {
        /// Any sequence of operations, applied where accepted, keeps the balance equal to
        /// the sum of the ledger, never negative, and holds within the balance.
        #[test]
        fn balance_always_equals_the_ledger(ops in proptest::collection::vec(arb_op(), 0..60)) {
            let mut w = Wallet::new(Currency::EUR);
            let mut ledger = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                if let Ok((next, delta)) = w.apply(&op) {
                    ledger.push(LedgerEntry {
                        seq: i as u64 + 1, key: format!("k{i}"), op, delta,
                        balance_after: next.balance, held_after: next.held(), at: Utc::now(),
                    });
                    w = next;
                }
                prop_assert!(w.balance >= 0);
                prop_assert!(w.held() >= 0 && w.held() <= w.balance);
                prop_assert_eq!(w.balance, ledger.iter().map(|e| e.delta).sum::<i64>());
            }
            prop_assert_eq!(fold_ledger(Currency::EUR, &ledger).unwrap(), w);
        }
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;
    use crate::domain::account::{AccountId, AccountRecord, NewAccount};
    use crate::store::codec;

    /// Stored records must survive the bincode envelope (no self-describing serde tricks).
    #[test]
    fn stored_records_round_trip_through_the_codec() {
        let entry = LedgerEntry {
            seq: 1,
            key: "k".into(),
            op: WalletOp::Hold {
                hold_id: "h".into(),
                amount: Money::new(5, Currency::EUR),
            },
            delta: 0,
            balance_after: 10,
            held_after: 5,
            at: Utc::now(),
        };
        assert_eq!(
            codec::decode::<LedgerEntry>(&codec::encode(&entry)).unwrap(),
            entry
        );
        let mut record = AccountRecord::open(
            AccountId::demo(1),
            NewAccount::new("Ada", "ada@example.com").unwrap(),
            Currency::EUR,
            Utc::now(),
        );
        record.wallet.holds.insert("h".into(), 5);
        assert_eq!(
            codec::decode::<AccountRecord>(&codec::encode(&record)).unwrap(),
            record
        );
    }
}
