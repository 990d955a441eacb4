#!/usr/bin/env bash
# Side-by-side HTTP benchmark of DESIGN.md section 7's account-read targets.
#
# 1. Builds the release server, the load driver and the bare baseline server.
# 2. Seeds 1000 demo accounts with wayfare on a fresh data dir, stops it (SIGTERM), and
#    copies the dir for the baseline (sled allows one process per directory).
# 3. Closed loop, GET /v1/accounts/{id}, in alternation wayfare, baseline, wayfare,
#    baseline (CONNECTIONS connections, RUN_SECS each); prints req/s and p99 of each and
#    the wayfare/baseline ratios.
# 4. A fresh wayfare: VmRSS idle, then a fixed 1,000 req/s run (latency from the intended
#    send time) with VmRSS sampled each second; the same rate against the baseline.
#
# Only 127.0.0.1, ports picked by the kernel. Servers are stopped on exit, whatever happens.
# Takes about 2 minutes plus the build. Results land in $OUT (default: a temp dir).
#
# Run with: scripts/bench.sh   (env: CONNECTIONS=64 RUN_SECS=10 RATE=1000 LOAD_THREADS=2 OUT=dir)
set -euo pipefail

cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-64}
RUN_SECS=${RUN_SECS:-10}
RATE=${RATE:-1000}
ACCOUNTS=${ACCOUNTS:-1000}
# Driver threads: on 2 cores, 1 thread caps the baseline's req/s well below what it serves.
LOAD_THREADS=${LOAD_THREADS:-2}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release"
WORK=$(mktemp -d /tmp/wayfare-bench.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        stop "$pid"
    done
    rm -rf "$WORK/wayfare-data" "$WORK/baseline-data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build"
cargo build --release --bin wayfare --example load --example baseline_server

export WAYFARE__LOG__LEVEL=warn
export WAYFARE__DEMO__ACCOUNTS=$ACCOUNTS
# The load driver sends each demo account's own API key, as customers would; the operator
# token serves the curl below (and wallet credits, if a mix asks for them).
export WAYFARE__ADMIN__TOKEN=bench-operator-token-0123456789
export WAYFARE_OPERATOR_TOKEN=$WAYFARE__ADMIN__TOKEN

# wait_listening LOG WORD: prints the http://ADDR the server announced in LOG.
wait_listening() {
    local log=$1 word=$2
    for _ in $(seq 1 600); do
        if grep -q "$word listening on http://" "$log" 2>/dev/null; then
            grep -o "$word listening on http://[0-9.:]*" "$log" | head -1 | sed 's/.* on //'
            return 0
        fi
        sleep 0.1
    done
    echo "$word did not start; its log:" >&2
    cat "$log" >&2
    return 1
}

start_wayfare() { # LOG -> sets WF_PID, WF_URL
    "$BIN/wayfare" serve --bind 127.0.0.1:0 --data-dir "$WORK/wayfare-data" >"$1" 2>&1 &
    WF_PID=$!
    PIDS+=("$WF_PID")
    WF_URL=$(wait_listening "$1" wayfare)
}

stop() { # PID: SIGTERM, then SIGKILL if it has not exited within 20 s
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 1 200); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "process $1 did not stop within 20 s of SIGTERM; sending SIGKILL" >&2
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}

