#!/usr/bin/env bash
# Cluster figures for BENCHMARKS.md, each measured by this script on this machine:
#
# a. One node, sled vs PostgreSQL (the same dist-profile binary, with its default
#    PostgreSQL store; PostgreSQL from scripts/pg.sh with fsync on, as sled syncs too; simulated
#    sellers and gateway answering at once):
#    - account reads: wrk -t1 -c$WRK_CONNECTIONS, scripts/accounts.lua over 1,000 demo accounts
#    - bookings: examples/load.rs booking=100, $CONNECTIONS connections for ${BOOK_SECS}s,
#      then until no saga is in flight: bookings/s end to end
# b. Staleness of account views between two PostgreSQL nodes (examples/pg_staleness, on
#    the same PostgreSQL): node A credits, node B reads from its views under load; p50/p99/
#    max time from A's reply until B answers with the credit, against the bound B enforces.
# c. 1, 2 and 3 nodes on PostgreSQL behind HAProxy (scripts/cluster.sh; the partner fakes
#    as processes, no added latency): the same two figures through the front.
#
# Every process shares this machine's cores: the CPU split of each run is printed.
#
#   scripts/bench-cluster.sh
#   READ_SECS=10 BOOK_SECS=10 CONNECTIONS=64 WRK_CONNECTIONS=32 NODE_COUNTS="1 2 3" PROFILE=dist scripts/bench-cluster.sh
# PROFILE=release builds in minutes instead of dist's fat LTO; NODE_COUNTS="" skips c.
set -euo pipefail
cd "$(dirname "$0")/.."
READ_SECS=${READ_SECS:-10}
BOOK_SECS=${BOOK_SECS:-10}
CONNECTIONS=${CONNECTIONS:-64}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
NODE_COUNTS=${NODE_COUNTS-1 2 3}
PROFILE=${PROFILE:-dist}
case "$PROFILE" in
    dist | release) ;;
    *) echo "PROFILE must be dist or release, got '$PROFILE'" >&2; exit 2 ;;
esac
ACCOUNTS=1000

# Inside scripts/cluster.sh (re-invoked below): measure through $FRONT_URL.
if [ "${1:-}" = --inside-cluster ]; then
    name=$2
    source scripts/lib.sh
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    sql() { "$pgbin/psql" -qtA -d "$DATABASE_URL" -c "$1"; }
    export WAYFARE__ADMIN__TOKEN=$ADMIN_TOKEN
    wrk_run "$FRONT_URL" "$name-reads" - scripts/accounts.lua -t1 -c"$WRK_CONNECTIONS" \
        -d"${READ_SECS}s" --latency
    echo "   $(cpu_split "$name-reads")"
    before=$(sql "SELECT count(*) FROM sagas")
    T0=$(date +%s.%N)
    measured "$name-book" - 2 -- "$BIN/examples/load" --target "$FRONT_URL" \
        --mix booking=100 --connections "$CONNECTIONS" --threads 2 --duration "${BOOK_SECS}s" \
        --accounts 10 --quiet --json "$OUT/$name-book.json" >"$OUT/$name-book.txt"
    until [ "$(sql "SELECT count(*) FROM sagas WHERE NOT terminal")" = 0 ]; do sleep 0.2; done
    python3 - "$T0" "$before" "$(sql "SELECT count(*) FROM sagas")" \
        "$(sql "SELECT state || '=' || count(*) FROM sagas GROUP BY state ORDER BY state" | tr '\n' ' ')" \
        <<'PY' | tee "$OUT/$name-book.e2e"
import sys, time
t0, before, after, states = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
secs = time.time() - t0
print(f"bookings: {after - before} terminal in {secs:.1f} s = {(after - before) / secs:.0f} bookings/s end to end; sagas by state: {states.strip()}")
PY
    grep -E '^ *booking|POST' "$OUT/$name-book.txt" | head -3 || true
    echo "   during the load: $(cpu_split "$name-book") (driver: load.rs; others include every node, PostgreSQL, HAProxy and the fakes)"
    exit 0
fi

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
echo "== build ($PROFILE profile; dist is as shipped)"
cargo build --profile "$PROFILE" --bin wayfare --example load --example fake_seller \
    --example fake_gateway --example pg_staleness
