# A highly available PostgreSQL for scripts/cluster.sh (CLUSTER_DB=ha), managed by
# pg_auto_failover: a monitor and two data nodes on 127.0.0.1, the primary replicating
# synchronously to the standby, so a commit is acknowledged only once it is on both.
# Source it, then call `ha_start DIR MONITOR_PORT PORT1 PORT2`; `ha_stop DIR` stops it all.
# ha_start sets DATABASE_URL to the multi-host form that follows the primary
# (target_session_attrs=read-write) and writes commands into DIR/bin:
#
#   db-state           pg_autoctl's view of the formation (who is primary, who follows)
#   db-primary         the name (n1 or n2) of the node that takes writes now
#   db-kill-primary    SIGKILL of the primary's postmaster; prints the victim
#   db-kill-standby    SIGKILL of the standby's postmaster; prints the victim
#   db-stop-all        an outage: every data node stopped (the monitor stays up)
#   db-start-all       the data nodes started again after db-stop-all
#
# Failover timing. pg_auto_failover's defaults (a health check every 5 s, a node unhealthy
# after 20 s, plus retries) promote the standby about 50 s after the primary dies: half a
# minute of refused writes for a loss the standby could take over in seconds. The monitor
# here checks every second (health_check_period 1000 ms, timeout 1000 ms, 1 retry after
# 500 ms) and calls a node unhealthy after 3 s (node_considered_unhealthy_timeout). Shorter
# would promote on a hiccup of a loaded 2-core machine (a checkpoint, a busy build), and a
# promotion costs every client its connections; longer is downtime.
#
# Durability limits (docs/cluster.md): with one standby, pg_auto_failover lets the primary
# go on alone (`wait_primary`, asynchronous) while the standby is down or catching up, so a
# primary that dies in that window takes its last commits with it; with both data nodes
# gone nothing is served until one returns.
#
# Needs Debian's postgresql, postgresql-15-auto-failover and pg-auto-failover-cli; runs the
# servers as the `postgres` user under root (PostgreSQL refuses root).

