#!/usr/bin/env bash
# Wayfare's other hot paths against their bare twins, each pair in the same run, in
# alternating rounds, on loopback only:
#
# a. Cached anonymous hotel search, GET /v1/search/hotels over $QUERIES queries (6 cities x
#    4 stays, 100+ days ahead: cached for 30 min), driven by wrk -t1 -c$WRK_CONNECTIONS
#    (scripts/search.lua), $SEARCH_ROUNDS rounds of wayfare, twin, twin-prebuilt, ${SEARCH_SECS}s
#    each. The twin (examples/baseline_server.rs) took its bodies from this wayfare at start
#    and serves them from a map: /v1/search/hotels re-serializes the typed answer per
#    request (the work wayfare does too: the ratio that counts), /v1/search/hotels/prebuilt
#    sends the stored bytes (the floor). Every body of both twins is compared with
#    wayfare's (cmp) before the runs, and wayfare's fan-out count is checked unchanged
#    after them (every wayfare answer came from its cache). Per run: req/s, p99 and the CPU
#    split (server from /proc/PID/stat, wrk from getrusage).
# b. Bookings with instant sellers and gateway, $BOOK_ROUNDS rounds of wayfare, twin:
#    - wayfare as in scripts/bench-search-bookings.sh section 4: examples/load.rs,
#      booking=100, $CONNECTIONS connections, 2 threads, ${BOOK_SECS}s; bookings/s end to
#      end (terminal sagas / time from before the first POST until no saga is in flight);
#      POST -> confirmed p99 from the sagas' histories (scripts/booking_latency.py);
#    - the twin, examples/baseline_writes.rs: the same durable writes per booking (5 sled
#      writes, 4 of them flushed, through the same SledStore; and the confirmation email
#      appended to outbox.log with an fdatasync, one at a time, as wayfare's default mail
#      transport does; the table is in its doc comment), $CONNECTIONS clients, ${BOOK_SECS}s;
#      bookings/s the same way and p99 of the same interval; then the same twin without the
#      mail file (--no-mail-file: sled only), to show what that fdatasync costs.
#    CPU: wayfare's server and load.rs (driver) over the load and over the drain after it,
#    wayfare's busiest threads, the twin's own CPU; each with the I/O stall (PSI) and what
#    other processes took.
# c. Wayfare offered each fixed rate in $BOOK_RATES bookings/s (load.rs --rate, open loop) for
#    ${RATE_SECS}s: the target asked directly (1,000/s for 30 s, p99 POST -> confirmed
#    < 100 ms). The closed loop of b keeps every connection
#    busy, so once bookings.max_in_flight (10,000) sagas are in flight it turns into a flood
#    of refused POSTs (503); at a fixed rate the offered load stays what it says.
#
# Every process started here is stopped on exit. About 3 minutes plus the build.
# Results (wrk output, CPU files, JSON) stay in $OUT, servers' logs in the directory printed.
#
# Run with: scripts/bench-twins.sh
# Env: SEARCH_SECS=5 SEARCH_ROUNDS=3 WRK_CONNECTIONS=32 BOOK_SECS=10 BOOK_ROUNDS=2
#      CONNECTIONS=64 BOOK_RATES="1000 1250" RATE_SECS=30 PROFILE=dist OUT=dir
# Smoke run of the script (figures meaningless): PROFILE=debug SEARCH_SECS=1 BOOK_SECS=1 scripts/bench-twins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEARCH_SECS=${SEARCH_SECS:-5}
SEARCH_ROUNDS=${SEARCH_ROUNDS:-3}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
WRK_THREADS=1
BOOK_SECS=${BOOK_SECS:-10}
BOOK_ROUNDS=${BOOK_ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
BOOK_RATES=${BOOK_RATES:-1000 1250}
RATE_SECS=${RATE_SECS:-30}
PROFILE=${PROFILE:-dist}
case "$PROFILE" in
    dist | release) PROFILE_FLAG="--profile $PROFILE" ;;
    debug) PROFILE_FLAG= ;;
    *) echo "PROFILE must be dist, release or debug, got '$PROFILE'" >&2; exit 2 ;;