rss_kb() { # PID -> VmRSS in kB
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

load() { # URL NAME extra-args...
    local url=$1 name=$2
    shift 2
    "$BIN/examples/load" --target "$url" --accounts "$ACCOUNTS" --threads "$LOAD_THREADS" --quiet \
        --json "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
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
curl -fsS -H "Authorization: Bearer $WAYFARE__ADMIN__TOKEN" \
    "$WF_URL/v1/accounts/00000000-0000-4000-8000-0000000003e7" >/dev/null
stop "$WF_PID"
cp -r "$WORK/wayfare-data" "$WORK/baseline-data"

echo "== start both servers"
start_wayfare "$WORK/wayfare.log"
"$BIN/examples/baseline_server" --bind 127.0.0.1:0 --data-dir "$WORK/baseline-data" \
    >"$WORK/baseline.log" 2>&1 &
BASE_PID=$!
PIDS+=("$BASE_PID")
BASE_URL=$(wait_listening "$WORK/baseline.log" baseline)
sleep 2
WF_IDLE_KB=$(rss_kb "$WF_PID")
BASE_IDLE_KB=$(rss_kb "$BASE_PID")
echo "idle VmRSS: wayfare ${WF_IDLE_KB} kB, baseline ${BASE_IDLE_KB} kB"

echo "== closed loop, $CONNECTIONS connections, ${RUN_SECS}s each, A B A B"
for round in 1 2; do
    load "$WF_URL" "closed-wayfare-$round" --connections "$CONNECTIONS" --duration "${RUN_SECS}s"
    load "$BASE_URL" "closed-baseline-$round" --connections "$CONNECTIONS" --duration "${RUN_SECS}s"
done
WF_PEAK_CLOSED_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$WF_PID/status")
BASE_PEAK_CLOSED_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$BASE_PID/status")

echo "== fixed rate, $RATE req/s, ${RUN_SECS}s, fresh wayfare"
stop "$WF_PID"
start_wayfare "$WORK/wayfare-rate.log"
sleep 2
WF_FRESH_IDLE_KB=$(rss_kb "$WF_PID")
load "$WF_URL" "rate-wayfare" --rate "$RATE" --connections "$CONNECTIONS" \
    --duration "${RUN_SECS}s" &
LOAD_PID=$!
WF_RATE_MAX_KB=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    kb=$(rss_kb "$WF_PID")
    ((kb > WF_RATE_MAX_KB)) && WF_RATE_MAX_KB=$kb
    sleep 1
done
wait "$LOAD_PID"
load "$BASE_URL" "rate-baseline" --rate "$RATE" --connections "$CONNECTIONS" \
    --duration "${RUN_SECS}s"

echo
echo "== summary (account_read; figures in $OUT)"
printf '%-20s %12s %10s %10s\n' run req/s p50_ms p99_ms
for f in closed-wayfare-1 closed-baseline-1 closed-wayfare-2 closed-baseline-2 rate-wayfare rate-baseline; do
    printf '%-20s %12.0f %10.3f %10.3f\n' "$f" \
        "$(field "$OUT/$f.json" .req_per_s)" \
        "$(field "$OUT/$f.json" '.p50_us / 1000')" \
        "$(field "$OUT/$f.json" '.p99_us / 1000')"
done 2>/dev/null || true
mean() { # NAME EXPR: mean over rounds 1 and 2
    python3 -c "print(($(field "$OUT/$1-1.json" "$2") + $(field "$OUT/$1-2.json" "$2")) / 2)"
}
WF_RPS=$(mean closed-wayfare .req_per_s)
BASE_RPS=$(mean closed-baseline .req_per_s)
WF_P99=$(mean closed-wayfare .p99_us)
BASE_P99=$(mean closed-baseline .p99_us)
echo
printf 'closed loop req/s  wayfare %.0f / baseline %.0f = %.3f (target >= 0.85, aim 0.95)\n' \
    "$WF_RPS" "$BASE_RPS" "$(python3 -c "print($WF_RPS / $BASE_RPS)")"
printf 'closed loop p99    wayfare %.3f ms / baseline %.3f ms = %.2fx\n' \
    "$(python3 -c "print($WF_P99 / 1000)")" "$(python3 -c "print($BASE_P99 / 1000)")" \
    "$(python3 -c "print($WF_P99 / $BASE_P99)")"
printf 'fixed %s req/s p99 wayfare %.3f ms (target < 1 ms), baseline %.3f ms\n' "$RATE" \
    "$(field "$OUT/rate-wayfare.json" '.p99_us / 1000')" \
    "$(field "$OUT/rate-baseline.json" '.p99_us / 1000')"
echo "VmRSS wayfare: idle ${WF_IDLE_KB} kB (fresh before rate run ${WF_FRESH_IDLE_KB} kB), max under $RATE req/s ${WF_RATE_MAX_KB} kB, peak (VmHWM) after closed loop ${WF_PEAK_CLOSED_KB} kB"
echo "VmRSS baseline: idle ${BASE_IDLE_KB} kB, peak (VmHWM) after closed loop ${BASE_PEAK_CLOSED_KB} kB"
echo "(targets: wayfare idle < 12 MB = 12288 kB, under 1,000 req/s < 20 MB = 20480 kB)"
