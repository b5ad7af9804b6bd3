#!/usr/bin/env bash
# Build the starttls-proxy VM appliance: image/out/starttls-proxy.qcow2 (+ .manifest, SHA256SUMS).
#
# Debian 12 minbase + systemd, linux-image-cloud-amd64 (KERNEL=generic for hardware NIC drivers),
# the starttls-proxy Debian package (debian/build.sh: the static release binary as
# /usr/sbin/starttls-proxy, the hardened unit), serial console, DHCP, root locked.
# Disk: GPT with an EFI system partition (FAT32) that boots both ways -
#   BIOS: syslinux gptmbr.bin in the MBR, ldlinux on the ESP (legacy-BIOS-bootable attribute);
#   UEFI: a unified kernel image (systemd stub + kernel + initrd + command line) as
#         \EFI\BOOT\BOOTX64.EFI, the removable-media path every firmware tries;
# and an ext4 root built with mkfs.ext4 -d. Nothing is mounted on the host.
#
# Reproducible: fixed UUIDs and serials, all times clamped to SOURCE_DATE_EPOCH (default: the
# commit time of HEAD), sorted file order. The package set is whatever the mirror serves; pin it
# with DEBIAN_SNAPSHOT=20250520T000000Z (snapshot.debian.org) to rebuild bit for bit later.
#
# Run as root. Environment:
#   KERNEL=cloud|generic     kernel flavour (default cloud)
#   STARTTLS_PROXY_DEB=PATH  install this package (from debian/build.sh) instead of building it
#   MIRROR=URL               Debian mirror (default http://deb.debian.org/debian)
#   DEBIAN_SNAPSHOT=STAMP    use snapshot.debian.org at this time stamp instead of MIRROR
#   SOURCE_DATE_EPOCH=N      time stamp for every file (default: git commit time)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT=$HERE/out
WORK=$HERE/work
KERNEL=${KERNEL:-cloud}
SUITE=bookworm
DISK_SIZE_MIB=2048
ESP_SIZE_MIB=64
# Fixed identities: the same on every build, so two builds give the same bytes.
DISK_GUID=5f3c1d2e-7a43-4b8e-9a1d-53545450524f
ESP_PARTUUID=5f3c1d2e-7a43-4b8e-9a1d-000000000001
ROOT_PARTUUID=5f3c1d2e-7a43-4b8e-9a1d-000000000002
ROOT_UUID=5f3c1d2e-7a43-4b8e-9a1d-0000000000f5
ROOT_HASH_SEED=5f3c1d2e-7a43-4b8e-9a1d-0000000000a5
ESP_VOLID=53545450   # "STTP"

log() { printf '[build %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap builds the root file system as root)"
case $KERNEL in cloud|generic) ;; *) die "KERNEL must be cloud or generic" ;; esac

# --- host packages, installed only when missing --------------------------------------------------
need_pkgs=(mmdebstrap eatmydata mtools dosfstools syslinux syslinux-common systemd-boot-efi
           e2fsprogs fdisk binutils faketime qemu-utils zstd file)
missing=()
for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ -n "${DEBIAN_SNAPSHOT:-}" ]; then
    MIRROR="http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT"
    SECURITY="http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT"
else
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
fi
start=$(date +%s)

# --- the package ---------------------------------------------------------------------------------
# The image installs the same .deb an administrator would (binary, unit, conffile, scripts), so the
# boot test exercises the package under real systemd.
if [ -n "${STARTTLS_PROXY_DEB:-}" ]; then
    DEB=$(readlink -f "$STARTTLS_PROXY_DEB")
else
    log "building the Debian package (debian/build.sh: static release binary in target/static)"
    DEB=$("$REPO/debian/build.sh" | tail -n 1)
fi
[ -f "$DEB" ] || die "no package at $DEB"

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1735689600)}
export LC_ALL=C.UTF-8 TZ=UTC
umask 022

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
ROOT=$WORK/root
ESP=$WORK/esp
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/sbin/starttls-proxy > "$WORK/starttls-proxy"
BIN_SHA=$(sha256sum < "$WORK/starttls-proxy" | cut -d' ' -f1)
file "$WORK/starttls-proxy" | grep -Eq 'static(-pie)? linked|statically linked' || die "the binary in $DEB is not statically linked"

