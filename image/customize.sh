#!/usr/bin/env bash
# mmdebstrap customize hook for build.sh: turns the Debian root in $1 into the appliance.
# Arguments: ROOT IMAGE_DIR PACKAGE ROOT_UUID. Runs on the host, as root, with SOURCE_DATE_EPOCH set.
set -euo pipefail
root=$1 image=$2 deb=$3 root_uuid=$4

# The proxy: the Debian package, installed as on any Debian server (binary, unit, conffile,
# /etc/starttls-proxy/tls). Its reference configuration is removed again: on the appliance the
# configuration comes from the config drive, or the first boot installs the default one.
cp "$deb" "$root/tmp/starttls-proxy.deb"
chroot "$root" dpkg -i /tmp/starttls-proxy.deb
rm -f "$root/tmp/starttls-proxy.deb" "$root/etc/starttls-proxy/starttls-proxy.toml"
[ -x "$root/usr/sbin/starttls-proxy" ] && [ -f "$root/usr/lib/systemd/system/starttls-proxy.service" ] \
    || { echo "customize: the package did not install the binary and the unit" >&2; exit 1; }

# Files of the appliance: overlay (first-boot and data-disk services, proxy drop-ins, network),
# default configuration.
tar -C "$image/rootfs" --owner=0 --group=0 --sort=name -c . | tar -C "$root" -x --no-same-owner
install -d -m 0755 "$root/usr/share/starttls-proxy"
install -m 0644 "$image/default.toml" "$root/usr/share/starttls-proxy/default.toml"

# Identity: no machine id yet (generated at first boot), fixed host name, UTC, root locked.
echo starttls-proxy > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tstarttls-proxy\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
echo uninitialized > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
echo Etc/UTC > "$root/etc/timezone"
chroot "$root" usermod -p '!*' root
echo "UUID=$root_uuid / ext4 errors=remount-ro 0 1" > "$root/etc/fstab"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Services: network, resolver, time, the proxy, its first-boot configuration and its data disk.
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service starttls-proxy-firstboot.service starttls-proxy-datadisk.service starttls-proxy-interception.service \
    starttls-proxy.service
# nftables.service would load /etc/nftables.conf ("flush ruleset"): the appliance's rules come from
# the config drive only (starttls-proxy-interception.service). Off unless the drive has them.
chroot "$root" systemctl disable nftables.service
# No package manager timers, no interactive first-boot prompts on the console.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    systemd-firstboot.service

# The kernel's postinst built the initramfs without SOURCE_DATE_EPOCH (dpkg does not pass it on):
# build it again with it, so its cpio time stamps are fixed.
for kver in $(ls "$root/usr/lib/modules"); do
    chroot "$root" env SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" update-initramfs -c -k "$kver" >/dev/null
done

# Leave nothing that differs between two builds or that belongs to the build host.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/lib/dpkg/*-old "$root"/var/cache/ldconfig/aux-cache "$root"/var/lib/systemd/random-seed \
    "$root"/etc/*- "$root"/var/lib/systemd/catalog/database
find "$root/var/log" -type f -delete
