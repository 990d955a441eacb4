#!/usr/bin/env bash
# Every hostile-input check in one command (docs/hostile-input.md):
#   1. property tests of the request, seller reply and config parsers;
#   2. schemathesis against the live server (scripts/schemathesis.sh);
#   3. cargo-fuzz on the record codec and the seller reply parser (scripts/fuzz.sh).
#
#   scripts/hostile.sh            # short bounds, as CI runs them (a few minutes)
#   scripts/hostile.sh --long     # long bounds (about 25 minutes after the builds)
#
# The bounds can be set one by one: PROPTEST_CASES, SCHEMATHESIS_EXAMPLES,
# SCHEMATHESIS_TIMEOUT, FUZZ_SECONDS (per target).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--long" ]; then
    : "${PROPTEST_CASES:=10000}" "${SCHEMATHESIS_EXAMPLES:=500}" "${SCHEMATHESIS_TIMEOUT:=1800}"
    : "${FUZZ_SECONDS:=600}"
    PROPTESTS=1
else
    : "${SCHEMATHESIS_EXAMPLES:=20}" "${SCHEMATHESIS_TIMEOUT:=300}" "${FUZZ_SECONDS:=20}"
    # A 20 s smoke run: a dev build of the fuzz targets builds in half the time.
    : "${FUZZ_BUILD:=dev}"
    export FUZZ_BUILD
    # `cargo test` (CI runs it first) already ran the property tests at their default.
    PROPTESTS="${PROPTESTS:-0}"
fi
export SCHEMATHESIS_TIMEOUT

if [ "$PROPTESTS" = 1 ]; then
    echo "== property tests, ${PROPTEST_CASES:-256} cases per property"
    PROPTEST_CASES="${PROPTEST_CASES:-256}" cargo test -q \
        --test hostile_input --test seller_wire --test config_parser
fi

started=$SECONDS
echo "== schemathesis (max $SCHEMATHESIS_EXAMPLES examples per operation)"
scripts/schemathesis.sh "$SCHEMATHESIS_EXAMPLES"
echo "   schemathesis took $((SECONDS - started))s"

started=$SECONDS
echo "== cargo-fuzz (${FUZZ_SECONDS}s per target)"
scripts/fuzz.sh "$FUZZ_SECONDS"
echo "   fuzzing took $((SECONDS - started))s"
