//! Accounts and API keys in the shared database: what the account shards ask when this
//! node's account views may not answer (see `views`). Every change of what a read shows
//! raises the account's `version` and announces it in its transaction.

use chrono::{DateTime, Utc};
use tracing::Instrument as _;
use uuid::Uuid;

use super::wallet::entry_from_row;
use super::{PgError, PgStore};
use crate::domain::access::KeyDigest;
use crate::domain::account::{Account, AccountId, AccountRecord};
use crate::domain::money::Currency;
use crate::domain::wallet::{LedgerEntry, Wallet};

/// What opening an account found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Opened.
    Yes,
    /// An account has this id.
    IdTaken,
    /// An account has this email address.
    EmailTaken,
}

/// An account as a request needs it: its view, its key's digest, and whether the digest
/// the caller presented belongs to some account (to tell 401 from 403).
#[derive(Debug, Clone)]
pub struct AccountLookup {
    /// The account with its wallet figures.
    pub account: Account,
    /// Digest of its API key, if it has one.
    pub key: Option<KeyDigest>,
    /// Whether the caller's digest (if one was given) is some account's key.
    pub caller_known: bool,
    /// The version of the account's view (raised by every change of it).
    pub version: u64,
}

impl PgStore {
    /// Opens `record`'s account (empty wallet) with its key digest, in one transaction.
    pub async fn open_account_with_key(
        &self,
        record: &AccountRecord,
        key: Option<&KeyDigest>,
    ) -> Result<Opened, PgError> {
        let span = super::statement_span("INSERT", None, "INSERT accounts api_keys");
        async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let id = record.id.0;
            if id_taken(&tx, id).await? {
                return Ok(Opened::IdTaken);
            }
            let inserted = tx
                .execute(
                    &tx.prepare_cached("INSERT INTO accounts (id, name, email, currency, balance, held, next_seq, created_at)
                 VALUES ($1, $2, $3, $4, 0, 0, 1, $5)
                 ON CONFLICT DO NOTHING").await.map_err(PgError::from)?,
                    &[
                        &id,
                        &record.name,
                        &record.email,
                        &record.wallet.currency.to_string(),
                        &record.created_at,
                    ],
                )
                .await?;
            if inserted == 0 {
                // Another node opened the id a moment ago, or the email is taken.
                return Ok(if id_taken(&tx, id).await? {
                    Opened::IdTaken
                } else {
                    Opened::EmailTaken
                });
            }
            if let Some(key) = key {
                tx.execute(
                    &tx.prepare_cached("INSERT INTO api_keys (account_id, digest) VALUES ($1, $2)")
                        .await
                        .map_err(PgError::from)?,
                    &[&id, &key.bytes().as_slice()],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Opened::Yes)
        }
        .instrument(span)
        .await
    }

    /// The account `id` with its key, and whether `caller`'s digest is a known key; one
    /// round trip for the account row, one for its holds.
    pub async fn account_lookup(
        &self,
        id: AccountId,
        caller: Option<&KeyDigest>,
    ) -> Result<Option<AccountLookup>, PgError> {
        let span = super::statement_span("SELECT", None, "SELECT accounts api_keys wallet_holds");
        async move {
            let client = self.client().await?;
            let caller_bytes: Option<&[u8]> = caller.map(|d| d.bytes().as_slice());
            // One statement, one round trip: the account, its key, whether the caller's key
            // is anyone's, and its holds (their sum is `held`).
            let statement = client
                .prepare_cached(
                    "SELECT a.name, a.email, a.created_at, k.digest,
                        ($2::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM api_keys c WHERE c.digest = $2)),
                        a.currency, a.balance,
                        coalesce((SELECT array_agg(h.hold_id ORDER BY h.hold_id) FROM wallet_holds h
                                  WHERE h.account_id = a.id), '{}'::text[]),
                        coalesce((SELECT array_agg(h.amount ORDER BY h.hold_id) FROM wallet_holds h
                                  WHERE h.account_id = a.id), '{}'::bigint[]),
                        a.version
                 FROM accounts a LEFT JOIN api_keys k ON k.account_id = a.id
                 WHERE a.id = $1",
                )
                .await?;
            let Some(row) = client
                .query_opt(&statement, &[&id.0, &caller_bytes])
                .await?
            else {
                return Ok(None);
            };
            let currency: String = row.get(5);
            let currency: Currency = currency.parse().map_err(|_| PgError::Corrupt {
                what: format!("account {id}"),
                reason: format!("unknown currency {currency:?}"),
            })?;
            let hold_ids: Vec<String> = row.get(7);
            let amounts: Vec<i64> = row.get(8);
            let wallet = Wallet {
                currency,
                balance: row.get(6),
                holds: hold_ids.into_iter().zip(amounts).collect(),
            };
            let created_at: DateTime<Utc> = row.get(2);
            let digest: Option<Vec<u8>> = row.get(3);
            let version: i64 = row.get(9);
            Ok(Some(AccountLookup {
                version: version as u64,
                account: Account {
                    id,
                    name: row.get(0),
                    email: row.get(1),
                    created_at,
                    wallet: wallet.view(),
                },
                key: digest.map(|d| digest_of(id.0, &d)).transpose()?,
                caller_known: row.get(4),
            }))
        }
        .instrument(span)
        .await
    }

