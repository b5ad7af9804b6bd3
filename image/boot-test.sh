#!/usr/bin/env bash
# Boot the appliance under qemu (TCG: no KVM needed) and prove it proxies mail.
#
#   image/boot-test.sh [--uefi] [--no-drive | --vfat] [--data-disk] [--interception] [IMAGE]
#                                  (default image/out/starttls-proxy.qcow2)
#   image/boot-test.sh --install-tools     only install the host tools (ci.sh: once, before parallel runs)
#
# The image itself is never written: the VM runs on a throw-away qcow2 overlay. User networking
# forwards the guest's SMTP (25) and admin (9125) ports to free ports on 127.0.0.1; the guest
# reaches the host's loopback as 10.0.2.2, where a plaintext sink MTA (sink.py) listens.
#
# With a config drive (default ISO, --vfat for FAT): a test CA-less certificate and key, a static
# network file and a configuration whose backend is the sink. Checks: the greeting, STARTTLS in the
# EHLO reply, the certificate from the drive (verified by openssl against it, so the key really
# came through the systemd credential), its fingerprint equal to the drive's, a message sent with
# swaks over STARTTLS arriving in the
# sink, /healthz and /metrics (the TLS handshake counted).
# With --no-drive: the default configuration is installed (console says so), /healthz and
# /metrics answer, and SMTP answers with 421 since no backend is configured.
# Without --data-disk: the console warns that state_directory stays on the system disk.
# With --data-disk (needs a config drive): a BLANK raw disk is attached too; the appliance must
# format it (ext4, STP-STATE) and mount it as state_directory. After the checks above, the VM is
# shut down (ACPI power button) and the session results are read from the data disk on the host
# (debugfs, nothing mounted): one line for the TLS 1.3 message must be there. Then the files'
# owner is changed to UID 4242 (as if the next system disk's DynamicUser= got another UID) and a
# simulated upgrade boots a FRESH overlay of the image with the SAME data disk and config drive:
# no formatting, a second message over TLS, and after shutdown the data disk holds every earlier
# line unchanged plus the new session's, owned again by the service's user.
# With --interception (needs a config drive): the drive also carries starttls-proxy/interception.nft
# (the README's TPROXY recipe for a 10.0.9.0/24 + 2001:db8:25::/64 MTA network) and
# interception.env (MARK=25 TABLE=125, not the defaults, so the file is proven to be read), and
# the configuration gets a second listener with interception = "tproxy" (it only starts with the
# CAP_NET_ADMIN drop-in). Checks on the console: firstboot turned interception on, the unit printed
# the loaded table with its tproxy rules, exactly one IPv4 and one IPv6 "fwmark 0x19 lookup 125"
# rule, the "local default dev lo" routes in table 125, forwarding on; the proxy serves as above.
# Without --interception: firstboot says interception is off and the unit printed nothing.
# qemu is killed by its PID on every exit. Exit status 0 only if every check passed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
firmware=bios drive=iso install_only= datadisk= intercept=
while [ $# -gt 0 ]; do
    case $1 in
    --uefi) firmware=uefi ;;
    --no-drive) drive=none ;;
    --vfat) drive=vfat ;;
    --data-disk) datadisk=1 ;;
    --interception) intercept=1 ;;
    --install-tools) install_only=1 ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
    shift
done
IMAGE=$(readlink -f "${1:-$HERE/out/starttls-proxy.qcow2}")
BOOT_TIMEOUT=${BOOT_TIMEOUT:-420}
[ -n "$install_only" ] || [ -f "$IMAGE" ] || { echo "no image at $IMAGE (run image/build.sh)" >&2; exit 2; }
[ -z "$datadisk" ] || [ "$drive" != none ] || { echo "--data-disk needs a config drive (no --no-drive)" >&2; exit 2; }
[ -z "$intercept" ] || [ "$drive" != none ] || { echo "--interception needs a config drive (no --no-drive)" >&2; exit 2; }