esac
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
echo "== build ($PROFILE)"
cargo build $PROFILE_FLAG --bin wayfare --example load --example baseline_server \
    --example baseline_writes
# Absolute: servers start in their own directories.
TARGET_DIR=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
BIN=$TARGET_DIR/$PROFILE
WORK=$(mktemp -d /tmp/wayfare-twins.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
echo "== work dir $WORK, results in $OUT"
PIDS=()
PID=""
# stop_pid, wait_listening, start_configured, sellers, measured, cpu_split, wrk_run,
# wrk_field, until_no_saga_in_flight.
source scripts/lib.sh
cleanup() {
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    # Data dirs go; logs stay, with the results.
    rm -rf "$WORK"/*/data "$WORK"/*-data-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export WAYFARE__ADMIN__TOKEN=bench-operator-token-0123456789
export WAYFARE_OPERATOR_TOKEN=$WAYFARE__ADMIN__TOKEN
# The drivers send one address (and each demo key) far past the rate limits ([limits]):
# the figures are the server's, not the limiter's.
export WAYFARE__LIMITS__ENABLED=false
BASE=$'[demo]\naccounts = 10\n[accounts]\nshards = 4\n'
INSTANT=$'\n[payments.simulated]\nlatency_min_ms = 0\nlatency_max_ms = 0\n'

echo "== machine: $(nproc) cores; $(free -h | awk '/^Mem:/ {print $2 " memory, " $7 " available"}'); $(uptime)"

ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
mean() { python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(sum(v) / len(v))" "$@"; }
fmt_load() { tr ' ' '/' <"$OUT/$1.load"; }
threads_snapshot() { # PID FILE: "tid ticks comm" of each thread of PID (tid 0: the process)
    {
        printf '0 %s process\n' "$(cpu_ticks "$1")"
        for t in /proc/"$1"/task/*; do
            printf '%s %s %s\n' "${t##*/}" "$(sed 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')" \
                "$(cat "$t/comm")"
        done
    } >"$2" 2>/dev/null || true
}
threads_report() { # BEFORE AFTER SECONDS: the busiest threads between two snapshots
    # Thread names are cut to 15 characters, so actix's arbiter and HTTP workers all read
    # "actix-rt|system": they are listed one by one in start order (wayfare starts its
    # arbiters before the HTTP workers). Numbered pools (sled-io-N) are summed.
    python3 - "$1" "$2" "$3" "$TICKS" <<'PY'
import re, sys
def load(path):
    rows = {}
    for line in open(path):
        tid, ticks, comm = line.rstrip("\n").split(" ", 2)
        rows[int(tid)] = (int(float(ticks)), comm)
    return rows
before, after = load(sys.argv[1]), load(sys.argv[2])
secs, ticks = float(sys.argv[3]), float(sys.argv[4])
groups, actix = {}, 0
process = (after.pop(0)[0] - before.pop(0)[0]) / ticks / secs
for tid in sorted(after):
    t, comm = after[tid]
    cores = (t - before.get(tid, (0, comm))[0]) / ticks / secs
    if comm.startswith("actix-rt"):
        actix += 1
        name = f"actix-rt#{actix}"
    else:
        name = re.sub(r"-\d+$", "-*", comm)
    n, c = groups.get(name, (0, 0.0))
    groups[name] = (n + 1, c + cores)
# Threads that ended between the snapshots (sled starts I/O threads on demand, tokio
# blocking threads come and go) are only in the process's total.
groups["threads that ended"] = (1, max(0.0, process - sum(c for _, c in groups.values())))
top = sorted(groups.items(), key=lambda kv: -kv[1][1])[:6]
print(f"process {process:.2f}: " + ", ".join(f"{name}{f' (x{n})' if n > 1 else ''} {c:.2f}" for name, (n, c) in top))
PY
}
drain_split() { # NAME: server CPU, others and I/O stall of a run whose driver only polls
    python3 - "$OUT/$1.cpu" <<'PY'
import sys
d, s, wall, threads, busy, stall = map(float, open(sys.argv[1]).read().split())
print(f"server {s / wall:.2f} cores, others {max(0.0, (busy - s - d) / wall):.2f} cores, I/O stall {stall / wall:.0%}")
PY
}
twin_split() { # NAME: the CPU split of a run whose driver is the twin itself (no server)
    python3 - "$OUT/$1.cpu" <<'PY'
import sys
d, s, wall, threads, busy, stall = map(float, open(sys.argv[1]).read().split())
print(f"twin {d / wall:.2f} cores, others {max(0.0, busy / wall - d / wall):.2f} cores, I/O stall {stall / wall:.0%}")
PY
}