# --- root file system ----------------------------------------------------------------------------
log "mmdebstrap $SUITE ($KERNEL kernel) from $MIRROR"
cp "$DEB" "$WORK/starttls-proxy.deb"
mmdebstrap --variant=minbase --mode=root --format=directory \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --include="systemd,systemd-sysv,udev,dbus,procps,iproute2,nftables,systemd-resolved,systemd-timesyncd,mount,e2fsprogs,ca-certificates,zstd,initramfs-tools,linux-image-$KERNEL-amd64" \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --essential-hook="tar -C '$HERE/rootfs' --owner=0 --group=0 -c etc/initramfs-tools | tar -C \"\$1\" -x" \
    --customize-hook="'$HERE/customize.sh' \"\$1\" '$HERE' '$WORK/starttls-proxy.deb' '$ROOT_UUID'" \
    "$SUITE" "$ROOT" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main"

# Package manifest: what the image contains, for audits and to compare builds.
{
    echo "# starttls-proxy appliance $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "# SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH kernel=$KERNEL mirror=$MIRROR"
    echo "# starttls-proxy $(basename "$DEB") $(sha256sum < "$DEB" | cut -d' ' -f1), binary $BIN_SHA"
    echo "# host: systemd-boot-efi $(dpkg-query -W -f='${Version}' systemd-boot-efi)," \
         "syslinux $(dpkg-query -W -f='${Version}' syslinux), e2fsprogs $(dpkg-query -W -f='${Version}' e2fsprogs)," \
         "dosfstools $(dpkg-query -W -f='${Version}' dosfstools), qemu-utils $(dpkg-query -W -f='${Version}' qemu-utils)"
    chroot "$ROOT" dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\n' | sort
} > "$WORK/manifest"

# --- boot files ----------------------------------------------------------------------------------
kver=$(basename "$(ls -d "$ROOT"/usr/lib/modules/*)")
CMDLINE="root=UUID=$ROOT_UUID ro rootwait console=tty0 console=ttyS0,115200n8 quiet"
mkdir -p "$ESP/EFI/BOOT" "$ESP/syslinux"
cp "$ROOT/boot/vmlinuz-$kver" "$ESP/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$ESP/initrd.img"
# The system disk is replaced as a whole to upgrade, so the root keeps no copy of the kernel.
rm -f "$ROOT"/boot/vmlinuz-* "$ROOT"/boot/initrd.img-* "$ROOT"/boot/System.map-* "$ROOT"/boot/config-*
rm -f "$ROOT"/vmlinuz* "$ROOT"/initrd.img*

log "unified kernel image for UEFI (kernel $kver)"
printf '%s' "$CMDLINE" > "$WORK/cmdline"
objcopy \
    --add-section .osrel="$ROOT/usr/lib/os-release" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$WORK/cmdline" --change-section-vma .cmdline=0x30000 \
    --add-section .linux="$ESP/vmlinuz" --change-section-vma .linux=0x2000000 \
    --add-section .initrd="$ESP/initrd.img" --change-section-vma .initrd=0x3000000 \
    /usr/lib/systemd/boot/efi/linuxx64.efi.stub "$ESP/EFI/BOOT/BOOTX64.EFI"
