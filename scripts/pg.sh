#!/usr/bin/env bash
# A throwaway PostgreSQL for development and benchmarks: Debian's `postgresql` binaries,
# initdb into a temp dir, a free port on 127.0.0.1, trust auth for `postgres`, no fsync
# unless PG_FSYNC=on. Under root the server runs as `nobody` (PostgreSQL refuses root).
# Deleted when the script ends, whatever happens.
#
#   scripts/pg.sh                 start, print the URL, wait for Ctrl-C
#   scripts/pg.sh -- CMD ARGS...  start, run CMD with WAYFARE__STORE__BACKEND=postgres and
#                                 WAYFARE__STORE__URL set (schema not applied: `wayfare
#                                 migrate` does it), stop when CMD ends, exit with its status
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
    echo "PostgreSQL is missing: apt-get install postgresql (Debian package)" >&2
    exit 1
fi
dir=$(mktemp -d /tmp/wayfare-pg.XXXXXX)
as=()
if [ "$(id -u)" = 0 ]; then
    chown nobody: "$dir"
    as=(runuser -u nobody --)
fi
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        # The postmaster itself (under root, $pid is runuser's): an immediate shutdown,
        # the data is deleted next.
        local postmaster
        postmaster=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null || echo "$pid")
        kill -QUIT "$postmaster" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$postmaster" "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"${as[@]}" "$bin/initdb" -U postgres -A trust -E UTF8 --no-sync -D "$dir/data" >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fsync=${PG_FSYNC:-off}
"${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -h 127.0.0.1 -k "$dir" \
    -c fsync="$fsync" -c synchronous_commit="$fsync" -c max_connections=300 \
    >"$dir/postgres.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }
    sleep 0.1
done
"$bin/psql" -q -d "postgres://postgres@127.0.0.1:$port/postgres" -c "CREATE DATABASE wayfare"
url="postgres://postgres@127.0.0.1:$port/wayfare"
if [ "${1:-}" = "--" ]; then
    shift
    status=0
    WAYFARE__STORE__BACKEND=postgres WAYFARE__STORE__URL=$url "$@" || status=$?
    exit "$status"
fi
echo "PostgreSQL (fsync=$fsync) at $url; Ctrl-C stops and deletes it"
wait "$pid"
