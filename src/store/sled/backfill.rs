//! Index backfills for stores written before an index existed, run once at start-up
//! (before the shards start): the API key owner index and the unique email index.

use crate::domain::account::email_key;
use crate::domain::account::{AccountId, AccountRecord};
use crate::store::{decode_record, Op, Store, StoreError, Tree};

/// Rebuilds the API key owner index (key digest -> account) from the `api_keys` tree when
/// the index is empty and keys exist: stores written before the index. One atomic write,
/// so the index is either whole or still empty (and rebuilt at the next start).
pub(crate) fn backfill_key_owners(store: &dyn Store) -> Result<(), StoreError> {
    if !store.scan(Tree::KeyOwners, b"", None, 1)?.is_empty() {
        return Ok(());
    }
    let keys = store.scan(Tree::ApiKeys, b"", None, usize::MAX)?;
    if keys.is_empty() {
        return Ok(());
    }
    let ops = keys
        .into_iter()
        .map(|(id, digest)| {
            let id = uuid::Uuid::from_slice(&id).map_err(|e| StoreError::Corrupt {
                tree: Tree::ApiKeys.name(),
                key: crate::store::printable_key(&id),
                reason: e.to_string(),
            })?;
            // The index key is the stored digest's encoding, byte for byte.
            Ok(Op::put(Tree::KeyOwners, digest, &AccountId(id)))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    tracing::info!(keys = ops.len(), "API key owner index rebuilt.");
    store.write(ops)
}

/// Rebuilds the unique email index (normalized email -> account) from the accounts when
/// the index is empty and accounts exist: stores written before the index. Where old
/// data has one address on several accounts, the first in id order keeps it (the others
/// stay, but no new account can take the address). One atomic write, as above.
pub(crate) fn backfill_emails(store: &dyn Store) -> Result<(), StoreError> {
    if !store.scan(Tree::Emails, b"", None, 1)?.is_empty() {
        return Ok(());
    }
    let accounts = store.scan(Tree::Accounts, b"", None, usize::MAX)?;
    if accounts.is_empty() {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    let mut ops = Vec::new();
    for (key, value) in accounts {
        let record: AccountRecord = decode_record(Tree::Accounts, &key, &value)?;
        let email = email_key(&record.email);
        if seen.insert(email.clone()) {
            ops.push(Op::put(Tree::Emails, email, &record.id));
        }
    }
    tracing::info!(emails = ops.len(), "Unique email index rebuilt.");
    store.write(ops)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::access::ApiKey;
    use crate::domain::account::NewAccount;
    use crate::domain::money::Currency;
    use crate::store::{codec, get_record, SledStore};

    #[test]
    fn the_key_owner_index_is_rebuilt_once_for_stores_from_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (a, b) = (ApiKey::demo(1).digest(), ApiKey::demo(2).digest());
        store
            .write(vec![
                Op::put(Tree::ApiKeys, AccountId::demo(1).as_bytes().to_vec(), &a),
                Op::put(Tree::ApiKeys, AccountId::demo(2).as_bytes().to_vec(), &b),
            ])
            .unwrap();
        backfill_key_owners(&store).unwrap();
        for (digest, id) in [(a, AccountId::demo(1)), (b, AccountId::demo(2))] {
            let owner: Option<AccountId> =
                get_record(&store, Tree::KeyOwners, &codec::encode(&digest)).unwrap();
            assert_eq!(owner, Some(id));
        }
        // Once the index has entries it is left alone (the writers keep it current).
        let c = ApiKey::demo(3).digest();
        store
            .write(vec![Op::put(
                Tree::ApiKeys,
                AccountId::demo(3).as_bytes().to_vec(),
                &c,
            )])
            .unwrap();
        backfill_key_owners(&store).unwrap();
        assert_eq!(
            store.get(Tree::KeyOwners, &codec::encode(&c)).unwrap(),
            None
        );
    }

    #[test]
    fn the_email_index_is_rebuilt_for_stores_from_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let open = |n: u64, email: &str| {
            let new = NewAccount::new("A", email).unwrap();
            let record = AccountRecord::open(AccountId::demo(n), new, Currency::EUR, Utc::now());
            Op::put(
                Tree::Accounts,
                AccountId::demo(n).as_bytes().to_vec(),
                &record,
            )
        };
        store
            .write(vec![
                open(1, "Dup@example.com"),
                open(2, "dup@example.com "),
                open(3, "solo@example.com"),
            ])
            .unwrap();
        backfill_emails(&store).unwrap();
        let owner = |email: &str| -> Option<AccountId> {
            get_record(&store, Tree::Emails, email.as_bytes()).unwrap()
        };
        assert_eq!(owner("dup@example.com"), Some(AccountId::demo(1)));
        assert_eq!(owner("solo@example.com"), Some(AccountId::demo(3)));
        let again = store.write(vec![Op::insert(
            Tree::Emails,
            b"solo@example.com".to_vec(),
            &AccountId::demo(4),
        )]);
        assert!(matches!(again, Err(StoreError::Taken { .. })), "{again:?}");
    }
}