TARGET_DIR=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
export BIN=$TARGET_DIR/$PROFILE
export WORK=$(mktemp -d /tmp/wayfare-bench-cluster.XXXXXX)
export OUT=$WORK/results
mkdir -p "$OUT"
PIDS=()
PID=""
source scripts/lib.sh
PG_PID=""
cleanup() {
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [ -n "$PG_PID" ]; then stop_pid "$PG_PID"; fi
    rm -rf "$WORK"/*/data
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export WAYFARE__ADMIN__TOKEN=bench-operator-token-0123456789
export WAYFARE__LIMITS__ENABLED=false
echo "== machine: $(nproc) cores; $(free -h | awk '/^Mem:/ {print $2 " memory, " $7 " available"}'); $(uptime)"
echo "== results in $OUT"

BASE=$'[demo]\naccounts = 1000\n[accounts]\nshards = 4\n'
INSTANT=$'\n[payments.simulated]\nlatency_min_ms = 0\nlatency_max_ms = 0\n'

echo "== a. one node: sled vs PostgreSQL (fsync on)"
PG_FSYNC=on scripts/pg.sh >"$WORK/pg.out" 2>&1 &
PG_PID=$!
for _ in $(seq 1 100); do grep -q '^PostgreSQL' "$WORK/pg.out" && break; sleep 0.1; done
PG_URL=$(grep -o 'postgres://[^ ;]*' "$WORK/pg.out" | head -1)
[ -n "$PG_URL" ] || { cat "$WORK/pg.out" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
for backend in sled postgres; do
    config="$BASE$(sellers 0 0.0)$INSTANT"
    if [ "$backend" = postgres ]; then
        "$pgbin/psql" -q -d "${PG_URL%/*}/postgres" -c "CREATE DATABASE one_node"
        config+=$'\n[store]\nbackend = "postgres"\n'"url = \"${PG_URL%/*}/one_node\""$'\n'
    fi
    start_configured "one-$backend" "$config"
    # The demo accounts are seeded before the server listens; reads start warm (sled's read
    # model, PostgreSQL's account views) only after a first pass, so both get one.
    ACCOUNTS=$ACCOUNTS wrk -t1 -c8 -d2s -s scripts/accounts.lua "$URL" >/dev/null
    ACCOUNTS=$ACCOUNTS wrk_run "$URL" "one-$backend-reads" "$PID" scripts/accounts.lua \
        -t1 -c"$WRK_CONNECTIONS" -d"${READ_SECS}s" --latency
    echo "   $(cpu_split "one-$backend-reads")"
    T0=$(date +%s.%N)
    measured "one-$backend-book" "$PID" 2 -- "$BIN/examples/load" --target "$URL" \
        --mix booking=100 --connections "$CONNECTIONS" --threads 2 --duration "${BOOK_SECS}s" \
        --quiet --json "$OUT/one-$backend-book.json" >"$OUT/one-$backend-book.txt"
    until_no_saga_in_flight "$URL" "$T0" "$OUT/one-$backend-book.e2e"
    echo "   during the load: $(cpu_split "one-$backend-book")"
    stop_pid "$PID"
done
echo "== b. account views: staleness between two PostgreSQL nodes under load"
"$pgbin/psql" -q -d "${PG_URL%/*}/postgres" -c "CREATE DATABASE staleness"
WAYFARE__STORE__URL="${PG_URL%/*}/staleness" "$BIN/examples/pg_staleness" \
    --seconds "$READ_SECS" | tee "$OUT/staleness.txt"
stop_pid "$PG_PID"
PG_PID=""

for n in $NODE_COUNTS; do
    echo "== c. $n node(s) on PostgreSQL behind HAProxy (fsync on; fakes without added latency)"
    NODES=$n PG_FSYNC=on SELLER_LATENCY_MS=0 GATEWAY_LATENCY_MS=0 DEMO_ACCOUNTS=$ACCOUNTS \
        WAYFARE_BIN_DIR=$BIN ACCOUNTS=$ACCOUNTS scripts/cluster.sh -- \
        "$0" --inside-cluster "nodes-$n" 2>&1 | grep -v '^cluster.sh:' || {
        echo "the $n-node run failed" >&2
        exit 1
    }
done
echo "== done; results in $OUT"
