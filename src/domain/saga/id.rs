//! Typed saga ids. A booking is named by a [`BookingId`] (a UUID); its saga has the same
//! id, and the saga that cancels it is the booking's id with `:cancel` appended. The
//! textual forms (`"{uuid}"`, `"{uuid}:cancel"`) are what the store keys and the API use,
//! so they are parsed and printed only here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Suffix of a cancellation saga's textual id.
const CANCEL_SUFFIX: &str = ":cancel";

/// A booking (and its booking saga): a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BookingId(pub Uuid);

impl BookingId {
    /// A fresh random id.
    pub fn new() -> Self {
        BookingId(Uuid::new_v4())
    }
}

impl Default for BookingId {
    fn default() -> Self {
        BookingId::new()
    }
}

impl fmt::Display for BookingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A text that is not a booking or saga id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a {1}")]
pub struct IdError(String, &'static str);

impl FromStr for BookingId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Uuid::try_parse(s)
            .map(BookingId)
            .map_err(|_| IdError(s.to_owned(), "booking id (a UUID)"))
    }
}

/// A saga: the booking saga of a booking, or the saga cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SagaId {
    /// The saga that books: textual form `"{uuid}"`.
    Booking(BookingId),
    /// The saga that cancels a confirmed booking: `"{uuid}:cancel"`.
    Cancellation(BookingId),
}

impl SagaId {
    /// The booking this saga is about.
    pub fn booking(self) -> BookingId {
        match self {
            SagaId::Booking(b) | SagaId::Cancellation(b) => b,
        }
    }

    /// The saga that cancels this saga's booking.
    pub fn cancellation(self) -> SagaId {
        SagaId::Cancellation(self.booking())
    }
}

impl From<BookingId> for SagaId {
    fn from(id: BookingId) -> Self {
        SagaId::Booking(id)
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SagaId::Booking(b) => b.fmt(f),
            SagaId::Cancellation(b) => write!(f, "{b}{CANCEL_SUFFIX}"),
        }
    }
}

impl FromStr for SagaId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError(s.to_owned(), "saga id (a UUID, or a UUID and :cancel)");
        match s.strip_suffix(CANCEL_SUFFIX) {
            Some(base) => base.parse().map(SagaId::Cancellation).map_err(|_| bad()),
            None => s.parse().map(SagaId::Booking).map_err(|_| bad()),
        }
    }
}

/// Serialized as its textual form, like [`SagaId`].
impl Serialize for BookingId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BookingId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serialized as its textual form: the same bytes as the `String` ids stored before.
impl Serialize for SagaId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SagaId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde of an id as its text (`Display` / `FromStr`), whatever the format: saga records
/// keep every id as text, so a binary format stores the same bytes as for a `String`.
pub(crate) mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<T: Display, S: Serializer>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textual_forms_round_trip_and_bad_ones_are_refused() {
        let b = BookingId::new();
        let booking = SagaId::Booking(b);
        let cancel = booking.cancellation();
        assert_eq!(booking.to_string(), b.0.to_string());
        assert_eq!(cancel.to_string(), format!("{}:cancel", b.0));
        assert_eq!(booking.to_string().parse::<SagaId>(), Ok(booking));
        assert_eq!(cancel.to_string().parse::<SagaId>(), Ok(cancel));
        assert_eq!(cancel.booking(), b);
        for bad in ["", "b1", ":cancel", "nope:cancel", &format!("{}:undo", b.0)] {
            assert!(bad.parse::<SagaId>().is_err(), "{bad}");
        }
        assert!(format!("{}:cancel", b.0).parse::<BookingId>().is_err());
    }

    #[test]
    fn serialized_like_the_string_ids_stored_before() {
        let id = SagaId::Cancellation(BookingId::new());
        let cfg = bincode::config::standard();
        let typed = bincode::serde::encode_to_vec(id, cfg).unwrap();
        let text = bincode::serde::encode_to_vec(id.to_string(), cfg).unwrap();
        assert_eq!(typed, text);
        let (back, _): (SagaId, usize) = bincode::serde::decode_from_slice(&text, cfg).unwrap();
        assert_eq!(back, id);
    }

    /// Saga records written before ids were typed held the account id as a `String`: the
    /// typed field must read them and write the same bytes.
    #[test]
    fn account_ids_in_records_keep_their_text_layout() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Typed {
            #[serde(with = "as_text")]
            account_id: crate::domain::account::AccountId,
        }
        #[derive(serde::Serialize)]
        struct Before {
            account_id: String,
        }
        let id = crate::domain::account::AccountId::demo(7);
        let cfg = bincode::config::standard();
        let typed = bincode::serde::encode_to_vec(Typed { account_id: id }, cfg).unwrap();
        let before = bincode::serde::encode_to_vec(
            Before {
                account_id: id.to_string(),
            },
            cfg,
        )
        .unwrap();
        assert_eq!(typed, before);
        let (back, _): (Typed, usize) = bincode::serde::decode_from_slice(&before, cfg).unwrap();
        assert_eq!(back.account_id, id);
    }
}
