#!/usr/bin/env bash
# Runs the JMH benchmarks with the JVM flags the server itself uses.
#   jmh-benchmarks/run.sh                       all benchmarks
#   jmh-benchmarks/run.sh RequestDecoder -prof gc   one class, with allocation per operation
#   jmh-benchmarks/run.sh -prof gc -rf json -rff out.json   everything, machine-readable
# The module flags go in with -jvmArgsPrepend so that the benchmarks' own @Fork(jvmArgsAppend) (leak detection
# off, heap size) still applies: a -jvmArgsAppend given here would replace it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
java="$("$root/bin/find-java")"
jar="$here/target/benchmarks.jar"
if [[ ! -f "$jar" ]]; then
  echo "building $jar" >&2
  JAVA_HOME="$("$root/bin/find-java" --home)" MAVEN_OPTS=--sun-misc-unsafe-memory-access=allow \
    mvn -q -B -f "$root/pom.xml" -DskipTests -pl jmh-benchmarks -am package
fi
flags="--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED --add-exports=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -Dchronicle.analytics.disable=true"
# shellcheck disable=SC2086
exec "$java" $flags -jar "$jar" -jvmArgsPrepend "$flags" "$@"
