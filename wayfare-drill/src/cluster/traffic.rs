//! The drill's traffic: the fixed-rate load, the kill and restart of a node, membership
//! snapshots, and the resubmission of every key after the load.

use super::*;

/// The fixed-rate load: one request every 1/rate s, each its own task, at most
/// max_in_flight at once (a request that had to wait for a slot is counted late).
pub(super) async fn load(drill: Arc<Drill>, offers: Vec<Offer>, late: Arc<Mutex<u64>>) {
    let args = &drill.args;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let run: u32 = rand::random();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let total = (args.duration_secs * args.rate).floor() as u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let (check_in, check_out) = dates();
    for k in 0..total {
        let intended = drill.start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(intended.into()).await;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                *late.lock().unwrap() += 1;
                slots.clone().acquire_owned().await.expect("never closed")
            }
        };
        let at = (intended - drill.start).as_secs_f64();
        let account = rng.gen_range(0..args.accounts);
        let account_id = AccountId::demo(account).to_string();
        let x: f64 = rng.gen();
        let drill = drill.clone();
        if x < args.booking_share {
            let offer = offers.choose(&mut rng).expect("offers").clone();
            let card = match rng.gen_range(0..10) {
                0..=7 => "tok_approve",
                8 => "tok_decline",
                _ => "tok_fail_capture",
            };
            let points = if rng.gen_bool(0.25) {
                rng.gen_range(100..=2_000).min(offer.price)
            } else {
                0
            };
            let key = format!("cluster-drill-{run:08x}-{k}");
            let body = json!({
                "account_id": account_id,
                "seller": offer.seller,
                "sku": offer.sku,
                "start": check_in,
                "end": check_out,
                "offer_price": {"minor": offer.price, "currency": "EUR"},
                "wallet_points": {"minor": points, "currency": "EUR"},
                "card_token": card,
            });
            drill.keys.lock().unwrap().insert(
                key.clone(),
                KeyState {
                    account: account_id,
                    body: body.clone(),
                    ids: BTreeSet::new(),
                },
            );
            tasks.spawn(async move {
                drill.book(at, key, account, body).await;
                drop(permit);
            });
        } else if x < 2.0 * args.booking_share {
            tasks.spawn(async move {
                let req = drill
                    .http
                    .get(drill.url(&format!(
                        "/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}&account_id={account_id}"
                    )))
                    .bearer_auth(ApiKey::demo(account).reveal());
                drill.send(Kind::Search, at, req).await;
                drop(permit);
            });
        } else {
            tasks.spawn(async move {
                let req = drill
                    .http
                    .get(drill.url(&format!("/v1/accounts/{account_id}")))
                    .bearer_auth(ApiKey::demo(account).reveal());
                drill.send(Kind::AccountRead, at, req).await;
                drop(permit);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Kills the victim at kill_at and restarts it at restart_at.
pub(super) async fn chaos(drill: Arc<Drill>, snapshots: Arc<Mutex<Snapshots>>) -> Chaos {
    let args = &drill.args;
    let mut out = Chaos::default();
    if args.no_kill {
        return out;
    }
    tokio::time::sleep_until((drill.start + Duration::from_secs_f64(args.kill_at)).into()).await;
    if args.kill_target == KillTarget::Db {
        if let Err(e) = run_db_command(&drill, args.db_kill_cmd.as_deref())
            .await
            .map(|said| {
                out.killed_at = Some((drill.secs(), Utc::now()));
                out.db_killed_at = Some((drill.secs(), said));
            })
        {
            out.restart_problem = Some(e);
            return out;
        }
        if args.db_restore_cmd.is_some() {
            let restart = drill.start + Duration::from_secs_f64(args.restart_at);
            tokio::time::sleep_until(restart.into()).await;
            match run_db_command(&drill, args.db_restore_cmd.as_deref()).await {
                Ok(said) => out.db_restored_at = Some((drill.secs(), said)),
                Err(e) => out.restart_problem = Some(e),
            }
        }
        return out;
    }
    // The membership just before the kill.
    let snapshot = membership(&drill).await;
    snapshots
        .lock()
        .unwrap()
        .push((drill.secs(), snapshot.clone()));
    let before = snapshot.ok().or_else(|| {
        snapshots
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, s)| s.as_ref().ok().cloned())
    });
    let victim = args
        .kill_node
        .or_else(|| before.as_ref().and_then(busiest))
        .unwrap_or(args.nodes.len().max(1));
    out.victim = Some(victim);
    out.before_kill = before;
    let Some(pid_dir) = &args.pid_dir else {
        out.restart_problem = Some("no --pid-dir (NODE_PIDS): nothing killed".into());
        return out;
    };
    let pid_file = pid_dir.join(format!("node-{victim}.pid"));
    let pid: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let Some(pid) = pid.filter(|p| *p > 1) else {
        out.restart_problem = Some(format!("no pid in {}: nothing killed", pid_file.display()));
        return out;
    };
    // SAFETY: kill(2) with a pid read from the cluster's own pid file.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc != 0 {
        out.restart_problem = Some(format!(
            "kill -9 {pid} (node-{victim}): {}",
            std::io::Error::last_os_error()
        ));
        return out;
    }
    out.pid = Some(pid);
    out.killed_at = Some((drill.secs(), Utc::now()));
    println!("{:6.2} s  SIGKILL node-{victim} (pid {pid})", drill.secs());
    tokio::time::sleep_until((drill.start + Duration::from_secs_f64(args.restart_at)).into()).await;
    let Some(cmd) = args.restart_cmd.clone() else {
        out.restart_problem = Some("no --restart-cmd (RESTART_NODE): not restarted".into());
        return out;
    };
    println!("{:6.2} s  restarting node-{victim}", drill.secs());
    let result = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&cmd)
            .arg(victim.to_string())
            .stdout(std::process::Stdio::null())
            .output()
    })
    .await
    .expect("restart task");
    match result {
        Ok(o) if o.status.success() => {
            out.restarted_at = Some((drill.secs(), Utc::now()));
            println!("{:6.2} s  node-{victim} healthy again", drill.secs());
        }
        Ok(o) => {
            out.restart_problem = Some(format!(
                "restart of node-{victim} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => out.restart_problem = Some(format!("cannot run the restart command: {e}")),
    }
    out
}

/// Membership snapshots once a second until `stop`.
pub(super) async fn watch(drill: Arc<Drill>, snapshots: Arc<Mutex<Snapshots>>, stop: Instant) {
    while Instant::now() < stop {
        let s = membership(&drill).await;
        snapshots.lock().unwrap().push((drill.secs(), s));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every key once more with its first body: a key whose reply was lost learns its booking
/// (200) or creates it now (202); a key with a known booking must get that one back.
/// Bounded retries of what is transient. Returns problems and how many were recorded but
/// unacknowledged (200 for a key with no id seen yet).
pub(super) async fn resubmit(drill: &Drill) -> (Vec<String>, usize, usize) {
    let all: Vec<(String, Value, bool, u64)> = drill
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|(k, s)| {
            let n = (0..drill.args.accounts)
                .find(|n| AccountId::demo(*n).to_string() == s.account)
                .unwrap_or(0);
            (k.clone(), s.body.clone(), !s.ids.is_empty(), n)
        })
        .collect();
    let mut problems = Vec::new();
    let mut found_unacknowledged = 0;
    let mut created_now = 0;
    for chunk in all.chunks(32) {
        let replies = futures_util::future::join_all(chunk.iter().map(
            |(key, body, known, account)| async move {
                let mut last = String::new();
                for _ in 0..20 {
                    let res = drill
                        .http
                        .post(drill.url("/v1/bookings"))
                        .bearer_auth(ApiKey::demo(*account).reveal())
                        .header("Idempotency-Key", key)
                        .json(body)
                        .send()
                        .await;
                    match res {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if status == 200 || status == 202 {
                                return (key, *known, Ok((status, v)));
                            }
                            last = format!("{status}: {v}");
                            if status == 409 && !v.to_string().contains("recover") {
                                // A refusal for good (e.g. insufficient points): no id.
                                return (key, *known, Err(last));
                            }
                        }
                        Err(e) => last = error_kind(&e),
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                (key, *known, Err(last))
            },
        ))
        .await;
        for (key, known, reply) in replies {
            match reply {
                Ok((status, body)) => {
                    match (status, known) {
                        (200, false) => found_unacknowledged += 1,
                        (202, true) => problems.push(format!(
                            "resubmitting {key}: a new booking (202) although one was acknowledged"
                        )),
                        (202, false) => created_now += 1,
                        _ => {}
                    }
                    drill.note_booking(key, Some(&body));
                }
                Err(last) if known => problems.push(format!(
                    "resubmitting {key} (booking acknowledged before): {last}"
                )),
                // Never created (refused for good, e.g. insufficient points): nothing to settle.
                Err(_) => {}
            }
        }
    }
    (problems, found_unacknowledged, created_now)
}

/// Runs a database command (a kill, an outage, a restore) and returns what it printed.
async fn run_db_command(drill: &Drill, cmd: Option<&str>) -> Result<String, String> {
    let cmd = cmd.ok_or("no database command given")?.to_owned();
    let shown = cmd.clone();
    // Through a shell: a command may name a variable scripts/cluster.sh exported.
    let result = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
    })
    .await
    .expect("database command task");
    match result {
        Ok(o) if o.status.success() => {
            let said = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let said = if said.is_empty() { shown } else { said };
            println!("{:6.2} s  {said}", drill.secs());
            Ok(said)
        }
        Ok(o) => Err(format!(
            "{shown} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {shown}: {e}")),
    }
}
