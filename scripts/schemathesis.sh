#!/usr/bin/env bash
# Schema-driven fuzzing of the real server from its OpenAPI description with schemathesis.
# The description is generated from the code (utoipa: each handler's #[utoipa::path] in
# src/http/*.rs, assembled in src/http/openapi.rs) and served at /v1/openapi.json.
#
#   scripts/schemathesis.sh [MAX_EXAMPLES]      # default 25 per operation and phase
#
# Builds `wayfare`, starts `wayfare serve` on 127.0.0.1:0 with the shipped config.toml
# (demo accounts, three simulated sellers) and a fresh data dir, an operator token in
# WAYFARE__ADMIN__TOKEN sent as `Authorization: Bearer` on every request, then runs every
# schemathesis phase (examples, coverage, fuzzing, stateful) with these checks:
#   not_a_server_error           no 5xx except the documented 503 and 504
#   status_code_conformance      every status is documented for its operation
#   content_type_conformance     every Content-Type is documented
#   response_schema_conformance  every body fits its documented schema
# and fails when any check fails or the server dies. Bounded by MAX_EXAMPLES and by a
# wall-clock limit (SCHEMATHESIS_TIMEOUT seconds, default 600). SCHEMATHESIS_SEED fixes
# the seed (default 1, so CI runs are repeatable; set it empty for a random one).
#
# schemathesis (pinned below) is installed from PyPI into a venv under the cargo target
# dir on first use; python3 with venv is installed with apt-get when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES="${1:-25}"
WALL="${SCHEMATHESIS_TIMEOUT:-600}"
SEED="${SCHEMATHESIS_SEED-1}"
VERSION=4.32.5
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${SCHEMATHESIS_VENV:-$TARGET/hostile/venv}"

# --- python and schemathesis -------------------------------------------------------------
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "== installing python3 and venv (apt-get)"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
    else
        echo "python3 with the venv module is needed (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $VERSION" ]; then
    echo "== installing schemathesis $VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION"
fi

# --- the server --------------------------------------------------------------------------
echo "== building wayfare"
cargo build -q --bin wayfare
BIN="$TARGET/debug/wayfare"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cp config.toml "$WORK/config.toml"
: >"$WORK/server.out"
WAYFARE__ADMIN__TOKEN="$TOKEN" WAYFARE__LOG__LEVEL="${WAYFARE_LOG:-warn}" \
    "$BIN" serve --config "$WORK/config.toml" --data-dir "$WORK/data" --bind 127.0.0.1:0 \
    >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

