#!/usr/bin/env bash
# What tracing costs: wayfare with telemetry off, on with 1% of new traces sampled, and on
# with every trace sampled, in the same run, exporting to examples/otlp_sink.rs (an OTLP/HTTP
# endpoint that counts and drops, so no collector competes for the CPU).
#
# 1. Account reads: GET /v1/accounts/{id} with the account's own key (scripts/accounts.lua),
#    wrk -t1 -c$WRK_CONNECTIONS, ${RUN_SECS}s per run, three rounds of off, 0.01, 1.0 back
#    to back; medians, per-round ratios to off, and the server's CPU microseconds per
#    request (/proc).
# 2. Bookings: a fresh server per run (instant sellers and gateway), examples/load.rs
#    booking=100, $CONNECTIONS connections, ${BOOK_SECS}s; bookings/s end to end (terminal
#    sagas / time from the first POST until none is in flight), $BOOK_ROUNDS rounds of off,
#    0.01, 1.0.
# Then the sink's export count and bytes, and each server's dropped-span counter.
#
# Only 127.0.0.1, ports picked by the kernel; every process started here is stopped on exit.
# About 4 minutes plus the build.
#
# Run with: scripts/bench-tracing.sh
# Env: RUN_SECS=10 WRK_CONNECTIONS=32 BOOK_SECS=8 BOOK_ROUNDS=2 CONNECTIONS=64 ACCOUNTS=1000
#      PROFILE=dist OUT=dir
# Smoke run of the script (figures meaningless): PROFILE=debug RUN_SECS=1 BOOK_SECS=1 BOOK_ROUNDS=1 scripts/bench-tracing.sh
set -euo pipefail

cd "$(dirname "$0")/.."
RUN_SECS=${RUN_SECS:-10}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
BOOK_SECS=${BOOK_SECS:-8}
BOOK_ROUNDS=${BOOK_ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
ACCOUNTS=${ACCOUNTS:-1000}
PROFILE=${PROFILE:-dist}
mkdir -p "${CARGO_TARGET_DIR:-target}"
TARGET_DIR=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
case "$PROFILE" in
    dist | release) BIN="$TARGET_DIR/$PROFILE"; PROFILE_FLAG="--profile $PROFILE" ;;
    debug) BIN="$TARGET_DIR/debug"; PROFILE_FLAG= ;;
    *) echo "PROFILE must be dist, release or debug, got '$PROFILE'" >&2; exit 2 ;;
