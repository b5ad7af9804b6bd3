#!/usr/bin/env bash
# Side-by-side benchmark: starttls-proxy, nginx mail proxy and stunnel (protocol = smtp) in front
# of the same sink, with the same certificate (generated here), in interleaved rounds.
# Outbound (--only outbound): starttls-proxy in relay mode, a Postfix relay and stunnel in client
# mode delivering to one STARTTLS sink; then starttls-proxy MX-routed through a signed zone (Knot +
# unbound on 127.53.x.x) without and with DANE / MTA-STS, and Postfix at the dane level.
#
#   benches/compare.sh            full run (several minutes)
#   benches/compare.sh --quick    proves the benches build and run (well under a minute once built)
#   benches/compare.sh --rounds 5 --idle 10000
#   benches/compare.sh --only idle   (sessions | latency | bulk | idle | relay | client_address | outbound | dane)
#
# Pinning: the proxy under test on the last core, load generator and sink on the first.
# CPU figures come from the proxy process's own accounting (/proc/PID/stat utime+stime of the
# process and its children), so they hold on a shared machine; wall-clock figures do not.
# Needs root for apt-get (skipped when nginx, its mail module and stunnel4 are present; outbound:
# Postfix, Knot, unbound, BIND tools), for raising the descriptor limit for the idle test, for
# Postfix and for the outbound DNS and MTA-STS hosts (ports 53 and 443). Everything listens on
# loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
only=
rounds=3
idle=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds="$2"; shift ;;
    --idle) idle="$2"; shift ;;
    --only) only="$2"; shift ;; # sessions | latency | bulk | idle | relay | client_address | outbound | dane
    *) echo "usage: $0 [--quick] [--rounds N] [--idle SESSIONS] [--only SCENARIO]" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  rounds=1; idle=50
  sessions=40; latency=5; bulk_mib=4; plain_mib=4; max_s=5
else
  sessions=3000; latency=60; bulk_mib=512; plain_mib=1024; max_s=12
fi

# --- peers -------------------------------------------------------------------------------------
have_peers() {
  command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_mail_module.so ] &&
    command -v stunnel4 >/dev/null
}
# The product-only scenarios need no peers.
case "$only" in relay | client_address) peers_wanted=0 ;; *) peers_wanted=1 ;; esac
if [ "$peers_wanted" = 1 ] && ! have_peers; then
  if [ "$(id -u)" = 0 ]; then
    # Keep the packages from starting system services: we run our own instances.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      nginx-light libnginx-mod-mail stunnel4 >/dev/null
  fi
fi
systems=(starttls-proxy)
if [ "$peers_wanted" = 0 ]; then :; elif have_peers; then systems+=(nginx stunnel); else echo "compare.sh: nginx/stunnel missing, measuring starttls-proxy alone" >&2; fi

# --- build -------------------------------------------------------------------------------------
cargo build --release -q
proxy_bin="$PWD/target/release/starttls-proxy"
bench_bin=$(cargo bench --bench smtp_bench --no-run --message-format=json 2>/dev/null |
  grep '"name":"smtp_bench"' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -1)
[ -x "$bench_bin" ] || { echo "compare.sh: bench binary not found" >&2; exit 1; }

# --- layout ------------------------------------------------------------------------------------
ncpu=$(nproc)
proxy_cpu=$((ncpu - 1))
load_cpu=0
[ "$ncpu" -ge 2 ] || echo "compare.sh: one core only, proxy and load share it" >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Each idle session costs the proxy two descriptors; a container's hard limit (20,000 here)
# cannot be raised even by root, so clamp rather than hang on a full accept queue.
max_idle=$((($(ulimit -n) - 200) / 2))
if [ "$idle" -gt "$max_idle" ]; then
  echo "compare.sh: descriptor limit $(ulimit -n) allows $max_idle idle sessions, not $idle" >&2
  idle=$max_idle
fi
work=$(mktemp -d /tmp/starttls-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for pidfile in "$work"/postfix-*/queue/pid/master.pid; do
    [ -f "$pidfile" ] && kill "$(tr -d ' ' < "$pidfile")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))
# Ports: base..base+6 the inbound systems, +7..+16 outbound, +20..+23 client_address modes.
sink_port=$base; auth_port=$((base + 1)); proxy_port=$((base + 2)); nginx_port=$((base + 3))
stunnel_port=$((base + 4)); splice_port=$((base + 5)); buffered_port=$((base + 6))
results="$work/results.txt"
: > "$results"

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "compare.sh: nothing listening on $1" >&2; return 1
}

# --- certificates (same for everyone), generated now ------------------------------------------
subj="/CN=mx.bench.example"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "$subj" \
  -addext subjectAltName=DNS:mx.bench.example -keyout "$work/ecdsa.key" -out "$work/ecdsa.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "$subj" \
  -addext subjectAltName=DNS:mx.bench.example -keyout "$work/rsa.key" -out "$work/rsa.crt" 2>/dev/null

