#!/usr/bin/env bash
# Snapshot layers against a plain volume (issue #3's target: a volume with 5 snapshot layers within 10 % of a
# plain volume on 4 KiB random read and write, once the active layer holds its clusters).
#
#   tools/bench/layers.sh [--rounds N] [--runtime S] [--out DIR]
#
# One nbdtail serves two 1 GiB volumes from one data directory: `plain`, filled with random data, and `layered`,
# filled, snapshotted five times (each snapshot after rewriting a fifth of the disc, so every layer holds data),
# then filled once more through NBD so the active layer holds every cluster. The same fio workloads run against
# both, interleaved per round (order alternating); the script prints the median IOPS of each, the ratio
# layered/plain, and writes OUT/results.md. Single machine, noisy: trust medians of several rounds only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rounds=3 runtime=10 out="$root/tools/bench/out/layers"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "layers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in fio nbdcopy jq; do
  command -v "$tool" >/dev/null || { echo "layers.sh: $tool is missing; run bin/install-test-deps" >&2; exit 1; }
done
[[ -f "$root/tools/target/nbdtail.jar" ]] || { echo "layers.sh: build first: mvn -o -DskipTests install" >&2; exit 1; }
mkdir -p "$out/raw"
w="$(mktemp -d /tmp/nbdtail-layers.XXXXXX)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$w"; }
trap cleanup EXIT

nbdtail() { NBDTAIL_JAR="$root/tools/target/nbdtail.jar" "$root/bin/nbdtail" "$@"; }
port=10970 api=10971
data="$w/data"
dd if=/dev/urandom of="$w/fill.raw" bs=1M count=1024 status=none
for v in plain layered; do
  nbdtail volume create "$v" --size 1G --data-dir "$data" >/dev/null
  cp "$w/fill.raw" "$data/volumes/$v/data.raw"
done
nbdtail serve --data-dir "$data" --listen "127.0.0.1:$port" --api-listen "127.0.0.1:$api" >"$out/raw/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do nbdinfo "nbd://127.0.0.1:$port/plain" >/dev/null 2>&1 && break; sleep 0.2; done
remote=(--server "http://127.0.0.1:$api" --token-file "$data/api-token")
for i in 1 2 3 4 5; do
  nbdtail snapshot create layered "s$i" "${remote[@]}" >/dev/null
  fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$port/layered" --rw=write --bs=1M --iodepth=8 \
    --offset=$(( (i - 1) * 200 ))M --size=200M --output=/dev/null
done
nbdcopy "$w/fill.raw" "nbd://127.0.0.1:$port/layered"   # the active layer now holds every cluster
nbdtail snapshot list layered "${remote[@]}"

declare -A workloads=(
  [rr4k-qd1]="--rw=randread --bs=4k --iodepth=1"
  [rr4k-qd32]="--rw=randread --bs=4k --iodepth=32"
  [rw4k-qd32]="--rw=randwrite --bs=4k --iodepth=32"
)
: >"$out/samples.jsonl"
for r in $(seq "$rounds"); do
  for wl in rr4k-qd1 rr4k-qd32 rw4k-qd32; do
    order=(plain layered); (( r % 2 == 0 )) && order=(layered plain)
    for v in "${order[@]}"; do
      # shellcheck disable=SC2086
      fio --name=j --ioengine=nbd --uri="nbd://127.0.0.1:$port/$v" ${workloads[$wl]} --time_based \
        --runtime="$runtime" --norandommap --output-format=json --output="$out/raw/$r-$wl-$v.json"
      jq -c --arg v "$v" --arg wl "$wl" --argjson r "$r" \
        '{round: $r, workload: $wl, volume: $v, iops: (.jobs[0].read.iops + .jobs[0].write.iops)}' \
        "$out/raw/$r-$wl-$v.json" >>"$out/samples.jsonl"
    done
  done
done
{
  echo "| workload | plain IOPS | 5 layers IOPS | layers ÷ plain |"
  echo "|---|---:|---:|---:|"
  jq -s -r 'def median: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
    group_by(.workload)[] | . as $g | ($g | map(select(.volume=="plain").iops) | median) as $p
    | ($g | map(select(.volume=="layered").iops) | median) as $l
    | "| \($g[0].workload) | \($p|floor) | \($l|floor) | \(($l/$p*100|floor)/100)× |"' "$out/samples.jsonl"
} | tee "$out/results.md"
