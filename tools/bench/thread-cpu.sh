#!/usr/bin/env bash
# Where a server's CPU goes, per thread group: samples utime+stime of every thread of PID (/proc/PID/task/*/stat)
# before and after running COMMAND, and prints CPU seconds per thread name (digits folded, so "nbdtail-io-3" and
# "nbdtail-io-7" add up as "nbdtail-io-N"), with the share of the total.
#   tools/bench/thread-cpu.sh PID -- fio --name=j --ioengine=nbd --uri=nbd://127.0.0.1:10900/disk ...
# Threads that end during COMMAND (nbdkit starts and ends its threads per connection) are missing from the
# per-thread lines; the "process" line (from /proc/PID/stat, which keeps the time of ended threads) has them.
# Optionally --syscalls: also count the server's system calls during COMMAND with `strace -c -f` (slows the
# server a lot: use the counts, not the timings).
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 PID [--syscalls] -- COMMAND..." >&2; exit 2; }
pid="$1"
shift
syscalls=0
if [[ "$1" == --syscalls ]]; then
  syscalls=1
  shift
fi
[[ "$1" == -- ]] && shift

snapshot() { # -> lines "name ticks" for every thread
  local t stat name rest
  for t in /proc/"$pid"/task/*; do
    stat="$(cat "$t/stat" 2>/dev/null)" || continue
    name="${stat#*(}"
    name="${name%)*}"
    rest="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    printf '%s\t%s\t%d\n' "${t##*/}" "$(echo "$name" | tr ' ' '_' | sed 's/[0-9][0-9]*/N/g')" $((${12} + ${13}))
  done
}

process_ticks() {
  local stat
  stat="$(<"/proc/$pid/stat")"
  stat="${stat##*) }"
  # shellcheck disable=SC2086
  set -- $stat
  echo $((${12} + ${13}))
}

work="$(mktemp -d)"
trap 'rm -rf "$work"; [[ -n "${strace_pid:-}" ]] && kill "$strace_pid" 2>/dev/null || true' EXIT
snapshot >"$work/before"
p0="$(process_ticks)"
if [[ $syscalls -eq 1 ]]; then
  strace -c -f -p "$pid" -o "$work/strace" 2>/dev/null &
  strace_pid=$!
  sleep 1
fi
"$@" >"$work/command.out" 2>&1
if [[ $syscalls -eq 1 ]]; then
  kill -INT "$strace_pid"
  wait "$strace_pid" 2>/dev/null || true
  strace_pid=""
fi
snapshot >"$work/after"
p1="$(process_ticks)"
hz="$(getconf CLK_TCK)"
# Join on thread id; a thread born during the run counts from 0.
awk -F'\t' -v hz="$hz" '
  NR == FNR { before[$1] = $3; next }
  { d = $3 - before[$1]; if (d > 0) { cpu[$2] += d; total += d } }
  END {
    for (n in cpu) printf "%8.2f s  %5.1f%%  %s\n", cpu[n] / hz, 100 * cpu[n] / total, n | "sort -rn"
    close("sort -rn")
    printf "%8.2f s  total\n", total / hz
  }' "$work/before" "$work/after"
awk -v a="$p0" -v b="$p1" -v hz="$hz" 'BEGIN {printf "%8.2f s  process (all threads, including ended ones)\n", (b - a) / hz}'
if [[ $syscalls -eq 1 ]]; then
  echo "--- system calls (strace -c -f)"
  head -n 25 "$work/strace"
fi
