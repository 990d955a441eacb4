//! Who may act on an account: the rule behind every customer endpoint.
//!
//! The scheme (documented for clients in the README):
//! - opening an account issues an **API key** (`wf_` + 64 hex digits), shown once; the store
//!   keeps only its SHA-256 digest, so a leaked store leaks no usable key;
//! - a customer sends it as `Authorization: Bearer <key>` and may then read and book on
//!   that one account, nothing else;
//! - the **operator token** (`admin.token`) may act on every account, and is the only
//!   credential accepted by operator endpoints and by wallet credits (customers do not
//!   mint their own points).
//!
//! Which status a refusal gets: a missing, malformed or *unknown* credential is
//! 401 (`Unauthenticated`, with `WWW-Authenticate: Bearer` at the HTTP edge); a valid
//! credential without the right is 403 (`Forbidden`). A bearer that is neither the
//! operator token nor shaped like an API key is unknown at once; a well-formed API key is
//! unknown when no account has it, which needs a digest -> account lookup that the
//! caller of [`Caller::may_act_on`] / [`Caller::must_be_operator`] supplies (the account
//! actors and the read model share these two functions, so both apply the same rules).
//!
//! Keys are random (256 bits), so a fast hash is enough: there is nothing to brute-force
//! that a slow KDF would protect. Digests are compared in constant time.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Invalid;

/// Shortest and longest bearer credential accepted (`Authorization: Bearer ...`).
const CREDENTIAL_CHARS: std::ops::RangeInclusive<usize> = 16..=128;

/// A customer's secret API key. `Debug` and `Display` never show it; [`ApiKey::reveal`]
/// does, for the one response that hands it out.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A fresh random key: `wf_` + 32 random bytes in hex.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        ApiKey(format!("wf_{}", hex(&bytes)))
    }

    /// The well-known key of demo account `n` (`wf_demo_000…n`): demo data only, so the
    /// README's examples work on a fresh store. Never enable demo data in production.
    pub fn demo(n: u64) -> Self {
        ApiKey(format!("wf_demo_{n:016}"))
    }

    /// Is `credential` shaped like an API key (a generated or a demo one)? Says nothing
    /// about whether any account has it.
    pub fn is_well_formed(credential: &str) -> bool {
        if let Some(digits) = credential.strip_prefix("wf_demo_") {
            return digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit());
        }
        credential.strip_prefix("wf_").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    /// The key in clear, to hand to its owner once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl Serialize for ApiKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// SHA-256 of a credential: stored for API keys, and what requests carry into the actors,
/// so a clear key never travels past the HTTP edge (or into a log). `Hash` serves the
/// in-memory index of published keys: a digest is not attacker-chosen (finding a key for
/// a given digest is a preimage search), so hashing it leaks nothing a lookup would not.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Digest of a presented credential.
    pub fn of(credential: &str) -> Self {
        KeyDigest(Sha256::digest(credential.as_bytes()).into())
    }

    /// A digest as stored (the 32 bytes of SHA-256).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyDigest(bytes)
    }

    /// The 32 bytes, to store.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Equality in constant time.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short prefix is enough to tell keys apart in a debugger, and useless to a thief.
        write!(f, "KeyDigest({}…)", hex(&self.0[..4]))
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator (a valid `admin.token`), or a program embedding the runtime.
    Operator,
    /// A customer, by the digest of the API key presented.
    Customer(KeyDigest),
    /// No credential at all.
    Anonymous,
}

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No credential was presented, or it was malformed.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is well-formed but not allowed here (operator routes).
    #[error("{0}")]
    Forbidden(String),
    /// A customer's key on another customer's resource: answered exactly like a resource
    /// that does not exist, so ids cannot be probed with a key of one's own.
    #[error("{what} {id} not found")]
    NotYours {
        /// Kind of resource (`account`).
        what: &'static str,
        /// Its id.
        id: String,
    },
}