# --- sink, auth_http, bare relay forwarders ---------------------------------------------------
taskset -c "$load_cpu" "$bench_bin" sink --listen "127.0.0.1:$sink_port" 2>"$work/sink.log" &
pids+=($!)
taskset -c "$load_cpu" "$bench_bin" auth --listen "127.0.0.1:$auth_port" \
  --backend "127.0.0.1:$sink_port" 2>"$work/auth.log" &
pids+=($!)
wait_port "$sink_port"; wait_port "$auth_port"

# --- the systems under test --------------------------------------------------------------------
start_system() { # system cert → prints pid
  local sys=$1 cert=$2
  case "$sys" in
    starttls-proxy)
      cat > "$work/proxy.toml" <<EOF
hostname = "mx.bench.example"
# Session results are written (and synced) as in production, into the run's own directory
# (BENCH_STATE_DIR elsewhere, e.g. on tmpfs to measure what the sync costs).
state_directory = "${BENCH_STATE_DIR:-$work/state}"
[tls]
certificate = "$work/$cert.crt"
private_key = "$work/$cert.key"
[limits]
max_connections = 30000
[[inbound]]
name = "bench"
listen = "127.0.0.1:$proxy_port"
backend = "127.0.0.1:$sink_port"
EOF
      taskset -c "$proxy_cpu" "$proxy_bin" run --config "$work/proxy.toml" >/dev/null 2>>"$work/proxy.log" &
      ;;
    nginx)
      mkdir -p "$work/nginx"
      cat > "$work/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 30000; }
mail {
  server_name mx.bench.example;
  auth_http 127.0.0.1:$auth_port/auth;
  xclient off;
  ssl_certificate $work/$cert.crt;
  ssl_certificate_key $work/$cert.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$nginx_port;
    protocol smtp;
    smtp_auth none;
    starttls on;
  }
}
EOF
      taskset -c "$proxy_cpu" nginx -e "$work/nginx-error.log" -p "$work/nginx" -c "$work/nginx.conf" >/dev/null 2>&1 &
      ;;
    stunnel)
      cat > "$work/stunnel.conf" <<EOF
foreground = yes
pid =
output = $work/stunnel.log
debug = warning
[smtp]
accept = 127.0.0.1:$stunnel_port
connect = 127.0.0.1:$sink_port
cert = $work/$cert.crt
key = $work/$cert.key
protocol = smtp
sslVersionMin = TLSv1.2
EOF
      taskset -c "$proxy_cpu" stunnel4 "$work/stunnel.conf" >/dev/null 2>&1 &
      ;;
  esac
  echo $!
}
port_of() {
  case "$1" in starttls-proxy) echo "$proxy_port" ;; nginx) echo "$nginx_port" ;; stunnel) echo "$stunnel_port" ;; esac
}

load() { # system cert round pid scenario tls [extra args]
  local sys=$1 cert=$2 round=$3 pid=$4 scenario=$5 tls=$6; shift 6
  taskset -c "$load_cpu" timeout 300 "$bench_bin" load --target "127.0.0.1:$(port_of "$sys")" \
    --pid "$pid" --scenario "$scenario" --tls "$tls" --max-seconds "$max_s" \
    --tag "system=$sys cert=$cert round=$round" "$@" | tee -a "$results" ||
    echo "system=$sys cert=$cert round=$round scenario=$scenario tls=$tls errors=failed" >> "$results"
}

# Allocators and lazy initialisation are not what we measure.
warm_up() { # system
  taskset -c "$load_cpu" "$bench_bin" load --target "127.0.0.1:$(port_of "$1")" \
    --scenario sessions --count 20 --concurrency 4 >/dev/null || true
}
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

