#!/usr/bin/env bash
# Installs the real peers the suite drives (Debian packages, as root) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# postfix also provides smtp-sink; procps kill(1) for signalling the proxy and peers;
# dnsmasq-base serves MX records for the outbound tests; nftables, iproute2 and util-linux
# (unshare) build the network namespace of the transparent-mode test.
# libnet-ssleay-perl is what `swaks --tls` needs, and only a Recommends of swaks.
# DANE/MTA-STS fixtures (tests/common/dnssec.rs, https.rs): knot serves the signed test zone,
# unbound validates it, bind9-utils signs it (dnssec-keygen, dnssec-signzone, dnssec-dsfromkey),
# bind9-dnsutils (dig) and curl judge the fixtures in tests/fixtures_selftest.rs.
# haproxy: the L4 balancer sending PROXY headers (tests/proxy_protocol.rs, the scale-out test).
# prometheus: promtool checks and unit-tests config/prometheus/, and a real Prometheus scrapes
# the proxy in tests/prometheus.rs.
need=(postfix swaks libnet-ssleay-perl openssl procps dnsmasq-base nftables iproute2 util-linux
      knot unbound bind9-utils bind9-dnsutils curl haproxy prometheus)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  # Keep package installs from starting system services (the tests run their own instances).
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  # The knot and unbound packages bring system services (port 53 on 127.0.0.1), prometheus
  # one on port 9090; the fixtures run their own instances on other loopback addresses. Keep the system ones stopped and off
  # in case an existing policy-rc.d let them start.
  for svc in knot unbound prometheus; do
    case " ${missing[*]} " in *" $svc "*) ;; *) continue ;; esac
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
