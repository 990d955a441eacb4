//! The one place records are turned into bytes and back.
//!
//! Every value is `[format version byte][bincode 2 payload (serde)]`. The version byte lets
//! the format evolve (a later version can decode older records and migrate them), and
//! keeping bincode behind these two functions means the serializer can be swapped without
//! touching actors or the store.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version byte written in front of every record.
pub const FORMAT_VERSION: u8 = 1;

/// Version byte of a record followed by a trailer: a second value, added later to a
/// record type without changing that type's own encoding (bincode is positional, so a
/// new field would make every stored record unreadable). A version-1 record of such a
/// type decodes with a default trailer. Saga records carry their trace origin this way.
pub const TRAILER_VERSION: u8 = 2;

/// Version byte of a record followed by two trailers: a second trailer added to a type
/// that already had one, the same way. A version-2 record of such a type decodes with a
/// default second trailer, a version-1 record with both defaulted. Saga records carry
/// their partner calls this way, after their trace origin.
pub const TRAILERS_VERSION: u8 = 3;

/// Most bytes one record may claim while decoding (16 MiB). bincode sizes a string or
/// byte buffer from its length prefix before reading it; without a bound, a corrupt
/// prefix (say 2^62) makes the allocation fail, and a failed allocation aborts the
/// process instead of returning an error. Real records are a few KiB.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Why bytes could not be decoded into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No bytes at all, not even a version byte.
    #[error("empty record")]
    Empty,
    /// Written by a format this build does not know.
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// The payload does not decode as the expected record.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Encodes a record in the current envelope.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Writing into a Vec cannot fail for our plain record types; a failure here is a
    // broken invariant (a type bincode cannot represent), so say so loudly.
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("records are bincode-serializable");
    out
}

