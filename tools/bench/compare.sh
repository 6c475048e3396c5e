#!/usr/bin/env bash
# End-to-end comparison of nbdtail with qemu-nbd and nbdkit (file plugin) on the same export file.
#
#   tools/bench/compare.sh [--rounds N] [--runtime S] [--out DIR] [--servers a,b,c] [--workloads w1,w2]
#                          [--warmup S] [--size 1G] [--port-base P] [--nbdtail-config FILE]
#                          [--nbdtail-java-opts 'OPTS'] [--variant 'NAME|CONFIG|JAVA_OPTS[|JAR]']... [--label TEXT]
#                          [--report-only]
#
#   --variant adds a server "nbdtail@NAME": nbdtail with that configuration file and/or JVM options (either may
#   be empty), serving the same file (a second data directory whose data.raw is a hard link), measured
#   interleaved with the others, so that a configuration change is compared under the same noise. JAR, if
#   given, is another nbdtail.jar (say, one built from the previous commit), so that a code change is compared
#   the same way; it is copied before the run starts.
#   --report-only rebuilds results.json, results.md and compare.png from an existing OUT/samples.jsonl.
#
# What it does:
#   * builds nbdtail if its jar is missing, installs fio, qemu-utils, nbdkit, libnbd-bin, gnuplot-nox and jq if
#     missing (apt-get, as root);
#   * creates one nbdtail volume "disk" of --size in a scratch data directory, fills it with random data (no
#     holes: every read hits real data) and serves THAT file with all three servers, each on its own loopback
#     port, for the whole run. One file, not a copy per server: all three see the same extents and the same
#     page cache, so no server gets a warmer or less fragmented file. Writes of one server are visible to the
#     others, which changes nothing here because the workloads only care that the data is there, not what it is;
#   * warms every server up once (--warmup seconds of 4 KiB random read/write; the JVM needs its JIT);
#   * runs every workload against every server, interleaved: round r runs workload w on the servers in an order
#     rotated by r, then the next workload; `sync` between runs so that no server pays for another's writeback;
#   * per run: MiB/s, IOPS, p50/p99 completion latency (fio's clat percentiles; for the 70/30 mix, of the reads),
#     and the server's CPU time (utime + stime from /proc/PID/stat, all threads) divided by requests;
#   * writes OUT/samples.jsonl (every run), OUT/results.json (medians per workload and server, and each peer's
#     ratio to nbdtail), OUT/results.md (the table), OUT/noise.md (lowest / median / highest MiB/s of the
#     rounds) and OUT/compare.png (ratio chart).
#
# Everything it starts is stopped on exit (by pid), and the scratch directory is removed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

rounds=3
runtime=10
warmup=5
out="$here/out"
size=1G
port_base=10900
servers="nbdtail,qemu-nbd,nbdkit"
workloads_arg=""
nbdtail_config=""
nbdtail_java_opts=""
label=""
variants=()
report_only=0

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --port-base) port_base="$2"; shift 2 ;;
    --servers) servers="$2"; shift 2 ;;
    --workloads) workloads_arg="$2"; shift 2 ;;
    --nbdtail-config) nbdtail_config="$(readlink -f "$2")"; shift 2 ;;
    --nbdtail-java-opts) nbdtail_java_opts="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --variant) variants+=("$2"); shift 2 ;;
    --report-only) report_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------------------- workloads
# name|fio arguments (nbdcopy-* are not fio). Keep names short: they are the chart's x axis.
all_workloads=(
  "rr4k-qd1|--rw=randread --bs=4k --iodepth=1"
  "rr4k-qd32|--rw=randread --bs=4k --iodepth=32"
  "rw4k-qd32|--rw=randwrite --bs=4k --iodepth=32"
  "mix64k-qd16|--rw=randrw --rwmixread=70 --bs=64k --iodepth=16"
  "sr1m-qd8|--rw=read --bs=1m --iodepth=8"
  "sw1m-qd8|--rw=write --bs=1m --iodepth=8"
  "rr4k-2conn|--rw=randread --bs=4k --iodepth=16 --numjobs=2"
  "nbdcopy-out|"
  "nbdcopy-in|"
)
workloads=()
for w in "${all_workloads[@]}"; do
  name="${w%%|*}"
  if [[ -z "$workloads_arg" || ",$workloads_arg," == *",$name,"* ]]; then
    workloads+=("$w")
  fi
