#!/usr/bin/env bash
# A throwaway wayfare cluster on this machine: one PostgreSQL (Debian's `postgresql`
# binaries, initdb into a temp dir, as `nobody` under root), the partner fakes (sellers
# alpha and bravo, the card gateway), NODES wayfare nodes sharing the database, and HAProxy
# (Debian's `haproxy`) in front. Everything listens on 127.0.0.1 on free ports, lives in
# one temp dir, and is stopped (and the dir deleted) when the script ends, however it ends.
#
#   scripts/cluster.sh                 start, print the URLs and the operator token, wait
#                                      for Ctrl-C
#   scripts/cluster.sh -- CMD ARGS...  start, run CMD with the variables below exported,
#                                      stop everything when it ends, exit with its status
#
# Exported to CMD (and printed):
#   FRONT_URL        http://127.0.0.1:PORT of HAProxy
#   NODE_URLS        the nodes' http://127.0.0.1:PORT, comma-separated, node 1 first
#   NODE_PIDS        directory of node-N.pid (one per node; rewritten by RESTART_NODE)
#   RESTART_NODE     a script: `$RESTART_NODE N` stops node N if it still runs (SIGTERM),
#                    starts it again with the same config, data dir and port, and waits
#                    for its /health to answer 200 (exit 0) or gives up (exit 1)
#   KILL_NODE        a script: `$KILL_NODE N [SIGNAL]` signals node N (default KILL)
#   DATABASE_URL     postgres://postgres@127.0.0.1:PORT/wayfare (empty with sled)
#   ADMIN_TOKEN      the operator token every node runs with
#   SELLER_URLS      the fake sellers' base URLs (alpha,bravo), GATEWAY_URL the gateway's:
#                    each lists what it did at GET {url}_fake/ledger
#   HAPROXY_STATS_URL HAProxy's stats page (append ;csv for CSV)
#   CLUSTER_DIR      the temp dir: node-N/{config.toml,data,out.log,err.log}, fakes, logs
#   CLUSTER_BACKEND, NODES, DEMO_ACCOUNTS, DEMO_CREDIT  as configured
#
# Environment read:
#   NODES=3                  wayfare nodes
#   CLUSTER_BACKEND=postgres postgres: the real cluster. sled: a PLUMBING CHECK ONLY of
#                            this script, HAProxy, the fakes and the drill without
#                            PostgreSQL: NODES must be 1 (sled is one
#                            node's embedded store), no PostgreSQL is started, and killing
#                            the node makes requests fail until it is back (expected there)
#   WAYFARE_BIN_DIR          prebuilt artifacts: $WAYFARE_BIN_DIR/wayfare and
#                            $WAYFARE_BIN_DIR/examples/{fake_seller,fake_gateway}; unset:
#                            built here (debug) with `cargo build`
#   ADMIN_TOKEN              operator token (default: random)
#   LEASE_MS=5000            [cluster] lease_ms of every node
#   CLUSTER_DB=single        single: one PostgreSQL server. ha: a primary and a synchronous
#                            standby under pg_auto_failover (scripts/pg-ha.sh: a monitor and
#                            two data nodes), the nodes given the multi-host URL that
#                            follows the primary; exports DB_STATE, DB_KILL_PRIMARY,
#                            DB_KILL_STANDBY, DB_STOP_ALL and DB_START_ALL (commands)
#   PG_FSYNC=on              PostgreSQL's fsync and synchronous_commit. On by default, as
#                            in production: a crash drill with them off can lose a
#                            committed transaction and blame wayfare for it. PG_FSYNC=off
#                            is a faster mode for demos, never for drills.
#   DEMO_ACCOUNTS=20, DEMO_CREDIT=100000   [demo] accounts and credit_minor
#   SELLER_LATENCY_MS=150, GATEWAY_LATENCY_MS=30   latency the fakes add to every call
#                            (a booking's saga then lasts about half a second, so
#                            some are in flight when a node is killed)
#   CLUSTER_KEEP_DIR=1       keep the temp dir (logs) instead of deleting it
#
# What each node gets (CLUSTER_DIR/node-N/config.toml; the contract with `wayfare serve`):
#   [server] bind = "127.0.0.1:PORT" (fixed per node, kept across restarts)
#   [store] backend = "postgres", url = DATABASE_URL (trust auth, no password), data_dir =
#           node-N/data (node-local files); the schema is applied first by `wayfare migrate`
#           with a [store]-only file, and serve applies it again under its advisory lock
#   [cluster] node_id = "node-N", lease_ms = LEASE_MS
#   [limits] enabled = false, trusted_proxies = ["127.0.0.1"]; [demo] accounts and credit
#           (seeded once cluster-wide); sellers alpha and bravo and the gateway as `kind =
#           "http"` partners; env WAYFARE__ADMIN__TOKEN = ADMIN_TOKEN
#   and must answer GET /health 200 when healthy (HAProxy's check and the start-up wait)
#   and GET /v1/system/cluster to the operator (the drill's membership snapshots).
#
# Needs: apt-get install postgresql haproxy (Debian packages; nothing is installed here),
# python3 (free ports) and curl.
#
# shellcheck disable=SC2317  # cleanup and its helpers run from the EXIT trap
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

