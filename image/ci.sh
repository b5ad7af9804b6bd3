#!/usr/bin/env bash
# CI entry for the appliance: build the image, then boot it under qemu (TCG) three ways, in parallel:
#   BIOS + ISO config drive   full mail path (greeting, EHLO STARTTLS, the drive's certificate and
#   + blank data disk         key (a systemd credential) served, message delivered to the host sink
#                             over STARTTLS, /metrics); the data disk formatted and mounted as
#                             state_directory, the result line read from it on the host; then a
#                             simulated upgrade (a fresh image, the same data disk and config
#                             drive, a second boot after the parallel ones): earlier lines kept,
#                             a new one added
#   UEFI + vfat config drive  the same checks through the other firmware and drive format, with
#   + interception.nft        inline interception on: the drive's nft TPROXY rules, the policy
#                             routing (MARK/TABLE from interception.env), forwarding, printed by
#                             the unit on the console; a tproxy listener (CAP_NET_ADMIN drop-in)
#   UEFI, no config drive     the default configuration (self-signed, said on the console)
# The two boots without a data disk check the console's warning that state stays on the system disk.
# The two boots without interception.nft check that interception is off and nothing was loaded.
# Exits non-zero, with the failing VM's console, on any problem. Run as root (build.sh needs it).
#
# Environment: STARTTLS_PROXY_DEB (skip the package build), KERNEL, DEBIAN_SNAPSHOT,
# SOURCE_DATE_EPOCH: see build.sh. SERIAL=1 runs the three boots one after the other.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
log() { printf '[image-ci %s +%3ds] %s\n' "$(date +%T)" "$(( $(date +%s) - t0 ))" "$*" >&2; }

log "build"
"$HERE/build.sh"
t_build=$(( $(date +%s) - t0 ))
# The image runs the Debian package (debian/build.sh), not a copy of its files: the boots below
# exercise the package's unit and binary under real systemd.
grep -qP '^starttls-proxy\t' "$HERE/out/starttls-proxy.manifest" \
    || { log "FAILED: the image does not have the starttls-proxy package installed"; exit 1; }
log "image has the package: $(grep -P '^starttls-proxy\t' "$HERE/out/starttls-proxy.manifest" | tr '\t' ' ')"

# Host tools once, before the parallel boots: three concurrent apt-get runs fight over its lock.
"$HERE/boot-test.sh" --install-tools

scenarios=("--data-disk" "--uefi --vfat --interception" "--uefi --no-drive")
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
for i in "${!scenarios[@]}"; do
    # shellcheck disable=SC2086  # the scenario is a list of options
    if [ -n "${SERIAL:-}" ]; then
        if "$HERE/boot-test.sh" ${scenarios[$i]} > "$logs/$i.log" 2>&1; then echo 0; else echo $?; fi > "$logs/$i.rc"
    else
        ( if "$HERE/boot-test.sh" ${scenarios[$i]} > "$logs/$i.log" 2>&1; then echo 0; else echo $?; fi > "$logs/$i.rc" ) &
        pids+=($!)
    fi
done
for p in "${pids[@]}"; do wait "$p" || true; done

failed=0
for i in "${!scenarios[@]}"; do
    cat "$logs/$i.log" >&2
    [ "$(cat "$logs/$i.rc" 2>/dev/null)" = 0 ] || failed=1
done
[ "$failed" = 0 ] || { log "FAILED"; exit 1; }
log "PASS: build ${t_build}s, total $(( $(date +%s) - t0 ))s; $(cat "$HERE/out/SHA256SUMS" | head -1)"