for cert in ecdsa rsa; do
  [ "$cert" = ecdsa ] || want sessions || continue
  declare -A pid_of=()
  for sys in "${systems[@]}"; do
    pid_of[$sys]=$(start_system "$sys" "$cert")
    pids+=("${pid_of[$sys]}")
    wait_port "$(port_of "$sys")"
    warm_up "$sys"
  done
  for round in $(seq 1 "$rounds"); do
    n=${#systems[@]}
    for i in $(seq 0 $((n - 1))); do
      sys=${systems[$(((i + round - 1) % n))]}
      pid=${pid_of[$sys]}
      echo "== $cert round $round: $sys" >&2
      # stunnel waits 200 ms per session for the client to speak first (protocol detection):
      # a wider window keeps its run short; CPU per session does not depend on it.
      conc=16; [ "$sys" = stunnel ] && conc=64
      if want sessions; then
        load "$sys" "$cert" "$round" "$pid" sessions 1.3 --count "$sessions" --concurrency "$conc"
        load "$sys" "$cert" "$round" "$pid" sessions 1.2 --count "$sessions" --concurrency "$conc"
      fi
      [ "$cert" = ecdsa ] || continue
      want latency && load "$sys" "$cert" "$round" "$pid" latency 1.3 --count "$latency"
      want bulk && load "$sys" "$cert" "$round" "$pid" bulk 1.3 --size "$bulk_mib"
      # stunnel (protocol = smtp) cannot carry a session that never starts TLS.
      want bulk && [ "$sys" != stunnel ] && load "$sys" "$cert" "$round" "$pid" bulk plain --size "$plain_mib"
      true
    done
    # RSS per idle session needs a process that has not yet grown for earlier load (freed heap
    # stays resident): a fresh instance per round, warmed up, then the idle sessions.
    [ "$cert" = ecdsa ] && want idle || continue
    for i in $(seq 0 $((n - 1))); do
      sys=${systems[$(((i + round - 1) % n))]}
      kill "${pid_of[$sys]}" 2>/dev/null || true
      while kill -0 "${pid_of[$sys]}" 2>/dev/null; do sleep 0.1; done
      pid_of[$sys]=$(start_system "$sys" "$cert")
      pids+=("${pid_of[$sys]}")
      wait_port "$(port_of "$sys")"
      warm_up "$sys"
      echo "== $cert round $round: $sys (idle, fresh process)" >&2
      load "$sys" "$cert" "$round" "${pid_of[$sys]}" idle 1.3 --count "$idle" --concurrency 32 --settle 2
    done
  done
  for sys in "${systems[@]}"; do kill "${pid_of[$sys]}" 2>/dev/null || true; wait "${pid_of[$sys]}" 2>/dev/null || true; done
  unset pid_of
done

# --- client_address modes: what telling the backend who the client is costs (issue 13) ----------
# The same proxy, one instance per mode, each in front of the sink (proxy-v2: a sink that reads
# the header), interleaved rounds of full TLS 1.3 sessions. transparent binds the client's own
# address with IP_TRANSPARENT (on loopback that address is local, so no routing is involved).
if want client_address; then
  # base+7..16 belong to the outbound section, which runs after this one.
  ca_sink_port=$((base + 20))
  taskset -c "$load_cpu" "$bench_bin" sink --listen "127.0.0.1:$ca_sink_port" --proxy-header \
    2>>"$work/sink.log" &
  pids+=($!)
  wait_port "$ca_sink_port"
  modes=(none proxy-v2 transparent)
  declare -A ca_pid=() ca_port=()
  for k in 0 1 2; do
    mode=${modes[$k]}
    ca_port[$mode]=$((base + 21 + k))
    backend=$sink_port
    [ "$mode" = proxy-v2 ] && backend=$ca_sink_port
    cat > "$work/ca-$mode.toml" <<EOF
hostname = "mx.bench.example"
state_directory = "${BENCH_STATE_DIR:-$work/state}"
[tls]
certificate = "$work/ecdsa.crt"
private_key = "$work/ecdsa.key"
[limits]
max_connections = 30000
[[inbound]]
name = "ca-$mode"
listen = "127.0.0.1:${ca_port[$mode]}"
backend = "127.0.0.1:$backend"
client_address = "$mode"
EOF
    taskset -c "$proxy_cpu" "$proxy_bin" run --config "$work/ca-$mode.toml" >/dev/null \
      2>>"$work/proxy-ca.log" &
    ca_pid[$mode]=$!
    pids+=($!)
    wait_port "${ca_port[$mode]}"
    taskset -c "$load_cpu" "$bench_bin" load --target "127.0.0.1:${ca_port[$mode]}" \
      --scenario sessions --count 20 --concurrency 4 >/dev/null || true
  done
  for round in $(seq 1 "$rounds"); do
    for k in 0 1 2; do
      mode=${modes[$(((k + round - 1) % 3))]}
      echo "== client_address round $round: $mode" >&2
      taskset -c "$load_cpu" timeout 300 "$bench_bin" load --target "127.0.0.1:${ca_port[$mode]}" \
        --pid "${ca_pid[$mode]}" --scenario sessions --tls 1.3 --count "$sessions" \
        --concurrency 16 --max-seconds "$max_s" --tag "system=ca-$mode cert=ecdsa round=$round" |
        tee -a "$results" ||
        echo "system=ca-$mode cert=ecdsa round=$round scenario=sessions tls=1.3 errors=failed" >> "$results"
    done
  done
  for mode in "${modes[@]}"; do kill "${ca_pid[$mode]}" 2>/dev/null || true; done
fi

# --- the product's relay alone: relay_tcp (splice) vs relay (buffered), plaintext ---------------
for round in $(seq 1 "$rounds"); do
  want relay || break
  for mode in splice buffered; do
    port=$splice_port; name=relay_tcp-splice
    [ "$mode" = buffered ] && { port=$buffered_port; name=relay-buffered; }
    taskset -c "$proxy_cpu" "$bench_bin" forward --listen "127.0.0.1:$port" \
      --backend "127.0.0.1:$sink_port" --mode "$mode" 2>>"$work/forward.log" &
    fpid=$!; pids+=("$fpid")
    wait_port "$port"
    taskset -c "$load_cpu" timeout 300 "$bench_bin" load --target "127.0.0.1:$port" --pid "$fpid" \
      --scenario bulk --tls plain --size "$plain_mib" \
      --tag "system=$name cert=none round=$round" | tee -a "$results" || true
    kill "$fpid" 2>/dev/null || true; wait "$fpid" 2>/dev/null || true
  done
done

# --- outbound: legacy MTA → relay → STARTTLS sink ---------------------------------------------
# The client plays the legacy MTA (plaintext SMTP, as a relayhost gets it); each system originates
# STARTTLS towards the same TLS sink (the ECDSA certificate above, no session resumption):
# starttls-proxy in relay mode, a Postfix relay (store and forward: its CPU is every process under
# its master, delivery agents included) and stunnel in client mode. A message counts once the sink
# has it, and CPU is read after that. Then starttls-proxy routed by MX through a signed zone
# (Knot + unbound on loopback), without and with DANE, caches warm: unbound's query counter
# before and after each measured run shows whether any session went to DNS.
if want outbound || want dane; then
  out_sink=$((base + 7)); out_stats=$((base + 8)); out_proxy=$((base + 9)); out_postfix=$((base + 10))
  out_stunnel=$((base + 11)); out_plain=$((base + 12)); out_dane=$((base + 13)); out_pfdane=$((base + 14))
  out_sts=$((base + 15)); out_verify=$((base + 16))
  dns_net="127.53.$((RANDOM % 250 + 1))"
  dns_ip="$dns_net.53"; sts_ip="$dns_net.44"
  if [ "$quick" = 1 ]; then
    out_sessions=40; out_latency=5; out_bulk_mib=4; out_pairs=1
  else
    out_sessions=2000; out_latency=60; out_bulk_mib=128; out_pairs=$((4 * rounds))
  fi
  for tool in postfix knotd unbound unbound-control dnssec-keygen dnssec-signzone dig; do
    command -v "$tool" >/dev/null && continue
    [ "$(id -u)" = 0 ] || { echo "compare.sh: $tool missing (run as root to install it)" >&2; exit 1; }
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -q >/dev/null
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      postfix knot unbound bind9-utils bind9-dnsutils >/dev/null
    break
  done
  command -v stunnel4 >/dev/null || { echo "compare.sh: stunnel4 missing" >&2; exit 1; }

  # A bench CA: MTA-STS judges the MX and the policy host by WebPKI (mta_sts_trust_anchors).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$work/out-ca.key" -out "$work/out-ca.crt" 2>/dev/null
  for name in mx.bench.example mta-sts.bench.example; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
      -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
    printf '%s\n' "subjectAltName = DNS:$name" "basicConstraints = CA:FALSE" \
      "extendedKeyUsage = serverAuth" > "$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$work/out-ca.crt" -CAkey "$work/out-ca.key" \
      -CAcreateserial -days 2 -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
  done
  taskset -c "$load_cpu" "$bench_bin" sink --listen "127.0.0.1:$out_sink" \
    --tls-cert "$work/mx.bench.example.crt" --tls-key "$work/mx.bench.example.key" --stats "127.0.0.1:$out_stats" \
    2>"$work/tls-sink.log" &
  pids+=($!)
  wait_port "$out_sink" || { cat "$work/tls-sink.log" >&2; exit 1; }

  # The signed zone: bench.example MX mx.bench.example (127.0.0.1), TLSA 3 1 1 of the sink's key
  # at _<sink port>._tcp.mx.bench.example. Knot serves it, unbound validates with the zone's key
  # as its only trust anchor (as tests/common/dnssec.rs does).
  dns="$work/dns"
  mkdir -p "$dns/keys" "$dns/knot"
  spki=$(openssl x509 -in "$work/mx.bench.example.crt" -noout -pubkey | openssl pkey -pubin -outform DER |
    openssl dgst -sha256 -r | cut -d' ' -f1)
  printf '%s\n' "\$TTL 3600" \
    "bench.example. IN SOA ns.bench.example. hostmaster.bench.example. 1 3600 600 86400 3600" \
    "bench.example. IN NS ns.bench.example." \
    "ns.bench.example. IN A $dns_ip" \
    "bench.example. IN MX 10 mx.bench.example." \
    "mx.bench.example. IN A 127.0.0.1" \
    "_$out_sink._tcp.mx.bench.example. IN TLSA 3 1 1 $spki" \
    "_mta-sts.bench.example. IN TXT \"v=STSv1; id=bench1;\"" \
    "mta-sts.bench.example. IN A $sts_ip" > "$dns/bench.example.zone"
  key=$(dnssec-keygen -q -K "$dns/keys" -a ECDSAP256SHA256 -f KSK -n ZONE bench.example)
  dnssec-signzone -q -S -K "$dns/keys" -z -O full -d "$dns" -o bench.example \
    -f "$dns/bench.example.zone.signed" "$dns/bench.example.zone" >/dev/null
  # "bench.example. 3600 IN DNSKEY 257 3 13 ...": readable by unbound and by the proxy.
  awk '!/^;/ && $3 == "DNSKEY" {printf "%s 3600 IN DNSKEY", $1; for (i = 4; i <= NF; i++) printf " %s", $i; print ""}' \
    "$dns/keys/$key.key" > "$dns/anchor.key"
  printf '%s\n' "server:" "  listen: $dns_ip@5353" "  rundir: $dns/knot" \
    "log:" "  - target: stderr" "    any: warning" "database:" "  storage: $dns/knot" \
    "template:" "  - id: default" "    storage: $dns/knot" "    zonefile-sync: -1" \
    "    zonefile-load: whole" "    journal-content: none" "    semantic-checks: off" \
    "zone:" "  - domain: bench.example." "    file: $dns/bench.example.zone.signed" > "$dns/knot.conf"
  printf '%s\n' "server:" "  interface: $dns_ip" "  port: 53" "  interface-automatic: no" \
    "  do-ip6: no" "  num-threads: 1" "  do-daemonize: no" '  username: ""' '  chroot: ""' \
    "  directory: \"$dns\"" '  pidfile: ""' "  use-syslog: no" '  logfile: ""' "  verbosity: 0" \
    "  access-control: 127.0.0.0/8 allow" "  do-not-query-localhost: no" \
    "  trust-anchor-file: \"$dns/anchor.key\"" \
    "remote-control:" "  control-enable: yes" "  control-interface: \"$dns/unbound.ctl\"" \
    "  control-use-cert: no" \
    "stub-zone:" '  name: "bench.example"' "  stub-addr: $dns_ip@5353" > "$dns/unbound.conf"
  taskset -c "$load_cpu" knotd -c "$dns/knot.conf" 2>"$dns/knot.log" &
  pids+=($!)
  taskset -c "$load_cpu" unbound -d -c "$dns/unbound.conf" 2>"$dns/unbound.log" &
  pids+=($!)
  tlsa_name="_$out_sink._tcp.mx.bench.example"
  for _ in $(seq 1 100); do
    dig +dnssec +time=1 +tries=1 "@$dns_ip" "$tlsa_name" TLSA 2>/dev/null | grep -q 'flags:.* ad' && break
    sleep 0.1
  done
  dig +dnssec +time=1 +tries=1 "@$dns_ip" "$tlsa_name" TLSA | grep -q 'flags:.* ad' || {
    echo "compare.sh: unbound does not validate the bench zone" >&2
    cat "$dns/knot.log" "$dns/unbound.log" >&2
    exit 1
  }
  # The MTA-STS policy host (port 443, as the proxy fetches it); one log line per fetch.
  printf 'version: STSv1\r\nmode: enforce\r\nmx: mx.bench.example\r\nmax_age: 86400\r\n' > "$work/mta-sts.txt"
  taskset -c "$load_cpu" "$bench_bin" policy-host --listen "$sts_ip:443" \
    --tls-cert "$work/mta-sts.bench.example.crt" --tls-key "$work/mta-sts.bench.example.key" \
    --policy "$work/mta-sts.txt" 2>"$work/policy-host.log" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q event=listening "$work/policy-host.log" && break; sleep 0.1; done
  grep -q event=listening "$work/policy-host.log" ||
    { echo "compare.sh: the policy host did not start:" >&2; cat "$work/policy-host.log" >&2; exit 1; }
  policy_fetches() { grep -c 'event=fetch' "$work/policy-host.log" || true; }
  dns_queries() {
    unbound-control -c "$dns/unbound.conf" stats_noreset | awk -F= '$1 == "total.num.queries" {print $2}'
  }

  out_proxy_conf() { # name port listener-lines policy-lines → prints the config file
    printf '%s\n' "hostname = \"relay.bench.example\"" \
      "state_directory = \"${BENCH_STATE_DIR:-$work/state}-$1\"" \
      "[limits]" "max_connections = 30000" \
      "[resolver]" "nameservers = [\"$dns_ip:53\"]" "dnssec_trust_anchor = \"$dns/anchor.key\"" \
      "[[outbound]]" "name = \"$1\"" "listen = \"127.0.0.1:$2\"" "mode = \"relay\"" "$3" \
      "[outbound_policy]" "$4" > "$work/out-$1.toml"
    echo "$work/out-$1.toml"
  }
  # A Postfix relay in its own directories, as tests/common/postfix.rs runs one.
  start_postfix() { # name port main.cf-lines [resolv.conf] → prints the master's pid
    local d="$work/postfix-$1" ns=()
    mkdir -p "$d/conf" "$d/queue" "$d/data"
    chown postfix:postfix "$d/data"
    # mktemp made the run's directory 0700; Postfix's daemons (user postfix) must traverse it.
    chmod 711 "$work"
    printf '%s\n' "compatibility_level = 3.6" "queue_directory = $d/queue" \
      "data_directory = $d/data" "maillog_file = $d/maillog" "maillog_file_prefixes = $d" \
      "myhostname = relay.bench.example" "mydomain = postfix.test" "inet_interfaces = 127.0.0.1" \
      "inet_protocols = ipv4" "mynetworks = 127.0.0.0/8" "mydestination =" "alias_maps =" \
      "alias_database =" "smtputf8_enable = no" \
      "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
      "smtpd_tls_security_level = none" "message_size_limit = 1073741824" \
      "smtp_tls_loglevel = 1" "$3" > "$d/conf/main.cf"
    { echo "127.0.0.1:$2 inet n - n - - smtpd"
      sed -n '/^pickup /,/^postlog /p' tests/common/postfix.rs; } > "$d/conf/master.cf"
    # Postfix asks the libc resolver: with a resolv.conf of its own, the master (and every daemon
    # it starts) runs in a private mount namespace where that file is /etc/resolv.conf.
    [ -z "${4:-}" ] || ns=(unshare --mount --propagation private sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$4")
    "${ns[@]}" taskset -c "$proxy_cpu" postfix -c "$d/conf" start >&2
    wait_port "$2" >&2 || { cat "$d/maillog" >&2; return 1; }
    tr -d ' ' < "$d/queue/pid/master.pid"
  }
  out_port_of() {
    case "$1" in
      starttls-proxy) echo "$out_proxy" ;; postfix) echo "$out_postfix" ;; stunnel) echo "$out_stunnel" ;;
      proxy-nodane) echo "$out_plain" ;; proxy-dane) echo "$out_dane" ;; postfix-dane) echo "$out_pfdane" ;;
      proxy-sts) echo "$out_sts" ;; proxy-verify) echo "$out_verify" ;;
    esac
  }
  start_out() { # system → prints its pid
    local conf
    case "$1" in
      starttls-proxy)
        conf=$(out_proxy_conf "$1" "$out_proxy" "next_hop = \"127.0.0.1:$out_sink\"" 'default = "opportunistic"')
        taskset -c "$proxy_cpu" "$proxy_bin" run --config "$conf" >/dev/null 2>>"$work/out-$1.log" &
        echo $! ;;
      proxy-nodane)
        conf=$(out_proxy_conf "$1" "$out_plain" "mx_port = $out_sink" $'default = "opportunistic"\nmta_sts = false')
        taskset -c "$proxy_cpu" "$proxy_bin" run --config "$conf" >/dev/null 2>>"$work/out-$1.log" &
        echo $! ;;
      proxy-dane)
        # The shipping defaults: dane, MTA-STS on (bench.example publishes no MTA-STS record).
        conf=$(out_proxy_conf "$1" "$out_dane" "mx_port = $out_sink" 'default = "dane"')
        taskset -c "$proxy_cpu" "$proxy_bin" run --config "$conf" >/dev/null 2>>"$work/out-$1.log" &
        echo $! ;;
      postfix)
        start_postfix "$1" "$out_postfix" "relayhost = [127.0.0.1]:$out_sink
