#!/usr/bin/env bash
# The whole test suite, as the README's test command. The browser test of the operator
# console (tests/console.rs) drives Debian's headless Chromium through chromedriver: this
# installs both from Debian when they are missing (as root, or through sudo), then runs
# `cargo test` (the workspace's default members: wayfare and wayfare-drill). Arguments go
# to cargo test (e.g. `scripts/test.sh --test booking`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} from Debian (needed by tests/console.rs)"
    install=(apt-get install -y --no-install-recommends "${missing[@]}")
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${install[@]}"
    elif command -v sudo >/dev/null; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive "${install[@]}"
    else
        echo "tests/console.rs needs Chromium: run \`sudo ${install[*]}\` first" >&2
        exit 1
    fi
fi

cargo test "$@"
