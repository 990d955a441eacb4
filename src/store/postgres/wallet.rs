//! Wallets in the shared database: the database, not a node's cache, decides every change.
//!
//! One transaction per change: lock the account row (`FOR UPDATE`, so changes to one
//! account through any node queue there), look up the idempotency key (a replay returns
//! the stored receipt), apply the domain rule ([`Wallet::apply`], the same one the sled
//! actors use) to the wallet read under the lock, then write the account row, the hold,
//! the ledger row and the key. The table's `CHECK (held <= balance)` refuses an overdraw
//! even if the rule were wrong.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{PgError, PgStore};
use crate::domain::account::AccountId;
use crate::domain::money::Currency;
use crate::domain::wallet::{
    validate_key, LedgerEntry, Wallet, WalletError, WalletOp, WalletReceipt,
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

    /// The wallet of `id` as the database has it now.
    pub async fn wallet(&self, id: AccountId) -> Result<Option<WalletRow>, PgError> {
        let client = self.client().await?;
        read_wallet(&client, id.0).await
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
    /// made now (`None` for a replay).
    pub async fn change_wallet_versioned(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> Result<(WalletReceipt, Option<u64>), WalletFailure> {
        validate_key("idempotency_key", key).map_err(WalletError::from)?;
        let op_json = serde_json::to_value(op).map_err(|e| PgError::Corrupt {
            what: "wallet operation".into(),
            reason: e.to_string(),
        })?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let (row, seen) = locked_wallet(&tx, id.0, key).await?;
        let Some(row) = row else {
            return Err(WalletFailure::NoAccount(id));
        };
        if let Some(seen) = seen {
            let (seen_op, seq): (serde_json::Value, i64) = (seen.get(0), seen.get(1));
            if seen_op != op_json {
                return Err(WalletFailure::KeyConflict(key.to_owned()));
            }
            let entry = ledger_entry(&tx, id.0, seq).await?;
            return Ok((
                WalletReceipt {
                    entry,
                    wallet: row.wallet.view(),
                    replayed: true,
                },
                None,
            ));
        }
        let (wallet, delta) = match row.wallet.apply(op) {
            Ok(applied) => applied,
            Err(WalletError::UnknownHold(hold_id)) => {
                if let WalletOp::Release { .. } = op {
                    // As the sled actors do: a release of a hold that never landed leaves a
                    // tombstone under the hold's own key, so the late hold is refused.
                    tx.execute(
                        &tx.prepare_cached("INSERT INTO wallet_keys (account_id, key, op, seq) VALUES ($1, $2, $3, 0)
                         ON CONFLICT DO NOTHING").await.map_err(PgError::from)?,
                        &[&id.0, &hold_id, &op_json],
                    )
                    .await
                    .map_err(PgError::from)?;
                    tx.commit().await.map_err(PgError::from)?;
                }
                return Err(WalletError::UnknownHold(hold_id).into());
            }
            Err(e) => return Err(e.into()),
        };
        let entry = LedgerEntry {
            seq: row.next_seq,
            key: key.to_owned(),
            op: op.clone(),
            delta,
            balance_after: wallet.balance,
            held_after: wallet.held(),
            // PostgreSQL keeps microseconds: the receipt says what a replay will read.
            at: now_micros(),
        };
        let version = write_change(&tx, id.0, op, &op_json, &entry).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok((
            WalletReceipt {
                entry,
                wallet: wallet.view(),
                replayed: false,
            },
            Some(version),
        ))
    }

    /// The ledger of `id`, oldest first.
    pub async fn ledger(&self, id: AccountId) -> Result<Vec<LedgerEntry>, PgError> {
        self.ledger_page(id, 0, usize::MAX).await
    }

    /// Accounts whose balance or held differs from their ledger's last row, or whose holds
    /// do not sum to held: the wallet invariant, checked by the database for every account.
    pub async fn wallet_violations(&self) -> Result<Vec<AccountId>, PgError> {
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

/// Writes a change with its four statements pipelined (sent at once, run in order): one
/// round trip instead of four. Returns the account's new version.
async fn write_change(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    op: &WalletOp,
    op_json: &serde_json::Value,
    entry: &LedgerEntry,
) -> Result<u64, PgError> {
    let seq = entry.seq as i64;
    let next = seq + 1;
    // The view's new version, announced to every node when the transaction commits.
    let totals = tx
        .prepare_cached(
            "WITH changed AS (
                 UPDATE accounts SET balance = $2, held = $3, next_seq = $4, version = version + 1
                 WHERE id = $1 RETURNING version)
             SELECT version, pg_notify('wayfare_account', $1::text || ' ' || version) FROM changed",
        )
        .await?;
    let ledger = tx
        .prepare_cached(
            "INSERT INTO ledger (account_id, seq, key, op, delta, balance_after, held_after, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    let seen = tx
        .prepare_cached(
            "INSERT INTO wallet_keys (account_id, key, op, seq) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    let hold = match op {
        WalletOp::Hold { .. } => Some(
            tx.prepare_cached(
                "INSERT INTO wallet_holds (account_id, hold_id, amount) VALUES ($1, $2, $3)",
            )
            .await?,
        ),
        WalletOp::Capture { .. } | WalletOp::Release { .. } => Some(
            tx.prepare_cached("DELETE FROM wallet_holds WHERE account_id = $1 AND hold_id = $2")
                .await?,
        ),
        WalletOp::Credit { .. } => None,
    };
    let hold_change = async {
        match (op, &hold) {
            (WalletOp::Hold { hold_id, amount }, Some(s)) => {
                tx.execute(s, &[&id, hold_id, &amount.minor]).await
            }
            (WalletOp::Capture { hold_id } | WalletOp::Release { hold_id }, Some(s)) => {
                tx.execute(s, &[&id, hold_id]).await
            }
            _ => Ok(0),
        }
    };
    type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let totals_params: [Param; 4] = [&id, &entry.balance_after, &entry.held_after, &next];
    let ledger_params: [Param; 8] = [
        &id,
        &seq,
        &entry.key,
        op_json,
        &entry.delta,
        &entry.balance_after,
        &entry.held_after,
        &entry.at,
    ];
    let seen_params: [Param; 4] = [&id, &entry.key, op_json, &seq];
    let (version, ..) = tokio::try_join!(
        tx.query_one(&totals, &totals_params),
        hold_change,
        tx.execute(&ledger, &ledger_params),
        tx.execute(&seen, &seen_params),
    )?;
    let version: i64 = version.get(0);
    Ok(version as u64)
}

/// The account row locked for a change, its holds and what idempotency key `key` was used
/// for, pipelined: the three statements are sent at once and run in order, so the holds and
/// the key are read by statements that start once the row lock is held (a statement that
/// waited for the lock would still see other tables as of its own start).
async fn locked_wallet(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    key: &str,
) -> Result<(Option<WalletRow>, Option<tokio_postgres::Row>), PgError> {
    let lock = tx
        .prepare_cached("SELECT currency, balance, next_seq FROM accounts WHERE id = $1 FOR UPDATE")
        .await?;
    let holds = tx
        .prepare_cached("SELECT hold_id, amount FROM wallet_holds WHERE account_id = $1")
        .await?;
    let seen = tx
        .prepare_cached("SELECT op, seq FROM wallet_keys WHERE account_id = $1 AND key = $2")
        .await?;
    let by_id: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let by_key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &key];
    let (account, holds, seen) = tokio::try_join!(
        tx.query_opt(&lock, &by_id),
        tx.query(&holds, &by_id),
        tx.query_opt(&seen, &by_key),
    )?;
    let Some(account) = account else {
        return Ok((None, None));
    };
    let ids = holds.iter().map(|r| r.get(0)).collect();
    let amounts = holds.iter().map(|r| r.get(1)).collect();
    Ok((Some(wallet_row(id, &account, ids, amounts)?), seen))
}

async fn ledger_entry(
    client: &impl GenericClient,
    id: Uuid,
    seq: i64,
) -> Result<LedgerEntry, PgError> {
    let row = client
        .query_opt(
            &client
                .prepare_cached(
                    "SELECT seq, key, op, delta, balance_after, held_after, at FROM ledger
             WHERE account_id = $1 AND seq = $2",
                )
                .await
                .map_err(PgError::from)?,
            &[&id, &seq],
        )
        .await?
        .ok_or_else(|| PgError::Corrupt {
            what: format!("wallet key of account {id}"),
            reason: format!("it points at ledger entry {seq}, which is missing"),
        })?;
    entry_from_row(&row)
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
