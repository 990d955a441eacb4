#!/usr/bin/env bash
# The node-kill drill: a fixed-rate mix of bookings, searches and account reads through
# HAProxy in front of a wayfare cluster (scripts/cluster.sh), one node SIGKILLed mid-load
# and restarted later; then every booking must settle and the books must agree
# (examples/cluster_drill.rs says what is checked). Exits non-zero on any violation.
#
#   scripts/cluster-drill.sh              short: 20 s at 120 req/s, kill at 6 s, restart at 15 s
#   DRILL=long scripts/cluster-drill.sh   long: 300 s, kill at 60 s, restart at 150 s
#
# Environment (each overrides the mode's value):
#   CLUSTER_BACKEND=postgres  or sled: a PLUMBING CHECK ONLY (one sled node, NODES=1; the
#                             kill is an outage, so failures until the node is back are
#                             reported but allowed; take-over is not checked)
#   NODES (3), LEASE_MS (5000), DURATION, RATE, KILL_AT, RESTART_AT, SETTLE_SECS (90)
#   KILL_NODE                 node to kill (default: the one holding the most sagas)
#   TAKEOVER_SECS             sagas in flight at the kill must all finish within this after
#                             it (postgres; default lease + 3 s); 0 = report only
#   NO_KILL=1                 a baseline run without the kill
#   KILL=db                   kill the database primary instead of a node: PostgreSQL runs
#                             under pg_auto_failover (CLUSTER_DB=ha: a primary and a
#                             synchronous standby); writes may fail for MAX_WRITE_OUTAGE
#                             seconds (10) while the standby is promoted, nothing else may
#   KILL=db-standby           kill the standby instead: commits wait for it until the
#                             monitor lets the primary go on alone (MAX_WRITE_OUTAGE, 10)
#   KILL=db-outage            every database server stopped at KILL_AT for OUTAGE_SECS (30),
#                             then started again; writes may fail until MAX_WRITE_OUTAGE
#                             (OUTAGE_SECS + 15) after the stop, and no node is restarted
#   DRILL_ARGS                more cluster_drill flags (see its --help)
#   WAYFARE_BIN_DIR           prebuilt artifacts (wayfare, examples/{fake_seller,
#                             fake_gateway,cluster_drill}); unset: built here, debug
#   CLUSTER_KEEP_DIR=1        keep the cluster's temp dir (nodes' logs) afterwards
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

case "${DRILL:-short}" in
    short) d=20 k=6 r=15 ;;
    long) d=300 k=60 r=150 ;;
    *) echo "DRILL must be short or long" >&2; exit 2 ;;
esac
DURATION=${DURATION:-$d}
KILL_AT=${KILL_AT:-$k}
RESTART_AT=${RESTART_AT:-$r}
RATE=${RATE:-120}
SETTLE_SECS=${SETTLE_SECS:-90}
export CLUSTER_BACKEND=${CLUSTER_BACKEND:-postgres}
export LEASE_MS=${LEASE_MS:-5000}

if [ -z "${WAYFARE_BIN_DIR:-}" ]; then
    echo "building wayfare, the partner fakes and the drill (debug)..." >&2
    cargo build -q --bin wayfare --example fake_seller \
        --example fake_gateway --example cluster_drill
    WAYFARE_BIN_DIR=${CARGO_TARGET_DIR:-$root/target}/debug
fi
export WAYFARE_BIN_DIR
drill=$WAYFARE_BIN_DIR/examples/cluster_drill
[ -x "$drill" ] || { echo "$drill is missing" >&2; exit 1; }

args=(--duration-secs "$DURATION" --rate "$RATE" --settle-secs "$SETTLE_SECS")
if [ "${NO_KILL:-0}" = 1 ]; then
    args+=(--no-kill)
else
    args+=(--kill-at "$KILL_AT" --restart-at "$RESTART_AT")
fi
if [ -n "${KILL_NODE:-}" ]; then args+=(--kill-node "$KILL_NODE"); fi
case "${KILL:-node}" in
    node) ;;
    db)
        export CLUSTER_DB=ha
        args+=(--kill-target db --max-write-outage-secs "${MAX_WRITE_OUTAGE:-10}")
        ;;
    db-standby)
        export CLUSTER_DB=ha
        args+=(--kill-target db --db-kill-cmd '$DB_KILL_STANDBY'
            --max-write-outage-secs "${MAX_WRITE_OUTAGE:-10}")
        ;;
    db-outage)
        export CLUSTER_DB=ha
        outage=${OUTAGE_SECS:-30}
        back=$((KILL_AT + outage))
        # The commands are expanded by the drill's shell, where cluster.sh has exported
        # them; the load runs on 10 s past the servers' return. Later flags win.
        args+=(--kill-target db --db-kill-cmd '$DB_STOP_ALL' --db-restore-cmd '$DB_START_ALL'
            --restart-at "$back" --duration-secs "$((back + 10))"
            --max-write-outage-secs "${MAX_WRITE_OUTAGE:-$((outage + 15))}")
        ;;
    *) echo "KILL must be node, db, db-standby or db-outage" >&2; exit 2 ;;
esac
if [ "$CLUSTER_BACKEND" = sled ]; then
    export NODES=1
    echo "CLUSTER_BACKEND=sled: plumbing check only (one sled node; the kill is an outage)" >&2
    args+=(--allow-outage)
else
    takeover=${TAKEOVER_SECS:-$((LEASE_MS / 1000 + 3))}
    args+=(--require-cluster-api)
    if [ "$takeover" != 0 ]; then args+=(--max-takeover-secs "$takeover"); fi
fi
# DRILL_ARGS is split on spaces on purpose: a list of flags.
# shellcheck disable=SC2206
if [ -n "${DRILL_ARGS:-}" ]; then args+=(${DRILL_ARGS}); fi

# cluster.sh exports FRONT_URL, NODE_URLS, NODE_PIDS, RESTART_NODE, ADMIN_TOKEN,
# SELLER_URLS, GATEWAY_URL, DEMO_ACCOUNTS and DEMO_CREDIT, which the drill reads.
exec "$root/scripts/cluster.sh" -- "$drill" "${args[@]}"
