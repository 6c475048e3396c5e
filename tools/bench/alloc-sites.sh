#!/usr/bin/env bash
# Where a JMH benchmark allocates: runs it once under Java Flight Recorder with allocation sampling and prints
# the sampled weight per thread, allocated class and allocating frames (top of the stack), heaviest first.
#   tools/bench/alloc-sites.sh 'DispatchBenchmark' -p op=WRITE
# Extra arguments go to JMH. The weights are JFR's sampled estimates: use them to find *which* objects are
# allocated; take bytes per operation from `jmh-benchmarks/run.sh ... -prof gc`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
java_home="$("$root/bin/find-java" --home)"
[[ $# -ge 1 ]] || { echo "usage: $0 BENCHMARK_REGEX [JMH args...]" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/jmh-benchmarks/run.sh" "$@" -f 1 -wi 3 -i 3 \
  -jvmArgsAppend "-Dio.netty.leakDetection.level=disabled -XX:StartFlightRecording=settings=profile,filename=$work/rec.jfr" \
  >"$work/jmh.log" 2>&1 || { tail -30 "$work/jmh.log" >&2; exit 1; }
"$java_home/bin/jfr" print --json --events jdk.ObjectAllocationSample --stack-depth 6 "$work/rec.jfr" >"$work/alloc.json"
jq -r '
  [.recording.events[]
   | select(.values.eventThread.javaName | test("^(main|C[12] |JFR|Signal|Common-Cleaner|Reference|Finalizer)") | not)
   | {th: (.values.eventThread.javaName | gsub("[0-9]+"; "N") | sub("^io[.]nbdtail[.]bench[.]"; "")),
      cls: .values.objectClass.name,
      w: .values.weight,
      where: ([.values.stackTrace.frames[]? | "\(.method.type.name | split(".") | last).\(.method.name):\(.lineNumber)"] | .[0:4] | join(" < "))}]
  | (map(.w) | add) as $total
  | group_by(.th + .cls + .where)
  | map({k: "\(.[0].th)  \(.[0].cls)  @ \(.[0].where)", w: (map(.w) | add)})
  | sort_by(-.w) | .[0:25][]
  | "\((.w * 1000 / $total | floor) / 10)%\t\(.k)"' "$work/alloc.json"