/// Encodes `value` followed by `trailer` ([`TRAILER_VERSION`]).
pub fn encode_with_trailer<T: Serialize, U: Serialize>(value: &T, trailer: &U) -> Vec<u8> {
    let mut out = vec![TRAILER_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("records are bincode-serializable");
    bincode::serde::encode_into_std_write(trailer, &mut out, config())
        .expect("records are bincode-serializable");
    out
}

/// Decodes what [`encode_with_trailer`] wrote, or a record written by [`encode`] before
/// the trailer existed (with a default trailer).
pub fn decode_with_trailer<T: DeserializeOwned, U: DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<(T, U), CodecError> {
    let (&version, payload) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        FORMAT_VERSION => Ok((decode(bytes)?, U::default())),
        TRAILER_VERSION => {
            let corrupt = |e: bincode::error::DecodeError| CodecError::Corrupt(e.to_string());
            let (value, read) =
                bincode::serde::decode_from_slice(payload, config()).map_err(corrupt)?;
            let rest = &payload[read..];
            let (trailer, read) =
                bincode::serde::decode_from_slice(rest, config()).map_err(corrupt)?;
            if read != rest.len() {
                return Err(CodecError::Corrupt(format!(
                    "{} trailing bytes",
                    rest.len() - read
                )));
            }
            Ok((value, trailer))
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

/// Encodes `value` followed by `first` and `second` ([`TRAILERS_VERSION`]).
pub fn encode_with_trailers<T: Serialize, U: Serialize, V: Serialize>(
    value: &T,
    first: &U,
    second: &V,
) -> Vec<u8> {
    let mut out = encode_with_trailer(value, first);
    out[0] = TRAILERS_VERSION;
    bincode::serde::encode_into_std_write(second, &mut out, config())
        .expect("records are bincode-serializable");
    out
}

/// Decodes what [`encode_with_trailers`] wrote, or an older record: one written by
/// [`encode_with_trailer`] (a default second trailer) or by [`encode`] (both defaulted).
pub fn decode_with_trailers<
    T: DeserializeOwned,
    U: DeserializeOwned + Default,
    V: DeserializeOwned + Default,
>(
    bytes: &[u8],
) -> Result<(T, U, V), CodecError> {
    let (&version, payload) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != TRAILERS_VERSION {
        let (value, first) = decode_with_trailer(bytes)?;
        return Ok((value, first, V::default()));
    }
    let corrupt = |e: bincode::error::DecodeError| CodecError::Corrupt(e.to_string());
    let (value, read) = bincode::serde::decode_from_slice(payload, config()).map_err(corrupt)?;
    let rest = &payload[read..];
    let (first, read) = bincode::serde::decode_from_slice(rest, config()).map_err(corrupt)?;
    let rest = &rest[read..];
    let (second, read) = bincode::serde::decode_from_slice(rest, config()).map_err(corrupt)?;
    if read != rest.len() {
        return Err(CodecError::Corrupt(format!(
            "{} trailing bytes",
            rest.len() - read
        )));
    }
    Ok((value, first, second))
}

/// Decodes a record, refusing unknown versions, trailing bytes and garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, payload) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, read) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if read != payload.len() {
        return Err(CodecError::Corrupt(format!(
            "{} trailing bytes",
            payload.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: String,
        amount: i64,
        tags: Vec<String>,
        note: Option<String>,
    }

    #[test]
    fn round_trips_and_refuses_bad_envelopes() {
        let s = Sample {
            id: "a".into(),
            amount: -5,
            tags: vec!["x".into()],
            note: None,
        };
        let bytes = encode(&s);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty));
        let mut future = bytes.clone();
        future[0] = 9;
        assert_eq!(
            decode::<Sample>(&future),
            Err(CodecError::UnknownVersion(9))
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Sample>(&trailing),
            Err(CodecError::Corrupt(_))
        ));
        assert!(matches!(
            decode::<Sample>(&bytes[..bytes.len() - 1]),
            Err(CodecError::Corrupt(_))
        ));
    }

    /// Found by `fuzz/fuzz_targets/codec_decode.rs`: a string whose length prefix claims
    /// 2^62 bytes used to abort the process ("memory allocation failed") instead of being
    /// refused as corrupt.
    #[test]
    fn huge_length_prefixes_are_refused_not_allocated() {
        // Version byte, then varint marker 253 (a u64 follows) and 2^62 little-endian.
        let bytes = [FORMAT_VERSION, 253, 0, 0, 0, 0, 0, 0, 0, 0x40];
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Corrupt(_))
        ));
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CodecError::Corrupt(_))
        ));
        // Just over the bound is refused too, however many bytes follow.
        let mut over = vec![FORMAT_VERSION, 252];
        over.extend_from_slice(&(MAX_RECORD_BYTES as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode::<Vec<u8>>(&over),
            Err(CodecError::Corrupt(_))
        ));
    }

    /// A record written before its type had a trailer (version 1) stays readable, with
    /// the default trailer; a new one keeps both parts; the plain decoder refuses the new
    /// version rather than misreading it.
    #[test]
    fn records_written_before_a_trailer_still_decode() {
        let s = Sample {
            id: "saga-1".into(),
            amount: 7,
            tags: vec![],
            note: Some("n".into()),
        };
        let old = encode(&s);
        let (back, trailer): (Sample, Option<String>) = decode_with_trailer(&old).unwrap();
        assert_eq!((back, trailer), (s.clone_sample(), None));
        let tp = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string());
        let new = encode_with_trailer(&s, &tp);
        assert_eq!(new[0], TRAILER_VERSION);
        let (back, trailer): (Sample, Option<String>) = decode_with_trailer(&new).unwrap();
        assert_eq!((back, trailer), (s.clone_sample(), tp));
        assert_eq!(
            decode::<Sample>(&new),
            Err(CodecError::UnknownVersion(TRAILER_VERSION))
        );
        let mut trailing = new.clone();
        trailing.push(1);
        assert!(decode_with_trailer::<Sample, Option<String>>(&trailing).is_err());
        assert!(decode_with_trailer::<Sample, Option<String>>(&new[..new.len() - 2]).is_err());
    }

    /// Each older layout (no trailer, one trailer) still decodes under the two-trailer
    /// reader, with defaults for what it lacks; a torn or padded new record is refused.
    #[test]
    fn records_written_before_a_second_trailer_still_decode() {
        let s = Sample {
            id: "saga-2".into(),
            amount: 9,
            tags: vec!["t".into()],
            note: None,
        };
        let tp = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string());
        type Read = (Sample, Option<String>, Vec<u32>);
        let v1: Read = decode_with_trailers(&encode(&s)).unwrap();
        assert_eq!(v1, (s.clone_sample(), None, vec![]));
        let v2: Read = decode_with_trailers(&encode_with_trailer(&s, &tp)).unwrap();
        assert_eq!(v2, (s.clone_sample(), tp.clone(), vec![]));
        let new = encode_with_trailers(&s, &tp, &vec![1u32, 2]);
        assert_eq!(new[0], TRAILERS_VERSION);
        let v3: Read = decode_with_trailers(&new).unwrap();
        assert_eq!(v3, (s.clone_sample(), tp, vec![1, 2]));
        let mut padded = new.clone();
        padded.push(0);
        assert!(decode_with_trailers::<Sample, Option<String>, Vec<u32>>(&padded).is_err());
        assert!(
            decode_with_trailers::<Sample, Option<String>, Vec<u32>>(&new[..new.len() - 1])
                .is_err()
        );
        assert_eq!(
            decode_with_trailer::<Sample, Option<String>>(&new),
            Err(CodecError::UnknownVersion(TRAILERS_VERSION))
        );
    }

    impl Sample {
        fn clone_sample(&self) -> Sample {
            Sample {
                id: self.id.clone(),
                amount: self.amount,
                tags: self.tags.clone(),
                note: self.note.clone(),
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Sample>(&bytes);
        }

        #[test]
        fn any_sample_round_trips(id in ".{0,20}", amount in any::<i64>(), tags in proptest::collection::vec(".{0,8}", 0..4), note in proptest::option::of(".{0,8}")) {
            let s = Sample { id, amount, tags, note };
            prop_assert_eq!(decode::<Sample>(&encode(&s)).unwrap(), s);
        }
    }
}