NODES=${NODES:-3}
CLUSTER_BACKEND=${CLUSTER_BACKEND:-postgres}
LEASE_MS=${LEASE_MS:-5000}
DEMO_ACCOUNTS=${DEMO_ACCOUNTS:-20}
DEMO_CREDIT=${DEMO_CREDIT:-100000}
SELLER_LATENCY_MS=${SELLER_LATENCY_MS:-150}
GATEWAY_LATENCY_MS=${GATEWAY_LATENCY_MS:-30}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
CLUSTER_DB=${CLUSTER_DB:-single}
case "$CLUSTER_DB" in single | ha) ;; *) echo "CLUSTER_DB must be single or ha, not $CLUSTER_DB" >&2; exit 1 ;; esac

die() { echo "cluster.sh: $*" >&2; exit 1; }

case "$NODES" in '' | *[!0-9]*) die "NODES=$NODES is not a number" ;; esac
if [ "$NODES" -lt 1 ] || [ "$NODES" -gt 9 ]; then die "NODES must be 1..9, not $NODES"; fi
case "$CLUSTER_BACKEND" in
    postgres) ;;
    sled)
        [ "$NODES" = 1 ] || die "CLUSTER_BACKEND=sled is a plumbing check of one node (sled is a
one-process store): set NODES=1, or use CLUSTER_BACKEND=postgres"
        ;;
    *) die "CLUSTER_BACKEND must be postgres or sled, not $CLUSTER_BACKEND" ;;
esac

# What this machine must have: checked before anything starts.
# shellcheck disable=SC2012  # Debian's layout: /usr/lib/postgresql/VERSION/bin
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
missing=()
if [ "$CLUSTER_BACKEND" = postgres ] && { [ -z "$pgbin" ] || [ ! -x "$pgbin/postgres" ]; }; then
    missing+=(postgresql)
fi
[ -x "$HAPROXY" ] || missing+=(haproxy)
if [ "$CLUSTER_DB" = ha ] && ! command -v pg_autoctl >/dev/null; then
    missing+=(postgresql-15-auto-failover pg-auto-failover-cli)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    die "missing ${missing[*]}: apt-get install --no-upgrade ${missing[*]} (Debian packages)"
fi
command -v python3 >/dev/null || die "python3 is missing (free ports)"
command -v curl >/dev/null || die "curl is missing (health checks)"

if [ -n "${WAYFARE_BIN_DIR:-}" ]; then
    BIN=$(cd "$WAYFARE_BIN_DIR" && pwd)