T0=$(date +%s)
log() { printf '[boot-test %s +%3ds] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
pass() { log "ok: $*"; }

# --- host tools -----------------------------------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86 qemu-utils/bookworm)
command -v swaks >/dev/null || missing+=(swaks)
perl -MNet::SSLeay -e1 2>/dev/null || missing+=(libnet-ssleay-perl)   # swaks --tls; only Recommended
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing+=(ovmf)
command -v genisoimage >/dev/null || missing+=(genisoimage)
command -v mcopy >/dev/null || missing+=(mtools)
command -v mkfs.vfat >/dev/null || missing+=(dosfstools)
command -v debugfs >/dev/null || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "missing tools: ${missing[*]} (run as root to install them)" >&2; exit 2; }
    log "installing ${missing[*]}"
    apt-get update -qq
    # qemu-system-x86 7.2 (bookworm) needs the matching qemu-utils, hence the downgrade.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}"
fi
[ -z "$install_only" ] || exit 0

# --- scratch space and cleanup ----------------------------------------------------------------------
T=$(mktemp -d /tmp/starttls-proxy-boot-test.XXXXXX)
QEMU_PID="" SINK_PID=""
cleanup() {
    rc=$?
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi
    if [ "$rc" != 0 ]; then
        log "FAILED ($firmware, drive=$drive${datadisk:+, data disk}${intercept:+, interception}); last lines of the serial console:"
        tail -n 60 "$T/serial.log" 2>/dev/null | sed 's/^/    | /' >&2 || true
        if [ -n "${KEEP_LOGS:-}" ]; then log "logs kept in $T"; else rm -rf "$T"; fi
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() { log "FAIL: $*"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SMTP_PORT=$(free_port) ADMIN_PORT=$(free_port) SINK_PORT=$(free_port)

# --- the sink and the config drive -------------------------------------------------------------------
drive_args=()
if [ "$drive" != none ]; then
    python3 "$HERE/sink.py" "$SINK_PORT" "$T/spool" > "$T/sink.log" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 50); do grep -q ready "$T/sink.log" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$T/sink.log" || fail "sink did not start: $(cat "$T/sink.log")"

    cd_dir=$T/drive
    mkdir -p "$cd_dir/starttls-proxy/tls" "$cd_dir/network"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=mx.boot-test.example -addext subjectAltName=DNS:mx.boot-test.example \
        -keyout "$cd_dir/starttls-proxy/tls/key.pem" -out "$cd_dir/starttls-proxy/tls/cert.pem" 2>/dev/null
    cat > "$cd_dir/starttls-proxy/config.toml" <<EOF
hostname = "mx.boot-test.example"
shutdown_grace = "5s"

[tls]
certificate = "/etc/starttls-proxy/tls/cert.pem"
private_key = "\${CREDENTIALS_DIRECTORY}/tls-key"

[admin]
listen = "0.0.0.0:9125"

[[inbound]]
name = "mx"
listen = "0.0.0.0:25"
backend = "10.0.2.2:$SINK_PORT"
EOF
    if [ -n "$intercept" ]; then
        cat >> "$cd_dir/starttls-proxy/config.toml" <<EOF

[[inbound]]
name = "inline"
listen = "0.0.0.0:10025"
interception = "tproxy"
backend = "original-destination"
EOF
        cat > "$cd_dir/starttls-proxy/interception.nft" <<'EOF'
table inet starttls_proxy_tproxy {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 25 accept
    meta nfproto ipv4 ip daddr 10.0.9.0/24 tcp dport 25 tproxy ip to :10025 meta mark set 25 accept
    meta nfproto ipv6 ip6 daddr 2001:db8:25::/64 tcp dport 25 tproxy ip6 to :10026 meta mark set 25 accept
  }
}
EOF
        printf '# fwmark of the rules above and its routing table\nMARK=25\nTABLE=125\n' > "$cd_dir/starttls-proxy/interception.env"
    fi
    # A static address (the one slirp's DHCP would give) exercises the network files path.
    cat > "$cd_dir/network/10-static.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