echo "== a. cached hotel search: wayfare vs twin, wrk -t1 -c$WRK_CONNECTIONS, ${SEARCH_SECS}s, $SEARCH_ROUNDS rounds"
# Instant sellers: a cached answer does not depend on their latency, and the warm-up is quick.
start_configured search "$BASE$(sellers 0 0.0)"
WF_PID=$PID
WF_URL=$URL
QUERIES=$OUT/search-queries.txt
: >"$QUERIES"
for city in Lisbon Paris Berlin Rome Madrid Amsterdam; do
    for week in 0 1 2 3; do
        day=$((100 + 7 * week))
        printf 'city=%s&check_in=%s&check_out=%s\n' "$city" "$(date -u -d "+$day days" +%F)" \
            "$(date -u -d "+$((day + 2)) days" +%F)" >>"$QUERIES"
    done
done
"$BIN/examples/baseline_server" --bind 127.0.0.1:0 --search-from "$WF_URL" \
    --search-queries "$QUERIES" >"$WORK/twin-search.log" 2>&1 &
TWIN_PID=$!
PIDS+=("$TWIN_PID")
TWIN_URL=$(wait_listening "$WORK/twin-search.log" baseline "$TWIN_PID")
grep '^baseline loaded' "$WORK/twin-search.log"
n=0
while read -r q; do
    curl -fsS "$WF_URL/v1/search/hotels?$q" >"$WORK/body-wayfare"
    curl -fsS "$TWIN_URL/v1/search/hotels?$q" >"$WORK/body-twin"
    curl -fsS "$TWIN_URL/v1/search/hotels/prebuilt?$q" >"$WORK/body-prebuilt"
    cmp -s "$WORK/body-wayfare" "$WORK/body-twin" && cmp -s "$WORK/body-wayfare" "$WORK/body-prebuilt" || {
        echo "bodies differ for $q (see $WORK/body-*)" >&2
        exit 1
    }
    n=$((n + 1))
done <"$QUERIES"
echo "bodies byte-identical for all $n queries (wayfare, twin, twin prebuilt); $(wc -c <"$WORK/body-wayfare") bytes for the last"
fan_outs() {
    curl -fsS -H "Authorization: Bearer $WAYFARE__ADMIN__TOKEN" "$WF_URL/metrics" |
        awk '/^wayfare_search_fan_outs_total/ {print $2}'
}
FAN_OUTS_BEFORE=$(fan_outs)
export SEARCH_QUERIES=$QUERIES
for round in $(seq 1 "$SEARCH_ROUNDS"); do
    threads_snapshot "$WF_PID" "$OUT/search-wayfare-$round.threads0"
    SEARCH_PATH=/v1/search/hotels wrk_run "$WF_URL" "search-wayfare-$round" "$WF_PID" \
        scripts/search.lua -t1 -c"$WRK_CONNECTIONS" -d"${SEARCH_SECS}s" --latency
    threads_snapshot "$WF_PID" "$OUT/search-wayfare-$round.threads1"
    echo "   busiest wayfare threads (cores): $(threads_report "$OUT/search-wayfare-$round.threads0" \
        "$OUT/search-wayfare-$round.threads1" "$(cut -d' ' -f3 "$OUT/search-wayfare-$round.cpu")" |
        tee "$OUT/search-wayfare-$round.threads")"
    SEARCH_PATH=/v1/search/hotels wrk_run "$TWIN_URL" "search-twin-$round" "$TWIN_PID" \
        scripts/search.lua -t1 -c"$WRK_CONNECTIONS" -d"${SEARCH_SECS}s" --latency
    SEARCH_PATH=/v1/search/hotels/prebuilt wrk_run "$TWIN_URL" "search-prebuilt-$round" \
        "$TWIN_PID" scripts/search.lua -t1 -c"$WRK_CONNECTIONS" -d"${SEARCH_SECS}s" --latency
