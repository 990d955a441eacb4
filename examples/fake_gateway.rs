//! A fake card gateway speaking wayfare's payment wire format
//! (`docs/payment-wire-format.md`), for demos, drills and crash tests: it runs as its own
//! process, keeps its book in `--data-dir` (so it survives its own restart and wayfare's
//! crashes), and shows everything it really did at `GET /_fake/ledger` (with every call
//! received and its W3C `traceparent`, under `calls`).
//!
//! Run with: `cargo run --release --example fake_gateway -- --bind 127.0.0.1:9100 --data-dir /tmp/gw`
//!
//! With `--tls-cert cert.pem --tls-key key.pem` it serves `https://` (wayfare trusts a
//! self-signed certificate through `[payments.http] ca_cert`); the listening line is the
//! same.
//!
//! Cards: `tok_decline` (card_declined), `tok_insufficient` (insufficient_funds),
//! `tok_expired` (expired_card), `tok_fail_capture` (its capture is rejected), `tok_slow`
//! (one extra second), any other `tok_*` approves.
//!
//! Durability: every operation that takes effect is appended to `journal.jsonl` before the
//! reply is sent, and the book is rebuilt from it at start. The file is written, not
//! fsynced: it survives the process being killed (the page cache keeps it), not a power cut.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wayfare::domain::money::Money;
use wayfare::payments::wire::{AuthorizeBody, CaptureBody, RefundBody, WireError};
use wayfare_drill::fakes::calls::{log_calls, CallLog};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "A durable fake card gateway for wayfare")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    bind: SocketAddr,
    /// Directory of the journal (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Latency added to every call, in ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Required `Authorization: Bearer` key; none means any caller is accepted.
    #[arg(long, env = "FAKE_GATEWAY_API_KEY")]
    api_key: Option<String>,
    /// Probability that an approvable authorization is declined anyway (`card_declined`).
    #[arg(long, default_value_t = 0.0)]
    decline_rate: f64,
    /// Probability of a 503 before acting (nothing happens).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability of hanging before acting (the caller times out; nothing happens).
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Probability of acting, then never answering (the caller times out although money
    /// moved: an unknown outcome it must reconcile by key).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Seed of the fault dice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// PEM certificate chain (leaf first): serve https:// with it (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// How long a hang lasts: longer than any sane client timeout.
const HANG: Duration = Duration::from_secs(120);

/// One operation that took effect (or was refused for good), as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The caller's idempotency key.
    key: String,
    /// Operation and parameters: a replay with other parameters is a conflict.
    fingerprint: String,
    /// What happened.
    event: Event,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Event {
    Authorized {
        authorization_id: String,
        card_token: String,
        amount: Money,
    },
    Declined {
        code: String,
    },
    Captured {
        capture_id: String,
        authorization_id: String,
        amount: Money,
    },
    Voided {
        authorization_id: String,
    },
    Refunded {
        refund_id: String,
        capture_id: String,
        amount: Money,
    },
    Rejected {
        code: String,
        reason: String,
    },
}

/// The gateway's book, rebuilt from the journal.
#[derive(Debug, Default)]
struct Book {
    entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    auths: BTreeMap<String, Auth>,
    captures: BTreeMap<String, Capture>,
}

#[derive(Debug)]
struct Auth {
    amount: Money,
    card_token: String,
    captured_by: Option<String>,
    voided: bool,
}

#[derive(Debug)]
struct Capture {
    amount: Money,
    refunded: i64,
}

impl Book {
    fn apply(&mut self, entry: Entry) {
        match &entry.event {
            Event::Authorized {
                authorization_id,
                card_token,
                amount,
            } => {
                self.auths.insert(
                    authorization_id.clone(),
                    Auth {
                        amount: *amount,
                        card_token: card_token.clone(),
                        captured_by: None,
                        voided: false,
                    },
                );
            }
            Event::Captured {
                capture_id,
                authorization_id,
                amount,
            } => {
                if let Some(a) = self.auths.get_mut(authorization_id) {
                    a.captured_by = Some(capture_id.clone());
                }
                self.captures.insert(
                    capture_id.clone(),
                    Capture {
                        amount: *amount,
                        refunded: 0,
                    },
                );
            }
            Event::Voided { authorization_id } => {
                if let Some(a) = self.auths.get_mut(authorization_id) {
                    a.voided = true;
                }
            }
            Event::Refunded {
                capture_id, amount, ..
            } => {
                if let Some(c) = self.captures.get_mut(capture_id) {
                    c.refunded += amount.minor;
                }
            }
            Event::Declined { .. } | Event::Rejected { .. } => {}
        }
        self.by_key.insert(entry.key.clone(), self.entries.len());
        self.entries.push(entry);
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_{:08}", self.entries.len() + 1)
    }

    /// What `op` does now, as an event (not yet applied).
    fn decide(&self, op: &Op, decline: bool) -> Event {
        let reject = |code: &str, reason: &str| Event::Rejected {
            code: code.into(),
            reason: reason.into(),
        };
        match op {
            Op::Authorize(b) => {
                let code = match b.card_token.as_str() {
                    "tok_decline" => Some("card_declined"),
                    "tok_insufficient" => Some("insufficient_funds"),
                    "tok_expired" => Some("expired_card"),
                    t if !t.starts_with("tok_") => Some("card_declined"),
                    _ if decline => Some("card_declined"),
                    _ => None,
                };
                match code {
                    Some(code) => Event::Declined { code: code.into() },
                    None => Event::Authorized {
                        authorization_id: self.next_id("auth"),
                        card_token: b.card_token.clone(),
                        amount: b.amount,
                    },
                }
            }
            Op::Capture(auth_id, b) => match self.auths.get(auth_id) {
                None => reject("unknown_authorization", "no such authorization"),
                Some(a) if a.voided => reject("authorization_voided", "it was voided"),
                Some(a) if a.captured_by.is_some() => {
                    reject("already_captured", "it was captured already")
                }
                Some(a) if a.card_token == "tok_fail_capture" => {
                    reject("capture_failed", "the issuer refused the capture")
                }
                Some(a)
                    if b.amount.currency != a.amount.currency
                        || b.amount.minor > a.amount.minor
                        || b.amount.minor <= 0 =>
                {
                    reject("amount_too_large", "above the authorized amount")
                }
                Some(_) => Event::Captured {
                    capture_id: self.next_id("cap"),
                    authorization_id: auth_id.clone(),
                    amount: b.amount,
                },
            },
            Op::Void(auth_id) => match self.auths.get(auth_id) {
                None => reject("unknown_authorization", "no such authorization"),
                Some(a) if a.captured_by.is_some() => reject(
                    "already_captured",
                    "a captured authorization cannot be voided",
                ),
                Some(_) => Event::Voided {
                    authorization_id: auth_id.clone(),
                },
            },
            Op::Refund(b) => {
                // A payment id may name the authorization whose capture is meant.
                let capture_id = self
                    .auths
                    .get(&b.payment_id)
                    .and_then(|a| a.captured_by.clone())
                    .unwrap_or_else(|| b.payment_id.clone());
                match self.captures.get(&capture_id) {
                    None => reject("unknown_payment", "no such capture"),
                    Some(c)
                        if b.amount.currency != c.amount.currency
                            || b.amount.minor <= 0
                            || c.refunded + b.amount.minor > c.amount.minor =>
                    {
                        reject("amount_too_large", "more than what remains captured")
                    }
                    Some(_) => Event::Refunded {
                        refund_id: self.next_id("ref"),
                        capture_id,
                        amount: b.amount,
                    },
                }
            }
        }
    }
}

/// A mutating request.
enum Op {
    Authorize(AuthorizeBody),
    Capture(String, CaptureBody),
    Void(String),
    Refund(RefundBody),
}

impl Op {
    fn fingerprint(&self) -> String {
        match self {
            Op::Authorize(b) => format!("authorize|{}|{:?}", b.card_token, b.amount),
            Op::Capture(a, b) => format!("capture|{a}|{:?}", b.amount),
            Op::Void(a) => format!("void|{a}"),
            Op::Refund(b) => format!("refund|{}|{:?}", b.payment_id, b.amount),
        }
    }
}

struct Gateway {
    args: Args,
    book: Mutex<(Book, File)>,
    dice: Mutex<SmallRng>,
}

impl Gateway {
    fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && self.dice.lock().unwrap().gen_bool(rate.clamp(0.0, 1.0))
    }

    /// Checks the caller's key; latency; the before-acting faults.
    async fn admit(&self, req: &HttpRequest) -> Result<(), HttpResponse> {
        if let Some(expected) = &self.args.api_key {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(expected.as_str()) {
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "bad API key",
                ));
            }
        }
        if self.args.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.args.latency_ms)).await;
        }
        if self.roll(self.args.hang_rate) {
            tokio::time::sleep(HANG).await;
        }
        if self.roll(self.args.error_rate) {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "injected failure",
            ));
        }
        Ok(())
    }

    /// Runs a keyed operation once: a replay answers the first result.
    async fn run(&self, req: HttpRequest, op: Op) -> HttpResponse {
        if let Err(refused) = self.admit(&req).await {
            return refused;
        }
        let Some(key) = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| (1..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Idempotency-Key: 1 to 128 printable ASCII characters required",
            );
        };
        if matches!(&op, Op::Authorize(b) if b.card_token == "tok_slow") {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let fingerprint = op.fingerprint();
        let entry = {
            let mut guard = self.book.lock().unwrap();
            let (book, journal) = &mut *guard;
            if let Some(&i) = book.by_key.get(&key) {
                let first = &book.entries[i];
                if first.fingerprint != fingerprint {
                    return error(
                        StatusCode::CONFLICT,
                        "idempotency_conflict",
                        "this key was used for another request",
                    );
                }
                first.clone()
            } else {
                let decline = self.roll(self.args.decline_rate);
                let entry = Entry {
                    key,
                    fingerprint,
                    event: book.decide(&op, decline),
                };
                let line = serde_json::to_string(&entry).expect("entries serialize");
                if let Err(e) = writeln!(journal, "{line}") {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "journal_failed",
                        &e.to_string(),
                    );
                }
                book.apply(entry.clone());
                entry
            }
        };
        if self.roll(self.args.drop_rate) {
            tokio::time::sleep(HANG).await;
        }
        reply(&entry.event)
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(WireError::new(code, message))
}

