# Helpers shared by the benchmark scripts (scripts/bench.sh, scripts/bench-search-bookings.sh,
# scripts/bench-twins.sh). Source it after setting:
#   BIN   absolute directory of the built artifacts (target/release): $BIN/wayfare,
#         $BIN/examples/...
#   WORK  scratch directory of this run (servers' data dirs and logs)
#   OUT   results directory (measured, cpu_split, wrk_run and wrk_field use it)
#   PIDS  an array; every process started through these helpers is appended, so the
#         script's EXIT trap can stop them all with stop_pid
# Env read: WRK_THREADS (default 1) for wrk_run's CPU verdict.

TICKS=$(getconf CLK_TCK)
CORES=$(nproc)

stop_pid() { # PID: SIGTERM, then SIGKILL if it has not exited within 20 s
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

# wait_listening LOG WORD PID: prints the http://ADDR the server announced in LOG
# ("WORD listening on http://ADDR").
wait_listening() {
    local log=$1 word=$2 pid=$3
    for _ in $(seq 1 600); do
        if grep -q "$word listening on http://" "$log" 2>/dev/null; then
            grep -o "$word listening on http://[0-9.:]*" "$log" | head -1 | sed 's/.* on //'
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$word did not start; its log:" >&2
    cat "$log" >&2
    return 1
}

# start_configured NAME CONFIG_TEXT -> sets PID and URL: wayfare in $WORK/NAME with
# CONFIG_TEXT as its config.toml and a fresh data dir. `exec` makes the recorded PID the
# server's own, not a subshell's whose death would leave the server running.
start_configured() {
    local dir="$WORK/$1"
    mkdir -p "$dir"
    printf '%s\n' "$2" >"$dir/config.toml"
    (cd "$dir" && WAYFARE__LOG__LEVEL=warn exec "$BIN/wayfare" serve --config config.toml \
        --bind 127.0.0.1:0 --data-dir data >out.log 2>err.log) &
    PID=$!
    PIDS+=("$PID")
    URL=$(wait_listening "$dir/out.log" wayfare "$PID") || {
        cat "$dir/err.log" >&2
        exit 1
    }
}

# sellers LATENCY_MS HANG_RATE: three simulated sellers (alpha, bravo, charlie) of fixed
# latency and full coverage, charlie hanging at HANG_RATE; config text for start_configured.
sellers() {
    for s in alpha:1 bravo:2 charlie:3; do
        printf '[[sellers]]\nname = "%s"\nkind = "simulated"\n[sellers.simulated]\nseed = %s\nlatency_ms = [%s, %s]\ncoverage = 1.0\n' \
            "${s%%:*}" "${s##*:}" "$1" "$1"
        [ "${s%%:*}" = charlie ] && printf 'hang_rate = %s\n' "$2"
    done
}

alive() { # PID: running (not gone, not a zombie waiting to be reaped)
    [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]
}

cpu_ticks() { # PID -> user + system CPU so far, in clock ticks
    # Field 2 (comm) may hold spaces: count fields after its closing parenthesis.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

machine_busy_ticks() { # CPU ticks all cores spent busy so far (not idle, iowait or steal)
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat
}

io_stall_us() { # microseconds some task stalled on I/O so far (PSI), or 0 without PSI
    sed -n 's/^some .*total=//p' /proc/pressure/io 2>/dev/null || echo 0
}

# measured NAME SERVER_PID DRIVER_THREADS -- command...: runs the driver, records its CPU
# seconds (getrusage of the child), the server's CPU seconds (0 when SERVER_PID is -), the
# wall time, the thread count, the whole machine's busy CPU seconds and the I/O stall
# seconds (PSI "some") in $OUT/NAME.cpu as
# "driver_s server_s wall_s driver_threads machine_s io_stall_s", and the load average at
# the start in $OUT/NAME.load.
measured() {
    local name=$1 server=$2 threads=$3
    shift 4
    local before=0 after=0 busy_before busy_after stall_before stall_after
    cut -d' ' -f1-3 /proc/loadavg >"$OUT/$name.load"
    if [ "$server" != - ]; then before=$(cpu_ticks "$server"); fi
    busy_before=$(machine_busy_ticks)
    stall_before=$(io_stall_us)
    python3 - "$OUT/$name.cpu.driver" "$@" <<'PY'
import resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
rc = subprocess.run(cmd).returncode
wall = time.monotonic() - t0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(out, "w").write(f"{r.ru_utime + r.ru_stime:.3f} {wall:.3f}\n")
sys.exit(rc)
PY
    if [ "$server" != - ]; then
        if ! alive "$server"; then
            echo "$name: the server (PID $server) is gone: it exited or was killed during the run" >&2
            return 1
        fi
        after=$(cpu_ticks "$server")
    fi
    busy_after=$(machine_busy_ticks)
    stall_after=$(io_stall_us)
    read -r driver_s wall_s <"$OUT/$name.cpu.driver"
    python3 -c "print($driver_s, ($after - $before) / $TICKS, $wall_s, $threads, ($busy_after - $busy_before) / $TICKS, ($stall_after - $stall_before) / 1e6)" >"$OUT/$name.cpu"
}

# cpu_split NAME: "driver X cores, server Y cores, others Z cores, I/O stall W%: <which
# saturated>". Others = the machine's busy CPU less driver and server: other processes
# (this script's own included), which make a run worth less.
cpu_split() {
    python3 - "$OUT/$1.cpu" "$CORES" <<'PY'
import sys
d, s, wall, threads, busy, stall = map(float, open(sys.argv[1]).read().split())
cores = float(sys.argv[2])
dc, sc = d / wall, s / wall
oc = max(0.0, busy / wall - dc - sc)
if dc >= 0.9 * min(threads, cores):
    verdict = f"driver saturated (its {threads:.0f} thread(s) busy)"
elif dc + sc >= 0.9 * cores:
    verdict = f"machine saturated ({cores:.0f} cores shared; server took {sc / (dc + sc):.0%})"
elif dc + sc + oc >= 0.9 * cores:
    verdict = "machine saturated, with other processes"
else:
    verdict = "neither saturated (latency-bound: waiting on I/O or on each other)"
print(f"driver {dc:.2f} cores, server {sc:.2f} cores, others {oc:.2f} cores, I/O stall {stall / wall:.0%}: {verdict}")
PY
}

# wrk_run URL NAME SERVER_PID LUA_SCRIPT extra-wrk-args...: wrk with a script that ends
# with a WRK_RESULT line (scripts/accounts.lua, scripts/search.lua), measured; fails
# unless every answer was a 2xx.
wrk_run() {
    local url=$1 name=$2 server=$3 script=$4
    shift 4
    measured "$name" "$server" "${WRK_THREADS:-1}" -- wrk "$@" -s "$script" "$url" \
        >"$OUT/$name.txt"
    local result
    result=$(grep '^WRK_RESULT' "$OUT/$name.txt") || {
        echo "wrk printed no result; its output:" >&2
        cat "$OUT/$name.txt" >&2
        return 1
    }
    echo "$name: ${result#WRK_RESULT } (load $(cat "$OUT/$name.load"))"
    # A benchmark of refusals would be fast and meaningless: every answer must be a 200.
    if ! grep -q ' non_2xx=0$' <<<"$result" || ! grep -q ' errors=0 ' <<<"$result"; then
        echo "$name: some requests failed (see $OUT/$name.txt)" >&2
        return 1
    fi
}

us_per_request() { # NAME -> the server's CPU microseconds per request of a wrk_run
    python3 -c "import sys; print(float(open(sys.argv[1]).read().split()[1]) * 1e6 / float(sys.argv[2]))" \
        "$OUT/$1.cpu" "$(wrk_field "$1" requests)"
}

wrk_field() { # NAME KEY -> value from the WRK_RESULT line in $OUT/NAME.txt
    grep '^WRK_RESULT' "$OUT/$1.txt" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# until_no_saga_in_flight URL T0 [RESULT_FILE]: waits until wayfare at URL has no saga in
# flight (metrics, operator token in WAYFARE__ADMIN__TOKEN), then prints the sagas by state
# and terminal sagas / seconds since T0 (epoch seconds): bookings/s end to end. With
# RESULT_FILE, also writes "terminal seconds per_second" there.
until_no_saga_in_flight() {
    python3 - "$1" "$2" "${3:-}" <<'PY'
import os, re, sys, time, urllib.request
url, t0, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
AUTH = {"Authorization": "Bearer " + os.environ["WAYFARE__ADMIN__TOKEN"]}
while True:
    m = urllib.request.urlopen(urllib.request.Request(f"{url}/metrics", headers=AUTH)).read().decode()
    n = {k: int(v) for k, v in re.findall(r'wayfare_sagas\{state="(\w+)"\} (\d+)', m)}
    if n and n.get("pending", 0) + n.get("payment_authorized", 0) + n.get("seller_confirmed", 0) + n.get("compensating", 0) == 0:
        break
    time.sleep(0.2)
done = sum(n.values()); secs = time.time() - t0
print(f"sagas {n}; {done} terminal in {secs:.1f} s = {done / secs:.0f} bookings/s end to end")
if out:
    open(out, "w").write(f"{done} {secs:.3f} {done / secs:.1f}\n")
PY
}