EOF
    printf 'instance-id: boot-test\nlocal-hostname: mx-boot-test\n' > "$cd_dir/meta-data"
    if [ "$drive" = vfat ]; then
        "$HERE/make-config-drive.sh" --vfat "$cd_dir" "$T/cidata.img" >/dev/null
        drive_args=(-drive "file=$T/cidata.img,if=virtio,format=raw,readonly=on")
    else
        "$HERE/make-config-drive.sh" "$cd_dir" "$T/cidata.iso" >/dev/null
        drive_args=(-drive "file=$T/cidata.iso,media=cdrom,readonly=on")
    fi
fi

# --- boot ------------------------------------------------------------------------------------------
data_args=()
if [ -n "$datadisk" ]; then
    "$HERE/make-data-disk.sh" 256M "$T/data.raw" >/dev/null
    data_args=(-drive "file=$T/data.raw,if=virtio,format=raw")
fi
fw_args=()
BOOTS=0
# Boot a FRESH overlay of the image (a new system disk) with the config drive and the data disk.
boot_vm() {
    BOOTS=$((BOOTS + 1))
    BOOT_T0=$(date +%s)
    rm -f "$T/disk.qcow2" "$T/qmp.sock"
    qemu-img create -q -f qcow2 -b "$IMAGE" -F qcow2 "$T/disk.qcow2"
    if [ "$firmware" = uefi ]; then
        cp /usr/share/OVMF/OVMF_VARS_4M.fd "$T/vars.fd"
        fw_args=(-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
                 -drive "if=pflash,format=raw,file=$T/vars.fd")
    fi
    [ ! -f "$T/serial.log" ] || mv "$T/serial.log" "$T/serial-$((BOOTS - 1)).log"
    log "boot $BOOTS: $(basename "$IMAGE") ($firmware, config drive: $drive${datadisk:+, data disk}${intercept:+, interception}); smtp 127.0.0.1:$SMTP_PORT admin 127.0.0.1:$ADMIN_PORT"
    qemu-system-x86_64 -machine pc -accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
        "${fw_args[@]}" \
        -drive "file=$T/disk.qcow2,if=virtio,format=qcow2" \
        "${drive_args[@]}" "${data_args[@]}" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SMTP_PORT-:25,hostfwd=tcp:127.0.0.1:$ADMIN_PORT-:9125" \
        -device virtio-net-pci,netdev=n0 \
        -serial "file:$T/serial.log" -display none -monitor none -nodefaults -vga none -no-reboot \
        -qmp "unix:$T/qmp.sock,server=on,wait=off" \
        > "$T/qemu.log" 2>&1 &
    QEMU_PID=$!

    # Ready = the admin endpoint answers /healthz (slirp accepts forwarded connections before the
    # guest listens, so a TCP connect alone proves nothing).
    while :; do
        kill -0 "$QEMU_PID" 2>/dev/null || fail "qemu exited: $(cat "$T/qemu.log")"
        [ $(( $(date +%s) - BOOT_T0 )) -lt "$BOOT_TIMEOUT" ] || fail "not ready after ${BOOT_TIMEOUT}s"
        ! grep -qsE 'Failed to start .*starttls-p|Failed to mount|Kernel panic|\(initramfs\)|starttls-proxy-datadisk: ERROR' "$T/serial.log" \
            || { sleep 3; fail "boot failed (see the console below)"; }
        if curl -fsS -m 3 -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" 2>/dev/null; then break; fi
        sleep 2
    done
    READY=$(( $(date +%s) - BOOT_T0 ))
    pass "boot $BOOTS: service ready (/healthz) ${READY}s after qemu start"
}

# Shut the VM down as an operator would before replacing its system disk: the ACPI power button
# (systemd-logind powers off; -no-reboot makes qemu exit). A VM that does not stop in time is
# killed, and the data disk's journal is then replayed on the host before it is read.
SHUTDOWN_CLEAN=
shutdown_vm() {
    local t=$(date +%s)
    python3 - "$T/qmp.sock" <<'PY' || log "QMP system_powerdown failed"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
    while "return" not in json.loads(f.readline()): pass
PY
    for _ in $(seq 90); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$QEMU_PID" 2>/dev/null; then
        SHUTDOWN_CLEAN=
        log "the VM did not power off within 90 s: killing it (a power cut for the data disk)"
        kill -9 "$QEMU_PID" 2>/dev/null || true
    else
        SHUTDOWN_CLEAN=1
        pass "boot $BOOTS: powered off by the ACPI power button in $(( $(date +%s) - t ))s"
    fi
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=""
    # A clean power-off unmounts the data disk after the proxy stopped: no journal left to replay.
    if [ -n "$datadisk" ] && [ -n "$SHUTDOWN_CLEAN" ]; then
        features=$(dumpe2fs -h "$T/data.raw" 2>/dev/null | sed -n 's/^Filesystem features: *//p')
        state=$(dumpe2fs -h "$T/data.raw" 2>/dev/null | sed -n 's/^Filesystem state: *//p')
        case " $features " in *" needs_recovery "*) fail "the data disk was not unmounted at power-off (needs_recovery)" ;; esac
        pass "data disk unmounted cleanly at power-off (state: $state)"
    fi
}

