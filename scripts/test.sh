#!/usr/bin/env bash
# The whole test suite, as the README's test command. Two suites need Debian packages:
# the browser test of the operator console (tests/console.rs) drives headless Chromium
# through chromedriver, and the PostgreSQL store's tests (tests/postgres.rs) start
# throwaway servers from /usr/lib/postgresql/*/bin. This installs what is missing from
# Debian (as root, or through sudo), then runs `cargo test` with the `postgres` feature
# (the workspace's default members: wayfare and wayfare-drill). Arguments go to cargo test
# (e.g. `scripts/test.sh --test booking`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} from Debian (needed by tests/console.rs, tests/postgres.rs)"
    install=(apt-get install -y --no-install-recommends "${missing[@]}")
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${install[@]}"
    elif command -v sudo >/dev/null; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive "${install[@]}"
    else
        echo "tests/console.rs and tests/postgres.rs need these: run \`sudo ${install[*]}\` first" >&2
        exit 1
    fi
fi

cargo test --features wayfare/postgres "$@"
