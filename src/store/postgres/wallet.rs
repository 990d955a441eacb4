//! Wallets in the shared database: the database, not a node's cache, decides every change.
//!
//! One statement per change, one round trip: `wayfare_wallet_change` (a server-side
//! function, migration 4) locks the account row (`FOR UPDATE`, so changes to one account
//! through any node queue there), looks up the idempotency key (a replay returns the
//! stored receipt, another operation under it is a conflict), applies the wallet rule,
//! then writes the account row, the hold, the ledger row, the key and the announcement of
//! the account's new version. The rule there is [`Wallet::apply`]'s, the one the sled
//! actors use, held to it by a property test over random operation sequences
//! (`tests/postgres.rs`); on a refusal the function returns the wallet it found and the
//! node asks [`Wallet::apply`] why, so refusals read the same on both stores. The table's
//! `CHECK (held <= balance)` refuses an overdraw even if either rule were wrong.

use std::collections::BTreeMap;
use tracing::Instrument as _;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{PgError, PgStore};
use crate::domain::account::{AccountId, WalletView};
use crate::domain::money::{Currency, Money};
use crate::domain::wallet::{
    validate_key, LedgerEntry, Wallet, WalletError, WalletOp, WalletReceipt, MAX_AMOUNT_MINOR,
};

/// Why a wallet change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletFailure {
    /// The domain rule refused it (insufficient points, unknown hold, bad input).
    #[error(transparent)]
    Refused(#[from] WalletError),
    /// The idempotency key was used before for another operation.
    #[error("idempotency key {0:?} was used for another operation")]
    KeyConflict(String),
    /// No such account.
    #[error("no account {0}")]
    NoAccount(AccountId),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] PgError),
}

/// An account row to create (the wallet starts empty).
#[derive(Debug, Clone)]
pub struct NewAccountRow {
    /// Id.
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// Normalized email (unique).
    pub email: String,
    /// Wallet currency.
    pub currency: Currency,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
}

/// Balance, holds and next ledger sequence of an account, as the database has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRow {
    /// The wallet.
    pub wallet: Wallet,
    /// Sequence number the next ledger entry takes.
    pub next_seq: u64,
}

