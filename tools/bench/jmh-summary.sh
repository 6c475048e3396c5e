#!/usr/bin/env bash
# Medians over several JMH result files (jmh-benchmarks/run.sh -prof gc -rf json -rff rN.json, one per round) as a
# Markdown table: benchmark, parameters, ns/op, gc.alloc.rate.norm (B/op), and the secondary counters that are
# not GC statistics (FlushCoordinatorBenchmark's syncs and waiters, summed rather than averaged).
#   tools/bench/jmh-summary.sh tools/bench/out/jmh/r*.json
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 RESULT.json..." >&2; exit 2; }
jq -rs '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def num: if . == null then "–" elif . >= 100 then (round | tostring)
    elif . >= 1 then (. * 10 | round / 10 | tostring) else (. * 100 | round / 100 | tostring) end;
  [.[][] | {name: (.benchmark | sub("^io\\.nbdtail\\.bench\\."; "")),
            params: ((.params // {}) | to_entries | map("\(.key)=\(.value)") | join(" ")),
            score: .primaryMetric.score, unit: .primaryMetric.scoreUnit,
            norm: .secondaryMetrics["gc.alloc.rate.norm"].score,
            syncs: .secondaryMetrics.syncs.score, waiters: .secondaryMetrics.waiters.score}]
  | group_by(.name + " " + .params)
  | map({name: .[0].name, params: .[0].params, unit: .[0].unit, n: length,
         score: (map(.score) | median), norm: (map(.norm | select(. != null)) | median),
         syncs: (map(.syncs | select(. != null)) | add), waiters: (map(.waiters | select(. != null)) | add)})
  | "| benchmark | parameters | time (median) | gc.alloc.rate.norm B/op | syncs per waiter | rounds |",
    "|---|---|---:|---:|---:|---:|",
    (.[] | "| \(.name) | \(.params) | \(.score | num) \(.unit) | \(.norm | num) | \(if .waiters then (.syncs / .waiters * 1000 | round / 1000 | tostring) else "" end) | \(.n) |")
' "$@"
