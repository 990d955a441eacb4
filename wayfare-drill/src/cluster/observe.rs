//! What the drill reads from the cluster besides its own replies: the offers it books,
//! the membership snapshots, bookings as last seen, and HAProxy's per-node counters.

use super::*;

/// The cheapest offers per seller for the drill's dates, from the front (bounded retries).
pub(super) async fn offers(drill: &Drill) -> anyhow::Result<Vec<Offer>> {
    let (check_in, check_out) = dates();
    let url = drill.url(&format!(
        "/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}"
    ));
    let mut last = String::new();
    for _ in 0..50 {
        match drill.operator.get(&url).send().await {
            Ok(res) if res.status().is_success() => {
                let body: Value = res.json().await?;
                let offers: Vec<Offer> = body["offers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| {
                        Some(Offer {
                            seller: o["seller"].as_str()?.to_owned(),
                            sku: o["sku"].as_str()?.to_owned(),
                            price: o["price"]["minor"].as_i64()?,
                        })
                    })
                    .collect();
                if !offers.is_empty() {
                    return Ok(offers);
                }
                last = format!("no offers in {body}");
            }
            Ok(res) => last = format!("status {}", res.status()),
            Err(e) => last = error_kind(&e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no Lisbon hotel offers from {url}: {last}")
}

/// `GET /v1/system/cluster` through the front, as operator.
pub(super) async fn membership(drill: &Drill) -> Result<Value, String> {
    let res = drill
        .operator
        .get(drill.url("/v1/system/cluster"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| error_kind(&e))?;
    let status = res.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    res.json().await.map_err(|e| format!("bad JSON: {e}"))
}

/// One line per member: id, heartbeat age, sagas held.
pub(super) fn members_line(body: &Value) -> String {
    let members = body["members"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{} (heartbeat {} ms, {} sagas)",
                m["id"].as_str().unwrap_or("?"),
                m["heartbeat_age_ms"],
                m["sagas_held"]
            )
        })
        .collect();
    format!(
        "answered by {}: {}",
        body["node"].as_str().unwrap_or("?"),
        parts.join(", ")
    )
}

pub(super) fn sagas_held(body: &Value, node: &str) -> Option<i64> {
    body["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_str() == Some(node))?["sagas_held"]
        .as_i64()
}

/// The node holding the most sagas in `body`, by number (`node-N`).
pub(super) fn busiest(body: &Value) -> Option<usize> {
    body["members"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let n = m["id"].as_str()?.strip_prefix("node-")?.parse().ok()?;
            Some((m["sagas_held"].as_i64().unwrap_or(0), n))
        })
        .max()
        .map(|(_, n)| n)
}

/// A booking as last read: the checker's view and its history's times.
pub(super) struct Seen {
    pub(super) booking: BookingSeen,
    pub(super) created: Option<DateTime<Utc>>,
    /// When its last history entry was written (its end, once settled).
    pub(super) last_at: Option<DateTime<Utc>>,
}

pub(super) fn seen_from(body: &Value) -> Result<Seen, String> {
    let booking = booking_from_json(body)?;
    let times: Vec<DateTime<Utc>> = body["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["at"].as_str()?.parse().ok())
        .collect();
    Ok(Seen {
        booking,
        created: times.first().copied(),
        last_at: times.last().copied(),
    })
}

/// Per backend server, from HAProxy's stats CSV: sessions, connection and response
/// errors, retries and redispatches (what HAProxy hid from the clients).
pub(super) async fn haproxy_counters(http: &reqwest::Client, url: &str) -> Vec<String> {
    let csv = match http.get(format!("{url};csv")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return vec![format!("stats unreadable: {}", error_kind(&e))],
    };
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (Some(px), Some(sv), Some(stot), Some(econ), Some(eresp), Some(wretr), Some(wredis)) = (
        col("pxname"),
        col("svname"),
        col("stot"),
        col("econ"),
        col("eresp"),
        col("wretr"),
        col("wredis"),
    ) else {
        return vec![format!("stats CSV without the expected columns: {header}")];
    };
    lines
        .map(|l| l.split(',').collect::<Vec<&str>>())
        .filter(|f| f.get(px) == Some(&"nodes"))
        .map(|f| {
            let v = |i: usize| f.get(i).copied().unwrap_or("?");
            format!(
                "{}: {} sessions, {} connection errors, {} response errors, {} retries, {} redispatches",
                v(sv),
                v(stot),
                v(econ),
                v(eresp),
                v(wretr),
                v(wredis)
            )
        })
        .collect()
}
