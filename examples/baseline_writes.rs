//! The bare twin of wayfare's bookings: a loop that makes, per "booking",
//! the same durable sled writes one happy-path booking saga makes, through the same
//! `SledStore` (same sled config, the same writes in order or in transactions, same
//! group-commit flusher thread), with no HTTP, no actors, no seller or gateway calls, no metrics.
//!
//! What one booking writes in wayfare, as `scripts/bench-search-bookings.sh` (section 4)
//! and `scripts/bench-twins.sh` drive it: `examples/load.rs` books with
//! `wallet_points = 0` and `card_token = tok_approve`, so `domain::saga::normalize` skips
//! the wallet hold and the wallet capture; the account shard (`src/actors/account.rs`)
//! writes nothing, and the simulated seller and gateway keep their state in memory.
//!
//! | # | where | ops in the one write (`write_in_order` for 1 and 4, saga record last) | flush |
//! |---|---|---|---|
//! | 1 | `SagaCoordinator` `StartBooking` (`src/actors/coordinator.rs`): before the 202 | put `booking_keys/{account}/{key}` (`SeenBooking`), put `account_bookings/{account}/{id}`, put `sagas/{id}` (`pending`) | yes |
//! | 2 | `BookingSaga` `persist` (`src/actors/booking.rs`) after the gateway authorized | put `sagas/{id}` (`payment_authorized`) | yes |
//! | 3 | `persist` after the seller reserved | put `sagas/{id}` (`seller_confirmed`) | yes |
//! | 4 | `persist` after the gateway captured: `confirmed`, with its email | put `outbox/{id}:email:confirmed`, put `sagas/{id}` (`confirmed`) | yes |
//! | 5 | `Mailer` drain (`src/actors/notify.rs`) once the email is sent | delete `outbox/{id}:email:confirmed` | no |
//!
//! So 5 sled writes of which 4 are flushed (4 disk syncs asked for, shared with whoever
//! else waits: group commit). Besides sled, the default mail transport (`FileTransport`)
//! appends each email as a JSON line to `outbox.log` in the data dir and calls
//! `sync_data` (fdatasync) before the outbox entry is deleted: one more disk sync per
//! booking, one email at a time on the mailer's blocking thread, off the saga's path (the
//! saga is `confirmed` before the mailer sees it). The twin does that too, on a thread of
//! its own (`--no-mail-file` leaves it out). A booking paid partly with wallet points would
//! add 2 more flushed writes in the account shard (hold, then capture: account record,
//! ledger entry, wallet key), i.e. 7 sled writes and 6 flushes; pass `--wallet` for that
//! shape.
//!
//! The values are real: wayfare's own `new_booking`, `apply` and `email_for` build one
//! saga's records along the happy path at start-up, encoded with wayfare's codec; each
//! booking writes those bytes under its own fresh keys.
//!
//! The shape mirrors the HTTP load: `--clients` tasks (64, like load.rs's connections) each
//! make write 1 and wait for its flush (wayfare answers the POST then), then hand the rest
//! of the booking to a task of its own and start the next booking at once, so sagas in
//! flight are not capped at the number of clients (as in wayfare, which caps them at
//! `bookings.max_in_flight`, 10,000: the twin has no cap and stays far below). After `--duration` no
//! booking starts; the run ends when the last one finishes. Bookings/s = bookings finished /
//! time from the first write to the last (the end-to-end figure of section 4).
//!
//! Latencies per booking, from the start of write 1:
//! - `confirmed`: until write 4 starts, which is when wayfare stamps `confirmed` in the
//!   saga's history (before its last write and flush): the same interval as
//!   `scripts/booking_latency.py`'s POST -> confirmed, which runs from the `pending` stamp
//!   (taken just before write 1) to that `confirmed` stamp;
//! - `durable`: until write 4's flush completed;
//! - `post`: write 1 and its flush (what a client waits for before its 202).
//!
//! Ends with one machine-readable line (writes and flushes are sled's, counted until the
//! last booking finished; emails = mail-file syncs done by then):
//!   TWIN_RESULT bookings=N secs=S bookings_per_s=R writes_per_s=W flushes_per_s=F emails=E
//!     confirmed_p50_ms=.. confirmed_p99_ms=.. durable_p99_ms=.. post_p99_ms=..
//!
//! Run with: cargo run --release --example baseline_writes -- --data-dir /tmp/twin-data --duration 10

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;
use wayfare::domain::account::AccountId;
use wayfare::domain::saga::{
    apply, email_for, new_booking, BookingId, BookingRequest, SagaConfig, SagaRecord, SagaState,
    StepOutcome,
};
use wayfare::store::codec::encode;
use wayfare::store::{Op, SledStore, Store, Tree};
use wayfare::{Currency, Money};

