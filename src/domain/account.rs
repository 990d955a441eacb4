//! Customer accounts: ids, validation of new accounts, and the stored record.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::money::{Currency, Money};
use super::wallet::Wallet;
use super::Invalid;

/// An account id: a UUID, written in its hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub Uuid);

impl AccountId {
    /// A fresh random id.
    pub fn random() -> Self {
        AccountId(Uuid::new_v4())
    }

    /// The id of demo account `n` (`00000000-0000-4000-8000-00000000000n`), stable so the
    /// README's examples work on every fresh demo store.
    pub fn demo(n: u64) -> Self {
        AccountId(Uuid::from_u128(
            0x0000_0000_0000_4000_8000_0000_0000_0000 | n as u128,
        ))
    }

    /// The 16 bytes used as store key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Which of `shards` owns this account. Stable across processes.
    pub fn shard(&self, shards: usize) -> usize {
        let v = u128::from_be_bytes(*self.0.as_bytes());
        // Fold the halves so both random and sequential (demo) ids spread evenly.
        let folded = (v as u64) ^ ((v >> 64) as u64);
        (folded % shards.max(1) as u64) as usize
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for AccountId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(AccountId)
            .map_err(|_| Invalid::new("id", "must be an account id (a UUID)"))
    }
}

/// Bounds on what a new account may contain.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest accepted email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// A validated request to open an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Display name, trimmed, 1..=100 chars, no control characters.
    pub name: String,
    /// Email, trimmed, with one `@` and a dot in the domain.
    pub email: String,
}

impl NewAccount {
    /// Validates a name and email, naming the first field at fault.
    pub fn new(name: &str, email: &str) -> Result<Self, Invalid> {
        let name = name.trim();
        if name.is_empty() {
            return Err(Invalid::new("name", "must not be empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(Invalid::new(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::new("name", "must not contain control characters"));
        }
        if name.chars().any(is_hidden) {
            return Err(Invalid::new(
                "name",
                "must not contain bidirectional-override or zero-width characters",
            ));
        }
        let email = email.trim();
        if email.chars().any(is_hidden) {
            return Err(Invalid::new(
                "email",
                "must not contain bidirectional-override or zero-width characters",
            ));
        }
        let valid_email = email.len() <= MAX_EMAIL_CHARS
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if !valid_email {
            return Err(Invalid::new(
                "email",
                "must be an email address like name@example.com",
            ));
        }
        Ok(NewAccount {
            name: name.to_owned(),
            email: email.to_owned(),
        })
    }

    /// The email as the unique index keys it: one address opens one account, whatever
    /// its case ([`email_key`]).
    pub fn email_key(&self) -> String {
        email_key(&self.email)
    }
}

/// Characters that change how text around them is shown without being seen: the
/// bidirectional marks, embeddings, overrides and isolates (a name that renders as
/// another, "evil\u{202e}moc.rettiwt"), and the zero-width ones (two names or addresses that
/// look the same and are not). No person's name or address needs them.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{061c}'                      // Arabic letter mark
        | '\u{180e}'                    // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}'       // zero-width space, non-joiner, joiner; LRM, RLM
        | '\u{202a}'..='\u{202e}'       // embeddings and overrides
        | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}'       // isolates
        | '\u{feff}'                    // zero-width no-break space (BOM)
    )
}

/// The normalized form of an email address for uniqueness: trimmed and lowercased.
/// (Local parts are case-sensitive by the letter of RFC 5321, but no mail provider in use
/// treats them so, and two accounts differing only in case are a support problem.)
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// An account as stored: identity plus its wallet (the ledger lives beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Id.
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// Contact email.
    pub email: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// Wallet balance and holds, kept equal to the fold of the ledger.
    pub wallet: Wallet,
    /// Sequence number of the next ledger entry.
    pub next_seq: u64,
}

/// An account as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// Contact email.
    pub email: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// Wallet figures.
    pub wallet: WalletView,
}

/// Wallet figures as callers see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalletView {
    /// Points owned (credits minus captures).
    pub balance: Money,
    /// Points reserved by holds not yet captured or released.
    pub held: Money,
    /// Points that can be held or used now: balance minus held.
    pub available: Money,
}

impl AccountRecord {
    /// A new account with an empty wallet.
    pub fn open(id: AccountId, new: NewAccount, currency: Currency, now: DateTime<Utc>) -> Self {
        AccountRecord {
            id,
            name: new.name,
            email: new.email,
            created_at: now,
            wallet: Wallet::new(currency),
            next_seq: 1,
        }
    }

    /// The caller's view.
    pub fn view(&self) -> Account {
        Account {
            id: self.id,
            name: self.name.clone(),
            email: self.email.clone(),
            created_at: self.created_at,
            wallet: self.wallet.view(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names_and_emails() {
        assert!(NewAccount::new(" Ada ", "ada@example.com").is_ok());
        assert_eq!(NewAccount::new("", "a@b.c").unwrap_err().field, "name");
        assert_eq!(
            NewAccount::new(&"x".repeat(101), "a@b.c")
                .unwrap_err()
                .field,
            "name"
        );
        assert_eq!(
            NewAccount::new("A\u{7}", "a@b.c").unwrap_err().field,
            "name"
        );
        for hidden in [
            '\u{202e}', '\u{2066}', '\u{200b}', '\u{200d}', '\u{feff}', '\u{200f}',
        ] {
            let name = format!("Ada{hidden}Lovelace");
            assert_eq!(NewAccount::new(&name, "a@b.c").unwrap_err().field, "name");
            let email = format!("ada{hidden}@example.com");
            assert_eq!(NewAccount::new("Ada", &email).unwrap_err().field, "email");
        }
        assert!(NewAccount::new("Zoë Ünal-Ōta 李", "a@b.c").is_ok());
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@c.d",
            "a@b@c.d",
            "a@.b",
        ] {
            assert_eq!(
                NewAccount::new("Ada", bad).unwrap_err().field,
                "email",
                "{bad}"
            );
        }
    }

    #[test]
    fn email_keys_ignore_case_and_surrounding_space() {
        let a = NewAccount::new("Ada", " Ada@Example.COM ").unwrap();
        let b = NewAccount::new("Ada", "ada@example.com").unwrap();
        assert_eq!(
            a.email, "Ada@Example.COM",
            "the address itself is kept as given"
        );
        assert_eq!(a.email_key(), "ada@example.com");
        assert_eq!(a.email_key(), b.email_key());
        assert_ne!(a.email_key(), email_key("ada@example.org"));
    }

    #[test]
    fn ids_parse_and_shard_stably() {
        let id = AccountId::demo(7);
        assert_eq!(id.to_string(), "00000000-0000-4000-8000-000000000007");
        assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);
        assert!("not-an-id".parse::<AccountId>().is_err());
        let shards: std::collections::HashSet<usize> =
            (0..16).map(|n| AccountId::demo(n).shard(4)).collect();
        assert_eq!(
            shards.len(),
            4,
            "sequential demo ids spread over all shards"
        );
        assert_eq!(id.shard(4), id.shard(4));
    }
}