smtp_tls_security_level = may
smtp_dns_support_level = disabled" ;;
      proxy-sts)
        # MTA-STS alone: opportunistic by default (DANE is not looked up), the published
        # enforce policy judged with the bench CA as WebPKI root.
        conf=$(out_proxy_conf "$1" "$out_sts" "mx_port = $out_sink" $'default = "opportunistic"\nmta_sts_trust_anchors = "'"$work/out-ca.crt"'"')
        taskset -c "$proxy_cpu" "$proxy_bin" run --config "$conf" >/dev/null 2>>"$work/out-$1.log" &
        echo $! ;;
      proxy-verify)
        # The certificate check MTA-STS enforce makes (WebPKI chain to the bench CA, MX host
        # name), configured instead of discovered: MTA-STS's own cost is proxy-sts over this.
        conf=$(out_proxy_conf "$1" "$out_verify" "mx_port = $out_sink" $'default = "verify"\nmta_sts = false\ntrust_anchors = "'"$work/out-ca.crt"'"')
        taskset -c "$proxy_cpu" "$proxy_bin" run --config "$conf" >/dev/null 2>>"$work/out-$1.log" &
        echo $! ;;
      postfix-dane)
        # MX routing with DNSSEC through unbound (trust-ad: glibc passes the AD bit on);
        # no root probe (dnssec_probe): unbound trusts only the bench zone.
        printf '%s\n' "nameserver ${dns_ip}" "options trust-ad" > "$dns/resolv.conf"
        start_postfix "$1" "$out_pfdane" "relayhost = bench.example:$out_sink
