#!/usr/bin/env bash
# Make a config drive for the starttls-proxy appliance from a folder, without mounting anything.
#
#   image/make-config-drive.sh [--vfat] FOLDER OUTPUT
#
# Default output: an ISO 9660 image labelled "cidata" (attach as a CD-ROM). With --vfat: a FAT
# disk image labelled "CIDATA" (attach as a raw disk). Either is also a valid cloud-init NoCloud
# seed: meta-data and user-data are added when the folder has none.
#
# FOLDER layout (see the README, "Deploying inline"):
#   starttls-proxy/config.toml          required: the proxy configuration
#   starttls-proxy/tls/cert.pem         certificate chain, leaf first
#   starttls-proxy/tls/key.pem          private key; the configuration refers to it as
#                                       private_key = "${CREDENTIALS_DIRECTORY}/tls-key"
#   starttls-proxy/root-password-hash   optional crypt(3) hash (openssl passwd -6) for console login
#   starttls-proxy/interception.nft     optional nft TPROXY ruleset: inline interception ON
#   starttls-proxy/interception.env     optional MARK=1 TABLE=100 FORWARD=yes (the defaults)
#   network/*.network, *.netdev, *.link optional systemd-networkd files (static addresses)
#   meta-data                           optional NoCloud meta-data; "local-hostname: NAME"
#
# Needs genisoimage (ISO) or dosfstools + mtools (vfat): apt-get install genisoimage dosfstools mtools
set -euo pipefail

usage() { echo "usage: $0 [--vfat] FOLDER OUTPUT" >&2; exit 2; }
format=iso
[ "${1:-}" = --vfat ] && { format=vfat; shift; }
[ $# -eq 2 ] || usage
src=$1 out=$2
[ -d "$src" ] || { echo "$0: $src is not a folder" >&2; exit 2; }
[ -f "$src/starttls-proxy/config.toml" ] || { echo "$0: $src/starttls-proxy/config.toml is missing" >&2; exit 2; }
if [ -f "$src/starttls-proxy/tls/key.pem" ] && ! grep -q 'CREDENTIALS_DIRECTORY}/tls-key' "$src/starttls-proxy/config.toml"; then
    echo "$0: warning: tls/key.pem is on the drive but config.toml does not use \${CREDENTIALS_DIRECTORY}/tls-key" >&2
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$src/." "$stage/"
[ -f "$stage/meta-data" ] || printf 'instance-id: starttls-proxy\nlocal-hostname: starttls-proxy\n' > "$stage/meta-data"
[ -f "$stage/user-data" ] || printf '#cloud-config\n{}\n' > "$stage/user-data"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$out"

case $format in
iso)
    command -v genisoimage >/dev/null || { echo "$0: needs genisoimage" >&2; exit 1; }
    genisoimage -quiet -output "$out" -volid cidata -joliet -rock "$stage"
    ;;
vfat)
    command -v mkfs.vfat >/dev/null && command -v mcopy >/dev/null \
        || { echo "$0: needs dosfstools and mtools" >&2; exit 1; }
    kib=$(du -sk --apparent-size "$stage" | cut -f1)
    kib=$(( (kib + 1024) * 2 ))       # room for FAT metadata
    [ "$kib" -ge 2048 ] || kib=2048
    truncate -s "${kib}K" "$out"
    mkfs.vfat -n CIDATA -i 43444154 "$out" >/dev/null
    export MTOOLS_SKIP_CHECK=1
    shopt -s dotglob
    mcopy -s -m -i "$out" "$stage"/* ::/
    ;;
esac
echo "$out: $format config drive from $src"