else
    echo "building wayfare and the partner fakes (debug)..." >&2
    (cd "$root" && cargo build -q --bin wayfare \
        --example fake_seller --example fake_gateway)
    BIN=${CARGO_TARGET_DIR:-$root/target}/debug
fi
for b in wayfare examples/fake_seller examples/fake_gateway; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (WAYFARE_BIN_DIR=${WAYFARE_BIN_DIR:-})"
done

ADMIN_TOKEN=${ADMIN_TOKEN:-cluster-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}

dir=$(mktemp -d /tmp/wayfare-cluster.XXXXXX)
# PostgreSQL runs as nobody under root and needs to reach its own subdirectory.
chmod 755 "$dir"
mkdir -p "$dir/pids" "$dir/bin"

# Processes started here, by pid file: cleanup stops each, checking first that the pid is
# still the program it was (never a recycled pid of someone else's process).
cleanup_done=0
ours() { # PID PROGRAM_PATH: PID runs PROGRAM_PATH (its executable, even if rebuilt since)
    local exe
    [ -n "$1" ] && exe=$(readlink "/proc/$1/exe" 2>/dev/null) &&
        { [ "$exe" = "$2" ] || [ "$exe" = "$2 (deleted)" ]; }
}
stop_pidfile() { # PIDFILE PROGRAM_PATH SIGNAL: signal, wait up to 10 s, then SIGKILL
    local pid
    pid=$(cat "$1" 2>/dev/null || true)
    ours "$pid" "$2" || return 0
    kill "-$3" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do ours "$pid" "$2" || return 0; sleep 0.1; done
    echo "cluster.sh: $(basename "$1" .pid) (pid $pid) ignored SIG$3 for 10 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$?
    [ "$cleanup_done" = 1 ] && return
    cleanup_done=1
    trap '' INT TERM
    stop_pidfile "$dir/pids/haproxy.pid" "$HAPROXY" TERM
    for pidfile in "$dir"/pids/node-*.pid; do
        [ -e "$pidfile" ] && stop_pidfile "$pidfile" "$BIN/wayfare" TERM
    done
    for f in alpha bravo gateway; do
        local prog=$BIN/examples/fake_seller
        [ "$f" = gateway ] && prog=$BIN/examples/fake_gateway
        stop_pidfile "$dir/pids/$f.pid" "$prog" TERM
    done
    [ "$CLUSTER_DB" = ha ] && ha_stop "$dir"
    if [ -e "$dir/pids/postgres.pid" ]; then
        # The postmaster's own pid (under root the recorded one is runuser's): an
        # immediate shutdown, the data is deleted next.
        local postmaster
        postmaster=$(head -1 "$dir/pg/data/postmaster.pid" 2>/dev/null || true)
        ours "$postmaster" "$pgbin/postgres" && kill -QUIT "$postmaster" 2>/dev/null
        stop_pidfile "$dir/pids/postgres.pid" "$(cat "$dir/pids/postgres.prog")" TERM
        ours "$postmaster" "$pgbin/postgres" && kill -KILL "$postmaster" 2>/dev/null
    fi
    wait 2>/dev/null || true
    if [ "$status" != 0 ] && [ "$status" != 130 ] && [ "$status" != 143 ] &&
        [ "${CLUSTER_QUIET_LOGS:-0}" != 1 ]; then
        for n in $(seq 1 "$NODES"); do
            [ -s "$dir/node-$n/err.log" ] || continue
            echo "--- last lines of node-$n/err.log" >&2
            tail -n 15 "$dir/node-$n/err.log" >&2
        done
    fi
    if [ "${CLUSTER_KEEP_DIR:-0}" = 1 ]; then
        echo "cluster.sh: kept $dir" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() { # N: N distinct free TCP ports on 127.0.0.1
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
# Ports: HAProxy front, HAProxy stats, PostgreSQL (the monitor with CLUSTER_DB=ha), its
# two data nodes (used with CLUSTER_DB=ha only), then one per node.
read -r -a ports <<<"$(free_ports $((NODES + 5)))"
front_port=${ports[0]}
stats_port=${ports[1]}
pg_port=${ports[2]}
ha_ports=("${ports[3]}" "${ports[4]}")
node_ports=("${ports[@]:5}")

# wait_line LOG WORD PID: prints ADDR from the "WORD listening on ADDR" line of LOG.
wait_line() {
    for _ in $(seq 1 300); do
        if grep -q "^$2 listening on " "$1" 2>/dev/null; then
            grep -m1 "^$2 listening on " "$1" | sed 's/.* listening on //; s#^http://##'
            return 0
        fi
        kill -0 "$3" 2>/dev/null || break
        sleep 0.1
    done
    echo "cluster.sh: $2 did not start; its log:" >&2
    cat "$1" >&2
    return 1
}

# --- PostgreSQL
DATABASE_URL=""
if [ "$CLUSTER_BACKEND" = postgres ] && [ "$CLUSTER_DB" = ha ]; then
    source "$root/scripts/pg-ha.sh"
    echo "starting PostgreSQL under pg_auto_failover (a monitor, a primary, a synchronous standby)..." >&2
    ha_start "$dir" "$pg_port" "${ha_ports[@]}" || exit 1
    export DB_STATE=$dir/bin/db-state DB_KILL_PRIMARY=$dir/bin/db-kill-primary
    export DB_KILL_STANDBY=$dir/bin/db-kill-standby
    export DB_STOP_ALL=$dir/bin/db-stop-all DB_START_ALL=$dir/bin/db-start-all
elif [ "$CLUSTER_BACKEND" = postgres ]; then
    as=()
    mkdir -p "$dir/pg"
    if [ "$(id -u)" = 0 ]; then
        chown nobody: "$dir/pg"
        as=(runuser -u nobody --)
        readlink -f "$(command -v runuser)" >"$dir/pids/postgres.prog"
    else
        echo "$pgbin/postgres" >"$dir/pids/postgres.prog"
    fi
    "${as[@]}" "$pgbin/initdb" -U postgres -A trust -E UTF8 --no-sync -D "$dir/pg/data" \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fsync=${PG_FSYNC:-on}
    setsid "${as[@]}" "$pgbin/postgres" -D "$dir/pg/data" -p "$pg_port" -h 127.0.0.1 \
        -k "$dir/pg" -c fsync="$fsync" -c synchronous_commit="$fsync" -c max_connections=300 \
        >"$dir/postgres.log" 2>&1 </dev/null &
    echo $! >"$dir/pids/postgres.pid"
    for _ in $(seq 1 300); do
        "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
        kill -0 "$(cat "$dir/pids/postgres.pid")" 2>/dev/null ||
            { cat "$dir/postgres.log" >&2; exit 1; }
        sleep 0.1
    done
    "$pgbin/psql" -q -d "postgres://postgres@127.0.0.1:$pg_port/postgres" \
        -c "CREATE DATABASE wayfare"
    DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/wayfare"
fi

# --- partner fakes: sellers alpha (seed 1) and bravo (seed 2), the card gateway
start_fake() { # NAME PROGRAM ARGS...: sets ADDR
    local name=$1 prog=$2
    shift 2
    setsid "$prog" --bind 127.0.0.1:0 --data-dir "$dir/fake-$name" "$@" \
        >"$dir/fake-$name.out" 2>"$dir/fake-$name.log" </dev/null &
    echo $! >"$dir/pids/$name.pid"
    ADDR=$(wait_line "$dir/fake-$name.out" "$(basename "$prog")" "$!")
}
start_fake alpha "$BIN/examples/fake_seller" --name alpha --seed 1 --coverage 1.0 \
    --latency-ms "$SELLER_LATENCY_MS"
alpha_url="http://$ADDR/"
start_fake bravo "$BIN/examples/fake_seller" --name bravo --seed 2 --coverage 1.0 \
    --latency-ms "$SELLER_LATENCY_MS"
bravo_url="http://$ADDR/"
start_fake gateway "$BIN/examples/fake_gateway" --latency-ms "$GATEWAY_LATENCY_MS"
gateway_url="http://$ADDR/"

# --- node configs: everything a node needs is in its file (so a restart is the same
# node), except the operator token, which stays in the environment (start-node).
node_urls=()
for n in $(seq 1 "$NODES"); do
    port=${node_ports[$((n - 1))]}
    node_urls+=("http://127.0.0.1:$port")
    mkdir -p "$dir/node-$n"
    {
        printf '# node-%s of %s (generated by scripts/cluster.sh)\n' "$n" "$dir"
        printf '[server]\nbind = "127.0.0.1:%s"\nworkers = 2\nshutdown_timeout_secs = 5\n\n' "$port"
        printf '[store]\n'
        if [ "$CLUSTER_BACKEND" = postgres ]; then
            printf 'backend = "postgres"\nurl = "%s"\npool_size = 8\n' "$DATABASE_URL"
        else
            printf 'backend = "sled"\n'
        fi
        printf 'data_dir = "%s"\n\n' "$dir/node-$n/data"
        if [ "$CLUSTER_BACKEND" = postgres ]; then
            printf '[cluster]\nnode_id = "node-%s"\nlease_ms = %s\n\n' "$n" "$LEASE_MS"
        fi
        cat <<EOF
[limits]
# The drill drives a few demo keys far past their limits, through HAProxy.
enabled = false
trusted_proxies = ["127.0.0.1"]

[runtime]
arbiters = 1

[accounts]
shards = 2

[demo]
accounts = $DEMO_ACCOUNTS
credit_minor = $DEMO_CREDIT

[log]
# Warnings, and the take-overs of sagas whose lease ran out.
level = "warn,wayfare::actors::cluster=info"

[bookings]
step_timeout_ms = 2000

[payments]
kind = "http"
[payments.http]
base_url = "$gateway_url"
request_timeout_ms = 2000

[[sellers]]
name = "alpha"
kind = "http"
verticals = ["hotel"]
[sellers.http]
base_url = "$alpha_url"

[[sellers]]
name = "bravo"
kind = "http"
verticals = ["hotel"]
[sellers.http]
base_url = "$bravo_url"
EOF
    } >"$dir/node-$n/config.toml"
done

# --- helper scripts: start-node (also used at start), restart-node, kill-node
cat >"$dir/bin/env" <<EOF
BIN='$BIN'
DIR='$dir'
WAYFARE__ADMIN__TOKEN='$ADMIN_TOKEN'
NODE_URLS='${node_urls[*]}'
EOF
cat >"$dir/bin/start-node" <<'EOF'
#!/usr/bin/env bash
# start-node N: starts wayfare node N with its config (no wait); writes pids/node-N.pid.
set -euo pipefail
. "$(dirname "$0")/env"
n=$1
[ -f "$DIR/node-$n/config.toml" ] || { echo "no node $n" >&2; exit 2; }
cd "$DIR/node-$n"
echo "=== start $(date -u +%FT%T.%3NZ)" >>out.log
echo "=== start $(date -u +%FT%T.%3NZ)" >>err.log
NO_COLOR=1 WAYFARE__ADMIN__TOKEN=$WAYFARE__ADMIN__TOKEN setsid "$BIN/wayfare" serve \
    --config "$DIR/node-$n/config.toml" >>out.log 2>>err.log </dev/null &
echo $! >"$DIR/pids/node-$n.pid"
EOF
cat >"$dir/bin/wait-node" <<'EOF'
#!/usr/bin/env bash
# wait-node N [SECONDS]: waits until node N's /health answers 200 (exit 0); exit 1 if it
# exits first or SECONDS (default 60) pass.
set -euo pipefail
. "$(dirname "$0")/env"
n=$1
read -r -a urls <<<"$NODE_URLS"
url=${urls[$((n - 1))]}
pid=$(cat "$DIR/pids/node-$n.pid")
for _ in $(seq 1 $((${2:-60} * 10))); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url/health" || true)
    [ "$code" = 200 ] && exit 0
    kill -0 "$pid" 2>/dev/null || { echo "node-$n (pid $pid) exited; $DIR/node-$n/err.log:" >&2; tail -n 20 "$DIR/node-$n/err.log" >&2; exit 1; }
    sleep 0.1
done
echo "node-$n: $url/health did not answer 200 within ${2:-60} s (last: $code)" >&2
exit 1
EOF
cat >"$dir/bin/kill-node" <<'EOF'
#!/usr/bin/env bash
# kill-node N [SIGNAL]: sends SIGNAL (default KILL) to node N, if it runs.
set -euo pipefail
. "$(dirname "$0")/env"
pid=$(cat "$DIR/pids/node-$1.pid")
exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
if [ "$exe" = "$BIN/wayfare" ] || [ "$exe" = "$BIN/wayfare (deleted)" ]; then
    kill "-${2:-KILL}" "$pid"
    echo "node-$1 (pid $pid): SIG${2:-KILL}"
else
    echo "node-$1 (pid $pid) is not running" >&2
fi
EOF
cat >"$dir/bin/restart-node" <<'EOF'
#!/usr/bin/env bash
# restart-node N: stops node N if it still runs (SIGTERM, SIGKILL after 10 s), starts it
# again with the same config, data dir and port, and waits for its /health (60 s).
set -euo pipefail
here=$(dirname "$0")
. "$here/env"
n=$1
pid=$(cat "$DIR/pids/node-$n.pid" 2>/dev/null || true)
running() {
    local exe
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [ "$exe" = "$BIN/wayfare" ] || [ "$exe" = "$BIN/wayfare (deleted)" ]
}
if running; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do running || break; sleep 0.1; done
    running && kill -KILL "$pid"
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
fi
"$here/start-node" "$n"
"$here/wait-node" "$n" 60
echo "node-$n restarted (pid $(cat "$DIR/pids/node-$n.pid"))"
EOF
chmod +x "$dir/bin/"*

# --- schema: applied once before the nodes start (they would race for the advisory lock
# otherwise, which is safe, only noisier). A file with [store] only, so this does not
# depend on the nodes' other sections.
if [ "$CLUSTER_BACKEND" = postgres ]; then
    printf '[store]\nbackend = "postgres"\nurl = "%s"\ndata_dir = "%s/migrate"\n' \
        "$DATABASE_URL" "$dir" >"$dir/migrate.toml"
    "$BIN/wayfare" migrate --config "$dir/migrate.toml" >"$dir/migrate.log" 2>&1 ||
        { cat "$dir/migrate.log" >&2; die "wayfare migrate failed (was it built with --no-default-features, without the PostgreSQL store?)"; }
fi

# --- nodes: all started, then each waited for
for n in $(seq 1 "$NODES"); do "$dir/bin/start-node" "$n"; done
for n in $(seq 1 "$NODES"); do "$dir/bin/wait-node" "$n" 90 || exit 1; done

# --- HAProxy
{
    cat <<EOF
# generated by scripts/cluster.sh for HAProxy $("$HAPROXY" -v | head -1 | awk '{print $3}')
global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout queue 5s
    timeout http-request 10s
    timeout http-keep-alive 10s
    # Retry a request another node can answer: the connection failed (always safe: the
    # request never left), or, for requests safe to repeat, the node closed without an
    # answer or did not answer in time (it died mid-request). The retry goes to another
    # node (redispatch on every retry).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend front
    bind 127.0.0.1:$front_port
    option forwardfor
    # When the request arrived, so that a node reading it late (it was frozen) refuses it
    # unprocessed instead of running what its client was told had failed
    # (server.max_request_age_ms, 5 s, below "timeout server").
    http-request set-header X-Request-Start t=%[date(0,us)]
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
    # Safe to retry: GET and HEAD always; POST only with an Idempotency-Key (bookings and
    # wallet changes replay by it). Anything else is never sent twice (connection failures
    # are still retried: nothing was sent).
    acl safe_method method GET HEAD
    acl keyed req.hdr(Idempotency-Key) -m found
    http-request disable-l7-retry unless safe_method || METH_POST keyed
    # Which node answered (the drill counts answers per node).
    http-response set-header X-Served-By %[srv_name]
EOF
    for n in $(seq 1 "$NODES"); do
        printf '    server node-%s 127.0.0.1:%s check\n' "$n" "${node_ports[$((n - 1))]}"
    done
    cat <<EOF

listen stats
    bind 127.0.0.1:$stats_port
    stats enable
    stats uri /
    stats refresh 2s
EOF
} >"$dir/haproxy.cfg"
"$HAPROXY" -c -q -f "$dir/haproxy.cfg" || die "HAProxy refused $dir/haproxy.cfg"
setsid "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 </dev/null &
echo $! >"$dir/pids/haproxy.pid"
FRONT_URL="http://127.0.0.1:$front_port"
HAPROXY_STATS_URL="http://127.0.0.1:$stats_port/"
# Ready when HAProxy has marked every node UP (stats CSV: column 18 is the status).
up=0
for _ in $(seq 1 300); do
    up=$(curl -s -m 2 "$HAPROXY_STATS_URL;csv" | awk -F, '$1 == "nodes" && $2 ~ /^node-/ && $18 == "UP"' | wc -l || true)
    [ "$up" = "$NODES" ] && break
    kill -0 "$(cat "$dir/pids/haproxy.pid")" 2>/dev/null || { cat "$dir/haproxy.log" >&2; die "HAProxy exited"; }
    sleep 0.1
done
[ "$up" = "$NODES" ] || die "HAProxy marked $up of $NODES nodes UP within 30 s; see $dir/haproxy.log"
curl -sf -m 5 -o /dev/null "$FRONT_URL/health" || die "$FRONT_URL/health does not answer 200"

NODE_URLS=$(IFS=,; echo "${node_urls[*]}")
export FRONT_URL NODE_URLS DATABASE_URL ADMIN_TOKEN HAPROXY_STATS_URL CLUSTER_BACKEND NODES \
    DEMO_ACCOUNTS DEMO_CREDIT
export NODE_PIDS=$dir/pids RESTART_NODE=$dir/bin/restart-node KILL_NODE=$dir/bin/kill-node
export SELLER_URLS="$alpha_url,$bravo_url" GATEWAY_URL=$gateway_url CLUSTER_DIR=$dir

cat <<EOF
wayfare cluster ($CLUSTER_BACKEND, $NODES node(s))$([ "$CLUSTER_BACKEND" = sled ] && echo ": PLUMBING CHECK ONLY, one sled node")
  front (HAProxy)  $FRONT_URL   stats $HAPROXY_STATS_URL
  nodes            ${node_urls[*]}
  database         ${DATABASE_URL:-(none: sled)}
  operator token   $ADMIN_TOKEN
  sellers          $alpha_url (alpha) $bravo_url (bravo)   gateway $gateway_url
  pid files        $NODE_PIDS   restart a node: $RESTART_NODE N   kill one: $KILL_NODE N
  logs             $dir
EOF

if [ "${1:-}" = "--" ]; then
    shift
    [ "$#" -gt 0 ] || die "nothing to run after --"
    status=0
    "$@" || status=$?
    exit "$status"
fi
echo "Ctrl-C stops everything and deletes $dir"
while kill -0 "$(cat "$dir/pids/haproxy.pid")" 2>/dev/null; do sleep 1; done
die "HAProxy exited; see $dir/haproxy.log"