# objcopy stamps the PE header (COFF TimeDateStamp) with the current time: use SOURCE_DATE_EPOCH.
le32() { printf "\\x%02x\\x%02x\\x%02x\\x%02x" $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
pe=$(od -An -t u4 -j 60 -N 4 "$ESP/EFI/BOOT/BOOTX64.EFI" | tr -d ' ')
printf "$(le32 "$SOURCE_DATE_EPOCH")" | dd of="$ESP/EFI/BOOT/BOOTX64.EFI" bs=1 seek=$((pe + 8)) conv=notrunc status=none
# ... and its PE checksum, computed over that time stamp, is no longer right: firmware ignores it.
printf '\0\0\0\0' | dd of="$ESP/EFI/BOOT/BOOTX64.EFI" bs=1 seek=$((pe + 24 + 64)) conv=notrunc status=none

cat > "$ESP/syslinux/syslinux.cfg" <<EOF
# BIOS boot. Type "linux <extra kernel options>" at the prompt within 2 s to change the command
# line (e.g. "linux init=/bin/sh" to reach a root shell on the console; see the README, "Deploying inline").
SERIAL 0 115200
PROMPT 1
TIMEOUT 20
DEFAULT linux
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img $CMDLINE
EOF

# --- disk image ----------------------------------------------------------------------------------
log "assembling the disk"
# Every file gets the same time; FAT stores local time, TZ is UTC.
find "$ROOT" "$ESP" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
# A fixed (not running) fake clock for the FAT tools: every directory entry gets the same time.
FAKETIME="$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')"
ft() { faketime -f "$FAKETIME" "$@"; }

raw=$WORK/disk.raw
truncate -s "${DISK_SIZE_MIB}M" "$raw"
sfdisk --quiet --no-reread --no-tell-kernel "$raw" <<EOF
label: gpt
label-id: $DISK_GUID
first-lba: 2048
start=2048, size=$((ESP_SIZE_MIB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_PARTUUID, name="ESP", attrs="LegacyBIOSBootable"
start=$(((ESP_SIZE_MIB + 1) * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_PARTUUID, name="root"
EOF
# Where sfdisk put the root partition (it aligns the end to 1 MiB).
read -r root_start root_sectors < <(sfdisk --dump "$raw" | sed -n 's/^.*disk.raw2 : start= *\([0-9]*\), size= *\([0-9]*\),.*/\1 \2/p')
[ -n "$root_sectors" ] || die "cannot read the partition table back"

# ESP: FAT32 written in place with mtools, at 1 MiB into the disk.
esp_off=$((2048 * 512))
ft mkfs.vfat -F 32 -S 512 -s 1 --offset 2048 -i "$ESP_VOLID" -n ESP --invariant \
    "$raw" $((ESP_SIZE_MIB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
(cd "$ESP" && find . -mindepth 1 -type d | LC_ALL=C sort | sed 's|^\./||') | while read -r d; do
    ft mmd -i "$raw@@$esp_off" "::/$d"
done
(cd "$ESP" && find . -type f | LC_ALL=C sort | sed 's|^\./||') | while read -r f; do
    ft mcopy -m -i "$raw@@$esp_off" "$ESP/$f" "::/$f"
done
ft syslinux --install --offset "$esp_off" --directory /syslinux "$raw"
dd if=/usr/lib/syslinux/mbr/gptmbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

# Root: ext4 from the directory, fixed UUID and hash seed, time stamps from SOURCE_DATE_EPOCH.
log "ext4 root ($(du -sh "$ROOT" | cut -f1))"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L root -U "$ROOT_UUID" \
    -E "hash_seed=$ROOT_HASH_SEED,lazy_itable_init=0,root_owner=0:0" -I 256 -b 4096 \
    -d "$ROOT" "$WORK/root.ext4" "$((root_sectors / 8))"
# mkfs.ext4 -d (e2fsprogs 1.47.0) copies each source file's ctime (the build's time) and atime
# (reading a file can update it): set both to SOURCE_DATE_EPOCH in every inode.
(cd "$ROOT" && echo / && find . -mindepth 1 -printf '/%P\n') | LC_ALL=C sort \
    | sed "s|.*|sif \"&\" ctime @$SOURCE_DATE_EPOCH\nsif \"&\" atime @$SOURCE_DATE_EPOCH|" > "$WORK/ctime.debugfs"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$WORK/ctime.debugfs" "$WORK/root.ext4" >/dev/null 2>"$WORK/debugfs.err" \
    || { cat "$WORK/debugfs.err" >&2; die "debugfs failed"; }
if grep -v '^debugfs ' "$WORK/debugfs.err" | grep -q .; then cat "$WORK/debugfs.err" >&2; die "debugfs reported errors"; fi
dd if="$WORK/root.ext4" of="$raw" bs=512 seek="$root_start" conv=notrunc,sparse status=none
rm -f "$WORK/root.ext4"

log "qcow2"
rm -f "$OUT"/starttls-proxy.qcow2 "$OUT"/starttls-proxy.manifest "$OUT"/SHA256SUMS
qemu-img convert -f raw -O qcow2 -c -o compression_type=zlib "$raw" "$OUT/starttls-proxy.qcow2"
cp "$WORK/manifest" "$OUT/starttls-proxy.manifest"
(cd "$OUT" && sha256sum starttls-proxy.qcow2 starttls-proxy.manifest > SHA256SUMS)
[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"

log "done in $(( $(date +%s) - start )) s: $(du -h --apparent-size "$OUT/starttls-proxy.qcow2" | cut -f1)"
cat "$OUT/SHA256SUMS"