done
FAN_OUTS_AFTER=$(fan_outs)
if [ "$FAN_OUTS_AFTER" != "$FAN_OUTS_BEFORE" ]; then
    echo "wayfare fanned out during the runs ($FAN_OUTS_BEFORE -> $FAN_OUTS_AFTER): not all cached" >&2
    exit 1
fi
stop_pid "$TWIN_PID"
stop_pid "$WF_PID"

echo "== b. bookings, instant sellers and gateway: wayfare vs twin, $CONNECTIONS concurrent, ${BOOK_SECS}s, $BOOK_ROUNDS rounds"
for round in $(seq 1 "$BOOK_ROUNDS"); do
    start_configured "book-$round" "$BASE$(sellers 0 0.0)$INSTANT"
    threads_snapshot "$PID" "$OUT/book-wayfare-$round.threads0"
    T0=$(date +%s.%N)
    measured "book-wayfare-$round" "$PID" 2 -- "$BIN/examples/load" --target "$URL" \
        --mix booking=100 --connections "$CONNECTIONS" --threads 2 --duration "${BOOK_SECS}s" \
        --quiet --json "$OUT/book-wayfare-$round.json" >"$OUT/book-wayfare-$round.txt"
    # The sagas still in flight when the load stops finish here: measured as well.
    measured "book-drain-$round" "$PID" 1 -- bash -c \
        'source scripts/lib.sh && until_no_saga_in_flight "$@"' _ "$URL" "$T0" \
        "$OUT/book-wayfare-$round.e2e"
    threads_snapshot "$PID" "$OUT/book-wayfare-$round.threads1"
    echo "   busiest wayfare threads from the first POST until no saga was in flight (cores): $(
        threads_report "$OUT/book-wayfare-$round.threads0" "$OUT/book-wayfare-$round.threads1" \
            "$(python3 -c "import time; print(time.time() - $T0)")" |
            tee "$OUT/book-wayfare-$round.threads")"
    # Emails trail the sagas (one fdatasync of outbox.log each, one at a time): how far?
    curl -fsS -H "Authorization: Bearer $WAYFARE__ADMIN__TOKEN" "$URL/metrics" |
        awk '/^wayfare_emails_sent_total / {e = $2} /^wayfare_sagas_running / {r = $2}
             END {print "   by then: " e " confirmation emails sent, " r " saga actors still running"}' |
        tee "$OUT/book-wayfare-$round.mail"
    python3 scripts/booking_latency.py "$URL" | tee "$OUT/book-wayfare-$round.latency"
    echo "   (load $(fmt_load "book-wayfare-$round"); during the load: $(cpu_split "book-wayfare-$round"); after it, until no saga is in flight: $(drain_split "book-drain-$round"))"
    stop_pid "$PID"
    for twin in twin nomail; do
        flag=
        [ "$twin" = nomail ] && flag=--no-mail-file
        measured "book-$twin-$round" - 2 -- "$BIN/examples/baseline_writes" $flag \
            --data-dir "$WORK/$twin-data-$round" --clients "$CONNECTIONS" --duration "$BOOK_SECS" \
            >"$OUT/book-$twin-$round.txt"
        echo "-- $twin $flag"
        grep -v '^TWIN_RESULT' "$OUT/book-$twin-$round.txt"
        echo "   (load $(fmt_load "book-$twin-$round"); $(twin_split "book-$twin-$round"))"
        rm -rf "$WORK/$twin-data-$round"
    done
    rm -rf "$WORK/book-$round/data"
