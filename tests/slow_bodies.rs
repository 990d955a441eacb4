//! Slow request bodies cannot hold connections: 900 connections that send their headers
//! at once and then a body at one byte a second are each answered 408 and closed by
//! `server.body_timeout_ms` (plus what their few bytes earn at
//! `server.min_body_bytes_per_sec`), while bookings go on being taken and confirmed.
//!
//! Bounded: 900 connections (1,800 descriptors in this process with the server's side;
//! the test checks `ulimit -n` leaves room), a 2 s body timeout, and every wait has a
//! deadline.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake::FixedSeller;
use common::{wait_until, TestServer, OPERATOR_TOKEN};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wayfare::actors::seller::AdapterConfig;

const SLOW: usize = 900;
const BODY_TIMEOUT_MS: u64 = 2_000;
/// Every slow connection must be answered and closed within this of its start.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

/// What became of one slow connection.
#[derive(Debug)]
struct Ended {
    /// The status line of the reply, if one came.
    status: Option<String>,
    /// Whether the server closed the connection after it.
    closed: bool,
    /// Since the headers were sent.
    after: Duration,
}

/// Connections that have sent their headers, and connections that have ended.
#[derive(Default)]
struct Counts {
    sent: AtomicUsize,
    ended: AtomicUsize,
}

async fn trickle(addr: String, path: String, i: usize, counts: Arc<Counts>) -> Ended {
    let ended = trickle_until_closed(addr, path, i, &counts).await;
    counts.ended.fetch_add(1, Ordering::SeqCst);
    ended
}

async fn trickle_until_closed(addr: String, path: String, i: usize, counts: &Counts) -> Ended {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\
         Idempotency-Key: slow-{i}\r\nContent-Type: application/json\r\n\
         Content-Length: 200\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    counts.sent.fetch_add(1, Ordering::SeqCst);
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(CLOSED_WITHIN);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let text = String::from_utf8_lossy(&reply).into_owned();
                    return Ended {
                        status: text.lines().next().map(str::to_owned).filter(|l| !l.is_empty()),
                        closed: true,
                        after: started.elapsed(),
                    };
                }
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                // One more byte of a body that never ends; a refused write means the
                // server has closed its side.
                let _ = stream.write_all(b" ").await;
            }
            _ = &mut deadline => {
                let text = String::from_utf8_lossy(&reply).into_owned();
                return Ended {
                    status: text.lines().next().map(str::to_owned),
                    closed: false,
                    after: started.elapsed(),
                };
            }
        }
    }
}

#[actix_rt::test]
async fn slow_bodies_are_cut_off_while_bookings_go_on() {
    let fds = rlimit_nofile();
    assert!(
        fds >= 4 * SLOW as u64,
        "ulimit -n is {fds}: this test needs {} descriptors",
        4 * SLOW
    );
    let (seller, _knobs) = FixedSeller::new("test", 20_000);
    let server = TestServer::start_custom(
        |c| {
            c.server.body_timeout_ms = BODY_TIMEOUT_MS;
            c.server.min_body_bytes_per_sec = 1_024;
        },
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await;
    let account = server.create_account("Slow Body Victim").await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let path = format!("/v1/accounts/{account}/wallet/credits");

    let opened = Instant::now();
    let counts = Arc::new(Counts::default());
    let slow: Vec<_> = (0..SLOW)
        .map(|i| actix_rt::spawn(trickle(addr.clone(), path.clone(), i, counts.clone())))
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every slow connection sent its headers",
        async || (counts.sent.load(Ordering::SeqCst) == SLOW).then_some(()),
    )
    .await;
    let all_open_after = opened.elapsed();

    // While they trickle, bookings are taken and confirmed.
    let mut booking_latencies = Vec::new();
    for n in 0..5 {
        let start = chrono::Utc::now().date_naive() + chrono::Days::new(10 + n);
        let asked = Instant::now();
        let res = server
            .http
            .post(server.url("/v1/bookings"))
            .header("Idempotency-Key", format!("during-slow-{n}"))
            .json(&json!({
                "account_id": account,
                "seller": "test",
                "sku": "hotel:test:h1:double",
                "start": start,
                "end": start + chrono::Days::new(2),
                "offer_price": {"minor": 20_000, "currency": "EUR"},
                "wallet_points": {"minor": 0, "currency": "EUR"},
                "card_token": "tok_approve",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_until(
            Duration::from_secs(20),
            "the booking is confirmed",
            async || {
                let b: Value = server
                    .http
                    .get(server.url(&format!("/v1/bookings/{id}")))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (b["state"] == "confirmed").then_some(())
            },
        )
        .await;
        booking_latencies.push(asked.elapsed());
    }
    let bookings_done = opened.elapsed();
    let open_when_booked = SLOW - counts.ended.load(Ordering::SeqCst);

    let mut ended = Vec::new();
    for task in slow {
        ended.push(task.await.expect("slow connection task"));
    }
    let answered_408 = ended
        .iter()
        .filter(|e| e.status.as_deref().is_some_and(|s| s.contains(" 408 ")))
        .count();
    let closed = ended.iter().filter(|e| e.closed).count();
    let slowest = ended.iter().map(|e| e.after).max().unwrap_or_default();
    let fastest = ended.iter().map(|e| e.after).min().unwrap_or_default();
    println!(
        "{SLOW} slow bodies (all sending after {:.1} s): {answered_408} answered 408, {closed} \
         closed, between {:.1} s and {:.1} s after their headers; 5 bookings confirmed by \
         {:.1} s with {open_when_booked} slow connections still open (each {:?})",
        all_open_after.as_secs_f64(),
        fastest.as_secs_f64(),
        slowest.as_secs_f64(),
        bookings_done.as_secs_f64(),
        booking_latencies
    );
    let stuck: Vec<&Ended> = ended.iter().filter(|e| !e.closed).take(3).collect();
    assert!(
        stuck.is_empty(),
        "still open after {CLOSED_WITHIN:?}: {stuck:?}"
    );
    assert_eq!(
        answered_408,
        SLOW,
        "{:?}",
        ended
            .iter()
            .find(|e| e.status.as_deref().is_none_or(|s| !s.contains(" 408 ")))
    );
    // The body timeout, not the test's deadline, closed them: never before it.
    assert!(
        fastest >= Duration::from_millis(BODY_TIMEOUT_MS),
        "{fastest:?}"
    );
    // The server is healthy and still takes requests.
    let health = server.http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

/// The soft limit on open descriptors (`ulimit -n`).
fn rlimit_nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

/// A slow body sent to a route that reads no body (a cancel, an unknown path) does not
/// hold its connection either: the reply goes out without it, and the connection closes.
#[actix_rt::test]
async fn a_slow_body_to_a_route_without_one_holds_nothing() {
    let server = TestServer::start_with(|c| c.server.body_timeout_ms = BODY_TIMEOUT_MS).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let counts = Arc::new(Counts::default());
    let paths = [
        format!("/v1/bookings/{}/cancel", uuid::Uuid::new_v4()),
        "/v1/nowhere".to_owned(),
    ];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let path = paths[i % 2].clone();
            actix_rt::spawn(trickle(addr.clone(), path, i, counts.clone()))
        })
        .collect();
    for task in tasks {
        let ended = task.await.unwrap();
        assert!(ended.closed, "{ended:?}");
        assert!(ended.status.is_some(), "{ended:?}");
    }
    server.stop().await;
}
