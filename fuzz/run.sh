#!/usr/bin/env bash
# Runs every fuzz target for a fixed time: `fuzz/run.sh [SECONDS_PER_TARGET] [--keep]`
# (default 60). Exits non-zero if any target finds a failure (a panic, or one input running
# longer than 10 s: the quadratic-time class); the input is then under
# fuzz/artifacts/<target>/. Prints each target's executions, executions per second and coverage.
# --keep merges what the run found into fuzz/corpus/<target>/ (only inputs that add coverage);
# without it the repository's corpus is read, never written. FUZZ_TARGETS="a b" picks targets.
set -euo pipefail
cd "$(dirname "$0")"
secs=60
keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    *[!0-9]* | '') echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [--keep]" >&2; exit 2 ;;
    *) secs=$arg ;;
  esac
done
targets=(${FUZZ_TARGETS:-line_reader command mail_rcpt_spellings reply ehlo end_of_data mta_sts_policy txt_records tlsa tls_report proxy_header})

# cargo-fuzz drives libFuzzer, which needs a nightly compiler for its instrumentation flags.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# No sanitizer: the crate denies unsafe code outside splice.rs, which no target reaches, and
# ASan would halve the executions. Overflow checks stay on (-Cdebug-assertions).
fuzz=(cargo +nightly fuzz)
opts=(-s none)
"${fuzz[@]}" build "${opts[@]}"

scratch=target/corpus-run
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "$scratch/$t" "artifacts/$t"
  log="target/fuzz-$t.log"
  echo "== $t: ${secs}s"
  rc=0
  # New inputs go to the scratch directory (first); the kept corpus is only read.
  "${fuzz[@]}" run "${opts[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
  summary+=("$(printf '%-20s execs %-10s exec/s %-7s %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-}")")
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    grep -E "panicked at|ERROR: libFuzzer|==[0-9]+== ERROR|Test unit written" -A3 "$log" | head -20 || true
    echo "   $t failed (exit $rc); full log: fuzz/$log"
  elif [ "$keep" = 1 ]; then
    "${fuzz[@]}" run "${opts[@]}" "$t" "corpus/$t" "$scratch/$t" -- -merge=1 >/dev/null 2>&1
  fi
done
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failures in: ${failed[*]} (inputs under fuzz/artifacts/<target>/)" >&2
  exit 1
fi