# Copy the session results off the data disk into $1 (a folder), without mounting anything:
# a copy of the disk, its journal replayed by e2fsck, then debugfs rdump.
read_results() {
    local out=$1 rc=0
    rm -rf "$out" "$T/check.raw"; mkdir -p "$out"
    cp --sparse=always "$T/data.raw" "$T/check.raw"
    e2fsck -fy "$T/check.raw" > "$T/e2fsck.log" 2>&1 || rc=$?
    [ "$rc" -lt 4 ] || fail "e2fsck on the data disk: status $rc: $(cat "$T/e2fsck.log")"
    [ "$(blkid -o value -s LABEL "$T/check.raw")" = STP-STATE ] || fail "the data disk is not labelled STP-STATE"
    debugfs -R "rdump /results $out" "$T/check.raw" > "$T/debugfs.log" 2>&1 || fail "debugfs: $(cat "$T/debugfs.log")"
    ls "$out"/results/*.jsonl > /dev/null 2>&1 || fail "no results file on the data disk: $(debugfs -R 'ls -l /' "$T/check.raw" 2>&1; debugfs -R 'ls -l /results' "$T/check.raw" 2>&1)"
    rm -f "$T/check.raw"
}

boot_vm

# --- checks ----------------------------------------------------------------------------------------
# Talk SMTP line by line: greeting, EHLO, QUIT. Prints the transcript.
smtp_ehlo() {
    python3 - "$SMTP_PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode(errors="replace").rstrip("\r\n")
        lines.append(line)
        print("S: " + line)
        if len(line) < 4 or line[3] != "-":
            return lines
greeting = reply()
if greeting[0].startswith("220"):
    s.sendall(b"EHLO boot-test.example\r\n"); print("C: EHLO boot-test.example")
    reply()
    s.sendall(b"QUIT\r\n"); print("C: QUIT")
    reply()
EOF
}

metric() { curl -fsS -m 10 "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E "^$1" || true; }

# A message over STARTTLS (TLS 1.3) through the proxy to the sink.
send_message() {
    token="boot-test-$(date +%s)-$$"
    swaks --server "127.0.0.1:$SMTP_PORT" --tls --tls-protocol tlsv1_3 --ehlo client.boot-test.example \
        --from sender@client.boot-test.example --to rcpt@backend.boot-test.example \
        --header "Subject: $token" --body "token $token" --timeout 60 > "$T/swaks.log" 2>&1 \
        || fail "swaks failed: $(tail -n 20 "$T/swaks.log")"
    grep -q '250 2.0.0 Ok: queued as SINK' "$T/swaks.log" || fail "no 250 from the sink: $(tail "$T/swaks.log")"
    grep -rqs "token $token" "$T/spool" || fail "the message did not reach the sink"
    pass "message delivered over STARTTLS ($(grep -m1 -o 'TLS started with cipher [^ ]*' "$T/swaks.log" || echo TLS)) and found in the sink"
}

if [ "$drive" = none ]; then
    grep -q "installed the DEFAULT configuration" "$T/serial.log" \
        || fail "the console does not report the default configuration"
    pass "console: $(grep -m1 -o 'no config drive.*' "$T/serial.log" | tr -d '\r')"
    # /healthz answers as soon as the admin listener is up; the proxy's next lines reach the
    # console a little later (journald forwarding), so wait for this one.
    for _ in $(seq 1 60); do grep -q 'event=self_signed_certificate' "$T/serial.log" && break; sleep 1; done
    grep -q 'event=self_signed_certificate' "$T/serial.log" || fail "the proxy did not log its self-signed certificate"
    pass "proxy log: $(grep -m1 -o 'event=self_signed_certificate subject=[^ ]*' "$T/serial.log")"
    out=$(smtp_ehlo) || fail "SMTP: $out"
    echo "$out" | grep -q '^S: 421 4\.4\.1' || fail "expected 421 4.4.1 without a backend, got: $out"
    pass "SMTP on port 25 answers 421 4.4.1 (no backend configured): $(echo "$out" | head -1)"
    curl -fsS -m 10 "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -q '^# TYPE starttls_proxy_' \
        || fail "/metrics has no starttls_proxy metrics"
    pass "/metrics: $(metric 'starttls_proxy_connections_total' | head -1)"
else
    grep -q "config drive /dev/.* found" "$T/serial.log" || fail "the console does not report the config drive"
    pass "console: $(grep -m1 -o 'config drive /dev/[^ ]* found' "$T/serial.log")"

    out=$(smtp_ehlo) || fail "SMTP: $out"
    echo "$out" | grep -q '^S: 220 sink.boot-test' || fail "greeting is not the backend's: $out"
    pass "greeting relayed from the sink: $(echo "$out" | head -1)"
    echo "$out" | grep -q '^S: 250[- ]STARTTLS' || fail "no STARTTLS in the EHLO reply: $out"
    pass "EHLO reply offers STARTTLS"

    verify=$(openssl s_client -starttls smtp -connect "127.0.0.1:$SMTP_PORT" -servername mx.boot-test.example \
        -CAfile "$T/drive/starttls-proxy/tls/cert.pem" -verify_hostname mx.boot-test.example \
        -verify_return_error -brief < /dev/null 2>&1) || fail "openssl s_client: $verify"
    echo "$verify" | grep -q 'Verification: OK' || fail "certificate not verified: $verify"
    pass "certificate from the config drive verified: $(echo "$verify" | grep -m1 'Protocol version' | tr -s ' ')"
    # And it is that very certificate (not merely one the drive's would verify): compare fingerprints.
    served=$(openssl s_client -starttls smtp -connect "127.0.0.1:$SMTP_PORT" -servername mx.boot-test.example \
        < /dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256) || fail "cannot read the served certificate"
    drive_fp=$(openssl x509 -noout -fingerprint -sha256 -in "$T/drive/starttls-proxy/tls/cert.pem")
    [ "$served" = "$drive_fp" ] || fail "served certificate $served is not the config drive's $drive_fp"
    pass "served certificate is the config drive's: ${served#*=}"

    send_message
    hs=$(metric 'starttls_proxy_tls_handshakes_total')
    echo "$hs" | grep -q 'TLSv1.3' || fail "/metrics does not count the TLS 1.3 handshake: $hs"
    pass "/metrics: $(echo "$hs" | head -1)"
fi
curl -fsS -m 10 "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null || fail "/healthz"

# --- inline interception (on only with the drive's interception.nft) --------------------------------
C=$T/console.txt   # the serial console without carriage returns, read as a file (no SIGPIPE under pipefail)
tr -d '\r' < "$T/serial.log" > "$C"
if [ -n "$intercept" ]; then
    grep -q 'starttls-proxy-firstboot: inline interception ON' "$C" || fail "firstboot did not turn interception on"
    grep -q 'starttls-proxy-firstboot: reloaded systemd units (proxy capability drop-in changed)' "$C" \
        || fail "firstboot did not install the CAP_NET_ADMIN drop-in and reload systemd"
    pass "console: $(grep -m1 -o 'starttls-proxy-firstboot: installed interception.env.*' "$C"); drop-in installed, systemd reloaded"
    grep -q 'starttls-proxy-interception: MARK=25 TABLE=125 FORWARD=yes (from /etc/starttls-proxy/interception.env)' "$C" \
        || fail "the interception unit did not read MARK=25 TABLE=125 from interception.env"
    grep -q 'starttls-proxy-interception: loaded table inet starttls_proxy_tproxy' "$C" || fail "the nft table was not loaded"
    for r in 'socket transparent 1 meta mark set 0x00000019 accept' \
             'ip daddr 10.0.9.0/24 tcp dport 25 tproxy ip to :10025 meta mark set 0x00000019 accept' \
             'ip6 daddr 2001:db8:25::/64 tcp dport 25 tproxy ip6 to :10026 meta mark set 0x00000019 accept'; do
        grep -q "starttls-proxy-interception: | .*$r" "$C" || fail "nft list table lacks the rule: $r"
    done
    pass "console: nft table inet starttls_proxy_tproxy loaded with its 3 rules (socket transparent, tproxy ip, tproxy ip6):"
    grep 'starttls-proxy-interception: | ' "$C" | sed 's/^starttls-proxy-interception: | /    /' >&2
    for f in -4 -6; do
        n=$(grep -c "starttls-proxy-interception: ip $f rule: .*from all fwmark 0x19 lookup 125" "$C" || true)
        [ "$n" = 1 ] || fail "expected exactly one 'ip $f rule' fwmark 0x19 lookup 125, the console shows $n"
        grep -q "starttls-proxy-interception: ip $f route table 125: local default dev lo" "$C" \
            || fail "no 'local default dev lo' route in table 125 ($f)"
        pass "console: $(grep -m1 -o "ip $f rule: .*" "$C"); $(grep -m1 -o "ip $f route table 125: local default dev lo" "$C")"
    done
    grep -q 'starttls-proxy-interception: forwarding: net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1' "$C" \
        || fail "IP forwarding is not on"
    pass "console: $(grep -m1 -o 'forwarding: .*' "$C")"
    l=$(grep -m1 -o 'event=listening listener=inline .*addr=[^ ]*' "$C") \
        || fail "the proxy did not log its interception = \"tproxy\" listener 'inline' (IP_TRANSPARENT needs CAP_NET_ADMIN)"
    pass "proxy runs the interception = \"tproxy\" listener (IP_TRANSPARENT: CAP_NET_ADMIN from the drop-in): $l"
else
    if [ "$drive" = none ]; then off='inline interception off (no config drive)'; else off='inline interception off (no starttls-proxy/interception.nft on the config drive)'; fi
    grep -q "starttls-proxy-firstboot: $off" "$C" || fail "the console does not say: $off"
    ! grep -q 'starttls-proxy-interception:' "$C" \
        || fail "the interception unit ran without interception.nft: $(grep -m3 'starttls-proxy-interception:' "$C")"
    pass "console: $off; starttls-proxy-interception.service skipped (no output: no rules, no routing loaded)"
fi

# --- the data disk and a simulated upgrade ----------------------------------------------------------
if [ -z "$datadisk" ]; then
    grep -q 'starttls-proxy-datadisk: WARNING: no data disk' "$T/serial.log" \
        || fail "the console does not warn that there is no data disk"
    pass "console: $(grep -m1 -o 'starttls-proxy-datadisk: WARNING: no data disk.*' "$T/serial.log" | tr -d '\r')"
else
    # owner UID of a path on the data disk (debugfs ls -p: /inode/mode/uid/gid/name/size/)
    owner() { debugfs -R "ls -p $(dirname "$1")" "$T/data.raw" 2>/dev/null | awk -F/ -v n="$(basename "$1")" '$6 == n { print $4; exit }'; }
    results_lines() { cat "$1"/results/*.jsonl; }

    grep -q 'starttls-proxy-datadisk: blank disk /dev/[a-z]*: formatting' "$T/serial.log" \
        || fail "the blank data disk was not formatted"
    mounted=$(grep -m1 -o 'starttls-proxy-datadisk: data disk /dev/[a-z]* .* mounted at [^:]*' "$T/serial.log" | tr -d '\r') \
        || fail "the console does not report the data disk mounted"
    pass "boot 1 console: $(grep -m1 -o 'blank disk /dev/[a-z]*: formatting[^(]*' "$T/serial.log"); $mounted"
    shutdown_vm
    read_results "$T/r1"
    n1=$(results_lines "$T/r1" | wc -l)
    results_lines "$T/r1" | grep '"tls_version":"TLSv1.3"' | grep -q '"result":"success"' \
        || fail "no TLS 1.3 success line among the results on the data disk: $(results_lines "$T/r1")"
    pass "data disk after boot 1: $n1 result lines in $(cd "$T/r1/results" && echo *.jsonl); the message's:"
    results_lines "$T/r1" | grep '"tls_version":"TLSv1.3"' | tail -n 1 | sed 's/^/    /' >&2

    # The next system disk's DynamicUser= may get another UID: give the files a foreign owner.
    [ -n "$SHUTDOWN_CLEAN" ] || e2fsck -fy "$T/data.raw" > "$T/e2fsck.log" 2>&1 || true
    uid1=$(owner "/results/$(cd "$T/r1/results" && ls | head -n 1)")
    { echo "sif / uid 4242"; echo "sif / gid 4242"
      for e in $(debugfs -R "ls -p /" "$T/data.raw" 2>/dev/null | awk -F/ '$6 != "" && $6 != "." && $6 != ".." && $6 != "lost+found" { print $6 }'); do
          echo "sif /$e uid 4242"; echo "sif /$e gid 4242"; done
      for f in "$T"/r1/results/*; do
          echo "sif /results/$(basename "$f") uid 4242"; echo "sif /results/$(basename "$f") gid 4242"; done
    } > "$T/chown.debugfs"
    debugfs -w -f "$T/chown.debugfs" "$T/data.raw" > "$T/debugfs.log" 2>&1 || fail "debugfs -w: $(cat "$T/debugfs.log")"
    pass "results owned by the service's UID $uid1; changed to UID 4242 (a system disk whose dynamic UID differs)"

    log "simulated upgrade: a FRESH copy of the system image, the same data disk and config drive"
    boot_vm
    ! grep -q 'starttls-proxy-datadisk: blank disk' "$T/serial.log" || fail "the data disk was formatted again"
    mounted=$(grep -m1 -o 'starttls-proxy-datadisk: data disk /dev/[a-z]* .* mounted at [^:]*' "$T/serial.log" | tr -d '\r') \
        || fail "boot 2: the console does not report the data disk mounted"
    pass "boot 2 console: $mounted (not formatted again)"
    send_message
    shutdown_vm
    read_results "$T/r2"
    n2=$(results_lines "$T/r2" | wc -l)
    for f in "$T"/r1/results/*.jsonl; do
        g="$T/r2/results/$(basename "$f")"
        [ -f "$g" ] && cmp -s -n "$(stat -c %s "$f")" "$f" "$g" \
            || fail "the results written before the upgrade are not kept unchanged in $(basename "$f")"
    done
    [ "$n2" -gt "$n1" ] || fail "no new result line after the upgrade ($n1 before, $n2 after)"
    results_lines "$T/r2" | tail -n $((n2 - n1)) | grep '"tls_version":"TLSv1.3"' | grep -q '"result":"success"' \
        || fail "no new TLS 1.3 success line after the upgrade: $(results_lines "$T/r2" | tail -n $((n2 - n1)))"
    uid2=$(owner "/results/$(cd "$T/r1/results" && ls | head -n 1)")
    [ -n "$uid2" ] && [ "$uid2" != 4242 ] || fail "the results file is still owned by UID ${uid2:-?}, not the service's"
    pass "data disk after the upgrade: all $n1 earlier lines unchanged, $((n2 - n1)) new, owner UID 4242 -> $uid2 (StateDirectory= chown); the earlier message's line and the new one's:"
    results_lines "$T/r2" | head -n "$n1" | grep '"tls_version":"TLSv1.3"' | tail -n 1 | sed 's/^/    /' >&2
    results_lines "$T/r2" | tail -n $((n2 - n1)) | grep '"tls_version":"TLSv1.3"' | tail -n 1 | sed 's/^/    /' >&2
fi
log "PASS ($firmware, config drive: $drive${datadisk:+, data disk + simulated upgrade}${intercept:+, interception}): ready after ${READY}s, total $(( $(date +%s) - T0 ))s"