    /// Whether some account's API key has this digest.
    pub async fn key_known(&self, digest: &KeyDigest) -> Result<bool, PgError> {
        Ok(self.key_owner(digest).await?.is_some())
    }

    /// The account whose API key has this digest.
    pub async fn key_owner(&self, digest: &KeyDigest) -> Result<Option<AccountId>, PgError> {
        let span = super::statement_span("SELECT", Some("api_keys"), "SELECT api_keys");
        async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &client
                        .prepare_cached("SELECT account_id FROM api_keys WHERE digest = $1")
                        .await
                        .map_err(PgError::from)?,
                    &[&digest.bytes().as_slice()],
                )
                .await?;
            Ok(row.map(|r| AccountId(r.get(0))))
        }
        .instrument(span)
        .await
    }

    /// Sets the account's key digest (`only_if_missing`: unless it has one). `None` when
    /// there is no such account, else the account's new version if it was set. A new key
    /// raises the version and is announced in the same transaction, so no node serves a
    /// view with the old key past the staleness bound.
    pub async fn set_api_key(
        &self,
        id: AccountId,
        key: &KeyDigest,
        only_if_missing: bool,
    ) -> Result<Option<Option<u64>>, PgError> {
        let span = super::statement_span("UPDATE", None, "UPDATE accounts api_keys");
        async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let bump = tx
                .prepare_cached(
                    "WITH changed AS (
                     UPDATE accounts SET version = version + 1 WHERE id = $1 RETURNING version)
                 SELECT version, pg_notify('wayfare_account', $1::text || ' ' || version) FROM changed",
                )
                .await?;
            // The row lock first: a concurrent key change of the same account waits here.
            let Some(version) = tx.query_opt(&bump, &[&id.0]).await? else {
                return Ok(None);
            };
            let sql = if only_if_missing {
                "INSERT INTO api_keys (account_id, digest) VALUES ($1, $2) ON CONFLICT (account_id) DO NOTHING"
            } else {
                "INSERT INTO api_keys (account_id, digest) VALUES ($1, $2)
             ON CONFLICT (account_id) DO UPDATE SET digest = excluded.digest"
            };
            let n = tx.execute(sql, &[&id.0, &key.bytes().as_slice()]).await?;
            if n == 0 {
                // Nothing changed: the version stays (the rollback takes the raise back).
                return Ok(Some(None));
            }
            tx.commit().await?;
            let version: i64 = version.get(0);
            Ok(Some(Some(version as u64)))
        }
        .instrument(span)
        .await
    }

    /// Up to `limit` ledger entries of `id` after sequence number `after`, oldest first.
    pub async fn ledger_page(
        &self,
        id: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, PgError> {
        let span = super::statement_span("SELECT", Some("ledger"), "SELECT ledger");
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached(
                            "SELECT seq, key, op, delta, balance_after, held_after, at FROM ledger
                 WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[
                        &id.0,
                        &i64::try_from(after).unwrap_or(i64::MAX),
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            rows.iter().map(entry_from_row).collect()
        }
        .instrument(span)
        .await
    }

    /// A small fact from `meta`.
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, PgError> {
        let span = super::statement_span("SELECT", Some("meta"), "SELECT meta");
        async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &client
                        .prepare_cached("SELECT value FROM meta WHERE key = $1")
                        .await
                        .map_err(PgError::from)?,
                    &[&key],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        }
        .instrument(span)
        .await
    }

    /// Sets a small fact in `meta`.
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), PgError> {
        let span = super::statement_span("INSERT", Some("meta"), "INSERT meta");
        async move {
            let client = self.client().await?;
            client
                .execute(
                    &client
                        .prepare_cached(
                            "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&key, &value],
                )
                .await?;
            Ok(())
        }
        .instrument(span)
        .await
    }
}

async fn id_taken(tx: &deadpool_postgres::Transaction<'_>, id: Uuid) -> Result<bool, PgError> {
    let statement = tx
        .prepare_cached("SELECT 1 FROM accounts WHERE id = $1")
        .await?;
    Ok(tx.query_opt(&statement, &[&id]).await?.is_some())
}

fn digest_of(id: Uuid, bytes: &[u8]) -> Result<KeyDigest, PgError> {
    <[u8; 32]>::try_from(bytes)
        .map(KeyDigest::from_bytes)
        .map_err(|_| PgError::Corrupt {
            what: format!("API key of account {id}"),
            reason: format!("a digest of {} bytes, not 32", bytes.len()),
        })
}
