#!/usr/bin/env bash
# Side-by-side benchmark: starttls-proxy, nginx mail proxy and stunnel (protocol = smtp) in front
# of the same sink, with the same certificate (generated here), in interleaved rounds.
#
#   benches/compare.sh            full run (several minutes)
#   benches/compare.sh --quick    proves the benches build and run (well under a minute once built)
#   benches/compare.sh --rounds 5 --idle 10000
#   benches/compare.sh --only idle   (sessions | latency | bulk | idle | relay | client_address)
#
# Pinning: the proxy under test on the last core, load generator and sink on the first.
# CPU figures come from the proxy process's own accounting (/proc/PID/stat utime+stime of the
# process and its children), so they hold on a shared machine; wall-clock figures do not.
# Needs root for apt-get (skipped when nginx, its mail module and stunnel4 are present) and for
# raising the descriptor limit for the idle test. Everything listens on 127.0.0.1 only.
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
    --only) only="$2"; shift ;; # sessions | latency | bulk | idle | relay | client_address
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
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
base=$((20000 + RANDOM % 20000))
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
  ca_sink_port=$((base + 7))
  taskset -c "$load_cpu" "$bench_bin" sink --listen "127.0.0.1:$ca_sink_port" --proxy-header \
    2>>"$work/sink.log" &
  pids+=($!)
  wait_port "$ca_sink_port"
  modes=(none proxy-v2 transparent)
  declare -A ca_pid=() ca_port=()
  for k in 0 1 2; do
    mode=${modes[$k]}
    ca_port[$mode]=$((base + 8 + k))
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
  taskset -c "$proxy_cpu" openssl speed -seconds "$speed_s" -evp aes-256-gcm 2>/dev/null |
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
  bad=$(grep -E 'system=(starttls-proxy|ca-)' "$results" | grep -E 'scenario=(sessions|latency)' | grep -v 'errors=0' || true)
  bad+=$(grep 'system=starttls-proxy' "$results" | grep 'scenario=idle' | grep -v 'probe=ok' || true)
  if [ -n "$bad" ]; then
    echo "compare.sh: starttls-proxy failed sessions in the smoke run:" >&2
    echo "$bad" >&2
    exit 1
  fi
fi
