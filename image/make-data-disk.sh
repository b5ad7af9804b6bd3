#!/usr/bin/env bash
# Make a blank data disk for the starttls-proxy appliance: state_directory (session results, the
# MTA-STS cache) lives there and survives replacing the system disk to upgrade.
#
#   image/make-data-disk.sh [--qcow2] SIZE OUTPUT        e.g. image/make-data-disk.sh 20G mx-proxy-state.img
#
# Default output: a sparse raw image; --qcow2: a qcow2 image. SIZE as qemu-img takes it (20G,
# 512M; at least 64M). The disk is left BLANK: on its first boot the appliance formats it (ext4,
# label STP-STATE) and from then on mounts it by that label. Any blank disk your hypervisor makes
# works the same (Proxmox "Add > Hard Disk", virt-install --disk size=20, a new VMDK/VHDX):
# attach it as a second disk next to the system disk and the config drive. Size: one session
# result line is about 350 bytes, so 1 million sessions a day need about 350 MB a day, times the
# `retention` days (README, "The data disk").
#
# Needs qemu-img (apt-get install qemu-utils). Runs as any user; mounts nothing.
set -euo pipefail

usage() { echo "usage: $0 [--qcow2] SIZE OUTPUT" >&2; exit 2; }
format=raw
[ "${1:-}" = --qcow2 ] && { format=qcow2; shift; }
[ $# -eq 2 ] || usage
size=$1 out=$2
command -v qemu-img >/dev/null || { echo "$0: needs qemu-img (apt-get install qemu-utils)" >&2; exit 1; }
[ ! -e "$out" ] || { echo "$0: $out exists; not overwriting a data disk" >&2; exit 1; }
qemu-img create -q -f "$format" "$out" "$size"
bytes=$(qemu-img info --output=json "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])' 2>/dev/null \
        || qemu-img info "$out" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes).*/\1/p')
if [ -n "$bytes" ] && [ "$bytes" -lt $((64 * 1024 * 1024)) ]; then
    rm -f "$out"
    echo "$0: $size is too small: the appliance formats only blank disks of 64 MiB or more" >&2
    exit 2
fi
echo "$out: blank $format data disk, $size (the appliance formats it as ext4 STP-STATE on first boot)"