smtp_tls_security_level = dane
smtp_dns_support_level = dnssec
dnssec_probe =" "$dns/resolv.conf" ;;
      stunnel)
        printf '%s\n' "foreground = yes" "pid =" "output = $work/stunnel-out.log" "debug = warning" \
          "[out]" "client = yes" "accept = 127.0.0.1:$out_stunnel" "connect = 127.0.0.1:$out_sink" \
          "protocol = smtp" "sni = mx.bench.example" "sslVersionMin = TLSv1.2" > "$work/stunnel-out.conf"
        taskset -c "$proxy_cpu" stunnel4 "$work/stunnel-out.conf" >/dev/null 2>&1 &
        echo $! ;;
    esac
  }
  oload() { # system round pid scenario [extra args]
    local sys=$1 round=$2 pid=$3 scenario=$4 q0 f0 line
    shift 4
    q0=$(dns_queries); f0=$(policy_fetches)
    line=$(taskset -c "$load_cpu" timeout 600 "$bench_bin" load --target "127.0.0.1:$(out_port_of "$sys")" \
      --pid "$pid" --scenario "$scenario" --tls plain --max-seconds "$max_s" \
      --await-delivered "127.0.0.1:$out_stats" --tag "system=$sys cert=outbound round=$round" "$@") ||
      line="system=$sys cert=outbound round=$round scenario=$scenario tls=plain errors=failed"
    echo "$line dns_queries=$(($(dns_queries) - q0)) https_fetches=$(($(policy_fetches) - f0))" | tee -a "$results"
  }
  # Postfix takes seconds to start: every instance starts now, in parallel, and idles until its
  # group runs (its CPU is read around its own runs only).
  out_groups=()
  want outbound && out_groups+=("starttls-proxy postfix stunnel")
  # --only outbound: both groups (the DANE comparison is part of the outbound run).
  { want outbound || want dane; } && out_groups+=("proxy-nodane proxy-dane proxy-verify proxy-sts postfix-dane")
  declare -A prestart=()
  for sys in ${out_groups[*]}; do
    case "$sys" in postfix*) start_out "$sys" > "$work/$sys.pid" 2>"$work/$sys.start.log" & prestart[$sys]=$! ;; esac
  done
  for group in "${out_groups[@]}"; do
    read -r -a osys <<< "$group"
    declare -A opid=()
    for sys in "${osys[@]}"; do
      case "$sys" in
        postfix*)
          wait "${prestart[$sys]}" || { cat "$work/$sys.start.log" >&2; exit 1; }
          opid[$sys]=$(cat "$work/$sys.pid") ;;
        *) opid[$sys]=$(start_out "$sys"); pids+=("${opid[$sys]}") ;;
      esac
      wait_port "$(out_port_of "$sys")" || { tail -5 "$work/out-$sys.log" "$work/$sys.start.log" 2>/dev/null >&2; exit 1; }
      # Warm-up: lazy initialisation, and the caches (DNS, DNSSEC verdicts) the runs rely on.
      taskset -c "$load_cpu" "$bench_bin" load --target "127.0.0.1:$(out_port_of "$sys")" --tls plain \
        --scenario sessions --count 20 --concurrency 4 --await-delivered "127.0.0.1:$out_stats" >/dev/null
    done
    n=${#osys[@]}
    for round in $(seq 1 "$rounds"); do
      for i in $(seq 0 $((n - 1))); do
        sys=${osys[$(((i + round - 1) % n))]}
        echo "== outbound round $round: $sys" >&2
        oload "$sys" "$round" "${opid[$sys]}" sessions --count "$out_sessions" --concurrency 32
        # --quick: the DANE group's sessions prove its set-up; the other scenarios are the first
        # group's code paths again.
        [ "$quick" = 1 ] && [[ " ${osys[*]} " == *" proxy-dane "* ]] && continue
        oload "$sys" "$round" "${opid[$sys]}" latency --count "$out_latency"
        oload "$sys" "$round" "${opid[$sys]}" bulk --size "$out_bulk_mib"
      done
    done
    # The few-percent question (DANE's and MTA-STS's warm cost) needs more samples than the
    # rounds give on a shared machine: extra session runs of the starttls-proxy variants, back to
    # back in alternating order, each pair tagged with its own round (pN) for per-pair ratios.
    if [[ " ${osys[*]} " == *" proxy-dane "* ]]; then
      variants=(proxy-nodane proxy-dane proxy-verify proxy-sts)
      for k in $(seq 1 "$out_pairs"); do
        order=("${variants[@]}")
        [ $((k % 2)) = 0 ] && order=(proxy-sts proxy-verify proxy-dane proxy-nodane)
        for sys in "${order[@]}"; do
          echo "== outbound pair p$k: $sys" >&2
          oload "$sys" "p$k" "${opid[$sys]}" sessions --count "$out_sessions" --concurrency 32
        done
      done
    fi
    # The DANE variant must have judged the sink by its TLSA record, the other by nothing.
    if [[ " ${osys[*]} " == *" proxy-dane "* ]]; then
      dane_ok=$(grep -c 'event=mx_session.* policy=dane .*verdict=dane_verified\|event=mx_session.* policy=dane .*verdict=verified' "$work/out-proxy-dane.log" || true)
      other=$(grep 'event=mx_session' "$work/out-proxy-dane.log" | grep -vc ' policy=dane ' || true)
      echo "proxy-dane: $dane_ok MX sessions authenticated by DANE, $other otherwise; the last:" >&2
      grep 'event=mx_session' "$work/out-proxy-dane.log" | tail -1 >&2
      if [ "$dane_ok" = 0 ] || [ "$other" != 0 ]; then
        echo "compare.sh: proxy-dane did not deliver under DANE:" >&2
        grep 'event=mx_session' "$work/out-proxy-dane.log" | tail -3 >&2
        exit 1
      fi
    fi
    if [[ " ${osys[*]} " == *" postfix-dane "* ]]; then
      pf_log="$work/postfix-postfix-dane/maillog"
      dane_ok=$(grep -c 'Verified TLS connection established to mx.bench.example' "$pf_log" || true)
      other=$(grep -c 'TLS connection established' "$pf_log" || true)
      echo "postfix-dane: $dane_ok of $other TLS connections DANE-verified" >&2
      if [ "$dane_ok" = 0 ] || [ "$dane_ok" != "$other" ]; then
        echo "compare.sh: postfix-dane did not deliver under DANE:" >&2
        grep -E 'TLS connection|status=' "$pf_log" | tail -3 >&2
        exit 1
      fi
    fi
    if [[ " ${osys[*]} " == *" proxy-verify "* ]]; then
      ok=$(grep 'event=mx_session' "$work/out-proxy-verify.log" | grep -c ' mode=verify .*verdict=verified' || true)
      other=$(grep 'event=mx_session' "$work/out-proxy-verify.log" | grep -vc ' mode=verify .*verdict=verified' || true)
      echo "proxy-verify: $ok MX sessions verified by WebPKI, $other otherwise" >&2
      [ "$ok" != 0 ] && [ "$other" = 0 ] || { echo "compare.sh: proxy-verify did not verify" >&2; exit 1; }
    fi
    if [[ " ${osys[*]} " == *" proxy-sts "* ]]; then
      sts_ok=$(grep 'event=mx_session' "$work/out-proxy-sts.log" | grep -c ' policy=mta-sts .*verdict=verified' || true)
      other=$(grep 'event=mx_session' "$work/out-proxy-sts.log" | grep -vc ' policy=mta-sts ' || true)
      echo "proxy-sts: $sts_ok MX sessions under the MTA-STS policy, verified, $other otherwise; the last:" >&2
      grep 'event=mx_session' "$work/out-proxy-sts.log" | tail -1 >&2
      if [ "$sts_ok" = 0 ] || [ "$other" != 0 ]; then
        echo "compare.sh: proxy-sts did not deliver under MTA-STS" >&2
        exit 1
      fi
    fi
    for sys in "${osys[@]}"; do
      case "$sys" in
        postfix*)
          # SIGTERM to the master is what `postfix stop` sends, without its script's pauses.
          kill "${opid[$sys]}" 2>/dev/null || true
          while kill -0 "${opid[$sys]}" 2>/dev/null; do sleep 0.05; done ;;
        *) kill "${opid[$sys]}" 2>/dev/null || true; wait "${opid[$sys]}" 2>/dev/null || true ;;
      esac
    done
    unset opid
  done