impl Caller {
    /// Parses the value of an `Authorization` header (absent: anonymous). The scheme is
    /// `Bearer` in any case (RFC 9110 makes auth schemes case-insensitive). `operator` is
    /// the configured operator token, if any; it is compared by SHA-256 digest in constant
    /// time, so neither its content nor its length shows in the time a guess takes.
    pub fn from_authorization(
        header: Option<&str>,
        operator: Option<&str>,
    ) -> Result<Caller, AccessError> {
        let Some(header) = header else {
            return Ok(Caller::Anonymous);
        };
        let credential = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credential)| credential.trim())
            .filter(|c| {
                CREDENTIAL_CHARS.contains(&c.len()) && c.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                AccessError::Unauthenticated(
                    "Authorization must be `Bearer <API key or operator token>`".into(),
                )
            })?;
        let is_operator = operator.is_some_and(|token| {
            let (given, wanted) = (Sha256::digest(credential), Sha256::digest(token));
            bool::from(given.as_slice().ct_eq(wanted.as_slice()))
        });
        if is_operator {
            Ok(Caller::Operator)
        } else if ApiKey::is_well_formed(credential) {
            Ok(Caller::Customer(KeyDigest::of(credential)))
        } else {
            // A mistyped operator token lands here: it is no credential we know, so 401,
            // not a 403 that would suggest it was recognised.
            Err(unknown_credential())
        }
    }

    /// May this caller act on an account whose key digest is `owner` (`None`: the account
    /// has no API key, so only the operator may act on it)? `key_known` answers whether
    /// some account has a given digest; it is asked only when the customer's key is not
    /// this account's, to tell an unknown key (401) from another account's key, which is
    /// answered as if the account did not exist (404, [`AccessError::NotYours`]).
    pub fn may_act_on<E: From<AccessError>>(
        &self,
        account: impl fmt::Display,
        owner: Option<&KeyDigest>,
        key_known: impl FnOnce(&KeyDigest) -> Result<bool, E>,
    ) -> Result<(), E> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Customer(digest) if owner.is_some_and(|o| o.matches(digest)) => Ok(()),
            Caller::Customer(digest) => Err(if key_known(digest)? {
                AccessError::NotYours {
                    what: "account",
                    id: account.to_string(),
                }
            } else {
                unknown_credential()
            }
            .into()),
            Caller::Anonymous => Err(missing_credential().into()),
        }
    }

    /// The caller holds a credential that exists (the operator token, or some account's
    /// current key): asked before anything the caller names is looked up, so an unknown
    /// key gets the same 401 whether or not the thing exists.
    pub fn must_be_known<E: From<AccessError>>(
        &self,
        key_known: impl FnOnce(&KeyDigest) -> Result<bool, E>,
    ) -> Result<(), E> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Customer(digest) if key_known(digest)? => Ok(()),
            Caller::Customer(_) => Err(unknown_credential().into()),
            Caller::Anonymous => Err(missing_credential().into()),
        }
    }

    /// Only the operator may do this. `key_known` as for [`may_act_on`](Self::may_act_on).
    pub fn must_be_operator<E: From<AccessError>>(
        &self,
        what: &str,
        key_known: impl FnOnce(&KeyDigest) -> Result<bool, E>,
    ) -> Result<(), E> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Customer(digest) => Err(if key_known(digest)? {
                AccessError::Forbidden(format!(
                    "{what} needs the operator token; an API key is not enough"
                ))
            } else {
                unknown_credential()
            }
            .into()),
            Caller::Anonymous => Err(missing_credential().into()),
        }
    }
}

fn missing_credential() -> AccessError {
    AccessError::Unauthenticated(
        "send Authorization: Bearer <API key> (or the operator token)".into(),
    )
}

fn unknown_credential() -> AccessError {
    AccessError::Unauthenticated(
        "unknown credential: neither a current API key nor the operator token".into(),
    )
}

