#!/usr/bin/env bash
# Side-by-side HTTP benchmark of the account-read targets: wayfare against the
# bare actix-web + sled handler of examples/baseline_server.rs, which does the minimum
# durable work (one sled read of the account, its key digest beside it; compared in memory).
#
# 1. Builds the server, the load driver and the baseline (the dist profile: fat LTO, one
#    codegen unit, as shipped; PROFILE=release for a quicker build, PROFILE=debug for a
#    quick smoke run of the script itself). Installs wrk with apt-get when missing.
# 2. Seeds $ACCOUNTS demo accounts with wayfare on a fresh data dir, stops it (SIGTERM),
#    and copies the dir for the baseline (sled allows one process per directory).
# 3. Idle VmRSS of both, with $ACCOUNTS demo accounts in the store.
# 4. Closed loop, GET /v1/accounts/{id} of a random demo account with that account's own
#    API key, with two drivers:
#    - wrk (-t$WRK_THREADS -c$WRK_CONNECTIONS, scripts/accounts.lua): the honest driver;
#      three rounds, each of wayfare (limits off), the twin (one read: the minimum work),
#      wayfare with limits on (buckets too large to refuse: the limiter's cost alone) and
#      the twin doing two reads (key index, then account: the old baseline); medians,
#      per-round ratios and server CPU microseconds per request;
#    - examples/load.rs (hyper, $LOAD_THREADS threads, $CONNECTIONS connections), rounds
#      alternating wayfare, baseline, wayfare, baseline.
#    For each driver: req/s of both, the ratio, and the CPU split (driver CPU from
#    getrusage of the driver process, server CPU from /proc/<pid>/stat), saying which
#    side saturated.
# 5. p99 at a fixed ~$RATE req/s: wrk with a Lua per-request delay (10 connections, each
#    pausing 10 ms before each request: about 1,000 req/s less the service time), and
#    examples/load.rs in its --rate mode (open loop, latency from the intended send
#    time). VmRSS of a fresh wayfare sampled each second during the load.rs rate run.
#
# Only 127.0.0.1, ports picked by the kernel. Every process started here is stopped on
# exit, whatever happens. Takes about 5 minutes plus the build. Results land in $OUT.
#
# Run with: scripts/bench.sh
# Env: RUN_SECS=10 CONNECTIONS=64 LOAD_THREADS=2 WRK_CONNECTIONS=32 WRK_THREADS=1 RATE=1000
#      ACCOUNTS=1000 PROFILE=dist OUT=dir
# Smoke run of the script (figures meaningless): PROFILE=debug RUN_SECS=1 scripts/bench.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CONNECTIONS=${CONNECTIONS:-64}
RUN_SECS=${RUN_SECS:-10}
RATE=${RATE:-1000}
ACCOUNTS=${ACCOUNTS:-1000}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
# Driver threads: on 2 cores, 1 thread caps the baseline's req/s well below what it serves.
LOAD_THREADS=${LOAD_THREADS:-2}
PROFILE=${PROFILE:-dist}
mkdir -p "${CARGO_TARGET_DIR:-target}"
TARGET_DIR=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
case "$PROFILE" in
    dist | release) BIN="$TARGET_DIR/$PROFILE"; PROFILE_FLAG="--profile $PROFILE" ;;
    debug) BIN="$TARGET_DIR/debug"; PROFILE_FLAG= ;;
    *) echo "PROFILE must be dist, release or debug, got '$PROFILE'" >&2; exit 2 ;;