/// Largest latency the histograms hold.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Parser, Debug)]
#[command(about = "Bare loop of the durable sled writes of wayfare's booking sagas")]
struct Args {
    /// A fresh directory for the sled store (created; refused if it holds a store already).
    #[arg(long)]
    data_dir: PathBuf,
    /// Concurrent clients, each starting its next booking once its first write is durable.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long new bookings start, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Demo accounts the bookings are spread over (keys only).
    #[arg(long, default_value_t = 10)]
    accounts: u64,
    /// Runtime threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Add the account shard's wallet hold and capture (2 flushed writes more per booking),
    /// as a booking paid partly with points would.
    #[arg(long)]
    wallet: bool,
    /// Leave out the mail file: no `outbox.log` append + fdatasync per booking (the outbox
    /// entry is then deleted right after the confirmed write).
    #[arg(long)]
    no_mail_file: bool,
}

/// What wayfare's `SagaCoordinator` stores under a client's idempotency key (a private
/// type there; same fields, so the same encoding).
#[derive(Serialize)]
struct SeenBooking {
    request: BookingRequest,
    saga_id: String,
}

/// The encoded values of one happy-path saga, written again by every booking.
struct Values {
    pending: Vec<u8>,
    seen: Vec<u8>,
    unit: Vec<u8>,
    authorized: Vec<u8>,
    reserved: Vec<u8>,
    confirmed: Vec<u8>,
    email: Vec<u8>,
    /// The email as `FileTransport` writes it (one JSON line).
    email_line: String,
    /// Account record, ledger entry and wallet key of a hold or capture (`--wallet`).
    wallet: [Vec<u8>; 3],
}

impl Values {
    /// Runs wayfare's saga state machine along the happy path of a load.rs booking.
    fn build() -> anyhow::Result<Self> {
        let now = Utc::now();
        let day = now.date_naive() + chrono::Days::new(30);
        let request = BookingRequest {
            account_id: AccountId::demo(0),
            seller: "alpha".into(),
            sku: "hotel:lisbon:h1:double".into(),
            start: day,
            end: day + chrono::Days::new(2),
            wallet_points: Money::zero(Currency::EUR),
            card_token: "tok_approve".into(),
            offer_price: Money::new(20_000, Currency::EUR),
            idempotency_key: "load-0123456789abcdef-12-3456".into(),
        };
        let id = BookingId::new();
        let cfg = SagaConfig::default();
        let mut record = new_booking(id, request.clone(), now)?;
        let pending = encode(&record);
        let step = |record: &mut SagaRecord, outcome, want: SagaState| {
            let tr = apply(record, outcome, &cfg, now)?;
            if record.state != want {
                bail!(
                    "expected {want:?} on the happy path, got {:?}",
                    record.state
                );
            }
            Ok(tr)
        };
        step(
            &mut record,
            StepOutcome::Authorized {
                authorization_id: "auth_1a2b3c4d_000001".into(),
                amount: request.offer_price,
            },
            SagaState::PaymentAuthorized,
        )?;
        let authorized = encode(&record);
        step(
            &mut record,
            StepOutcome::Reserved {
                reservation_id: "alpha-1".into(),
                price: request.offer_price,
            },
            SagaState::SellerConfirmed,
        )?;
        let reserved = encode(&record);
        let tr = step(
            &mut record,
            StepOutcome::Captured {
                capture_id: "cap_1a2b3c4d_000002".into(),
                amount: request.offer_price,
            },
            SagaState::Confirmed,
        )?;
        let confirmed = encode(&record);
        let Some(kind) = tr.email else {
            bail!("the confirmed transition carries no email");
        };
        let email = email_for(&record, kind, "person0@example.com", now);
        let seen = SeenBooking {
            request,
            saga_id: id.to_string(),
        };
        // A wallet change writes the account record (~100 bytes with one hold), a ledger
        // entry and the idempotency key's receipt; sizes of that order.
        let wallet = [vec![0x5a; 110], vec![0x5a; 90], vec![0x5a; 60]];
        Ok(Values {
            pending,
            seen: encode(&seen),
            unit: encode(&()),
            authorized,
            reserved,
            confirmed,
            email: encode(&email),
            email_line: serde_json::to_string(&email)? + "\n",
            wallet,
        })
    }
}

fn put(tree: Tree, key: &str, value: &[u8]) -> Op {
    Op::Put {
        tree,
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
    }
}

