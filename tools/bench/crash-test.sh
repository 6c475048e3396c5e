#!/usr/bin/env bash
# Many more kill -9 crash rounds than CI runs (CrashIT, reliability.md C1): each round kills the server at a
# random point of a random workload, checks the volume offline, restarts and verifies every flushed block.
#   tools/bench/crash-test.sh [ROUNDS] [SEED]      (default 200 rounds, seed from the clock; ~4 s a round)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rounds="${1:-200}"
seed="${2:-$(date +%s)}"
echo "crash-test: $rounds rounds, seed $seed (rerun a failure with: $0 $rounds $seed)"
JAVA_HOME="$("$root/bin/find-java" --home)" MAVEN_OPTS="${MAVEN_OPTS:---sun-misc-unsafe-memory-access=allow}" \
  exec mvn -B -f "$root/pom.xml" verify -pl tools -am -Dtest=NONE -Dsurefire.failIfNoSpecifiedTests=false -Dfailsafe.failIfNoSpecifiedTests=false \
  -Dit.test='CrashIT#killedAtRandomPointsLosesNothingFlushed' -Dnbdtail.crash.rounds="$rounds" \
  -Dnbdtail.crash.seed="$seed"
