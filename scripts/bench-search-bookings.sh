#!/usr/bin/env bash
# Search and booking figures of the targets in docs/architecture.md, on loopback only:
#  1. hotel search over 3 sellers of 50 ms: cold (cache off, one connection) p50/p99;
#  2. the same with one seller hanging: every answer within deadline + margin?
#  3. cached searches: p99 with one connection, req/s with 64;
#  4. bookings with instant sellers and gateway: bookings/s accepted, and POST -> confirmed
#     latency from each saga's own history;
#  5. bookings at a fixed 100/s with and without a flood of anonymous GET /health (wrk, 64
#     connections): POST p99 and POST -> confirmed p99 of both runs (RELIABILITY.md).
# The same paths against their bare twins, ratios and CPU split: scripts/bench-twins.sh.
# Run from the repository root: scripts/bench-search-bookings.sh   (about 2 minutes)
# Smoke run of the script itself (figures meaningless): PROFILE=debug scripts/bench-search-bookings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-dist}
case "$PROFILE" in
  dist | release) cargo build --profile "$PROFILE" --bin wayfare --example load >/dev/null ;;
  debug) cargo build --bin wayfare --example load >/dev/null ;;
  *) echo "PROFILE must be dist, release or debug, got '$PROFILE'" >&2; exit 2 ;;
esac
# Absolute: servers start in their own directories.
TARGET_DIR=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
BIN=$TARGET_DIR/$PROFILE
LOAD=$BIN/examples/load
WORK=$(mktemp -d)
OUT=$WORK
# Every server started here, stopped on exit whatever happens (not only the last one).
PIDS=()
PID=""
# stop_pid, start_configured (sets PID and URL), sellers, until_no_saga_in_flight.
source scripts/lib.sh
cleanup() { for p in "${PIDS[@]}"; do stop_pid "$p"; done; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# Operator token of the servers started below; the checks read metrics and bookings with it.
export WAYFARE__ADMIN__TOKEN=bench-operator-token-0123456789
export WAYFARE_OPERATOR_TOKEN=$WAYFARE__ADMIN__TOKEN
# The load driver sends each demo key far past the per-key rate limit ([limits]): the
# figures are the server's, not the limiter's.
export WAYFARE__LIMITS__ENABLED=false

stop() { stop_pid "$PID"; PID=""; }
BASE=$'[demo]\naccounts = 10\n[accounts]\nshards = 4\n'

echo "== 1. cold hotel search, 3 sellers x 50 ms, cache off, 1 connection, 10 s"
start_configured cold "$BASE"$'[search.cache]\ncapacity = 0\n'"$(sellers 50 0.0)"
$LOAD --target "$URL" --mix hotel_search=100 --connections 1 --duration 10s --quiet
stop

echo "== 2. cold hotel search with charlie hanging (deadline 1000 ms), 4 connections, 10 s"
start_configured hang "$BASE"$'[search]\ndeadline_ms = 1000\n[search.cache]\ncapacity = 0\n'"$(sellers 50 1.0)"
$LOAD --target "$URL" --mix hotel_search=100 --connections 4 --duration 10s --quiet
stop

echo "== 3. cached hotel search: 1 connection (latency), then 64 connections (throughput)"
start_configured cached "$BASE$(sellers 50 0.0)"
$LOAD --target "$URL" --mix hotel_search=100 --connections 1 --duration 5s --quiet
$LOAD --target "$URL" --mix hotel_search=100 --connections 64 --threads 2 --duration 10s --quiet
stop

echo "== 4. bookings, instant sellers and gateway, 64 connections, 10 s"
start_configured book "$BASE$(sellers 0 0.0)"$'\n[payments.simulated]\nlatency_min_ms = 0\nlatency_max_ms = 0\n'
T0=$(date +%s.%N)
$LOAD --target "$URL" --mix booking=100 --connections 64 --threads 2 --duration 10s --quiet
echo "-- waiting until no saga is in flight (end to end = terminal sagas / time from first POST)"
until_no_saga_in_flight "$URL" "$T0"
echo "-- POST -> confirmed, from each saga's history (every booking of the demo accounts)"
python3 scripts/booking_latency.py "$URL"
stop

echo "== 5. bookings at 100/s for 10 s, without and with a /health flood (wrk -t1 -c64)"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
for flood in no yes; do
  start_configured "flood-$flood" "$BASE$(sellers 0 0.0)"$'\n[payments.simulated]\nlatency_min_ms = 0\nlatency_max_ms = 0\n'
  WRK_PID=""
  if [ "$flood" = yes ]; then
    wrk -t1 -c64 -d13s "$URL/health" > "$WORK/wrk-health.txt" 2>&1 &
    WRK_PID=$!
    sleep 1
  fi
  echo "-- health flood: $flood"
  $LOAD --target "$URL" --mix booking=100 --rate 100 --connections 64 --duration 10s --quiet
  if [ -n "$WRK_PID" ]; then
    wait "$WRK_PID"
    echo "   /health under the flood: $(grep -E 'Requests/sec' "$WORK/wrk-health.txt")"
  fi
  python3 scripts/booking_latency.py "$URL"
  stop
done