/// Shared by every task.
struct Run {
    store: SledStore,
    values: Values,
    accounts: u64,
    wallet: bool,
    /// The mailer thread's queue (outbox keys), unless `--no-mail-file`.
    mail: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    started: Instant,
    stop_at: Instant,
    /// Every sled write, the mailer's deletes included.
    writes: Arc<AtomicU64>,
    flushes: AtomicU64,
    bookings: AtomicU64,
    /// Time of the last finished booking, in µs since `started`.
    last_done_us: AtomicU64,
    histograms: Mutex<Histograms>,
}

struct Histograms {
    confirmed: Histogram<u64>,
    durable: Histogram<u64>,
    post: Histogram<u64>,
}

impl Run {
    /// One store write, flushed or not (a flush is awaited like wayfare's callers do).
    async fn write(&self, ops: Vec<Op>, flush: bool) -> anyhow::Result<()> {
        self.store.write(ops)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if flush {
            self.store.flush().await?;
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A flushed multi-record saga write, made as wayfare's `SledSagas` makes it: in
    /// order, without a sled transaction (the saga record last).
    async fn write_in_order(&self, ops: Vec<Op>) -> anyhow::Result<()> {
        self.store.write_in_order(ops)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.store.flush().await?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The account shard's durable wallet change (`--wallet` only).
    async fn wallet_change(&self, account: &str, key: &str) -> anyhow::Result<()> {
        let [record, entry, receipt] = &self.values.wallet;
        self.write(
            vec![
                put(Tree::Accounts, account, record),
                put(Tree::Ledger, &format!("{account}/{key}"), entry),
                put(Tree::WalletKeys, &format!("{account}/{key}"), receipt),
            ],
            true,
        )
        .await
    }
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// Writes 2 to 5 of one booking (after write 1 was flushed at `t0`).
async fn rest_of_saga(
    run: Arc<Run>,
    id: String,
    account: String,
    t0: Instant,
) -> anyhow::Result<()> {
    let v = &run.values;
    if run.wallet {
        run.wallet_change(&account, &format!("{id}/hold")).await?;
    }
    run.write(vec![put(Tree::Sagas, &id, &v.authorized)], true)
        .await?;
    run.write(vec![put(Tree::Sagas, &id, &v.reserved)], true)
        .await?;
    if run.wallet {
        run.wallet_change(&account, &format!("{id}/capture"))
            .await?;
    }
    // Wayfare stamps `confirmed` in the history here, then writes and flushes it.
    let confirmed = t0.elapsed();
    let email_key = format!("{id}:email:confirmed");
    run.write_in_order(vec![
        put(Tree::Outbox, &email_key, &v.email),
        put(Tree::Sagas, &id, &v.confirmed),
    ])
    .await?;
    let durable = t0.elapsed();
    let outbox_key = email_key.into_bytes();
    match &run.mail {
        // The mailer sends it, then deletes the entry (wayfare's `Mailer`).
        Some(mail) => {
            let _ = mail.send(outbox_key);
        }
        None => {
            run.write(
                vec![Op::Delete {
                    tree: Tree::Outbox,
                    key: outbox_key,
                }],
                false,
            )
            .await?
        }
    }
    {
        let mut h = run.histograms.lock().unwrap_or_else(|p| p.into_inner());
        h.confirmed.saturating_record(us(confirmed));
        h.durable.saturating_record(us(durable));
    }
    run.bookings.fetch_add(1, Ordering::Relaxed);
    run.last_done_us
        .fetch_max(us(run.started.elapsed()), Ordering::Relaxed);
    Ok(())
}

/// One client: start a booking, wait for its first write to be durable, hand the rest to
/// its own task, start the next.
async fn client(
    run: Arc<Run>,
    index: usize,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut sagas = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < run.stop_at {
        seq += 1;
        let account = AccountId::demo(seq % run.accounts).to_string();
        let id = BookingId::new().to_string();
        let key = format!("{account}/load-twin-{index}-{seq}");
        let index_key = format!("{account}/{id}");
        let v = &run.values;
        let t0 = Instant::now();
        // Existence check of the key first, as `SledSagas::create_booking` does.
        let _ = run.store.get(Tree::BookingKeys, key.as_bytes())?;
        run.write_in_order(vec![
            put(Tree::BookingKeys, &key, &v.seen),
            put(Tree::AccountBookings, &index_key, &v.unit),
            put(Tree::Sagas, &id, &v.pending),
        ])
        .await?;
        run.histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .post
            .saturating_record(us(t0.elapsed()));
        sagas.push(tokio::spawn(rest_of_saga(run.clone(), id, account, t0)));
    }
    Ok(sagas)
}

/// Wayfare's `Mailer` with its default `FileTransport`, one email at a time: append the
/// line to `outbox.log` (opened for each email, as `FileTransport::send` does), fdatasync,
/// then delete the outbox entry without a flush.
fn mailer(
    store: SledStore,
    path: PathBuf,
    line: String,
    queue: std::sync::mpsc::Receiver<Vec<u8>>,
    sent: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    for key in queue {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        sent.fetch_add(1, Ordering::Relaxed);
        store.write(vec![Op::Delete {
            tree: Tree::Outbox,
            key,
        }])?;
        writes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.accounts == 0 {
        bail!("--clients and --accounts must be at least 1");
    }
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    if args.data_dir.join("db").exists() {
        bail!(
            "{} holds a store already; give a fresh directory",
            args.data_dir.display()
        );
    }
    let store = SledStore::open(&args.data_dir)
        .with_context(|| format!("cannot open a store in {}", args.data_dir.display()))?;
    let values = Values::build()?;
    println!(
        "value sizes (bytes): pending {}, seen-key {}, index {}, authorized {}, reserved {}, confirmed {}, email {}",
        values.pending.len(),
        values.seen.len(),
        values.unit.len(),
        values.authorized.len(),
        values.reserved.len(),
        values.confirmed.len(),
        values.email.len()
    );
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3);
    let histograms = Histograms {
        confirmed: histogram()?,
        durable: histogram()?,
        post: histogram()?,
    };
    let emails = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let (mail, mailer_thread) = if args.no_mail_file {
        (None, None)
    } else {
        let (tx, rx) = std::sync::mpsc::channel();
        let (store, sent, deleted) = (store.clone(), emails.clone(), writes.clone());
        let path = args.data_dir.join("outbox.log");
        let line = values.email_line.clone();
        let thread = std::thread::Builder::new()
            .name("twin-mailer".into())
            .spawn(move || mailer(store, path, line, rx, sent, deleted))?;
        (Some(tx), Some(thread))
    };
    let started = Instant::now();
    let run = Arc::new(Run {
        store,
        values,
        accounts: args.accounts,
        wallet: args.wallet,
        mail,
        started,
        stop_at: started + Duration::from_secs_f64(args.duration),
        writes: writes.clone(),
        flushes: AtomicU64::new(0),
        bookings: AtomicU64::new(0),
        last_done_us: AtomicU64::new(0),
        histograms: Mutex::new(histograms),
    });
    rt.block_on(async {
        let clients: Vec<_> = (0..args.clients)
            .map(|i| tokio::spawn(client(run.clone(), i)))
            .collect();
        for c in clients {
            for saga in c.await?? {
                saga.await??;
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let Ok(run) = Arc::try_unwrap(run) else {
        bail!("a booking task outlived the run");
    };
    let secs = (run.last_done_us.load(Ordering::Relaxed) as f64 / 1e6).max(1e-6);
    let bookings = run.bookings.load(Ordering::Relaxed);
    let writes = run.writes.load(Ordering::Relaxed);
    let flushes = run.flushes.load(Ordering::Relaxed);
    let emails_by_then = emails.load(Ordering::Relaxed);
    let h = run
        .histograms
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    // Let the mailer finish its queue (not timed: wayfare's figure does not wait for it).
    drop(run.mail);
    if let Some(thread) = mailer_thread {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the mailer thread panicked"))??;
    }
    println!(
        "{bookings} bookings ({writes} sled writes, {flushes} flushed, {emails_by_then} mail-file \
         syncs) in {secs:.1} s from the first write to the last: {:.0} bookings/s; confirmed p50 {:.1} ms p99 {:.1} ms, durable p99 \
         {:.1} ms, first write p99 {:.1} ms",
        bookings as f64 / secs,
        ms(&h.confirmed, 0.5),
        ms(&h.confirmed, 0.99),
        ms(&h.durable, 0.99),
        ms(&h.post, 0.99)
    );
    println!(
        "TWIN_RESULT bookings={bookings} secs={secs:.3} bookings_per_s={:.1} writes_per_s={:.1} \
         flushes_per_s={:.1} emails={emails_by_then} confirmed_p50_ms={:.3} confirmed_p99_ms={:.3} \
         durable_p99_ms={:.3} post_p99_ms={:.3}",
        bookings as f64 / secs,
        writes as f64 / secs,
        flushes as f64 / secs,
        ms(&h.confirmed, 0.5),
        ms(&h.confirmed, 0.99),
        ms(&h.durable, 0.99),
        ms(&h.post, 0.99)
    );
    Ok(())
}
