//! The drill's report: requests by kind and node, failures around the kill, the take-over,
//! and the invariants of the bookings, the partners' books and the wallets.

use super::*;

/// Prints the report and returns the number of violations.
pub(super) fn report(g: Gathered) -> usize {
    let Gathered {
        drill,
        chaos,
        load_secs,
        load_start_wall,
        late,
        snapshots,
        cluster_api,
        end_snapshot,
        haproxy,
        ids,
        last,
        acked,
        found_unacknowledged,
        created_now,
        problems,
        partner_problems,
        keys,
        payments,
        sellers,
        settled,
        checked,
    } = g;
    let timeout = Duration::from_secs(drill.args.timeout_secs);
    // ---- report
    let records = drill.records.lock().unwrap().clone();
    let mut violations: Vec<String> = Vec::new();
    println!();
    println!(
        "== requests ({:.1} s of load, {} sent late for want of a slot)",
        load_secs, late
    );
    println!(
        "{:<14} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "kind", "sent", "ok", "refused", "failed", "p50 ms", "p99 ms", "max ms"
    );
    let mut by_kind: BTreeMap<Kind, Vec<&Record>> = BTreeMap::new();
    for r in &records {
        by_kind.entry(r.kind).or_default().push(r);
    }
    for (kind, rs) in &by_kind {
        let mut lat: Vec<Duration> = rs.iter().map(|r| r.latency).collect();
        lat.sort();
        println!(
            "{:<14} {:>7} {:>7} {:>9} {:>9} {:>8.1} {:>8.1} {:>8.1}",
            kind.name(),
            rs.len(),
            rs.iter().filter(|r| r.ok()).count(),
            rs.iter().filter(|r| r.refusal()).count(),
            rs.iter().filter(|r| !r.ok() && !r.refusal()).count(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
        );
    }
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *by_node
            .entry(r.served_by.clone().unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
    }
    println!("answered by: {by_node:?}");
    for line in &haproxy {
        println!("haproxy {line}");
    }

    // Failures: in the outage window (allowed with --allow-outage, and for the failover
    // window after a database kill) or not.
    let kill_s = chaos.killed_at.map(|(s, _)| s);
    let db_kill = chaos.db_killed_at.as_ref().map(|(s, _)| *s);
    let back_s = match db_kill {
        Some(k) => Some(k + drill.args.max_write_outage_secs),
        None => chaos.restarted_at.map(|(s, _)| s + 1.0),
    };
    let outage_allowed = drill.args.allow_outage || db_kill.is_some();
    let in_outage = |r: &Record| {
        kill_s.is_some_and(|k| {
            // A request sent up to its timeout before the kill can fail with it.
            r.at + timeout.as_secs_f64() >= k && back_s.is_none_or(|b| r.at <= b)
        })
    };
    let failures: Vec<&Record> = records.iter().filter(|r| !r.ok() && !r.refusal()).collect();
    let (allowed, counted): (Vec<&Record>, Vec<&Record>) = failures
        .iter()
        .copied()
        .partition(|r| outage_allowed && in_outage(r));
    let mut by_label: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for r in &failures {
        *by_label.entry((r.kind, r.label())).or_default() += 1;
    }
    if outage_allowed {
        println!(
            "client-visible failures: {} ({} in the outage window, allowed in this mode)",
            failures.len(),
            allowed.len()
        );
    } else {
        println!("client-visible failures: {}", failures.len());
    }
    for ((kind, label), n) in &by_label {
        println!("  {:<14} {label}: {n}", kind.name());
    }
    for r in counted.iter().chain(allowed.iter()).take(8) {
        println!(
            "  e.g. {:6.2} s {} -> {} via {} after {:.0} ms {}",
            r.at,
            r.kind.name(),
            r.label(),
            r.served_by.as_deref().unwrap_or("-"),
            r.latency.as_secs_f64() * 1000.0,
            r.problem.as_deref().unwrap_or("")
        );
    }
    if !counted.is_empty() {
        violations.push(format!(
            "{} client-visible failures (transport errors or non-2xx other than business refusals)",
            counted.len()
        ));
    }
    if let Some((k, said)) = &chaos.db_killed_at {
        violations.extend(failover_window(
            &records,
            *k,
            said,
            drill.args.max_write_outage_secs,
        ));
    }
    // Failures per second around the events.
    let mut per_sec: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for r in &records {
        let e = per_sec.entry(r.at as u64).or_default();
        e.0 += 1;
        if !r.ok() && !r.refusal() {
            e.1 += 1;
        }
    }
    let near = |s: u64| {
        [kill_s, chaos.restarted_at.map(|(s, _)| s)]
            .into_iter()
            .flatten()
            .any(|t| (s as f64 - t).abs() <= 3.0)
    };
    let timeline: Vec<String> = per_sec
        .iter()
        .filter(|(s, (_, f))| *f > 0 || near(**s))
        .map(|(s, (n, f))| format!("{s}s {n}/{f}"))
        .collect();
    println!(
        "per second around the kill and restart (sent/failed): {}",
        timeline.join("  ")
    );

    // Kill, take-over.
    println!();
    println!("== kill and take-over");
    if let Some(p) = &chaos.restart_problem {
        violations.push(p.clone());
        println!("{p}");
    }
    if let (Some(victim), Some((kill_s, kill_wall))) = (chaos.victim, chaos.killed_at) {
        let victim_id = format!("node-{victim}");
        println!(
            "killed {victim_id} (pid {}) at {kill_s:.2} s; restarted and healthy at {}",
            chaos.pid.unwrap_or(0),
            chaos
                .restarted_at
                .map(|(s, _)| format!("{s:.2} s"))
                .unwrap_or_else(|| "(never)".into())
        );
        match &chaos.before_kill {
            Some(b) => println!(
                "just before the kill: {}; {victim_id} held {} sagas",
                members_line(b),
                sagas_held(b, &victim_id)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into())
            ),
            None if cluster_api => println!("no membership snapshot before the kill"),
            None => {}
        }
        // Bookings that had started and were unfinished at the kill (by their history).
        let in_flight: Vec<&Seen> = last
            .values()
            .filter(|s| s.created.is_some_and(|c| c < kill_wall))
            .filter(|s| !s.booking.is_settled() || s.last_at.is_some_and(|t| t > kill_wall))
            .collect();
        let unfinished = in_flight.iter().filter(|s| !s.booking.is_settled()).count();
        // Those finished within a second of the kill were driven by live nodes; the later
        // ones waited for the dead node's lease to run out and were taken over.
        let after_kill = |s: &&Seen| {
            s.last_at
                .map(|t| (t - kill_wall).num_milliseconds() as f64 / 1000.0)
        };
        let mut late: Vec<f64> = in_flight
            .iter()
            .filter(|s| s.booking.is_settled())
            .filter_map(after_kill)
            .filter(|secs| *secs > 1.0)
            .collect();
        late.sort_by(f64::total_cmp);
        let lease = chaos
            .before_kill
            .as_ref()
            .and_then(|b| b["lease_ms"].as_u64())
            .map(|ms| format!(" (lease_ms {ms})"))
            .unwrap_or_default();
        let latest = in_flight
            .iter()
            .filter_map(|s| s.last_at)
            .max()
            .map(|t| (t - kill_wall).num_milliseconds() as f64 / 1000.0);
        println!(
            "bookings unfinished at the kill (cluster-wide): {}; all finished {} after the kill{}",
            in_flight.len(),
            latest
                .map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "-".into()),
            if unfinished > 0 {
                format!(" ({unfinished} never did)")
            } else {
                String::new()
            }
        );
        // Finished before the killed node was back: another node took them over. After
        // it: taken over late, or resumed by the restarted node itself (one node, sled).
        let back = chaos
            .restarted_at
            .map(|(_, wall)| (wall - kill_wall).num_milliseconds() as f64 / 1000.0);
        let (taken, after_restart): (Vec<f64>, Vec<f64>) = late
            .iter()
            .partition(|secs| back.is_none_or(|b| **secs < b));
        let span = |v: &[f64]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => format!(" ({a:.2}-{b:.2} s after the kill)"),
            _ => String::new(),
        };
        println!(
            "of those, {} finished within 1 s of the kill (live nodes); {} taken over by \
             another node{lease}{}; {} finished only after the killed node was back{}",
            in_flight.len() - unfinished - late.len(),
            taken.len(),
            span(&taken),
            after_restart.len(),
            span(&after_restart),
        );
        if let (Some(max), Some(latest)) = (drill.args.max_takeover_secs, latest) {
            if latest > max || unfinished > 0 {
                violations.push(format!(
                    "sagas in flight at the kill took {latest:.2} s to finish (more than {max} s)"
                ));
            }
        }
        // Membership after the kill: when the victim dropped out, and whether it came back.
        let snaps = &snapshots;
        let gone = snaps.iter().find(|(s, body)| {
            *s > kill_s
                && body.as_ref().is_ok_and(|b| {
                    b["members"].as_array().is_some_and(|m| {
                        !m.iter().any(|x| {
                            x["id"].as_str() == Some(victim_id.as_str())
                                && x["heartbeat_age_ms"].as_i64().unwrap_or(i64::MAX) < 2_000
                        })
                    })
                })
        });
        if let Some((s, _)) = gone {
            println!(
                "membership showed {victim_id} gone or its heartbeat older than 2 s {:.1} s after the kill",
                s - kill_s
            );
        }
    }
    match &end_snapshot {
        Ok(b) => println!("membership at the end: {}", members_line(b)),
        Err(e) if drill.args.require_cluster_api => {
            violations.push(format!("GET /v1/system/cluster: {e}"))
        }
        Err(e) => println!("membership at the end: {e}"),
    }
    if drill.args.require_cluster_api {
        if let (Ok(b), Some(v)) = (&end_snapshot, chaos.victim) {
            if chaos.restarted_at.is_some() && sagas_held(b, &format!("node-{v}")).is_none() {
                violations.push(format!("node-{v} is not a member after its restart"));
            }
        }
    }

    // Bookings, partners, invariants.
    println!();
    println!("== bookings and invariants");
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in last.values() {
        *by_state.entry(s.booking.state.as_str()).or_default() += 1;
    }
    println!(
        "{} keys, {} bookings {by_state:?}; resubmitting every key: {found_unacknowledged} \
         recorded but unacknowledged, {created_now} created only then",
        keys.len(),
        ids.len()
    );
    let lost = ids.iter().filter(|id| !last.contains_key(*id)).count()
        + checked
            .iter()
            .filter(|v| v.detail.contains("of no known booking"))
            .count();
    let doubled = keys.iter().filter(|k| k.ids.len() > 1).count()
        + checked
            .iter()
            .filter(|v| {
                v.detail.contains("captured") && v.detail.contains("times")
                    || v.detail.contains("reservations for")
            })
            .count();
    let parked: Vec<(&String, &str)> = last
        .iter()
        .filter_map(|(id, s)| Some((id, s.booking.parked_reason()?)))
        .collect();
    if let Some(p) = &payments {
        println!(
            "gateway: {} authorizations, {} captures, {} voids, {} refunds, {} open",
            p.ledger.authorizations.len(),
            p.ledger.captures.len(),
            p.ledger.voids.len(),
            p.ledger.refunds.len(),
            p.open_authorizations.len()
        );
    }
    for s in &sellers {
        let live = s
            .reservations
            .iter()
            .filter(|(_, r)| matches!(r, wayfare::sellers::ReservationStatus::Booked { .. }))
            .count();
        println!(
            "seller {}: {} reservations made, {live} live",
            s.name, s.reservations_made
        );
    }
    let confirmed = by_state
        .get(SagaState::Confirmed.as_str())
        .copied()
        .unwrap_or(0);
    println!(
        "{acked} keys acknowledged during the load; {confirmed} confirmed; lost {lost}, doubled {doubled}, parked {}",
        parked.len()
    );
    for (id, reason) in parked.iter().take(10) {
        println!("  parked {id}: {reason}");
    }
    if !parked.is_empty() {
        violations.push(format!("{} sagas parked (needs_attention)", parked.len()));
    }
    if settled < ids.len() {
        violations.push(format!(
            "{} bookings not terminal within {} s",
            ids.len() - settled,
            drill.args.settle_secs
        ));
    }
    for p in &partner_problems {
        violations.push(format!("partner books unreadable: {p}"));
    }
    let mut by_invariant: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for v in &checked {
        by_invariant
            .entry(v.invariant)
            .or_default()
            .push(v.detail.clone());
    }
    for (invariant, details) in &by_invariant {
        println!("VIOLATED {invariant}: {} cases", details.len());
        for d in details.iter().take(5) {
            println!("  {d}");
        }
        violations.push(format!("{invariant}: {} cases", details.len()));
    }
    if checked.is_empty() {
        println!(
            "invariants hold: one booking per key, reservations and captures match bookings, \
             every balance is its ledger ({} accounts)",
            drill.args.accounts
        );
    }
    for p in problems.iter().take(10) {
        println!("problem: {p}");
    }
    if !problems.is_empty() {
        violations.push(format!(
            "{} reads or resubmits failed for good",
            problems.len()
        ));
    }
    println!();
    println!(
        "load started {load_start_wall}; seed {:#x}",
        drill.args.seed
    );
    if violations.is_empty() {
        println!("RESULT: no violations");
    } else {
        println!("RESULT: {} violation(s):", violations.len());
        for v in &violations {
            println!("  - {v}");
        }
    }
    violations.len()
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The database failover as the clients saw it: bookings (the writes) that failed after the
/// kill, from the first failure to the first success after the last one, and the p99 of
/// every request outside that window. Writes failing past `max_secs` are a violation.
fn failover_window(records: &[Record], kill_s: f64, said: &str, max_secs: f64) -> Vec<String> {
    let writes: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == Kind::Booking && r.at >= kill_s)
        .collect();
    let failures: Vec<&Record> = writes
        .iter()
        .copied()
        .filter(|r| !r.ok() && !r.refusal())
        .collect();
    // Records are in completion order: the times come from `at`, when each was sent.
    let first_failure = failures.iter().map(|r| r.at).reduce(f64::min);
    let last_failure = failures.iter().map(|r| r.at).reduce(f64::max);
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for r in &failures {
        *by_status.entry(r.label()).or_default() += 1;
    }
    let mut violations = Vec::new();
    println!("== database failover ({said}, at {kill_s:.2} s)");
    match (first_failure, last_failure) {
        (Some(first), Some(last)) => {
            let back = writes
                .iter()
                .filter(|r| r.at > last && r.ok())
                .map(|r| r.at)
                .reduce(f64::min);
            let end = back.unwrap_or(last);
            println!(
                "write unavailability: first failed booking {:.2} s after the kill, first success after the last failure {}; window {:.2} s; failures by status {by_status:?}",
                first - kill_s,
                back.map_or("never".into(), |b| format!("{:.2} s after it", b - kill_s)),
                end - first
            );
            if back.is_none() {
                violations.push("bookings never succeeded again after the database kill".into());
            } else if end - kill_s > max_secs {
                violations.push(format!(
                    "bookings failed until {:.2} s after the database kill (allowed: {max_secs} s)",
                    end - kill_s
                ));
            }
            let mut outside: Vec<Duration> = records
                .iter()
                .filter(|r| r.at < first || r.at > end)
                .map(|r| r.latency)
                .collect();
            outside.sort();
            println!(
                "latency outside the window: p50 {:.1} ms, p99 {:.1} ms over {} requests",
                percentile(&outside, 0.5),
                percentile(&outside, 0.99),
                outside.len()
            );
        }
        _ => println!("write unavailability: none seen (no booking failed after the kill)"),
    }
    violations
}