/// Validates a credential given outside a header (config, CLI).
pub fn validate_token(field: &str, token: &str) -> Result<(), Invalid> {
    if CREDENTIAL_CHARS.contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "must be {} to {} printable ASCII characters without spaces",
                CREDENTIAL_CHARS.start(),
                CREDENTIAL_CHARS.end()
            ),
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "operator-token-0123456789";

    fn caller(header: Option<&str>) -> Result<Caller, AccessError> {
        Caller::from_authorization(header, Some(OPERATOR))
    }

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        assert_ne!(a, b);
        assert_eq!(a.reveal().len(), 3 + 64);
        assert!(validate_token("k", a.reveal()).is_ok());
        assert!(validate_token("k", ApiKey::demo(7).reveal()).is_ok());
        assert_eq!(format!("{a:?}"), "ApiKey(<redacted>)");
        assert!(!format!("{:?}", a.digest()).contains(&a.reveal()[3..20]));
    }

    #[test]
    fn header_parsing() {
        assert_eq!(caller(None), Ok(Caller::Anonymous));
        let bearer = format!("Bearer {OPERATOR}");
        assert_eq!(caller(Some(&bearer)), Ok(Caller::Operator));
        let key = ApiKey::generate();
        let bearer = format!("Bearer {}", key.reveal());
        assert_eq!(caller(Some(&bearer)), Ok(Caller::Customer(key.digest())));
        // The scheme's case does not matter.
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let header = format!("{scheme} {OPERATOR}");
            assert_eq!(caller(Some(&header)), Ok(Caller::Operator), "{scheme}");
        }
        for bad in [
            "Basic abc",
            "Bearer ",
            "Bearer short",
            "bearer x",
            "Bearerx abcdefghijklmnopqrstuvwxyz",
            "Bearer a b c d e f g h i",
        ] {
            assert!(
                matches!(caller(Some(bad)), Err(AccessError::Unauthenticated(_))),
                "{bad}"
            );
        }
        // A mistyped operator token is no credential at all: 401, not 403.
        let bearer = format!("Bearer {OPERATOR}x");
        assert!(matches!(
            caller(Some(&bearer)),
            Err(AccessError::Unauthenticated(_))
        ));
        // Without a configured operator token, the operator's would-be token is unknown too.
        let bearer = format!("Bearer {OPERATOR}");
        assert!(matches!(
            Caller::from_authorization(Some(&bearer), None),
            Err(AccessError::Unauthenticated(_))
        ));
        // Demo keys are API keys; almost-keys are not.
        let bearer = format!("Bearer {}", ApiKey::demo(3).reveal());
        assert!(matches!(caller(Some(&bearer)), Ok(Caller::Customer(_))));
        for bad in ["Bearer wf_demo_12", "Bearer wf_demo_000000000000000x"] {
            assert!(
                matches!(caller(Some(bad)), Err(AccessError::Unauthenticated(_))),
                "{bad}"
            );
        }
        let upper = format!(
            "Bearer {}",
            key.reveal().to_uppercase().replacen("WF_", "wf_", 1)
        );
        assert!(matches!(
            caller(Some(&upper)),
            Err(AccessError::Unauthenticated(_))
        ));
    }

    #[test]
    fn only_the_owner_or_the_operator_may_act() {
        let owner = ApiKey::generate();
        let other = ApiKey::generate();
        let stranger = ApiKey::generate();
        let known = |d: &KeyDigest| Ok::<_, AccessError>(*d != stranger.digest());
        let id = "acct";
        assert!(Caller::Operator.may_act_on(id, None, known).is_ok());
        assert!(Caller::Operator
            .may_act_on(id, Some(&owner.digest()), known)
            .is_ok());
        assert!(Caller::Customer(owner.digest())
            .may_act_on(id, Some(&owner.digest()), known)
            .is_ok());
        // Another account's key: answered as if the account did not exist.
        assert!(matches!(
            Caller::Customer(other.digest()).may_act_on(id, Some(&owner.digest()), known),
            Err(AccessError::NotYours {
                what: "account",
                ..
            })
        ));
        assert!(matches!(
            Caller::Customer(owner.digest()).may_act_on(id, None, known),
            Err(AccessError::NotYours { .. })
        ));
        // A well-formed key that no account has: unknown, so 401.
        assert!(matches!(
            Caller::Customer(stranger.digest()).may_act_on(id, Some(&owner.digest()), known),
            Err(AccessError::Unauthenticated(_))
        ));
        assert!(matches!(
            Caller::Anonymous.may_act_on(id, Some(&owner.digest()), known),
            Err(AccessError::Unauthenticated(_))
        ));
        assert!(Caller::Operator.must_be_operator("x", known).is_ok());
        assert!(matches!(
            Caller::Customer(owner.digest()).must_be_operator("x", known),
            Err(AccessError::Forbidden(_))
        ));
        assert!(matches!(
            Caller::Customer(stranger.digest()).must_be_operator("x", known),
            Err(AccessError::Unauthenticated(_))
        ));
        assert!(matches!(
            Caller::Anonymous.must_be_operator("x", known),
            Err(AccessError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_failed_lookup_is_reported_not_guessed() {
        let owner = ApiKey::generate();
        let failing = |_: &KeyDigest| Err::<bool, _>(AccessError::Forbidden("lookup".into()));
        let other = Caller::Customer(ApiKey::generate().digest());
        assert_eq!(
            other.may_act_on("acct", Some(&owner.digest()), failing),
            Err(AccessError::Forbidden("lookup".into()))
        );
        // The owner needs no lookup at all.
        assert!(Caller::Customer(owner.digest())
            .may_act_on("acct", Some(&owner.digest()), failing)
            .is_ok());
    }
}
