//! Costs of the plain domain rules and of the write paths under the account actors:
//! - the codec (version byte + bincode 2) on an `AccountRecord` and a booking `SagaRecord`;
//! - `merge_offers` over 30 and 300 offers (three sellers quoting each SKU);
//! - `Wallet::apply` for a credit and a hold;
//! - a wallet credit through `Runtime::credit_wallet` (ledger entry + record + key in one
//!   write, flushed before the reply: the durable path), against a raw `SledStore::write`
//!   of one record without a flush, and the same raw write followed by a flush.
//!
//! Run with: cargo bench --bench domain

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion};
use wayfare::domain::account::{AccountId, AccountRecord, NewAccount};
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::saga::{self, BookingRequest, SagaRecord};
use wayfare::domain::search::merge_offers;
use wayfare::domain::wallet::WalletOp;
use wayfare::sellers::{HotelDetails, Offer, OfferDetails};
use wayfare::store::{codec, Op, SledStore, Store, Tree};
use wayfare::{Config, Runtime};

const EUR: Currency = Currency::EUR;

fn eur(minor: i64) -> Money {
    Money::new(minor, EUR)
}

/// A demo-sized account with a few wallet movements and one open hold.
fn account_record() -> AccountRecord {
    let new = NewAccount::new("Ada Lovelace", "ada@example.com").expect("valid account");
    let mut record = AccountRecord::open(AccountId::demo(1), new, EUR, Utc::now());
    for op in [
        WalletOp::Credit {
            amount: eur(10_000),
        },
        WalletOp::Hold {
            hold_id: "booking-7f3a".into(),
            amount: eur(2_500),
        },
    ] {
        record.wallet = record.wallet.apply(&op).expect("valid op").0;
        record.next_seq += 1;
    }
    record
}

fn saga_record() -> SagaRecord {
    let request = BookingRequest {
        account_id: AccountId::demo(1),
        seller: "alpha".into(),
        sku: "hotel:lisbon:h3:double".into(),
        start: NaiveDate::from_ymd_opt(2027, 5, 1).expect("date"),
        end: NaiveDate::from_ymd_opt(2027, 5, 3).expect("date"),
        wallet_points: eur(5_000),
        card_token: "tok_approve".into(),
        offer_price: eur(30_000),
        idempotency_key: "idem-bench-1".into(),
    };
    saga::new_booking(
        saga::BookingId(uuid::Uuid::from_u128(1)),
        request,
        Utc::now(),
    )
    .expect("valid booking")
}

/// `n` hotel offers: every SKU quoted by three sellers at different prices.
fn offers(n: usize) -> Vec<Offer> {
    let check_in = NaiveDate::from_ymd_opt(2027, 5, 1).expect("date");
    let check_out = NaiveDate::from_ymd_opt(2027, 5, 3).expect("date");
    (0..n)
        .map(|i| {
            let hotel = i / 3;
            Offer {
                seller: ["alpha", "beta", "gamma"][i % 3].to_owned(),
                sku: format!("hotel:lisbon:h{hotel}:double"),
                title: format!("Hotel {hotel}, double room, 2 nights"),
                price: eur(10_000 + ((i * 7919) % 5_000) as i64),
                details: OfferDetails::Hotel(HotelDetails {
                    city: "Lisbon".into(),
                    hotel: format!("Hotel {hotel}"),
                    room: "double".into(),
                    check_in,
                    check_out,
                    nights: 2,
                }),
            }
        })
        .collect()
}

fn codec_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let account = account_record();
    let account_bytes = codec::encode(&account);
    g.bench_function("encode_account_record", |b| {
        b.iter(|| codec::encode(std::hint::black_box(&account)))
    });
    g.bench_function("decode_account_record", |b| {
        b.iter(|| {
            codec::decode::<AccountRecord>(std::hint::black_box(&account_bytes)).expect("decodes")
        })
    });
    let saga = saga_record();
    let saga_bytes = codec::encode(&saga);
    g.bench_function("encode_saga_record", |b| {
        b.iter(|| codec::encode(std::hint::black_box(&saga)))
    });
    g.bench_function("decode_saga_record", |b| {
        b.iter(|| codec::decode::<SagaRecord>(std::hint::black_box(&saga_bytes)).expect("decodes"))
    });
    g.finish();
    println!(
        "encoded sizes: AccountRecord {} bytes, SagaRecord {} bytes",
        account_bytes.len(),
        saga_bytes.len()
    );
}

fn search_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_offers");
    for n in [30, 300] {
        let input = offers(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &input, |b, input| {
            // The clone is setup (merge_offers takes ownership) and is not timed.
            b.iter_batched(
                || input.clone(),
                |o| merge_offers(o, EUR),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn wallet_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("wallet_apply");
    let wallet = account_record().wallet;
    let credit = WalletOp::Credit { amount: eur(100) };
    let hold = WalletOp::Hold {
        hold_id: "booking-91c2".into(),
        amount: eur(1_000),
    };
    g.bench_function("credit", |b| {
        b.iter(|| wallet.apply(std::hint::black_box(&credit)).expect("ok"))
    });
    g.bench_function("hold", |b| {
        b.iter(|| wallet.apply(std::hint::black_box(&hold)).expect("ok"))
    });
    g.finish();
}

fn write_path_benches(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let runtime_dir = tempfile::tempdir().expect("temp dir");
    let raw_dir = tempfile::tempdir().expect("temp dir");
    let runtime = system.block_on(async {
        let mut config = Config::default();
        config.store.data_dir = runtime_dir.path().to_owned();
        config.demo.accounts = 1;
        Runtime::start(config).await.expect("runtime starts")
    });
    let raw = SledStore::open(raw_dir.path()).expect("store opens");
    let id = AccountId::demo(0);
    let record = account_record();

    let mut g = c.benchmark_group("wallet_credit");
    let mut key = 0u64;
    g.bench_function("runtime_credit_wallet_flushed", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    key += 1;
                    runtime
                        .credit_wallet(id, &format!("bench-{key}"), eur(1))
                        .await
                        .expect("credit");
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("raw_sled_write_no_flush", |b| {
        b.iter(|| {
            raw.write(vec![Op::put(
                Tree::Accounts,
                id.as_bytes().to_vec(),
                &record,
            )])
            .expect("write")
        })
    });
    g.bench_function("raw_sled_write_then_flush", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.write(vec![Op::put(
                        Tree::Accounts,
                        id.as_bytes().to_vec(),
                        &record,
                    )])
                    .expect("write");
                    raw.flush().await.expect("flush");
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    system.block_on(runtime.shutdown()).expect("clean shutdown");
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    codec_benches(&mut c);
    search_benches(&mut c);
    wallet_benches(&mut c);
    write_path_benches(&mut c);
    c.final_summary();
}