impl PgStore {
    /// Opens an account with an empty wallet. `Ok(false)` when its email is taken.
    pub async fn open_account(&self, new: &NewAccountRow) -> Result<bool, PgError> {
        let span = super::statement_span("INSERT", Some("accounts"), "INSERT accounts");
        async move {
            let client = self.client().await?;
            let inserted = client
                .execute(
                    &client.prepare_cached("INSERT INTO accounts (id, name, email, currency, balance, held, next_seq, created_at)
                 VALUES ($1, $2, $3, $4, 0, 0, 1, $5)
                 ON CONFLICT (email) DO NOTHING").await.map_err(PgError::from)?,
                    &[&new.id.0, &new.name, &new.email, &new.currency.to_string(), &new.created_at],
                )
                .await?;
            Ok(inserted == 1)
        }
        .instrument(span)
        .await
    }

    /// The wallet of `id` as the database has it now.
    pub async fn wallet(&self, id: AccountId) -> Result<Option<WalletRow>, PgError> {
        let span = super::statement_span("SELECT", Some("accounts"), "SELECT accounts");
        async move {
            let client = self.client().await?;
            read_wallet(&client, id.0).await
        }
        .instrument(span)
        .await
    }

    /// Applies `op` under idempotency key `key` (see the module doc).
    pub async fn change_wallet(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> Result<WalletReceipt, WalletFailure> {
        Ok(self.change_wallet_versioned(id, key, op).await?.0)
    }

    /// [`PgStore::change_wallet`], with the account's new version when the change was
    /// made now (`None` for a replay). One round trip: `wayfare_wallet_change` (migration
    /// 4) does it all in the statement's own transaction.
    pub async fn change_wallet_versioned(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> Result<(WalletReceipt, Option<u64>), WalletFailure> {
        let span = super::statement_span("SELECT", None, "SELECT wayfare_wallet_change");
        async move {
            validate_key("idempotency_key", key).map_err(WalletError::from)?;
            let op_json = serde_json::to_value(op).map_err(|e| PgError::Corrupt {
                what: "wallet operation".into(),
                reason: e.to_string(),
            })?;
            let (kind, hold, amount) = match op {
                WalletOp::Credit { amount } => ("credit", None, Some(*amount)),
                WalletOp::Hold { hold_id, amount } => {
                    ("hold", Some(hold_id.as_str()), Some(*amount))
                }
                WalletOp::Capture { hold_id } => ("capture", Some(hold_id.as_str()), None),
                WalletOp::Release { hold_id } => ("release", Some(hold_id.as_str()), None),
            };
            let currency = amount.map(|a| a.currency.to_string());
            // PostgreSQL keeps microseconds: the receipt says what a replay will read.
            let at = now_micros();
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT * FROM wayfare_wallet_change($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .await
                .map_err(PgError::from)?;
            let row = client
                .query_one(
                    &statement,
                    &[
                        &id.0,
                        &key,
                        &op_json,
                        &kind,
                        &hold,
                        &currency,
                        &amount.map(|a| a.minor),
                        &MAX_AMOUNT_MINOR,
                        &at,
                    ],
                )
                .await
                .map_err(PgError::from)?;
            let status: &str = row.get("o_status");
            if status == "no_account" {
                return Err(WalletFailure::NoAccount(id));
            }
            if status == "conflict" {
                return Err(WalletFailure::KeyConflict(key.to_owned()));
            }
            let currency: String = row.get("o_currency");
            let currency: Currency = currency.trim().parse().map_err(|_| PgError::Corrupt {
                what: format!("account {id}"),
                reason: format!("unknown currency {currency:?}"),
            })?;
            let money = |minor| Money::new(minor, currency);
            let view = |balance: i64, held: i64| WalletView {
                balance: money(balance),
                held: money(held),
                available: money(balance - held),
            };
            match status {
                "replay" | "ok" => {
                    let seq: i64 = row.get("o_seq");
                    let Some(entry_key) = row.get::<_, Option<String>>("o_key") else {
                        return Err(PgError::Corrupt {
                            what: format!("wallet key of account {id}"),
                            reason: format!("it points at ledger entry {seq}, which is missing"),
                        }
                        .into());
                    };
                    let entry_op: serde_json::Value = row.get("o_op");
                    let entry = LedgerEntry {
                        seq: seq as u64,
                        key: entry_key,
                        op: serde_json::from_value(entry_op).map_err(|e| PgError::Corrupt {
                            what: format!("ledger entry {seq}"),
                            reason: e.to_string(),
                        })?,
                        delta: row.get("o_delta"),
                        balance_after: row.get("o_balance_after"),
                        held_after: row.get("o_held_after"),
                        at: row.get("o_at"),
                    };
                    let replayed = status == "replay";
                    let wallet = if replayed {
                        view(row.get("o_balance"), row.get("o_held"))
                    } else {
                        view(entry.balance_after, entry.held_after)
                    };
                    let version: i64 = row.get("o_version");
                    Ok((
                        WalletReceipt {
                            entry,
                            wallet,
                            replayed,
                        },
                        (!replayed).then_some(version as u64),
                    ))
                }
                "refused" => {
                    // The database refused; the domain rule says why, in its own words.
                    let ids: Vec<String> = row.get("o_hold_ids");
                    let amounts: Vec<i64> = row.get("o_hold_amounts");
                    let wallet = Wallet {
                        currency,
                        balance: row.get("o_balance"),
                        holds: ids.into_iter().zip(amounts).collect::<BTreeMap<_, _>>(),
                    };
                    match wallet.apply(op) {
                        Err(e) => Err(e.into()),
                        Ok(_) => Err(PgError::Corrupt {
                            what: format!("wallet rule for account {id}"),
                            reason: format!(
                                "the database refused {op:?}, which the domain rule allows"
                            ),
                        }
                        .into()),
                    }
                }
                other => Err(PgError::Corrupt {
                    what: format!("wallet change of account {id}"),
                    reason: format!("the database answered {other:?}"),
                }
                .into()),
            }
        }
        .instrument(span)
        .await
    }

    /// The ledger of `id`, oldest first.
    pub async fn ledger(&self, id: AccountId) -> Result<Vec<LedgerEntry>, PgError> {
        let span = super::statement_span("SELECT", Some("ledger"), "SELECT ledger");
        async move { self.ledger_page(id, 0, usize::MAX).await }
            .instrument(span)
            .await
    }

    /// Accounts whose balance or held differs from their ledger's last row, or whose holds
    /// do not sum to held: the wallet invariant, checked by the database for every account.
    pub async fn wallet_violations(&self) -> Result<Vec<AccountId>, PgError> {
        let span = super::statement_span("SELECT", None, "SELECT wallet_violations");
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &client.prepare_cached("SELECT a.id FROM accounts a
                 LEFT JOIN LATERAL (SELECT balance_after, held_after FROM ledger l
                                    WHERE l.account_id = a.id ORDER BY seq DESC LIMIT 1) last ON true
                 LEFT JOIN LATERAL (SELECT coalesce(sum(amount), 0)::bigint AS held FROM wallet_holds h
                                    WHERE h.account_id = a.id) holds ON true
                 WHERE a.balance <> coalesce(last.balance_after, 0)
                    OR a.held <> coalesce(last.held_after, 0)
                    OR a.held <> holds.held
                    OR a.next_seq <> 1 + (SELECT count(*) FROM ledger l WHERE l.account_id = a.id)").await.map_err(PgError::from)?,
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| AccountId(r.get(0))).collect())
        }
        .instrument(span)
        .await
    }
}

/// The wallet of `id` in one statement (one consistent snapshot of the row and its holds).
async fn read_wallet(client: &impl GenericClient, id: Uuid) -> Result<Option<WalletRow>, PgError> {
    let statement = client
        .prepare_cached(
            "SELECT currency, balance, next_seq,
                    coalesce((SELECT array_agg(h.hold_id ORDER BY h.hold_id) FROM wallet_holds h
                              WHERE h.account_id = a.id), '{}'::text[]),
                    coalesce((SELECT array_agg(h.amount ORDER BY h.hold_id) FROM wallet_holds h
                              WHERE h.account_id = a.id), '{}'::bigint[])
             FROM accounts a WHERE id = $1",
        )
        .await?;
    let Some(account) = client.query_opt(&statement, &[&id]).await? else {
        return Ok(None);
    };
    let (ids, amounts) = (account.get(3), account.get(4));
    wallet_row(id, &account, ids, amounts).map(Some)
}

/// A wallet from its account row (currency, balance, next_seq first) and its holds.
fn wallet_row(
    id: Uuid,
    account: &tokio_postgres::Row,
    hold_ids: Vec<String>,
    amounts: Vec<i64>,
) -> Result<WalletRow, PgError> {
    let currency: String = account.get(0);
    let currency: Currency = currency.parse().map_err(|_| PgError::Corrupt {
        what: format!("account {id}"),
        reason: format!("unknown currency {currency:?}"),
    })?;
    if hold_ids.len() != amounts.len() {
        return Err(PgError::Corrupt {
            what: format!("holds of account {id}"),
            reason: "hold ids and amounts differ in number".into(),
        });
    }
    let holds: BTreeMap<String, i64> = hold_ids.into_iter().zip(amounts).collect();
    let next_seq: i64 = account.get(2);
    Ok(WalletRow {
        wallet: Wallet {
            currency,
            balance: account.get(1),
            holds,
        },
        next_seq: next_seq as u64,
    })
}

pub(super) fn entry_from_row(row: &tokio_postgres::Row) -> Result<LedgerEntry, PgError> {
    let seq: i64 = row.get(0);
    let op: serde_json::Value = row.get(2);
    Ok(LedgerEntry {
        seq: seq as u64,
        key: row.get(1),
        op: serde_json::from_value(op).map_err(|e| PgError::Corrupt {
            what: format!("ledger entry {seq}"),
            reason: e.to_string(),
        })?,
        delta: row.get(3),
        balance_after: row.get(4),
        held_after: row.get(5),
        at: row.get(6),
    })
}

fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