/// The wire reply of an event.
fn reply(event: &Event) -> HttpResponse {
    match event {
        Event::Authorized {
            authorization_id,
            amount,
            ..
        } => HttpResponse::Created()
            .json(json!({"authorization_id": authorization_id, "amount": amount})),
        Event::Declined { code } => error(StatusCode::PAYMENT_REQUIRED, code, "card declined"),
        Event::Captured {
            capture_id, amount, ..
        } => HttpResponse::Ok().json(json!({"capture_id": capture_id, "amount": amount})),
        Event::Voided { authorization_id } => {
            HttpResponse::Ok().json(json!({"authorization_id": authorization_id}))
        }
        Event::Refunded {
            refund_id, amount, ..
        } => HttpResponse::Created().json(json!({"refund_id": refund_id, "amount": amount})),
        Event::Rejected { code, reason } => error(StatusCode::CONFLICT, code, reason),
    }
}

/// `GET /v1/operations/{key}`: the first result of a key, in the wire's status shape.
fn operation(event: &Event) -> Value {
    match event {
        Event::Authorized {
            authorization_id,
            amount,
            ..
        } => {
            json!({"status": "authorized", "authorization_id": authorization_id, "amount": amount})
        }
        Event::Declined { code } => json!({"status": "declined", "reason": code}),
        Event::Captured {
            capture_id, amount, ..
        } => json!({"status": "captured", "capture_id": capture_id, "amount": amount}),
        Event::Voided { authorization_id } => {
            json!({"status": "voided", "authorization_id": authorization_id})
        }
        Event::Refunded {
            refund_id, amount, ..
        } => json!({"status": "refunded", "refund_id": refund_id, "amount": amount}),
        Event::Rejected { code, reason } => {
            json!({"status": "rejected", "reason": format!("{code}: {reason}")})
        }
    }
}

