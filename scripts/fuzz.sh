#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets/*) for SECONDS (default 30), one after
# another, and fails on the first crash. Installs cargo-fuzz when it is missing.
#
#   scripts/fuzz.sh [SECONDS]        # e.g. scripts/fuzz.sh 600 for a long run
#
# Toolchain: nightly when rustup has it; otherwise the default (stable) toolchain with
# RUSTC_BOOTSTRAP=1, which works because the targets are built without a sanitizer
# (FUZZ_SANITIZER=none, the default here: the code under test is safe Rust, and without
# ASan each target runs several times faster). FUZZ_SANITIZER=address needs nightly.
#
# Build: FUZZ_BUILD=release (the default: about 25 000 runs/s for the codec) or dev (about
# 2 000 runs/s, but it builds in half the time, which suits a short smoke run in CI).
#
# Corpora: the committed seeds in fuzz/seeds/<target> are read, never written; what the
# fuzzer learns goes to $FUZZ_WORK/corpus/<target> (default target/fuzz-work), so long
# runs resume where they stopped. Crashes are written to $FUZZ_WORK/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
SANITIZER="${FUZZ_SANITIZER:-none}"
case "${FUZZ_BUILD:-release}" in
    release) PROFILE=() ;;
    dev) PROFILE=(--dev) ;;
    *) echo "FUZZ_BUILD must be release or dev, not '${FUZZ_BUILD}'" >&2; exit 2 ;;
esac
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
WORK="${FUZZ_WORK:-${CARGO_TARGET_DIR:-$PWD/target}/fuzz-work}"
TARGETS=(codec_decode seller_reply)

# libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
if ! command -v c++ >/dev/null && ! command -v clang++ >/dev/null; then
    echo "== installing a C++ compiler for libFuzzer (apt-get)"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq g++ >/dev/null
    else
        echo "a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2
        exit 1
    fi
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    TOOLCHAIN=(+nightly)
else
    # cargo-fuzz passes -Z flags only for sanitizers; RUSTC_BOOTSTRAP lets stable accept
    # the few unstable bits libfuzzer-sys and cargo-fuzz rely on.
    TOOLCHAIN=()
    export RUSTC_BOOTSTRAP=1
fi

cd fuzz
echo "== building fuzz targets (${TOOLCHAIN[*]:-stable, RUSTC_BOOTSTRAP=1}, ${FUZZ_BUILD:-release} build, sanitizer $SANITIZER)"
cargo "${TOOLCHAIN[@]}" fuzz build "${PROFILE[@]}" -s "$SANITIZER" --target-dir "$TARGET_DIR"

status=0
for target in "${TARGETS[@]}"; do
    corpus="$WORK/corpus/$target"
    artifacts="$WORK/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "== fuzzing $target for ${SECONDS_PER_TARGET}s (corpus $corpus)"
    log="$WORK/$target.log"
    if cargo "${TOOLCHAIN[@]}" fuzz run "${PROFILE[@]}" -s "$SANITIZER" --target-dir "$TARGET_DIR" "$target" \
        "$corpus" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
        # libFuzzer's final stats: runs and the average speed.
        runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
        speed=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
        units=$(find "$corpus" -type f | wc -l)
        echo "   ok: ${runs:-?} runs, ${speed:-?} exec/s, corpus $units inputs"
    else
        status=1
        echo "   CRASH in $target; the last lines of $log:"
        tail -n 40 "$log"
        echo "   reproduce: (cd fuzz && cargo ${TOOLCHAIN[*]} fuzz run ${PROFILE[*]} -s $SANITIZER $target $artifacts/<crash-file>)"
    fi
done
exit "$status"
