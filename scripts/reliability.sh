#!/usr/bin/env bash
# The long versions of every reliability check in RELIABILITY.md, in one command. CI
# (`.ci/run`) runs the short versions of the same tests; this raises their bounds.
#
#   scripts/reliability.sh           # everything, about 45 minutes on 2 cores once built
#   scripts/reliability.sh --quick   # the same list at CI bounds, with figures printed
#
# Each step prints its own figures (--nocapture); the script stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--quick" ]; then
    LONG=0
else
    LONG=1
fi
long() { [ "$LONG" = 1 ] && echo "$1" || echo "$2"; }

step() { echo; echo "== $*"; }

step "access control: every refusal, hostile Authorization headers, secrets kept out of logs"
cargo test -q --test access -- --nocapture

step "hostile requests: $(long 1000 64) inputs per endpoint"
HOSTILE_CASES=$(long 1000 64) cargo test -q --test hostile_input -- --nocapture

step "kill -9 with partners outside: $(long "25 cycles of 50" "8 cycles of 40") concurrent bookings"
if [ "$LONG" = 1 ]; then
    cargo test -q --test booking_crash -- --ignored --nocapture
else
    cargo test -q --test booking_crash -- --nocapture
fi

step "chaos drill: faults of every kind while bookings, searches and credits run"
cargo run -q --release --example chaos -- $(long "" --quick)

# overload and storage_faults are #[ignore] in a plain `cargo test` (they load the
# machine, or need root); --ignored runs them. storage_faults fails, naming what is
# missing, when not run as root.
step "overload: past capacity for $(long 60 6) s"
WAYFARE_OVERLOAD_SECS=$(long 60 6) cargo test -q --test overload -- --ignored --nocapture

step "storage faults: read-only and full disk, at start and mid-run (needs root)"
cargo test -q --test storage_faults -- --ignored --nocapture

step "hostile input tooling: property tests, schemathesis, cargo-fuzz"
scripts/hostile.sh $(long --long "")

echo
echo "== every reliability check passed"