esac
WORK=$(mktemp -d /tmp/wayfare-bench.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
PIDS=()
# stop_pid, wait_listening, measured, cpu_split, wrk_run, wrk_field.
source scripts/lib.sh
cleanup() {
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    rm -rf "$WORK/wayfare-data" "$WORK/baseline-data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v wrk >/dev/null; then
    echo "== install wrk"
    SUDO=
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y wrk >/dev/null || {
        $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null
    }
fi

echo "== build ($PROFILE)"
cargo build $PROFILE_FLAG --bin wayfare --example load --example baseline_server

export WAYFARE__LOG__LEVEL=warn
export WAYFARE__DEMO__ACCOUNTS=$ACCOUNTS
# The drivers send each demo key thousands of times a second, far past the per-key rate
# limit ([limits]): this measures the server, not the limiter.
export WAYFARE__LIMITS__ENABLED=false
# The drivers send each demo account's own API key, as customers would; the operator token
# serves the curl below (and wallet credits, if a mix asks for them).
export WAYFARE__ADMIN__TOKEN=bench-operator-token-0123456789
export WAYFARE_OPERATOR_TOKEN=$WAYFARE__ADMIN__TOKEN

start_wayfare() { # LOG -> sets WF_PID, WF_URL
    "$BIN/wayfare" serve --bind 127.0.0.1:0 --data-dir "$WORK/wayfare-data" >"$1" 2>&1 &
    WF_PID=$!
    PIDS+=("$WF_PID")
    WF_URL=$(wait_listening "$1" wayfare "$WF_PID")
}

rss_kb() { # PID -> VmRSS in kB
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

load() { # URL NAME SERVER_PID extra-args...
    local url=$1 name=$2 server=$3
    shift 3
    measured "$name" "$server" "$LOAD_THREADS" -- "$BIN/examples/load" --target "$url" \
        --accounts "$ACCOUNTS" --threads "$LOAD_THREADS" --quiet --json "$OUT/$name.json" "$@" \
        | tee "$OUT/$name.txt"
}

field() { # FILE '.key' or '.key / N' over the account_read report (python3: no jq needed)
    python3 - "$1" "$2" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
key, _, div = expr.lstrip(".").partition("/")
op = next(o for o in json.load(open(path))["operations"] if o["operation"] == "account_read")
value = op[key.strip()] / (float(div) if div.strip() else 1)
print(value)
PY
}

echo "== seed $ACCOUNTS demo accounts"
start_wayfare "$WORK/seed.log"
last=$(printf '00000000-0000-4000-8000-%012x' $((ACCOUNTS - 1)))
curl -fsS -H "Authorization: Bearer $WAYFARE__ADMIN__TOKEN" "$WF_URL/v1/accounts/$last" >/dev/null
stop_pid "$WF_PID"
cp -r "$WORK/wayfare-data" "$WORK/baseline-data"

echo "== start the servers: wayfare with limits off and on, the twin with one read and two"
start_wayfare "$WORK/wayfare.log"
cp -r "$WORK/baseline-data" "$WORK/limits-data"
WAYFARE__LIMITS__ENABLED=true WAYFARE__LIMITS__PER_KEY_PER_SECOND=1000000 \
    WAYFARE__LIMITS__PER_KEY_BURST=1000000 \
    "$BIN/wayfare" serve --bind 127.0.0.1:0 --data-dir "$WORK/limits-data" >"$WORK/limits.log" 2>&1 &
LIM_PID=$!
PIDS+=("$LIM_PID")
LIM_URL=$(wait_listening "$WORK/limits.log" wayfare "$LIM_PID")
start_twin() { # READS -> sets TWIN_PID, TWIN_URL
    cp -r "$WORK/baseline-data" "$WORK/twin-$1-data"
    "$BIN/examples/baseline_server" --bind 127.0.0.1:0 --data-dir "$WORK/twin-$1-data" \
        --account-reads "$1" >"$WORK/twin-$1.log" 2>&1 &
    TWIN_PID=$!
    PIDS+=("$TWIN_PID")
    TWIN_URL=$(wait_listening "$WORK/twin-$1.log" baseline "$TWIN_PID")
}
start_twin two
TWO_PID=$TWIN_PID TWO_URL=$TWIN_URL
start_twin one
BASE_PID=$TWIN_PID BASE_URL=$TWIN_URL
sleep 2
WF_IDLE_KB=$(rss_kb "$WF_PID")
BASE_IDLE_KB=$(rss_kb "$BASE_PID")
echo "idle VmRSS ($ACCOUNTS demo accounts): wayfare ${WF_IDLE_KB} kB, baseline ${BASE_IDLE_KB} kB"

export ACCOUNTS
# Each round runs the four servers back to back, so a ratio compares neighbours in time;
# the summary takes the median of three rounds.
echo "== wrk closed loop, -t$WRK_THREADS -c$WRK_CONNECTIONS, ${RUN_SECS}s each; 3 rounds of wayfare, twin (one read), wayfare with limits on, twin (two reads)"
for round in 1 2 3; do
    for side in "wayfare $WF_URL $WF_PID" "baseline $BASE_URL $BASE_PID" \
        "limits $LIM_URL $LIM_PID" "twin2 $TWO_URL $TWO_PID"; do
        read -r name url pid <<<"$side"
        wrk_run "$url" "wrk-$name-$round" "$pid" scripts/accounts.lua \
            -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${RUN_SECS}s" --latency
    done
done
stop_pid "$LIM_PID"
stop_pid "$TWO_PID"

echo "== load.rs closed loop, $CONNECTIONS connections, $LOAD_THREADS threads, ${RUN_SECS}s each, A B A B"
for round in 1 2; do
    load "$WF_URL" "closed-wayfare-$round" "$WF_PID" --connections "$CONNECTIONS" --duration "${RUN_SECS}s"
    load "$BASE_URL" "closed-baseline-$round" "$BASE_PID" --connections "$CONNECTIONS" --duration "${RUN_SECS}s"
done
WF_PEAK_CLOSED_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$WF_PID/status")
BASE_PEAK_CLOSED_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$BASE_PID/status")

echo "== wrk at ~$RATE req/s (10 connections, a 10 ms pause before each request), ${RUN_SECS}s"
DELAY_MS=$((10 * 1000 / RATE)) wrk_run "$WF_URL" "wrk-rate-wayfare" "$WF_PID" scripts/accounts.lua \
    -t1 -c10 -d"${RUN_SECS}s" --latency
DELAY_MS=$((10 * 1000 / RATE)) wrk_run "$BASE_URL" "wrk-rate-baseline" "$BASE_PID" scripts/accounts.lua \
    -t1 -c10 -d"${RUN_SECS}s" --latency

echo "== load.rs fixed rate, $RATE req/s, ${RUN_SECS}s, fresh wayfare"
stop_pid "$WF_PID"
start_wayfare "$WORK/wayfare-rate.log"
sleep 2
WF_FRESH_IDLE_KB=$(rss_kb "$WF_PID")
load "$WF_URL" "rate-wayfare" "$WF_PID" --rate "$RATE" --connections "$CONNECTIONS" \
    --duration "${RUN_SECS}s" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
WF_RATE_MAX_KB=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    kb=$(rss_kb "$WF_PID")
    ((kb > WF_RATE_MAX_KB)) && WF_RATE_MAX_KB=$kb
    sleep 1
done
wait "$LOAD_PID"
load "$BASE_URL" "rate-baseline" "$BASE_PID" --rate "$RATE" --connections "$CONNECTIONS" \
    --duration "${RUN_SECS}s"

ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
mean2() { python3 -c "print(($1 + $2) / 2)"; }

echo
echo "== summary (GET /v1/accounts/{id}, own API key; raw figures in $OUT)"
echo "-- wrk -t$WRK_THREADS -c$WRK_CONNECTIONS (the honest driver); server CPU per request from /proc"
for round in 1 2 3; do
    for name in wayfare baseline limits twin2; do
        f=wrk-$name-$round
        printf '%-18s %10.0f req/s  %6.1f us CPU/req  p99 %8.3f ms  %s\n' "$f" "$(wrk_field "$f" req_per_s)" \
            "$(us_per_request "$f")" "$(python3 -c "print($(wrk_field "$f" p99_us) / 1000)")" "$(cpu_split "$f")"
    done
done
median3() { # NAME KEY -> the median over rounds 1-3
    python3 -c "import sys; print(sorted(map(float, sys.argv[1:]))[1])" \
        "$(wrk_field "$1-1" "$2")" "$(wrk_field "$1-2" "$2")" "$(wrk_field "$1-3" "$2")"
}
round_ratios() { # A B -> the three per-round ratios of req/s
    for round in 1 2 3; do
        printf '%s ' "$(ratio "$(wrk_field "wrk-$1-$round" req_per_s)" "$(wrk_field "wrk-$2-$round" req_per_s)")"
    done
}
WF=$(median3 wrk-wayfare req_per_s)
BASE=$(median3 wrk-baseline req_per_s)
LIM=$(median3 wrk-limits req_per_s)
TWO=$(median3 wrk-twin2 req_per_s)
printf 'wrk req/s, median of 3: wayfare %.0f / twin (one read) %.0f = %s (per round: %s; target >= 0.95)\n' \
    "$WF" "$BASE" "$(ratio "$WF" "$BASE")" "$(round_ratios wayfare baseline)"
printf 'wrk req/s, median of 3: limits on %.0f / limits off %.0f = %s (per round: %s; target >= 0.95)\n' \
    "$LIM" "$WF" "$(ratio "$LIM" "$WF")" "$(round_ratios limits wayfare)"
printf 'wrk req/s, median of 3: wayfare %.0f / twin (two reads) %.0f = %s (per round: %s)\n' \
    "$WF" "$TWO" "$(ratio "$WF" "$TWO")" "$(round_ratios wayfare twin2)"
echo "-- examples/load.rs, $LOAD_THREADS threads, $CONNECTIONS connections (shares the CPU: squeezes ratios toward 1)"
for f in closed-wayfare-1 closed-baseline-1 closed-wayfare-2 closed-baseline-2; do
    printf '%-18s %10.0f req/s  p99 %8.3f ms  %s\n' "$f" "$(field "$OUT/$f.json" .req_per_s)" \
        "$(field "$OUT/$f.json" '.p99_us / 1000')" "$(cpu_split "$f")"
done
WF=$(mean2 "$(field "$OUT/closed-wayfare-1.json" .req_per_s)" "$(field "$OUT/closed-wayfare-2.json" .req_per_s)")
BASE=$(mean2 "$(field "$OUT/closed-baseline-1.json" .req_per_s)" "$(field "$OUT/closed-baseline-2.json" .req_per_s)")
printf 'load.rs req/s      wayfare %.0f / baseline %.0f = %s\n' "$WF" "$BASE" "$(ratio "$WF" "$BASE")"
echo "-- p99 at a fixed rate (target < 1 ms)"
printf 'wrk + Lua delay    wayfare %.0f req/s p99 %.3f ms, baseline %.0f req/s p99 %.3f ms\n' \
    "$(wrk_field wrk-rate-wayfare req_per_s)" "$(python3 -c "print($(wrk_field wrk-rate-wayfare p99_us) / 1000)")" \
    "$(wrk_field wrk-rate-baseline req_per_s)" "$(python3 -c "print($(wrk_field wrk-rate-baseline p99_us) / 1000)")"
printf 'load.rs --rate %s  wayfare p99 %.3f ms, baseline p99 %.3f ms (from intended send times)\n' "$RATE" \
    "$(field "$OUT/rate-wayfare.json" '.p99_us / 1000')" \
    "$(field "$OUT/rate-baseline.json" '.p99_us / 1000')"
echo "-- memory"
echo "VmRSS wayfare: idle ${WF_IDLE_KB} kB with $ACCOUNTS demo accounts (fresh before rate run ${WF_FRESH_IDLE_KB} kB), max under $RATE req/s ${WF_RATE_MAX_KB} kB, peak (VmHWM) after closed loops ${WF_PEAK_CLOSED_KB} kB"
echo "VmRSS baseline: idle ${BASE_IDLE_KB} kB, peak (VmHWM) after closed loops ${BASE_PEAK_CLOSED_KB} kB"
echo "(targets: wayfare idle < 12 MB = 12288 kB with 1,000 accounts, under 1,000 req/s < 20 MB = 20480 kB)"