BASE=""
for _ in $(seq 1 300); do
    BASE="$(sed -n 's/^wayfare listening on \(http:\/\/.*\)$/\1/p' "$WORK/server.out" || true)"
    [ -n "$BASE" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "wayfare exited during start-up:" >&2
        cat "$WORK/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
[ -n "$BASE" ] || { echo "wayfare did not announce its address in 30 s" >&2; exit 1; }
echo "== wayfare serving on $BASE"

# --- schemathesis ------------------------------------------------------------------------
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
cat >"$WORK/schemathesis.toml" <<'EOF'
[checks.not_a_server_error]
# 503 (overloaded, unavailable) and 504 (deadline exceeded) are documented answers.
expected-statuses = ["2xx", "3xx", "4xx", "503", "504"]
EOF
# A second pass pins the search dates and places: searches must start in the future and
# name exactly one of city or hotel, which generated values almost never do, so without
# it no search reaches the sellers. The other parameters are still generated.
TOMORROW="$(date -u -d '+1 day' +%F)"
LATER="$(date -u -d '+3 days' +%F)"
cat "$WORK/schemathesis.toml" >"$WORK/search.toml"
cat >>"$WORK/search.toml" <<EOF

[[operations]]
include-operation-id = "searchHotels"
parameters = { city = "Lisbon", check_in = "$TOMORROW", check_out = "$LATER" }

[[operations]]
include-operation-id = "searchFlights"
parameters = { from = "LIS", to = "CDG", date = "$TOMORROW" }
EOF

seed_args=()
[ -n "$SEED" ] && seed_args=(--seed "$SEED")
status=0
deadline=$((SECONDS + WALL))
# run_pass NAME CONFIG [schemathesis args]: one schemathesis run within what is left of
# the wall-clock limit.
run_pass() {
    local name="$1" config="$2" left=$((deadline - SECONDS)) rc=0
    shift 2
    if [ "$left" -le 0 ]; then
        echo "no time left for the $name pass" >&2
        status=1
        return
    fi
    echo "== schemathesis $VERSION, $name: max $MAX_EXAMPLES examples per operation, ${left}s left"
    # One worker: with two, CPython 3.11 < 3.11.8 can fail inside hypothesis with "AST
    # constructor recursion depth mismatch" (cpython#106905). From the work dir, so
    # schemathesis's cache (.schemathesis/) stays out of the tree.
    (cd "$WORK" && timeout --signal=INT --kill-after=30 "$left" \
        "$VENV/bin/schemathesis" --config-file "$config" run "$BASE/v1/openapi.json" \
        --header "Authorization: Bearer $TOKEN" --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" "${seed_args[@]}" --workers 1 \
        --request-timeout 30 --suppress-health-check too_slow \
        --report ndjson --report-ndjson-path "$WORK/$name.ndjson" "$@" \
        --no-color >"$WORK/$name.log" 2>&1) || rc=$?
    # The verdict and the failures, without the long progress listing.
    sed -n '/^=\+ \(FAILURES\|ERRORS\|WARNINGS\|SUMMARY\)/,$p' "$WORK/$name.log"
    if [ "$rc" = 124 ] || [ "$rc" = 130 ]; then
        echo "schemathesis ($name) hit the ${WALL}s limit" >&2
    fi
    [ "$rc" = 0 ] || status=1
}
run_pass all "$WORK/schemathesis.toml"
run_pass search "$WORK/search.toml" --include-operation-id searchHotels \
    --include-operation-id searchFlights --phases examples,coverage,fuzzing

# Requests and statuses per operation, from the event log.
if [ -s "$WORK/all.ndjson" ]; then
    python3 - "$WORK"/*.ndjson <<'EOF'
import collections, json, os, sys
requests = collections.Counter()
statuses = collections.defaultdict(collections.Counter)
def events():
    for path in sys.argv[1:]:
        run = os.path.basename(path).removesuffix(".ndjson")
        for line in open(path):
            yield ("" if run == "all" else f" [{run} pass]"), json.loads(line)
for run, event in events():
    finished = event.get("ScenarioFinished")
    if not finished:
        continue
    recorder = finished["recorder"]
    label = recorder.get("label", "?")
    for interaction in recorder.get("interactions", {}).values():
        for i in interaction if isinstance(interaction, list) else [interaction]:
            response = i.get("response") or {}
            # Stateful scenarios record every step under the scenario's label.
            request = i.get("request") or {}
            op = label if " " in label and "->" not in label else request.get("method", "?") + " " + request.get("uri", "?")
            op += run
            requests[op] += 1
            statuses[op][response.get("status_code", "none")] += 1
print(f"{'operation':<56} {'requests':>8}  statuses")
for op in sorted(requests):
    codes = " ".join(f"{c}x{n}" for c, n in sorted(statuses[op].items(), key=str))
    print(f"{op[:56]:<56} {requests[op]:>8}  {codes}")
print(f"{'total':<56} {sum(requests.values()):>8}")
EOF
fi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "wayfare died during the run:" >&2
    tail -n 40 "$WORK/server.err" >&2
    status=1
fi
if grep -q -i 'panicked' "$WORK/server.err"; then
    echo "wayfare logged a panic:" >&2
    grep -i -A5 'panicked' "$WORK/server.err" | head -n 40 >&2
    status=1
fi
exit "$status"