/// A JSON body, or what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The 400 of a body that does not parse.
fn bad_body(problem: String) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, "invalid_request", &problem)
}

async fn authorize(req: HttpRequest, bytes: web::Bytes, gw: web::Data<Gateway>) -> HttpResponse {
    match body::<AuthorizeBody>(&bytes) {
        Ok(b) => gw.run(req, Op::Authorize(b)).await,
        Err(e) => bad_body(e),
    }
}

async fn capture(
    req: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
    gw: web::Data<Gateway>,
) -> HttpResponse {
    match body::<CaptureBody>(&bytes) {
        Ok(b) => gw.run(req, Op::Capture(id.into_inner(), b)).await,
        Err(e) => bad_body(e),
    }
}

async fn void(req: HttpRequest, id: web::Path<String>, gw: web::Data<Gateway>) -> HttpResponse {
    gw.run(req, Op::Void(id.into_inner())).await
}

async fn refund(req: HttpRequest, bytes: web::Bytes, gw: web::Data<Gateway>) -> HttpResponse {
    match body::<RefundBody>(&bytes) {
        Ok(b) => gw.run(req, Op::Refund(b)).await,
        Err(e) => bad_body(e),
    }
}

async fn status(req: HttpRequest, key: web::Path<String>, gw: web::Data<Gateway>) -> HttpResponse {
    if let Err(refused) = gw.admit(&req).await {
        return refused;
    }
    let guard = gw.book.lock().unwrap();
    match guard.0.by_key.get(key.as_str()) {
        Some(&i) => HttpResponse::Ok().json(operation(&guard.0.entries[i].event)),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no operation with this key",
        ),
    }
}