fi

# --- ceilings, same run, on the proxy's core ---------------------------------------------------
speed_s=3; [ "$quick" = 1 ] && speed_s=1
ceil="$work/ceilings.txt"
{
  taskset -c "$proxy_cpu" openssl speed -seconds "$speed_s" ecdsap256 2>/dev/null |
    awk '/256 bits ecdsa/ && /nistp256/ {print "ecdsap256_sign_per_s=" $(NF-1)}'
  taskset -c "$proxy_cpu" openssl speed -seconds "$speed_s" ecdhx25519 2>/dev/null |
    awk '/X25519/ && /op\/s|[0-9]/ {v=$NF} END {if (v) print "x25519_per_s=" v}'
  taskset -c "$proxy_cpu" openssl speed -seconds "$speed_s" rsa2048 2>/dev/null |
    awk '/^rsa 2048 bits/ {print "rsa2048_sign_per_s=" $(NF-1)}'
  # 16 KiB blocks only (a TLS record), not the six sizes openssl measures by default.
  taskset -c "$proxy_cpu" openssl speed -seconds "$speed_s" -bytes 16384 -evp aes-256-gcm 2>/dev/null |
    awk '/^AES-256-GCM|^aes-256-gcm/ {v=$NF; sub(/k$/, "", v); print "aes256gcm_mb_per_s=" v / 1000}'
} > "$ceil" || true

echo
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); proxy on cpu $proxy_cpu, load+sink on cpu $load_cpu"
echo "versions: $("$proxy_bin" --version 2>&1 | head -1); $(nginx -v 2>&1 | head -1 || true); $(stunnel4 -version 2>&1 | grep -m1 -i '^stunnel' || true); $(openssl version)"
"$bench_bin" report "$results" --ceilings "$ceil"
if [ -n "${BENCH_KEEP:-}" ]; then cp "$results" "$ceil" "$BENCH_KEEP"/ ; fi

# --quick is CI's smoke test: the figures are not judged there, but starttls-proxy must have
# carried every session it was given.
if [ "$quick" = 1 ]; then
  bad=$(grep -E 'system=(starttls-proxy|ca-|proxy-nodane|proxy-dane|proxy-verify|proxy-sts)' "$results" | grep -E 'scenario=(sessions|latency)' | grep -v 'errors=0' || true)
  bad+=$(grep 'system=starttls-proxy' "$results" | grep 'scenario=idle' | grep -v 'probe=ok' || true)
  if [ -n "$bad" ]; then
    echo "compare.sh: starttls-proxy failed sessions in the smoke run:" >&2
    echo "$bad" >&2
    exit 1
  fi
fi
