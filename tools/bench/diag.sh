#!/usr/bin/env bash
# The diagnostics behind docs/performance.md's analysis: serves one filled 1 GiB file with nbdtail, qemu-nbd and
# nbdkit (as compare.sh does), then
#   * counts each server's system calls during 5 s of 4 KiB random reads at QD1 (strace -c -f), and
#   * splits each server's CPU by thread group during 10 s of several fio workloads (thread-cpu.sh).
# Output: OUT/syscalls-rr4k-qd1.txt and OUT/threads.txt (default OUT: tools/bench/out/diag). Single runs, not
# interleaved rounds: use them for where the CPU goes, not for who is faster.
#   tools/bench/diag.sh [OUT]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$root/tools/bench/out/diag}"
mkdir -p "$out"
w="$(mktemp -d /tmp/nbdtail-diag.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$w"
}
trap cleanup EXIT

cp "$root/tools/target/nbdtail.jar" "$w/nbdtail.jar"
export NBDTAIL_JAR="$w/nbdtail.jar"
"$root/bin/nbdtail" volume create disk --size 1G --data-dir "$w/data" >/dev/null
f="$w/data/volumes/disk/data.raw"
dd if=/dev/urandom of="$f" bs=1M count=1024 conv=notrunc status=none

declare -A pid port=([nbdtail]=10960 [qemu-nbd]=10961 [nbdkit]=10962)
"$root/bin/nbdtail" serve --data-dir "$w/data" --listen 127.0.0.1:10960 --api-listen off >"$w/nbdtail.log" 2>&1 &
pid[nbdtail]=$!
qemu-nbd -f raw --cache=writeback --aio=threads -e 8 -t -x disk -b 127.0.0.1 -p 10961 "$f" >"$w/qemu.log" 2>&1 &
pid[qemu-nbd]=$!
nbdkit -f -i 127.0.0.1 -p 10962 file "$f" cache=default >"$w/nbdkit.log" 2>&1 &
pid[nbdkit]=$!
pids=("${pid[@]}")
servers=(nbdtail qemu-nbd nbdkit)
for s in "${servers[@]}"; do
  for _ in $(seq 300); do
    nbdinfo --size "nbd://127.0.0.1:${port[$s]}/disk" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

# fio SERVER JSON SECONDS ARGS...: one run, JSON to a file
run_fio() {
  local s="$1" json="$2" secs="$3"
  shift 3
  fio --name=j --ioengine=nbd --uri="nbd://127.0.0.1:${port[$s]}/disk" "$@" --time_based --runtime="$secs" \
    --norandommap --group_reporting --output-format=json --output="$json" >/dev/null
}
requests() { # fio's JSON file may start with a line of its own before the JSON
  sed -n '/^{/,$p' "$1" | jq '.jobs[0].read.total_ios + .jobs[0].write.total_ios'
}

for s in "${servers[@]}"; do
  run_fio "$s" "$w/warm.json" 10 --rw=randrw --bs=4k --iodepth=32
done

for s in "${servers[@]}"; do
  echo "=== $s rr4k-qd1 5s, strace -c -f"
  "$root/tools/bench/thread-cpu.sh" "${pid[$s]}" --syscalls -- fio --name=j --ioengine=nbd \
    --uri="nbd://127.0.0.1:${port[$s]}/disk" --rw=randread --bs=4k --iodepth=1 --time_based --runtime=5 \
    --norandommap --output-format=json --output="$w/$s.json"
  echo "requests: $(requests "$w/$s.json")"
done >"$out/syscalls-rr4k-qd1.txt" 2>&1

workloads=(
  "rr4k-qd1|--rw=randread --bs=4k --iodepth=1"
  "rr4k-qd32|--rw=randread --bs=4k --iodepth=32"
  "rw4k-qd32|--rw=randwrite --bs=4k --iodepth=32"
  "sw1m-qd8|--rw=write --bs=1m --iodepth=8"
  "sr1m-qd8|--rw=read --bs=1m --iodepth=8"
)
for wl in "${workloads[@]}"; do
  name="${wl%%|*}"
  read -r -a args <<<"${wl#*|}"
  for s in "${servers[@]}"; do
    echo "=== $s $name 10s (thread CPU)"
    "$root/tools/bench/thread-cpu.sh" "${pid[$s]}" -- fio --name=j --ioengine=nbd \
      --uri="nbd://127.0.0.1:${port[$s]}/disk" "${args[@]}" --time_based --runtime=10 --norandommap \
      --output-format=json --output="$w/$s-$name.json"
    echo "requests: $(requests "$w/$s-$name.json")"
  done
done >"$out/threads.txt" 2>&1
echo "wrote $out/syscalls-rr4k-qd1.txt and $out/threads.txt"
