#!/usr/bin/env bash
# Install the built package in a clean Debian 12 root and check it, without containers:
#   debian/test-package.sh [PACKAGE.deb]     (default: the newest target/debian/starttls-proxy_*.deb)
#
# The root is debootstrap --variant=minbase bookworm plus systemd (a Debian 12 server has it; the
# package's scripts use deb-systemd-helper) and the package's Depends (checked below: dpkg -i
# refuses a package whose dependencies are missing), cached as target/deb-test/root-<packages>.tar
# so re-runs take seconds; each run unpacks a fresh copy. Checks:
#   files: binary, unit (= image/starttls-proxy.service), conffile (= config/starttls-proxy.toml),
#     man page, /etc/starttls-proxy/tls; Depends; the conffile flag (dpkg-query ${Conffiles});
#   the unit: systemd-analyze verify inside the root; not enabled by the install, enable works;
#   check-config of the shipped configuration with a test certificate (0644) and key (0600),
#     run as an unprivileged user with the key handed over as systemd's LoadCredential= does;
#   reinstall keeps an edited conffile without a prompt; remove keeps it; purge removes it and
#     the state directory, and leaves the administrator's certificate and key (saying so).
# Run as root. Environment: MIRROR (default: the one in apt's sources), REFRESH=1 rebuilds the root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CACHE=$REPO/target/deb-test
T0=$(date +%s)
log() { printf '[deb-test %s +%3ds] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
pass() { log "ok: $*"; }
fail() { log "FAIL: $*"; exit 1; }
trap 'log "FAIL: line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and chroot need it)"
for tool in debootstrap openssl chroot tar; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install debootstrap openssl coreutils tar)"
done
deb=${1:-$(ls -t "$REPO"/target/debian/starttls-proxy_*.deb 2>/dev/null | head -n 1)}
[ -n "$deb" ] && [ -f "$deb" ] || fail "no package (build it with debian/build.sh)"
deb=$(readlink -f "$deb")
log "package $deb"

# --- the cached clean root --------------------------------------------------------------------------
if [ -z "${MIRROR:-}" ]; then
    # The mirror apt already uses (deb822 or one-line sources), so no other network path is needed.
    MIRROR=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list \
        | grep -oE 'https?://[^ ]*/debian/?' | grep -v security | head -n 1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
# procps: /bin/kill for the unit's ExecReload=; ca-certificates: the default trust anchors.
DEPENDS=ca-certificates,procps
tarball=$CACHE/root-systemd,$DEPENDS.tar
mkdir -p "$CACHE"
if [ -n "${REFRESH:-}" ] || [ ! -f "$tarball" ]; then
    log "debootstrap bookworm minbase from $MIRROR (cached as $tarball)"
    rm -rf "$CACHE/bootstrap"
    debootstrap --variant=minbase --include="systemd,$DEPENDS" bookworm "$CACHE/bootstrap" "$MIRROR" \
        > "$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed"; }
    tar -C "$CACHE/bootstrap" -cf "$tarball.new" .
    mv "$tarball.new" "$tarball"
    rm -rf "$CACHE/bootstrap"
fi
R=$CACHE/root
rm -rf "$R"
mkdir -p "$R"
tar -C "$R" -xf "$tarball"
in_root() { chroot "$R" "$@"; }
# No service may start inside the root (there is no systemd running there anyway).
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
pass "clean root ready"

