#!/usr/bin/env bash
# The whole test suite, as the README's test command. Two suites need Debian packages:
# the browser test of the operator console (tests/console.rs) drives headless Chromium
# through chromedriver, and the PostgreSQL tests (tests/postgres.rs, tests/cluster.rs)
# start throwaway servers from /usr/lib/postgresql/*/bin. This installs what is missing,
# and only that: it says what it will install and why first, never upgrades a package
# that is already there (apt-get --no-upgrade), and with WAYFARE_NO_INSTALL=1 fails
# instead, naming the packages. Then it runs `cargo test` (the workspace's default members:
# wayfare, with its default `postgres` feature, and wayfare-drill). Arguments go to
# cargo test (e.g. `scripts/test.sh --test booking`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/debian.sh

missing=()
why=()
command -v chromium >/dev/null || { missing+=(chromium); why+=("chromium: tests/console.rs drives the console in headless Chromium"); }
command -v chromedriver >/dev/null || { missing+=(chromium-driver); why+=("chromium-driver: tests/console.rs talks WebDriver to it"); }
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    || { missing+=(postgresql); why+=("postgresql: tests/postgres.rs and tests/cluster.rs start throwaway servers"); }
if [ ${#missing[@]} -gt 0 ]; then
    debian_install "the test suite" "${missing[@]}" -- "${why[@]}"
fi

cargo test "$@"