HA_PGBIN=${HA_PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

ha_as() { # runs a command as the owner of the servers, with pg_autoctl's directories set
    local dir=$1
    shift
    local env=(env "XDG_CONFIG_HOME=$dir/ha/cfg" "XDG_DATA_HOME=$dir/ha/data"
        "XDG_RUNTIME_DIR=$dir/ha/run" "PG_CONFIG=$HA_PGBIN/pg_config" "PATH=$HA_PGBIN:$PATH")
    if [ "$(id -u)" = 0 ]; then
        (cd "$dir/ha" && runuser -u postgres -- "${env[@]}" "$@")
    else
        (cd "$dir/ha" && "${env[@]}" "$@")
    fi
}

ha_wait_state() { # DIR NODE STATE SECONDS: waits until NODE reports STATE to the monitor
    local i
    for i in $(seq 1 "$(($4 * 2))"); do
        ha_as "$1" pg_autoctl show state --pgdata "$1/ha/monitor" 2>/dev/null |
            awk -F'|' -v n="$2" -v s="$3" '{gsub(/ /,"")} $1==n && $6==s {found=1} END {exit !found}' &&
            return 0
        sleep 0.5
    done
    echo "pg-ha: $2 did not reach state $3 within $4 s:" >&2
    ha_as "$1" pg_autoctl show state --pgdata "$1/ha/monitor" >&2 || true
    return 1
}

ha_start() { # DIR MONITOR_PORT PORT1 PORT2
    local dir=$1 mon_port=$2 p1=$3 p2=$4 n port
    command -v pg_autoctl >/dev/null ||
        { echo "pg-ha: pg_autoctl is missing (Debian: pg-auto-failover-cli, postgresql-15-auto-failover)" >&2; return 1; }
    mkdir -p "$dir/ha/cfg" "$dir/ha/data" "$dir/ha/run"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir/ha"
    local common=(--hostname 127.0.0.1 --auth trust --no-ssl --pgctl "$HA_PGBIN/pg_ctl")

    ha_as "$dir" pg_autoctl create monitor --pgdata "$dir/ha/monitor" --pgport "$mon_port" \
        "${common[@]}" >"$dir/ha/monitor-create.log" 2>&1 ||
        { cat "$dir/ha/monitor-create.log" >&2; return 1; }
    ha_as "$dir" setsid pg_autoctl run --pgdata "$dir/ha/monitor" >"$dir/ha/monitor.log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        "$HA_PGBIN/pg_isready" -q -h 127.0.0.1 -p "$mon_port" && break
        sleep 0.2
    done
    ha_as "$dir" psql -q -h 127.0.0.1 -p "$mon_port" -U postgres pg_auto_failover \
        -c "ALTER SYSTEM SET pgautofailover.health_check_period = 1000" \
        -c "ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000" \
        -c "ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1" \
        -c "ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500" \
        -c "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 3000" \
        -c "SELECT pg_reload_conf()" >/dev/null

    local monitor="postgres://autoctl_node@127.0.0.1:$mon_port/pg_auto_failover?sslmode=disable"
    for n in 1 2; do
        port=$p1
        [ "$n" = 2 ] && port=$p2
        ha_as "$dir" setsid pg_autoctl create postgres --pgdata "$dir/ha/n$n" --pgport "$port" \
            --name "n$n" --dbname wayfare --monitor "$monitor" "${common[@]}" --run \
            >"$dir/ha/n$n.log" 2>&1 </dev/null &
        if [ "$n" = 1 ]; then
            ha_wait_state "$dir" n1 single 60 || return 1
        else
            # The standby's base backup waits for a checkpoint; a spread one takes minutes.
            sleep 1
            ha_as "$dir" psql -q -h 127.0.0.1 -p "$p1" -U postgres wayfare -c CHECKPOINT >/dev/null
            ha_wait_state "$dir" n2 secondary 120 || return 1
            ha_wait_state "$dir" n1 primary 60 || return 1
        fi
    done
    DATABASE_URL="postgres://postgres@127.0.0.1:$p1,127.0.0.1:$p2/wayfare?target_session_attrs=read-write&connect_timeout=2"

    cat >"$dir/bin/db-state" <<EOF
#!/usr/bin/env bash
source "$root/scripts/pg-ha.sh"
ha_as "$dir" pg_autoctl show state --pgdata "$dir/ha/monitor"
EOF
    cat >"$dir/bin/db-primary" <<EOF
#!/usr/bin/env bash
# The data node in state primary, wait_primary or single (the one taking writes).
"$dir/bin/db-state" | awk -F'|' '{gsub(/ /,"")} \$6=="primary"||\$6=="wait_primary"||\$6=="single" {print \$1; exit}'
EOF
    cat >"$dir/bin/db-kill-primary" <<EOF
#!/usr/bin/env bash
# SIGKILL of the primary's postmaster (pg_autoctl's keeper stays: it rejoins the node as
# the new standby once the monitor has promoted the other one).
set -euo pipefail
node=\$("$dir/bin/db-primary")
[ -n "\$node" ] || { echo "no primary to kill" >&2; exit 1; }
pid=\$(head -1 "$dir/ha/\$node/postmaster.pid")
kill -KILL "\$pid"
echo "killed the primary \$node (postmaster \$pid)"
EOF
    cat >"$dir/bin/db-kill-standby" <<EOF
#!/usr/bin/env bash
# SIGKILL of the standby's postmaster: the primary's commits wait for it until the monitor
# lets the primary go on alone (wait_primary).
set -euo pipefail
node=\$("$dir/bin/db-state" | awk -F'|' '{gsub(/ /,"")} \$6=="secondary" {print \$1; exit}')
[ -n "\$node" ] || { echo "no standby to kill" >&2; exit 1; }
pid=\$(head -1 "$dir/ha/\$node/postmaster.pid")
kill -KILL "\$pid"
echo "killed the standby \$node (postmaster \$pid)"
EOF
    cat >"$dir/bin/db-stop-all" <<EOF
#!/usr/bin/env bash
source "$root/scripts/pg-ha.sh"
for n in 1 2; do ha_as "$dir" pg_autoctl stop --pgdata "$dir/ha/n\$n" || true; done
EOF
    cat >"$dir/bin/db-start-all" <<EOF
#!/usr/bin/env bash
source "$root/scripts/pg-ha.sh"
for n in 1 2; do
    ha_as "$dir" setsid pg_autoctl run --pgdata "$dir/ha/n\$n" >>"$dir/ha/n\$n.log" 2>&1 </dev/null &
done
EOF
    chmod +x "$dir/bin/db-"*
}

ha_stop() { # DIR: every data node, then the monitor; what does not stop is killed
    local dir=$1 d
    for d in n1 n2 monitor; do
        [ -d "$dir/ha/$d" ] && ha_as "$dir" timeout 20 pg_autoctl stop --pgdata "$dir/ha/$d" >/dev/null 2>&1
    done
    pkill -KILL -f "pg_autoctl .*--pgdata $dir/ha/" 2>/dev/null || true
    pkill -KILL -f "postgres -D $dir/ha/" 2>/dev/null || true
    return 0
}