/// `GET /_fake/ledger`: everything that took effect, each row with its idempotency key.
async fn ledger(gw: web::Data<Gateway>, calls: web::Data<CallLog>) -> HttpResponse {
    let guard = gw.book.lock().unwrap();
    let mut out = json!({"authorizations": [], "captures": [], "voids": [], "refunds": [], "declines": [], "rejections": []});
    for e in &guard.0.entries {
        let (list, mut row) = match &e.event {
            Event::Authorized { .. } => ("authorizations", operation(&e.event)),
            Event::Captured {
                authorization_id, ..
            } => {
                let mut row = operation(&e.event);
                row["authorization_id"] = json!(authorization_id);
                ("captures", row)
            }
            Event::Voided { .. } => ("voids", operation(&e.event)),
            Event::Refunded { capture_id, .. } => {
                let mut row = operation(&e.event);
                row["capture_id"] = json!(capture_id);
                ("refunds", row)
            }
            Event::Declined { .. } => ("declines", operation(&e.event)),
            Event::Rejected { .. } => ("rejections", operation(&e.event)),
        };
        row["key"] = json!(e.key);
        out[list].as_array_mut().unwrap().push(row);
    }
    out["calls"] = json!(calls.calls());
    HttpResponse::Ok().json(out)
}

/// Reads the journal back; a torn last line (killed mid-write) is dropped, anything else
/// unreadable stops the start.
fn load(path: &PathBuf) -> std::io::Result<Book> {
    let mut book = Book::default();
    let Ok(file) = File::open(path) else {
        return Ok(book);
    };
    let lines: Vec<String> = BufReader::new(file).lines().collect::<Result<_, _>>()?;
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Entry>(line) {
            Ok(entry) => book.apply(entry),
            Err(_) if i == last => eprintln!("fake_gateway: dropping a torn last journal line"),
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "{}: line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(book)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (name, rate) in [
        ("--decline-rate", args.decline_rate),
        ("--error-rate", args.error_rate),
        ("--hang-rate", args.hang_rate),
        ("--drop-rate", args.drop_rate),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&rate), "{name} must be within [0, 1]");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(wayfare_drill::fakes::tls::server_config(cert, key)?),
        _ => None,
    };
    std::fs::create_dir_all(&args.data_dir)?;
    let path = args.data_dir.join("journal.jsonl");
    let book = load(&path)?;
    let journal = OpenOptions::new().create(true).append(true).open(&path)?;
    let bind = args.bind;
    let gw = web::Data::new(Gateway {
        dice: Mutex::new(SmallRng::seed_from_u64(args.seed)),
        book: Mutex::new((book, journal)),
        args,
    });
    let calls = web::Data::new(CallLog::default());
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(gw.clone())
                .app_data(calls.clone())
                .wrap(actix_web::middleware::from_fn(log_calls))
                .route("/v1/authorizations", web::post().to(authorize))
                .route("/v1/authorizations/{id}/capture", web::post().to(capture))
                .route("/v1/authorizations/{id}/void", web::post().to(void))
                .route("/v1/refunds", web::post().to(refund))
                .route("/v1/operations/{key}", web::get().to(status))
                .route("/_fake/ledger", web::get().to(ledger))
        })
        .workers(2);
        let server = match tls {
            Some(config) => server.bind_rustls_0_23(bind, config)?,
            None => server.bind(bind)?,
        };
        // Scripts wait for this line to know the port is open.
        println!("fake_gateway listening on {}", server.addrs()[0]);
        server.run().await
    })?;
    Ok(())
}