esac
WORK=$(mktemp -d /tmp/wayfare-bench-tracing.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
PIDS=()
# stop_pid, wait_listening, start_configured, sellers, measured, cpu_split, wrk_run,
# wrk_field, us_per_request, until_no_saga_in_flight.
source scripts/lib.sh
cleanup() {
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

echo "== build ($PROFILE)"
cargo build $PROFILE_FLAG --bin wayfare --example load --example otlp_sink

export WAYFARE__LOG__LEVEL=warn
export WAYFARE__LIMITS__ENABLED=false
export WAYFARE__ADMIN__TOKEN=bench-operator-token-0123456789
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME OTEL_TRACES_SAMPLER_ARG

"$BIN/examples/otlp_sink" --bind 127.0.0.1:0 >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
SINK_URL=$(wait_listening "$WORK/sink.log" otlp-sink "$SINK_PID")

telemetry() { # MODE (off | 0.01 | 1.0) -> config text
    [ "$1" = off ] && return 0
    printf '\n[telemetry]\notlp_endpoint = "%s"\nsample_ratio = %s\n' "$SINK_URL" "$1"
}

echo "== seed $ACCOUNTS demo accounts"
"$BIN/wayfare" seed --accounts "$ACCOUNTS" --data-dir "$WORK/seed-data" >"$WORK/seed.log" 2>&1
MODES=(off 0.01 1.0)
declare -A URLS SERVERS
for mode in "${MODES[@]}"; do
    mkdir -p "$WORK/read-$mode"
    cp -r "$WORK/seed-data" "$WORK/read-$mode/data"
    printf '%s\n' "$(telemetry "$mode")" >"$WORK/read-$mode/config.toml"
    (cd "$WORK/read-$mode" && exec "$BIN/wayfare" serve --config config.toml \
        --bind 127.0.0.1:0 --data-dir data >out.log 2>err.log) &
    SERVERS[$mode]=$!
    PIDS+=("${SERVERS[$mode]}")
    URLS[$mode]=$(wait_listening "$WORK/read-$mode/out.log" wayfare "${SERVERS[$mode]}")
done

export ACCOUNTS
echo "== 1. account reads, wrk -t1 -c$WRK_CONNECTIONS, ${RUN_SECS}s each; 3 rounds of off, 0.01, 1.0"
for round in 1 2 3; do
    for mode in "${MODES[@]}"; do
        wrk_run "${URLS[$mode]}" "read-$mode-$round" "${SERVERS[$mode]}" scripts/accounts.lua \
            -t1 -c"$WRK_CONNECTIONS" -d"${RUN_SECS}s" --latency
    done
done
dropped() { # URL -> wayfare_trace_spans_dropped_total, or "-" when the metric is absent
    curl -fsS -H "Authorization: Bearer $WAYFARE__ADMIN__TOKEN" "$1/metrics" |
        awk '/^wayfare_trace_spans_dropped_total/ {d = $2} END {print (d == "" ? "-" : d)}'
}
for mode in "${MODES[@]}"; do
    echo "read server $mode: dropped spans $(dropped "${URLS[$mode]}")"
    stop_pid "${SERVERS[$mode]}"
done

echo "== 2. bookings, instant sellers and gateway, $CONNECTIONS connections, ${BOOK_SECS}s; $BOOK_ROUNDS rounds of off, 0.01, 1.0"
BASE=$'[demo]\naccounts = 10\n[accounts]\nshards = 4\n'
INSTANT=$'\n[payments.simulated]\nlatency_min_ms = 0\nlatency_max_ms = 0\n'
for round in $(seq 1 "$BOOK_ROUNDS"); do
    for mode in "${MODES[@]}"; do
        start_configured "book-$mode-$round" "$BASE$(sellers 0 0.0)$INSTANT$(telemetry "$mode")"
        T0=$(date +%s.%N)
        measured "book-$mode-$round" "$PID" 2 -- "$BIN/examples/load" --target "$URL" \
            --mix booking=100 --connections "$CONNECTIONS" --threads 2 --duration "${BOOK_SECS}s" \
            --quiet --json "$OUT/book-$mode-$round.json" >"$OUT/book-$mode-$round.txt"
        until_no_saga_in_flight "$URL" "$T0" "$OUT/book-$mode-$round.e2e"
        echo "   dropped spans: $(dropped "$URL")"
        stop_pid "$PID"
    done
done

ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
median3() { python3 -c "import sys; print(sorted(map(float, sys.argv[1:]))[1])" "$@"; }

echo
echo "== summary (raw figures in $OUT)"
echo "-- account reads, wrk -t1 -c$WRK_CONNECTIONS"
for round in 1 2 3; do
    for mode in "${MODES[@]}"; do
        f=read-$mode-$round
        printf '%-16s %9.0f req/s  %5.1f us CPU/req  p99 %7.3f ms  %s\n' "$f" "$(wrk_field "$f" req_per_s)" \
            "$(us_per_request "$f")" "$(python3 -c "print($(wrk_field "$f" p99_us) / 1000)")" "$(cpu_split "$f")"
    done
done
OFF=$(median3 "$(wrk_field read-off-1 req_per_s)" "$(wrk_field read-off-2 req_per_s)" "$(wrk_field read-off-3 req_per_s)")
OFF_US=$(median3 "$(us_per_request read-off-1)" "$(us_per_request read-off-2)" "$(us_per_request read-off-3)")
for mode in 0.01 1.0; do
    M=$(median3 "$(wrk_field "read-$mode-1" req_per_s)" "$(wrk_field "read-$mode-2" req_per_s)" "$(wrk_field "read-$mode-3" req_per_s)")
    M_US=$(median3 "$(us_per_request "read-$mode-1")" "$(us_per_request "read-$mode-2")" "$(us_per_request "read-$mode-3")")
    per_round=$(for r in 1 2 3; do printf '%s ' "$(ratio "$(wrk_field "read-$mode-$r" req_per_s)" "$(wrk_field "read-off-$r" req_per_s)")"; done)
    printf 'sampling %-4s req/s median %.0f / off %.0f = %s (per round: %s); CPU/req %.1f / %.1f us = %s\n' \
        "$mode" "$M" "$OFF" "$(ratio "$M" "$OFF")" "$per_round" "$M_US" "$OFF_US" "$(ratio "$M_US" "$OFF_US")"
done
echo "-- bookings end to end, load.rs booking=100, $CONNECTIONS connections"
declare -A BOOK
for mode in "${MODES[@]}"; do
    values=()
    for round in $(seq 1 "$BOOK_ROUNDS"); do
        read -r done_n secs per_s <"$OUT/book-$mode-$round.e2e"
        printf 'book-%-4s round %s  %6.0f bookings/s (%s terminal in %s s)  %s\n' "$mode" "$round" \
            "$per_s" "$done_n" "$secs" "$(cpu_split "book-$mode-$round")"
        values+=("$per_s")
    done
    BOOK[$mode]=$(python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(sum(v) / len(v))" "${values[@]}")
done
for mode in 0.01 1.0; do
    printf 'sampling %-4s bookings/s mean %.0f / off %.0f = %s\n' "$mode" "${BOOK[$mode]}" "${BOOK[off]}" \
        "$(ratio "${BOOK[$mode]}" "${BOOK[off]}")"
done
echo "-- the sink received: $(curl -fsS "$SINK_URL/stats")"
echo "(targets: off costs nothing measurable; sampling 0.01 costs under 3%)"
