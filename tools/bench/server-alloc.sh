#!/usr/bin/env bash
# Heap allocation of a running nbdtail server per request, measured in the real server rather than in JMH:
# starts nbdtail on a scratch 1 GiB volume (filled with data), warms it up, then records Java Flight Recorder
# (settings=profile) while fio runs one workload, and prints
#   * bytes allocated per request, per thread group (jdk.ThreadAllocationStatistics at the recording's start and
#     end, divided by fio's request count), and
#   * the sampled allocation sites (jdk.ObjectAllocationSample): thread group, class, top frames.
#
#   tools/bench/server-alloc.sh [--runtime S] [--config FILE] [--java-opts 'OPTS'] [--jar FILE] [--keep DIR]
#                               [-- FIO ARGS]
# --jar measures another nbdtail.jar (say, one built from an earlier commit) instead of tools/target/nbdtail.jar.
# Default workload: --rw=randread --bs=4k --iodepth=32. Example: tools/bench/server-alloc.sh -- --rw=randwrite
# --bs=4k --iodepth=32
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
runtime=10
config=""
java_opts=""
keep=""
jar="$root/tools/target/nbdtail.jar"
port=10950
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runtime) runtime="$2"; shift 2 ;;
    --config) config="$(readlink -f "$2")"; shift 2 ;;
    --java-opts) java_opts="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --jar) jar="$(readlink -f "$2")"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "server-alloc.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
fio_args=("$@")
[[ ${#fio_args[@]} -gt 0 ]] || fio_args=(--rw=randread --bs=4k --iodepth=32)
java_home="$("$root/bin/find-java" --home)"

work="$(mktemp -d /tmp/nbdtail-alloc.XXXXXX)"
server=""
cleanup() {
  if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
    kill "$server"
    wait "$server" 2>/dev/null || true
  fi
  if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    cp "$work"/*.jfr "$work"/*.json "$keep"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cp "$jar" "$work/nbdtail.jar"
export NBDTAIL_JAR="$work/nbdtail.jar"
"$root/bin/nbdtail" volume create disk --size 1G --data-dir "$work/data" >/dev/null
dd if=/dev/urandom of="$work/data/volumes/disk/data.raw" bs=1M count=1024 conv=notrunc status=none
args=(serve --data-dir "$work/data" --listen "127.0.0.1:$port" --api-listen off)
[[ -n "$config" ]] && args+=(--config "$config")
NBDTAIL_JAVA_OPTS="$java_opts" "$root/bin/nbdtail" "${args[@]}" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 300); do
  nbdinfo --size "nbd://127.0.0.1:$port/disk" >/dev/null 2>&1 && break
  sleep 0.1
done

uri="nbd://127.0.0.1:$port/disk"
fio --name=warm --ioengine=nbd --uri="$uri" --rw=randrw --bs=4k --iodepth=32 --time_based --runtime=10 \
  --norandommap >/dev/null
"$java_home/bin/jcmd" "$server" JFR.start name=alloc settings=profile filename="$work/alloc.jfr" >/dev/null
fio --name=job --ioengine=nbd --uri="$uri" "${fio_args[@]}" --time_based --runtime="$runtime" --norandommap \
  --group_reporting --output-format=json --output="$work/fio.json" >/dev/null
"$java_home/bin/jcmd" "$server" JFR.stop name=alloc >/dev/null

requests="$(jq '.jobs[0].read.total_ios + .jobs[0].write.total_ios' "$work/fio.json")"
echo "workload: ${fio_args[*]}, ${runtime}s, $requests requests"
"$java_home/bin/jfr" print --json --events jdk.ThreadAllocationStatistics "$work/alloc.jfr" >"$work/threads.json"
echo "--- heap bytes allocated per request, by thread group (ThreadAllocationStatistics, end - start)"
jq -r --argjson n "$requests" '
  [.recording.events[] | {t: .values.thread.javaName, tid: .values.thread.javaThreadId, a: .values.allocated,
                          at: .values.startTime}]
  | group_by(.tid)
  | map(sort_by(.at) | {name: (.[0].t // "?" | gsub("[0-9]+"; "N")), d: (.[-1].a - .[0].a)})
  | group_by(.name) | map({name: .[0].name, d: (map(.d) | add)})
  | (map(.d) | add) as $total
  | (sort_by(-.d)[] | select(.d > 0) | "\(.d / $n * 10 | round / 10) B/req\t\(.name)"),
    "\($total / $n * 10 | round / 10) B/req\ttotal"' "$work/threads.json"
"$java_home/bin/jfr" print --json --events jdk.ObjectAllocationSample --stack-depth 8 "$work/alloc.jfr" \
  >"$work/samples.json"
echo "--- sampled allocation sites (share of sampled weight)"
jq -r '
  [.recording.events[]
   | {th: (.values.eventThread.javaName // "?" | gsub("[0-9]+"; "N")), cls: .values.objectClass.name,
      w: .values.weight,
      where: ([.values.stackTrace.frames[]?
               | "\(.method.type.name | split("/") | last).\(.method.name):\(.lineNumber)"] | .[0:5] | join(" < "))}]
  | (map(.w) | add) as $total
  | group_by(.th + .cls + .where)
  | map({k: "\(.[0].th)  \(.[0].cls)  @ \(.[0].where)", w: (map(.w) | add)})
  | sort_by(-.w) | .[0:20][]
  | "\((.w * 1000 / $total | round) / 10)%\t\(.k)"' "$work/samples.json"