done
[[ ${#workloads[@]} -gt 0 ]] || { echo "compare.sh: no workload matches --workloads $workloads_arg" >&2; exit 2; }
IFS=, read -r -a server_list <<<"$servers"
declare -A variant_config variant_opts variant_jar
for v in "${variants[@]}"; do
  IFS='|' read -r vname vconfig vopts vjar <<<"$v"
  [[ -n "$vname" ]] || { echo "compare.sh: --variant needs a name: 'NAME|CONFIG|JAVA_OPTS[|JAR]'" >&2; exit 2; }
  variant_config[$vname]="${vconfig:+$(readlink -f "$vconfig")}"
  variant_opts[$vname]="$vopts"
  if [[ -n "$vjar" && ! -f "$vjar" ]]; then
    echo "compare.sh: --variant $vname: no jar $vjar; build one (bin/build) and copy it there" >&2
    exit 2
  fi
  variant_jar[$vname]="${vjar:+$(readlink -f "$vjar")}"
  server_list+=("nbdtail@$vname")
done
servers="$(IFS=,; echo "${server_list[*]}")"

# ---------------------------------------------------------------------------------------------- tools
if [[ $report_only -eq 1 ]]; then
  [[ -s "$out/samples.jsonl" ]] || { echo "compare.sh: no $out/samples.jsonl to report on" >&2; exit 1; }
  # Servers in the order they were measured, unless --servers/--variant said otherwise.
  if [[ ${#variants[@]} -eq 0 && "$servers" == "nbdtail,qemu-nbd,nbdkit" ]]; then
    servers="$(jq -rs 'map(.server) | reduce .[] as $s ([]; if index([$s]) then . else . + [$s] end) | join(",")' \
      "$out/samples.jsonl")"
    IFS=, read -r -a server_list <<<"$servers"
  fi
  rounds="$(jq -s 'map(.round) | max' "$out/samples.jsonl")"
  runtime="$(jq -r '.runtime_s // empty' "$out/results.json" 2>/dev/null || true)"
  runtime="${runtime:-?}"
  NBDTAIL_JAR="$root/tools/target/nbdtail.jar"
else
ensure_tools() {
  local missing=() pkg
  command -v fio >/dev/null || missing+=(fio)
  command -v qemu-nbd >/dev/null || missing+=(qemu-utils)
  command -v nbdkit >/dev/null || missing+=(nbdkit)
  command -v nbdcopy >/dev/null || missing+=(libnbd-bin)
  command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
  command -v jq >/dev/null || missing+=(jq)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  for pkg in "${missing[@]}"; do
    apt-cache show "$pkg" >/dev/null 2>&1 || { echo "compare.sh: no package $pkg in apt" >&2; exit 1; }
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # fio's nbd engine is a separate package on some releases.
  if ! fio --enghelp=nbd >/dev/null 2>&1 && apt-cache show fio-engine-libnbd >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio-engine-libnbd >/dev/null
  fi
}
ensure_tools
fio --enghelp=nbd >/dev/null 2>&1 || { echo "compare.sh: this fio has no nbd engine" >&2; exit 1; }
if [[ ! -f "$root/tools/target/nbdtail.jar" ]]; then
  log "building nbdtail"
  "$root/bin/build" >/dev/null
fi

# ---------------------------------------------------------------------------------------------- lifecycle
scratch="$(mktemp -d /tmp/nbdtail-compare.XXXXXX)"
shm="$(mktemp -d /dev/shm/nbdtail-compare.XXXXXX)"
declare -A pid port
cleanup() {
  local s
  for s in "${!pid[@]}"; do
    if kill -0 "${pid[$s]}" 2>/dev/null; then
      kill "${pid[$s]}" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "${pid[$s]}" 2>/dev/null || break; sleep 0.1; done
      kill -9 "${pid[$s]}" 2>/dev/null || true
    fi
  done
  rm -rf "$scratch" "$shm"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$out/raw"
: >"$out/samples.jsonl"

# Serve from a private copy of the jar: a rebuild of the source tree during the run must not change (or break)
# the server under test.
cp "$root/tools/target/nbdtail.jar" "$scratch/nbdtail.jar"
export NBDTAIL_JAR="$scratch/nbdtail.jar"
jar_tree="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
jar_built="$(date -u -r "$root/tools/target/nbdtail.jar" +%Y-%m-%dT%H:%M:%SZ)"

data="$scratch/data"
file="$data/volumes/disk/data.raw"
log "creating a $size volume in $data and filling it with random data"
"$root/bin/nbdtail" volume create disk --size "$size" --data-dir "$data" >/dev/null
bytes="$(stat -c %s "$file")"
dd if=/dev/urandom of="$file" bs=1M count=$((bytes >> 20)) conv=notrunc,fsync status=none
size_mib=$((bytes >> 20))

wait_ready() { # server: up to 30 s for the export to answer
  local s="$1"
  for _ in $(seq 300); do
    nbdinfo --size "nbd://127.0.0.1:${port[$s]}/disk" >/dev/null 2>&1 && return 0
    kill -0 "${pid[$s]}" 2>/dev/null || { echo "compare.sh: $s exited; see $out/raw/$s.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "compare.sh: $s did not start; see $out/raw/$s.log" >&2
  exit 1
}

start_server() { # server index
  local s="$1" p=$((port_base + $2))
  port[$s]=$p
  case "$s" in
    nbdtail)
      local cmd=(serve --data-dir "$data" --listen "127.0.0.1:$p" --api-listen off)
      [[ -n "$nbdtail_config" ]] && cmd+=(--config "$nbdtail_config")
      NBDTAIL_JAVA_OPTS="$nbdtail_java_opts" "$root/bin/nbdtail" "${cmd[@]}" >"$out/raw/$s.log" 2>&1 &
      ;;
    nbdtail@*)
      local v="${s#nbdtail@}" vdata="$scratch/data-${s#nbdtail@}"
      # Its own data directory (nbdtail locks it and the volume) over the same file: data.raw is a hard link.
      mkdir -p "$vdata/volumes/disk"
      cp "$data/volumes/disk/volume.json" "$vdata/volumes/disk/"
      ln "$file" "$vdata/volumes/disk/data.raw"
      local vcmd=(serve --data-dir "$vdata" --listen "127.0.0.1:$p" --api-listen off)
      [[ -n "${variant_config[$v]}" ]] && vcmd+=(--config "${variant_config[$v]}")
      local vjar="$NBDTAIL_JAR"
      if [[ -n "${variant_jar[$v]}" ]]; then
        vjar="$scratch/nbdtail-$v.jar"
        cp "${variant_jar[$v]}" "$vjar"
      fi
      NBDTAIL_JAR="$vjar" NBDTAIL_JAVA_OPTS="${variant_opts[$v]}" "$root/bin/nbdtail" "${vcmd[@]}" \
        >"$out/raw/$s.log" 2>&1 &
      ;;
    qemu-nbd)
      # At its best: writeback cache, thread pool AIO, 8 shared connections, persistent.
      qemu-nbd -f raw --cache=writeback --aio=threads -e 8 -t -x disk -b 127.0.0.1 -p "$p" "$file" \
        >"$out/raw/$s.log" 2>&1 &
      ;;
    nbdkit)
      # cache=default: through the page cache, like the others (nbdkit's default is 16 threads).
      nbdkit -f -i 127.0.0.1 -p "$p" file "$file" cache=default >"$out/raw/$s.log" 2>&1 &
      ;;
    *) echo "compare.sh: unknown server $s" >&2; exit 2 ;;
  esac
  pid[$s]=$!
  wait_ready "$s"
  log "$s pid ${pid[$s]} on port $p"
}

cpu_ticks() { # pid -> utime+stime in clock ticks (fields 14 and 15, after the ")" of the command name)
  local stat
  stat="$(<"/proc/$1/stat")"
  stat="${stat##*) }"
  # shellcheck disable=SC2086
  set -- $stat
  echo $((${12} + ${13}))
}
clk_tck="$(getconf CLK_TCK)"

run_fio() { # server workload-args json-out runtime
  local s="$1" args="$2" json="$3" secs="$4"
  # shellcheck disable=SC2086
  fio --name=job --ioengine=nbd --uri="nbd://127.0.0.1:${port[$s]}/disk" $args --time_based --runtime="$secs" \
    --norandommap --randrepeat=0 --group_reporting --output-format=json --output="$json" >/dev/null
}

# One run: prints nothing, appends one line to samples.jsonl.
measure() { # round server workload-name workload-args
  local r="$1" s="$2" name="$3" args="$4" raw t0 t1 c0 c1 elapsed cpu_s
  raw="$out/raw/r$r-$s-$name"
  # The source of nbdcopy-in, made once and outside the timed part (it used to be made inside the first
  # server's run, which then paid for copying the whole disc).
  [[ "$name" != nbdcopy-in || -f "$shm/in.raw" ]] || cp "$file" "$shm/in.raw"
  sync
  sleep 0.5
  c0="$(cpu_ticks "${pid[$s]}")"
  t0="$(date +%s.%N)"
  case "$name" in
    nbdcopy-out)
      nbdcopy --request-size=262144 "nbd://127.0.0.1:${port[$s]}/disk" "$shm/out.raw"
      ;;
    nbdcopy-in)
      nbdcopy --request-size=262144 "$shm/in.raw" "nbd://127.0.0.1:${port[$s]}/disk"
      ;;
    *)
      run_fio "$s" "$args" "$raw.json" "$runtime"
      ;;
  esac
  t1="$(date +%s.%N)"
  c1="$(cpu_ticks "${pid[$s]}")"
  rm -f "$shm/out.raw"
  elapsed="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
  cpu_s="$(awk -v a="$c0" -v b="$c1" -v hz="$clk_tck" 'BEGIN {printf "%.3f", (b - a) / hz}')"
  if [[ "$name" == nbdcopy-* ]]; then
    jq -cn --argjson round "$r" --arg server "$s" --arg workload "$name" --argjson elapsed "$elapsed" \
      --argjson cpu "$cpu_s" --argjson mib "$size_mib" '
      {round: $round, server: $server, workload: $workload, seconds: $elapsed,
       mibps: ($mib / $elapsed), iops: ($mib * 4 / $elapsed), p50_us: null, p99_us: null,
       requests: ($mib * 4), cpu_s: $cpu, cpu_us_per_req: ($cpu * 1e6 / ($mib * 4))}' >>"$out/samples.jsonl"
  else
    jq -c --argjson round "$r" --arg server "$s" --arg workload "$name" --argjson elapsed "$elapsed" \
      --argjson cpu "$cpu_s" '
      .jobs[0] as $j
      | (if $j.read.total_ios > 0 then $j.read else $j.write end) as $lat
      | ($j.read.total_ios + $j.write.total_ios) as $n
      | {round: $round, server: $server, workload: $workload, seconds: $elapsed,
         mibps: (($j.read.bw_bytes + $j.write.bw_bytes) / 1048576), iops: ($j.read.iops + $j.write.iops),
         p50_us: ($lat.clat_ns.percentile["50.000000"] / 1000), p99_us: ($lat.clat_ns.percentile["99.000000"] / 1000),
         requests: $n, cpu_s: $cpu, cpu_us_per_req: (if $n > 0 then $cpu * 1e6 / $n else null end),
         errors: $j.error}' "$raw.json" >>"$out/samples.jsonl"
  fi
}

