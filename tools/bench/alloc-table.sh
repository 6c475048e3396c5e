#!/usr/bin/env bash
# Heap bytes per request in the real server, as a Markdown table: runs server-alloc.sh for each jar and
# workload, and prints storage threads, event loops and the total (which includes JFR's own threads).
#
#   tools/bench/alloc-table.sh [--java-opts 'OPTS'] LABEL=JAR...
#   e.g. tools/bench/alloc-table.sh before=/tmp/base/nbdtail.jar after=tools/target/nbdtail.jar
#
# Workloads: 4 KiB random read and write at QD32, 1 MiB sequential read and write at QD8 (10 s each, after a
# 10 s warm-up; see server-alloc.sh). Raw outputs go to tools/bench/out/alloc/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
java_opts=""
if [[ "${1:-}" == --java-opts ]]; then
  java_opts="$2"
  shift 2
fi
[[ $# -ge 1 ]] || { echo "usage: $0 [--java-opts 'OPTS'] LABEL=JAR..." >&2; exit 2; }
workloads=(
  "4 KiB random read, QD32|--rw=randread --bs=4k --iodepth=32"
  "4 KiB random write, QD32|--rw=randwrite --bs=4k --iodepth=32"
  "1 MiB sequential read, QD8|--rw=read --bs=1m --iodepth=8"
  "1 MiB sequential write, QD8|--rw=write --bs=1m --iodepth=8"
)
out="$here/out/alloc"
mkdir -p "$out"
rows=()
for w in "${workloads[@]}"; do
  name="${w%%|*}"
  read -r -a args <<<"${w#*|}"
  for lj in "$@"; do
    label="${lj%%=*}"
    raw="$out/$label-$(echo "${args[*]}" | tr -c 'a-z0-9' '_').txt"
    "$here/server-alloc.sh" --jar "${lj#*=}" ${java_opts:+--java-opts "$java_opts"} -- "${args[@]}" >"$raw" 2>&1
    get() { awk -v g="$1" -F'\t' '$2 == g {sub(/ B\/req/, "", $1); print $1; found = 1} END {if (!found) print 0}' "$raw"; }
    rows+=("| $name | $label | $(get nbdtail-io-N) | $(get multiThreadIoEventLoopGroup-N-N) | $(get total) |")
  done
done
echo "| workload | build | storage threads B/req | event loops B/req | total B/req (incl. JFR) |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
