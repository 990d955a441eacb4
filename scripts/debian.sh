# debian_install PURPOSE PACKAGE... [-- REASON...]: installs the Debian packages PURPOSE
# needs that are missing, and nothing else. Source it, then call it with what is missing.
#
# - Says what it will install and why before it changes anything.
# - Never upgrades a package that is already installed (`apt-get --no-upgrade`), and asks
#   for a companion of an installed package at the installed one's version (chromium-driver
#   at chromium's), so installing it cannot drag the installed one to a newer release.
# - Refreshes the package lists (`apt-get update`: it changes no installed package) only
#   when the first attempt cannot find a package, as on a fresh machine.
# - With WAYFARE_NO_INSTALL=1, or without root or sudo, fails instead, naming the command.
debian_install() {
    local purpose=$1
    shift
    local packages=() reasons=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do packages+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    reasons=("$@")
    [ ${#packages[@]} -gt 0 ] || return 0

    local pinned=() p version
    for p in "${packages[@]}"; do
        version=
        case $p in
            chromium-driver) version=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null || true) ;;
        esac
        if [ -n "$version" ]; then pinned+=("$p=$version"); else pinned+=("$p"); fi
    done
    local install=(apt-get install -y --no-upgrade --no-install-recommends "${pinned[@]}")

    echo "== $purpose needs these Debian packages, which are missing: ${packages[*]}" >&2
    for p in "${reasons[@]}"; do echo "   - $p" >&2; done
    if [ "${WAYFARE_NO_INSTALL:-0}" = 1 ]; then
        echo "WAYFARE_NO_INSTALL=1: not installing. Install them with: sudo ${install[*]}" >&2
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            echo "not root and no sudo: install them with \`${install[*]}\` as root" >&2
            return 1
        fi
    fi
    echo "== installing them now (${install[*]}; installed packages are not upgraded)" >&2
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${install[@]}" -qq >/dev/null 2>&1; then
        echo "== refreshing the package lists (apt-get update) and trying again" >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${install[@]}" -qq || {
            echo "could not install ${packages[*]}: see apt-get's message above" >&2
            return 1
        }
    fi
}
