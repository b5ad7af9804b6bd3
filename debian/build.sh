#!/usr/bin/env bash
# Build the Debian package: target/debian/starttls-proxy_<version>-1_amd64.deb
#
# The binary is the same static build the VM image uses (target/static): one binary for the
# package and the appliance, and a package that installs on any amd64 Debian or Ubuntu whatever
# its glibc. cargo-deb (crates.io) packs it with the unit image/starttls-proxy.service, the
# reference configuration config/starttls-proxy.toml as a conffile, the man page and the
# maintainer scripts in debian/; the metadata is in Cargo.toml, [package.metadata.deb].
#
# Environment: CARGO_DEB_VERSION (default below) is installed with `cargo install --locked` when
# cargo-deb is missing or another version. Needs cargo, a C compiler (ring) and strip (binutils).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
TARGET=x86_64-unknown-linux-gnu
t0=$(date +%s)
log() { printf '[deb %s +%3ds] %s\n' "$(date +%T)" "$(( $(date +%s) - t0 ))" "$*" >&2; }

command -v cargo >/dev/null || { log "ERROR: cargo not found (install Rust >= the rust-version in Cargo.toml)"; exit 1; }
command -v strip >/dev/null || { log "ERROR: strip not found (apt-get install binutils)"; exit 1; }
command -v file >/dev/null || { log "ERROR: file not found (apt-get install file): it checks that the binary is static"; exit 1; }
if [ "$(cargo deb --version 2>/dev/null | awk '{print $NF}')" != "$CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

log "static release binary (target/static)"
cd "$REPO"
export CARGO_TARGET_DIR=$REPO/target/static
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET"
bin=$CARGO_TARGET_DIR/$TARGET/release/starttls-proxy
file -L "$bin" | grep -Eq 'static(-pie)? linked|statically linked' || { log "ERROR: $bin is not statically linked"; exit 1; }

# Reproducible archive: file times from the commit, as the image does.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1735689600)}
mkdir -p "$REPO/target/debian"
log "cargo deb"
deb=$(cargo deb --no-build --target "$TARGET" --output "$REPO/target/debian/" | tail -n 1)
[ -f "$deb" ] || { log "ERROR: cargo deb did not report a package file (got: $deb)"; exit 1; }
log "built $deb in $(( $(date +%s) - t0 ))s"
echo "$deb"