# --- install ---------------------------------------------------------------------------------------
cp "$deb" "$R/tmp/pkg.deb"
in_root dpkg -i /tmp/pkg.deb > "$CACHE/install.log" 2>&1 || { cat "$CACHE/install.log" >&2; fail "dpkg -i"; }
in_root dpkg-query -W -f='${Status}\n' starttls-proxy | grep -qx 'install ok installed' || fail "not installed"
pass "dpkg -i: $(in_root dpkg-query -W -f='${Package} ${Version} ${Architecture}' starttls-proxy)"
grep -q 'systemctl enable --now starttls-proxy' "$CACHE/install.log" || fail "postinst did not say how to start it"
pass "postinst tells the administrator what to do next"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1)
out=$(in_root /usr/sbin/starttls-proxy --version) || fail "--version"
[ "$out" = "starttls-proxy $version" ] || fail "--version says '$out', Cargo.toml $version"
pass "/usr/sbin/starttls-proxy --version: $out"
unit=$R/usr/lib/systemd/system/starttls-proxy.service
cmp "$unit" "$REPO/image/starttls-proxy.service" || fail "installed unit differs from image/starttls-proxy.service"
pass "unit /usr/lib/systemd/system/starttls-proxy.service is image/starttls-proxy.service"
conf=$R/etc/starttls-proxy/starttls-proxy.toml
cmp "$conf" "$REPO/config/starttls-proxy.toml" || fail "installed configuration differs from config/starttls-proxy.toml"
pass "configuration /etc/starttls-proxy/starttls-proxy.toml is config/starttls-proxy.toml"
[ -f "$R/usr/share/man/man8/starttls-proxy.8.gz" ] || fail "no man page"
in_root man -l /usr/share/man/man8/starttls-proxy.8.gz >/dev/null 2>&1 \
    || zcat "$R/usr/share/man/man8/starttls-proxy.8.gz" | grep -q '^\.TH STARTTLS-PROXY 8' || fail "man page unreadable"