done

for rate in $BOOK_RATES; do
    echo "== c. wayfare offered a fixed $rate bookings/s for ${RATE_SECS}s (open loop)"
    start_configured "book-rate-$rate" "$BASE$(sellers 0 0.0)$INSTANT"
    T0=$(date +%s.%N)
    measured "book-rate-$rate" "$PID" 2 -- "$BIN/examples/load" --target "$URL" \
        --mix booking=100 --rate "$rate" --connections 256 --threads 2 \
        --duration "${RATE_SECS}s" --quiet --json "$OUT/book-rate-$rate.json" \
        >"$OUT/book-rate-$rate.txt"
    measured "book-rate-$rate-drain" "$PID" 1 -- bash -c \
        'source scripts/lib.sh && until_no_saga_in_flight "$@"' _ "$URL" "$T0" \
        "$OUT/book-rate-$rate.e2e"
    python3 scripts/booking_latency.py "$URL" | tee "$OUT/book-rate-$rate.latency"
    stop_pid "$PID"
    rm -rf "$WORK/book-rate-$rate/data"
done

twin_field() { # ROUND KEY [twin|nomail]
    grep '^TWIN_RESULT' "$OUT/book-${3:-twin}-$1.txt" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
booking_field() { # JSON KEY -> a field of load.rs's booking line (errors: "503: N" or none)
    python3 - "$1" "$2" <<'PY'
import json, sys
op = next(o for o in json.load(open(sys.argv[1]))["operations"] if o["operation"] == "booking")
value = op[sys.argv[2]]
print(", ".join(f"{k}: {v}" for k, v in value.items()) or "none" if isinstance(value, dict) else value)
PY
}
post_p99() { # ROUND -> wayfare's POST /v1/bookings p99 in ms (load.rs JSON)
    python3 -c "print($(booking_field "$OUT/book-wayfare-$1.json" p99_us) / 1000)"
}
confirmed_p99() { # ROUND -> wayfare's POST -> confirmed p99 in ms
    grep -o 'p99 [0-9.]*' "$OUT/book-wayfare-$1.latency" | cut -d' ' -f2
}

echo
echo "== summary (raw figures in $OUT)"
echo "-- a. cached hotel search, wrk -t1 -c$WRK_CONNECTIONS, ${SEARCH_SECS}s per run (load = 1/5/15-min load average at the start)"
WF=() TW=() PB=()
for round in $(seq 1 "$SEARCH_ROUNDS"); do
    for side in wayfare twin prebuilt; do
        f=search-$side-$round
        printf '%-20s %9.0f req/s  %5.1f us CPU/req  p99 %6.3f ms  load %-15s %s\n' "$f" \
            "$(wrk_field "$f" req_per_s)" "$(us_per_request "$f")" \
            "$(python3 -c "print($(wrk_field "$f" p99_us) / 1000)")" "$(fmt_load "$f")" "$(cpu_split "$f")"
    done
    WF+=("$(wrk_field "search-wayfare-$round" req_per_s)")
    TW+=("$(wrk_field "search-twin-$round" req_per_s)")
    PB+=("$(wrk_field "search-prebuilt-$round" req_per_s)")
done
WF_MEAN=$(mean "${WF[@]}")
TW_MEAN=$(mean "${TW[@]}")
PB_MEAN=$(mean "${PB[@]}")
printf 'search req/s   wayfare %.0f / twin %.0f = %s   (vs prebuilt bytes %.0f: %s)\n' \
    "$WF_MEAN" "$TW_MEAN" "$(ratio "$WF_MEAN" "$TW_MEAN")" "$PB_MEAN" "$(ratio "$WF_MEAN" "$PB_MEAN")"
echo "-- b. bookings, $CONNECTIONS concurrent, ${BOOK_SECS}s of new bookings per run"
BW=() BT=() BN=() LW=() LT=()
for round in $(seq 1 "$BOOK_ROUNDS"); do
    read -r n_done secs per_s <"$OUT/book-wayfare-$round.e2e"
    printf 'wayfare round %s: %6.0f bookings/s end to end (%s in %s s), POST->confirmed p99 %s ms, POST p99 %.1f ms, %s POSTs refused (%s);%s; load %s; %s\n' \
        "$round" "$per_s" "$n_done" "$secs" "$(confirmed_p99 "$round")" "$(post_p99 "$round")" \
        "$(python3 -c "print($(booking_field "$OUT/book-wayfare-$round.json" count) - $(booking_field "$OUT/book-wayfare-$round.json" ok))")" \
        "$(booking_field "$OUT/book-wayfare-$round.json" errors)" \
        "$(sed 's/^   by then://' "$OUT/book-wayfare-$round.mail")" \
        "$(fmt_load "book-wayfare-$round")" \
        "during the load: $(cpu_split "book-wayfare-$round"); after it, until no saga is in flight: $(drain_split "book-drain-$round")"
    for twin in twin nomail; do
        printf '%-7s round %s: %6.0f bookings/s end to end (%s in %s s), created->confirmed p99 %s ms, first write p99 %s ms; %.0f sled writes/s, %.0f flushed/s, %s mail-file syncs by the end; load %s; %s\n' \
            "$twin" "$round" "$(twin_field "$round" bookings_per_s $twin)" \
            "$(twin_field "$round" bookings $twin)" "$(twin_field "$round" secs $twin)" \
            "$(twin_field "$round" confirmed_p99_ms $twin)" "$(twin_field "$round" post_p99_ms $twin)" \
            "$(twin_field "$round" writes_per_s $twin)" "$(twin_field "$round" flushes_per_s $twin)" \
            "$(twin_field "$round" emails $twin)" "$(fmt_load "book-$twin-$round")" \
            "$(twin_split "book-$twin-$round")"
    done
    BW+=("$per_s")
    BT+=("$(twin_field "$round" bookings_per_s)")
    BN+=("$(twin_field "$round" bookings_per_s nomail)")
    LW+=("$(confirmed_p99 "$round")")
    LT+=("$(twin_field "$round" confirmed_p99_ms)")
done
BW_MEAN=$(mean "${BW[@]}")
BT_MEAN=$(mean "${BT[@]}")
BN_MEAN=$(mean "${BN[@]}")
LW_MEAN=$(mean "${LW[@]}")
LT_MEAN=$(mean "${LT[@]}")
printf 'bookings/s     wayfare %.0f / twin %.0f = %s (target: wayfare >= 1,000); twin without the mail file %.0f\n' \
    "$BW_MEAN" "$BT_MEAN" "$(ratio "$BW_MEAN" "$BT_MEAN")" "$BN_MEAN"
printf 'p99 confirmed  wayfare %.1f ms / twin %.1f ms = %s (lower is better)\n' \
    "$LW_MEAN" "$LT_MEAN" "$(ratio "$LW_MEAN" "$LT_MEAN")"
for rate in $BOOK_RATES; do
    r=book-rate-$rate
    read -r n_done secs per_s <"$OUT/$r.e2e"
    echo "-- c. wayfare offered $rate bookings/s for ${RATE_SECS}s"
    printf 'sent %s POSTs (%.0f/s), accepted %s, refused: %s; %s confirmed in %s s = %.0f bookings/s end to end; %s\n' \
        "$(booking_field "$OUT/$r.json" count)" "$(booking_field "$OUT/$r.json" req_per_s)" \
        "$(booking_field "$OUT/$r.json" ok)" "$(booking_field "$OUT/$r.json" errors)" \
        "$n_done" "$secs" "$per_s" "$(sed 's/^states [^;]*; //' "$OUT/$r.latency")"
    echo "   load $(fmt_load "$r"); during the load: $(cpu_split "$r"); after it: $(drain_split "$r-drain")"
done
