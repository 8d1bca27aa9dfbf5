#!/usr/bin/env bash
# Builds the Debian package of Strata: target/debian/strata_<version>-1_<arch>.deb, with the
# binary, the systemd unit (examples/strata.service), the example config as
# /etc/strata/strata.toml, shell completions, the manual page and a postinst script that
# creates the `strata` system user.
#
# Usage: scripts/package.sh [--debug] [--no-build]
#   --debug     package the debug build (quick; what the package test installs)
#   --no-build  package the binary already built (e.g. the test suite's)
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'package: %s\n' "$*" >&2; }

profile=release
directory=release
build=yes
for argument in "$@"; do
    case "$argument" in
        --debug) profile=dev; directory=debug ;;
        --no-build) build=no ;;
        *) printf 'usage: %s [--debug] [--no-build]\n' "$0" >&2; exit 2 ;;
    esac
done

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (this compiles it, a few minutes)"
    cargo install --locked --quiet cargo-deb
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
binary="$target/$directory/strata"
if [ "$build" = yes ]; then
    log "building the binary ($profile)"
    cargo build --quiet -p strata --bin strata --profile "$profile"
fi
[ -x "$binary" ] || { log "no binary at $binary"; exit 1; }

assets="$PWD/target/package-assets"
mkdir -p "$assets"
"$binary" completions bash >"$assets/strata.bash"
"$binary" completions zsh >"$assets/_strata"
"$binary" completions fish >"$assets/strata.fish"
"$binary" man >"$assets/strata.1"

log "building the package"
fast=()
[ "$profile" = dev ] && fast=(--fast)
output=$(cargo deb -p strata --no-build --profile "$profile" --no-strip "${fast[@]}" \
    --output "$target/debian/" 2>&1) || { printf '%s\n' "$output" >&2; exit 1; }
printf '%s\n' "$output" | tail -n 1
