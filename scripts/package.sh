#!/usr/bin/env bash
# Builds the Debian package of Strata: target/debian/strata_<version>-1_<arch>.deb, with the
# binary, the systemd unit (examples/strata.service), the example config as
# /etc/strata/strata.toml, shell completions, the manual page and a postinst script that
# creates the `strata` system user.
#
# Usage: scripts/package.sh [--debug]
#   --debug  package the debug build (quick; what the package test installs)
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'package: %s\n' "$*" >&2; }

profile=release
directory=release
if [ "${1:-}" = "--debug" ]; then
    profile=dev
    directory=debug
fi

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (this compiles it, a few minutes)"
    cargo install --locked --quiet cargo-deb
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
log "building the binary ($profile)"
cargo build --quiet -p strata --bin strata --profile "$profile"
binary="$target/$directory/strata"

assets="$PWD/target/package-assets"
mkdir -p "$assets"
"$binary" completions bash >"$assets/strata.bash"
"$binary" completions zsh >"$assets/_strata"
"$binary" completions fish >"$assets/strata.fish"
"$binary" man >"$assets/strata.1"

log "building the package"
output=$(cargo deb -p strata --no-build --profile "$profile" --no-strip \
    --output "$target/debian/" 2>&1) || { printf '%s\n' "$output" >&2; exit 1; }
printf '%s\n' "$output" | tail -n 1
