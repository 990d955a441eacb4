//! Fuzzes the record envelope (`store::codec::decode`) with every record type the store
//! keeps: whatever the bytes, decoding returns a value or a `CodecError`, never panics or
//! aborts; and a value that decodes encodes back to bytes that decode to the same value.
//! Saga records go through the stores' own decoder too (`store::decode_saga`): format
//! version 1, or version 2 with the trace origin as a trailer.
//!
//! Run with: `scripts/fuzz.sh 30` (or `cargo +nightly fuzz run codec_decode` in `fuzz/`).

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wayfare::domain::access::KeyDigest;
use wayfare::domain::account::AccountRecord;
use wayfare::domain::outbox::OutboxEmail;
use wayfare::domain::saga::{BookingRequest, SagaRecord};
use wayfare::domain::wallet::{LedgerEntry, WalletOp};
use wayfare::store::codec::{decode, encode, TRAILERS_VERSION};
use wayfare::store::{decode_saga, encode_saga};

/// Same fields as the private `SeenKey` of `actors/account.rs` (tree `wallet_keys`); bincode
/// is not self-describing, so the same field types decode the same way.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SeenKey {
    op: WalletOp,
    seq: u64,
}

/// Same fields as the private `SeenBooking` of `actors/coordinator.rs` (tree `booking_keys`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SeenBooking {
    request: BookingRequest,
    saga_id: String,
}

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(value) = decode::<T>(bytes) {
        let again: T = decode(&encode(&value)).expect("an encoded record decodes");
        assert_eq!(again, value, "a record changed across encode/decode");
    }
}

/// A saga record as stored (any version) re-encodes as version 3 with the same trace
/// origin and partner calls, and reads back equal.
fn check_saga(bytes: &[u8]) {
    if let Ok(record) = decode_saga(b"fuzz", bytes) {
        let encoded = encode_saga(&record);
        assert_eq!(
            encoded.first(),
            Some(&TRAILERS_VERSION),
            "sagas are written as version 3"
        );
        let again = decode_saga(b"fuzz", &encoded).expect("an encoded saga decodes");
        assert_eq!(again.trace, record.trace, "the trace origin changed");
        assert_eq!(again.calls, record.calls, "the partner calls changed");
        assert_eq!(again, record, "a saga changed across encode/decode");
    }
}

fuzz_target!(|bytes: &[u8]| {
    check_saga(bytes);
    // Every tree's record type, plus the probe (an i64) and the index value (unit).
    check::<AccountRecord>(bytes);
    check::<LedgerEntry>(bytes);
    check::<SeenKey>(bytes);
    check::<SagaRecord>(bytes);
    check::<SeenBooking>(bytes);
    check::<OutboxEmail>(bytes);
    check::<KeyDigest>(bytes);
    check::<i64>(bytes);
    check::<()>(bytes);
});
