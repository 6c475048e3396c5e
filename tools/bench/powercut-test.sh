#!/usr/bin/env bash
# Many more power-cut states than CI checks (PowerCutTest, reliability.md C3): each seed runs a random workload
# of writes, FUA writes, zeroes, trims, flushes and snapshot create/delete/rollback on a recorded volume, then
# rebuilds the disc at every sync point and at STATES random crash states (unsynced changes in any subset, writes
# torn at 512-byte sectors), checks it with `check`, opens it and verifies every sector against the model.
#   tools/bench/powercut-test.sh [SEEDS] [STATES] [SEED]   (default 20 seeds x 300 states, seed from the clock;
#                                                           15 to 30 s a seed, by load)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seeds="${1:-20}"
states="${2:-300}"
seed="${3:-$(( $(date +%s) % 100000 ))}"
echo "powercut-test: $seeds seeds from $seed, $states random states each (rerun a failure with: $0 1 $states SEED)"
JAVA_HOME="$("$root/bin/find-java" --home)" MAVEN_OPTS="${MAVEN_OPTS:---sun-misc-unsafe-memory-access=allow}" \
  exec mvn -B -f "$root/pom.xml" verify -pl snapshot -am -DskipITs -Dsurefire.failIfNoSpecifiedTests=false \
  -Dtest='PowerCutTest#powerCutAtEverySyncPointAndRandomStatesBetweenLosesNothingFlushed' \
  -Dnbdtail.powercut.seeds="$seeds" -Dnbdtail.powercut.states="$states" -Dnbdtail.powercut.seed="$seed"
