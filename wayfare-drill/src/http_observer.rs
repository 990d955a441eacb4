//! [`Observations`](crate::Observations) read from a running server over its HTTP API, for
//! tests that drive the real binary (and kill it) instead of an embedded runtime. Reads
//! are bounded: each is retried a few times on transient refusals and then recorded as a
//! problem, and nothing is requested past the observer's deadline, so a server that stops
//! answering fails the test in bounded time instead of hanging it.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use wayfare::domain::money::Money;
use wayfare::domain::saga::{HistoryEntry, SagaState};

use crate::observations::{AccountSeen, BookingSeen, CancellationSeen, LedgerLine};

/// Attempts of one read before it is recorded as a problem.
const READ_ATTEMPTS: usize = 10;
/// Pause between those attempts: the server is restarting or shedding load.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Ledger pages read at most per account (500 entries each).
const MAX_LEDGER_PAGES: usize = 1_000;

/// Reads bookings and accounts from a server at `base` (`http://127.0.0.1:PORT`), with
/// a client that carries whatever credentials the routes need (the operator's, to read
/// every account).
#[derive(Debug)]
pub struct HttpObserver {
    client: reqwest::Client,
    base: String,
    deadline: Instant,
    problems: Vec<String>,
}

impl HttpObserver {
    /// An observer that sends no request after `deadline`.
    pub fn new(client: reqwest::Client, base: impl Into<String>, deadline: Instant) -> Self {
        HttpObserver {
            client,
            base: base.into(),
            deadline,
            problems: Vec::new(),
        }
    }

    /// The deadline has passed: reads return nothing (the caller reports it once).
    pub fn out_of_time(&self) -> bool {
        Instant::now() > self.deadline
    }

    /// Reads that failed for good, one line each (method, path, last answer).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Takes the problems recorded so far.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// `GET {base}{path}` as JSON. Transient refusals (an error status, no reply, a torn
    /// body) are retried a bounded number of times; what is left is recorded as a problem
    /// and `None` returned, as it is past the deadline.
    pub async fn get_json(&mut self, path: &str) -> Option<Value> {
        if self.out_of_time() {
            return None;
        }
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for _ in 0..READ_ATTEMPTS {
            match self.client.get(&url).send().await {
                Ok(res) if res.status().is_success() => match res.json().await {
                    Ok(v) => return Some(v),
                    Err(e) => last = format!("bad JSON: {e}"),
                },
                Ok(res) => last = format!("status {}", res.status()),
                Err(e) => last = format!("no reply: {e}"),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        self.problems.push(format!("GET {url}: {last}"));
        None
    }

    /// The booking `id` (`GET /v1/bookings/{id}`), or `None` (recorded) when it cannot be
    /// read or does not parse.
    pub async fn booking(&mut self, id: &str) -> Option<BookingSeen> {
        let body = self.get_json(&format!("/v1/bookings/{id}")).await?;
        match booking_from_json(&body) {
            Ok(b) => Some(b),
            Err(e) => {
                self.problems.push(format!(
                    "GET /v1/bookings/{id}: unexpected body ({e}): {body}"
                ));
                None
            }
        }
    }

    /// The account `id` with its whole ledger and the bookings it lists. `credited` is what
    /// it was credited from outside the bookings, when the caller knows it (see
    /// [`AccountSeen::credited`]). Parts that cannot be read are `None` (and recorded).
    pub async fn account(&mut self, id: &str, credited: Option<i64>) -> AccountSeen {
        let mut seen = AccountSeen {
            id: id.to_owned(),
            credited,
            ..AccountSeen::default()
        };
        // Every page of the account's bookings (`next_after` until it is null).
        let mut listed = Some(Vec::new());
        let mut after = String::new();
        while let Some(ids) = listed.as_mut() {
            let query = if after.is_empty() {
                String::new()
            } else {
                format!("&after={after}")
            };
            let Some(page) = self
                .get_json(&format!("/v1/accounts/{id}/bookings?limit=100{query}"))
                .await
            else {
                listed = None;
                break;
            };
            ids.extend(
                page["bookings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["id"].as_str().map(str::to_owned)),
            );
            match page["next_after"].as_str() {
                Some(next) => after = next.to_owned(),
                None => break,
            }
        }
        seen.listed = listed;
        let Some(account) = self.get_json(&format!("/v1/accounts/{id}")).await else {
            return seen;
        };
        let wallet = &account["wallet"];
        let (Some(balance), Some(held)) = (
            wallet["balance"]["minor"].as_i64(),
            wallet["held"]["minor"].as_i64(),
        ) else {
            self.problems
                .push(format!("GET /v1/accounts/{id}: no wallet in {account}"));
            return seen;
        };
        seen.balance = Some(balance);
        seen.held = held;
        let mut ledger = Vec::new();
        let mut after = 0u64;
        for _ in 0..MAX_LEDGER_PAGES {
            let path = format!("/v1/accounts/{id}/wallet/ledger?after={after}&limit=500");
            let Some(page) = self.get_json(&path).await else {
                return seen;
            };
            for e in page["entries"].as_array().into_iter().flatten() {
                let (Some(key), Some(delta)) = (e["key"].as_str(), e["delta"].as_i64()) else {
                    self.problems.push(format!(
                        "GET {path}: ledger entry without key or delta: {e}"
                    ));
                    return seen;
                };
                ledger.push(LedgerLine {
                    key: key.to_owned(),
                    delta,
                });
            }
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => {
                    seen.ledger = Some(ledger);
                    break;
                }
            }
        }
        seen
    }
}

/// The fields of the API's booking body that the checks use.
#[derive(Deserialize)]
struct BookingBody {
    id: String,
    state: SagaState,
    account_id: String,
    seller: String,
    offer_price: Money,
    wallet_points: Money,
    needs_attention: Option<String>,
    cancellation: Option<CancellationBody>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
}

#[derive(Deserialize)]
struct CancellationBody {
    state: SagaState,
    points_restored: Option<Money>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
}

/// A booking as the API returns it (`GET /v1/bookings/{id}`), as the checks need it; the
/// error names the field that did not parse.
pub fn booking_from_json(body: &Value) -> Result<BookingSeen, String> {
    let b = BookingBody::deserialize(body).map_err(|e| e.to_string())?;
    let history = BookingSeen::history_lines(
        b.history
            .iter()
            .chain(b.cancellation.iter().flat_map(|c| c.history.iter())),
    );
    Ok(BookingSeen {
        id: b.id,
        account: b.account_id,
        seller: b.seller,
        state: b.state,
        needs_attention: b.needs_attention,
        offer_price: b.offer_price,
        wallet_points: b.wallet_points,
        cancellation: b.cancellation.map(|c| CancellationSeen {
            state: c.state,
            points_restored: c.points_restored,
            last_note: c.history.last().map(|h| h.note.clone()),
        }),
        history,
    })
}