pass "man page /usr/share/man/man8/starttls-proxy.8.gz"
[ "$(stat -c %a "$R/etc/starttls-proxy/tls")" = 755 ] || fail "/etc/starttls-proxy/tls is not 0755"
pass "/etc/starttls-proxy/tls exists, 0755 (the certificate must be reachable by the service user)"
depends=$(in_root dpkg-query -W -f='${Depends}' starttls-proxy)
for d in ${DEPENDS//,/ }; do
    echo "$depends" | grep -qw "$d" || fail "Depends lacks $d: '$depends'"
done
pass "Depends: $depends"
conffiles=$(in_root dpkg-query -W -f='${Conffiles}' starttls-proxy)
echo "$conffiles" | grep -q '^ */etc/starttls-proxy/starttls-proxy.toml [0-9a-f]\{32\}' \
    || fail "the configuration is not a conffile: '$conffiles'"
pass "conffile:$(echo "$conffiles" | tr -s ' ' | cut -d' ' -f1-2)"

# --- the unit ---------------------------------------------------------------------------------------
# verify loads the unit with the root's systemd and checks ExecStart= and friends; any message
# (warnings included) is a failure, since a clean unit prints nothing.
verify=$(in_root systemd-analyze verify /usr/lib/systemd/system/starttls-proxy.service 2>&1) \
    || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify printed: $verify"
pass "systemd-analyze verify starttls-proxy.service (systemd $(in_root dpkg-query -W -f='${Version}' systemd)): clean"
for key in DynamicUser=yes StateDirectory=starttls-proxy \
    LoadCredential=tls-key:/etc/starttls-proxy/tls/key.pem \
    'ExecStart=/usr/sbin/starttls-proxy run --config /etc/starttls-proxy/starttls-proxy.toml'; do
    grep -qx "$key" "$unit" || fail "unit lacks $key"
done
pass "unit: DynamicUser=yes, StateDirectory=starttls-proxy, LoadCredential=tls-key, ExecStart"
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/starttls-proxy.service" ] || fail "the install enabled the service"
in_root systemctl enable starttls-proxy.service >/dev/null 2>&1 || fail "systemctl enable"
[ -L "$R/etc/systemd/system/multi-user.target.wants/starttls-proxy.service" ] || fail "systemctl enable made no link"
pass "not enabled by the install; systemctl enable works"

# --- check-config of the shipped configuration -------------------------------------------------------
# What systemd does for the service: the key file (root 0600) is copied into a credential directory
# readable by the service's user only, $CREDENTIALS_DIRECTORY names it, and the process runs as an
# unprivileged user: here nobody, standing in for the dynamic user.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=mx1.example.org \
    -addext subjectAltName=DNS:mx1.example.org -keyout "$R/etc/starttls-proxy/tls/key.pem" \
    -out "$R/etc/starttls-proxy/tls/cert.pem" 2>/dev/null || fail "openssl req"
chmod 0644 "$R/etc/starttls-proxy/tls/cert.pem"
chmod 0600 "$R/etc/starttls-proxy/tls/key.pem"
creds=/run/credentials/starttls-proxy.service
install -d -m 0500 -o nobody -g nogroup "$R$creds"
install -m 0400 -o nobody -g nogroup "$R/etc/starttls-proxy/tls/key.pem" "$R$creds/tls-key"
out=$(in_root setpriv --reuid=nobody --regid=nogroup --clear-groups env CREDENTIALS_DIRECTORY=$creds \
    /usr/sbin/starttls-proxy check-config 2>&1) || fail "check-config of the shipped configuration: $out"
echo "$out" | grep -q valid || fail "check-config printed no 'valid': $out"
pass "check-config (as nobody, key as credential tls-key): $(echo "$out" | head -n 1)"
# The failure the credential avoids: the same user cannot read the key file itself.
if in_root setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/starttls-proxy/tls/key.pem >/dev/null 2>&1; then
    fail "the key file is readable by an unprivileged user"
fi
pass "the key file itself stays unreadable to the service user"

# --- reinstall, remove, purge ----------------------------------------------------------------------
echo '# edited by the administrator' >> "$conf"
in_root dpkg -i /tmp/pkg.deb > "$CACHE/reinstall.log" 2>&1 < /dev/null || { cat "$CACHE/reinstall.log" >&2; fail "reinstall"; }
grep -q '^# edited by the administrator' "$conf" || fail "reinstall replaced the edited configuration"
pass "reinstall (upgrade path) keeps the edited configuration, no prompt"
in_root dpkg -r starttls-proxy > "$CACHE/remove.log" 2>&1 || { cat "$CACHE/remove.log" >&2; fail "dpkg -r"; }
[ ! -e "$R/usr/sbin/starttls-proxy" ] || fail "remove left the binary"
[ ! -e "$unit" ] || fail "remove left the unit"
grep -q '^# edited by the administrator' "$conf" || fail "remove did not keep /etc/starttls-proxy/starttls-proxy.toml"
in_root dpkg-query -W -f='${Status}\n' starttls-proxy | grep -qx 'deinstall ok config-files' || fail "not in config-files state"
pass "dpkg -r: binary and unit gone, /etc/starttls-proxy/starttls-proxy.toml kept (config-files)"
# The state directory as systemd leaves it with DynamicUser=yes.
mkdir -p "$R/var/lib/private/starttls-proxy"
touch "$R/var/lib/private/starttls-proxy/state"
ln -s private/starttls-proxy "$R/var/lib/starttls-proxy"
in_root dpkg --purge starttls-proxy > "$CACHE/purge.log" 2>&1 || { cat "$CACHE/purge.log" >&2; fail "dpkg --purge"; }
[ ! -e "$conf" ] || fail "purge left /etc/starttls-proxy/starttls-proxy.toml"
[ ! -e "$R/var/lib/private/starttls-proxy" ] && [ ! -L "$R/var/lib/starttls-proxy" ] || fail "purge left the state directory"
[ -f "$R/etc/starttls-proxy/tls/key.pem" ] || fail "purge deleted the administrator's key"
grep -q 'tls/key.pem' "$CACHE/purge.log" || fail "purge did not say it left the key"
[ -z "$(in_root dpkg-query -W -f='${Status}' starttls-proxy 2>/dev/null)" ] \
    || in_root dpkg-query -W -f='${Status}\n' starttls-proxy | grep -q 'not-installed' || fail "still known to dpkg"
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/starttls-proxy.service" ] || fail "purge left the enable link"
pass "dpkg --purge: configuration, state directory and enable link gone; certificate and key left, reported"

rm -rf "$R"
log "PASS in $(( $(date +%s) - T0 ))s"