# ---------------------------------------------------------------------------------------------- run
i=0
for s in "${server_list[@]}"; do
  start_server "$s" "$i"
  i=$((i + 1))
done

if [[ "$warmup" -gt 0 ]]; then
  for s in "${server_list[@]}"; do
    log "warm-up $s (${warmup}s)"
    run_fio "$s" "--rw=randrw --bs=4k --iodepth=32" "$out/raw/warmup-$s.json" "$warmup"
  done
fi

n_servers=${#server_list[@]}
for ((r = 1; r <= rounds; r++)); do
  for w in "${workloads[@]}"; do
    name="${w%%|*}"
    args="${w#*|}"
    for ((k = 0; k < n_servers; k++)); do
      s="${server_list[$(((k + r - 1) % n_servers))]}"
      log "round $r/$rounds $name $s"
      measure "$r" "$s" "$name" "$args"
      tail -n 1 "$out/samples.jsonl" | jq -r '"    \(.mibps * 10 | round / 10) MiB/s  \(.iops | round) IOPS  p99 \(.p99_us // "-") us  \(.cpu_us_per_req * 100 | round / 100) CPU us/req"' >&2
    done
  done
done

fi

# ---------------------------------------------------------------------------------------------- report
if [[ $report_only -eq 1 && -s "$out/results.json" ]]; then
  versions="$(jq '.machine' "$out/results.json")" # what was measured, not what is installed now
else
  versions="$(jq -n --arg nproc "$(nproc)" --arg kernel "$(uname -r)" \
  --arg mem "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')" \
  --arg java "$("$("$root/bin/find-java")" -version 2>&1 | head -n 1)" \
  --arg fio "$(fio --version)" --arg qemu "$(qemu-nbd --version | head -n 1)" \
  --arg nbdkit "$(nbdkit --version)" --arg nbdcopy "$(nbdcopy --version | head -n 1)" \
  --arg tree "${jar_tree:-unknown}" --arg jar "${jar_built:-unknown}" \
  --arg sha "$(sha256sum "$NBDTAIL_JAR" | cut -c1-16)" \
  '{nbdtail_tree: $tree, nbdtail_jar_built: $jar, nbdtail_jar_sha256: $sha, nproc: $nproc, kernel: $kernel, memory: $mem, java: $java, fio: $fio, qemu_nbd: $qemu, nbdkit: $nbdkit,
    nbdcopy: $nbdcopy}')"
fi

jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson rounds "$rounds" --argjson runtime "$runtime" \
  --arg size "$size" --arg runlabel "$label" --arg config "$nbdtail_config" --arg javaopts "$nbdtail_java_opts" \
  --arg variants "$(printf '%s\n' "${variants[@]}")" \
  --argjson versions "$versions" --arg order "$servers" '
  def median: map(select(. != null)) | sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
  ($order | split(",")) as $servers
  | {date: $date, label: $runlabel, rounds: $rounds, runtime_s: $runtime, size: $size,
     nbdtail_config: $config, nbdtail_java_opts: $javaopts,
     variants: ($variants | split("\n") | map(select(length > 0))), machine: $versions,
     workloads: (group_by(.workload) | map(
       . as $runs
       | {workload: .[0].workload,
          servers: ($servers | map(. as $s | {key: $s, value: ($runs | map(select(.server == $s)) |
             {mibps: (map(.mibps) | median), iops: (map(.iops) | median), p50_us: (map(.p50_us) | median),
              p99_us: (map(.p99_us) | median), cpu_us_per_req: (map(.cpu_us_per_req) | median),
              runs: length})}) | from_entries)}
       | .servers.nbdtail as $n
       | .ratios = (.servers | to_entries | map(select(.key != "nbdtail")) | map({key: .key, value: {
           mibps: ratio(.value.mibps; $n.mibps), p99_us: ratio(.value.p99_us; $n.p99_us),
           cpu_us_per_req: ratio(.value.cpu_us_per_req; $n.cpu_us_per_req)}}) | from_entries)))}
  ' "$out/samples.jsonl" >"$out/results.json.tmp"
# Keep the workloads in the order they were defined, not alphabetical.
order_json="$(printf '%s\n' "${workloads[@]}" | cut -d'|' -f1 | jq -R . | jq -s .)"
jq --argjson order "$order_json" '.workloads |= sort_by(.workload as $w | $order | index($w))' \
  "$out/results.json.tmp" >"$out/results.json"
rm -f "$out/results.json.tmp"

# Markdown: one row per workload and server; ratios are peer / nbdtail (throughput: > 1 = peer faster;
# p99 and CPU: > 1 = peer slower / costlier).
jq -r '
  def f($d): if . == null then "–" else (. * pow(10; $d) | round / pow(10; $d) | tostring) end;
  def r: if . == null then "" else (. * 100 | round / 100 | tostring) + "×" end;
  "| workload | server | MiB/s | IOPS | p50 µs | p99 µs | server CPU µs/req | MiB/s ÷ nbdtail | p99 ÷ nbdtail | CPU ÷ nbdtail |",
  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  (.workloads[] | .workload as $w | .ratios as $r | .servers | to_entries[]
   | "| \($w) | \(.key) | \(.value.mibps | f(1)) | \(.value.iops | f(0)) | \(.value.p50_us | f(1)) | \(.value.p99_us | f(1)) | \(.value.cpu_us_per_req | f(2)) | \($r[.key].mibps | r) | \($r[.key].p99_us | r) | \($r[.key].cpu_us_per_req | r) |")
  ' "$out/results.json" >"$out/results.md"

# Noise: lowest / median / highest MiB/s of the rounds, per workload and server.
jq -rs --arg order "$servers" --argjson worder "$order_json" '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def f: . * 10 | round / 10 | tostring;
  ($order | split(",")) as $servers
  | "| workload | " + ($servers | join(" | ")) + " |",
    "|---|" + ($servers | map("---") | join("|")) + "|",
    (group_by(.workload) | sort_by(.[0].workload as $w | $worder | index($w)) | .[] | . as $runs
     | "| \(.[0].workload) | " + ($servers | map(. as $s | $runs | map(select(.server == $s) | .mibps)
         | if length == 0 then "–" else "\(min | f) / \(median | f) / \(max | f)" end) | join(" | ")) + " |")
  ' "$out/samples.jsonl" >"$out/noise.md"

# Chart: each peer's throughput divided by nbdtail's, per workload; the line at 1 is nbdtail.
peers=()
for s in "${server_list[@]}"; do [[ "$s" != nbdtail ]] && peers+=("$s"); done
if [[ ${#peers[@]} -gt 0 && " ${server_list[*]} " == *" nbdtail "* ]]; then
  jq -r --arg peers "${peers[*]}" '
    ($peers | split(" ")) as $p
    | .workloads[] | [.workload] + [$p[] as $s | (.ratios[$s].mibps // 0)] | @tsv' \
    "$out/results.json" >"$out/ratios.tsv"
  {
    echo "set terminal pngcairo size 1100,520 font 'Sans,10'"
    echo "set output '$out/compare.png'"
    echo "set title 'Throughput of each peer relative to nbdtail (median of $rounds rounds, ${runtime}s runs; < 1: nbdtail faster)'"
    echo "set style data histograms"
    echo "set style histogram clustered gap 1"
    echo "set style fill solid 0.85 border -1"
    echo "set boxwidth 0.9"
    echo "set yrange [0:*]"
    echo "set grid ytics"
    echo "set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb 'black'"
    echo "set ylabel 'peer MiB/s ÷ nbdtail MiB/s'"
    echo "set xtics rotate by -25"
    echo "set key top left"
    echo "set datafile separator tab"
    plot="plot"
    sep=""
    col=2
    for p in "${peers[@]}"; do
      plot+="$sep '$out/ratios.tsv' using $col:xtic(1) title '$p' noenhanced"
      sep=","
      col=$((col + 1))
    done
    echo "$plot"
  } >"$out/compare.gp"
  gnuplot "$out/compare.gp"
fi

log "wrote $out/results.json, $out/results.md, $out/compare.png"
cat "$out/results.md"
