#!/bin/sh
# Install Debian's Java runtime when it is missing, for the tests that run nodes on Spark SQL
# (pyspark starts a JVM; Spark 4 needs Java 17 or newer). Called by `make test`. Never fails
# the build: without Java those tests fail under CI (CI=true) with a message saying so, and
# skip on a developer's machine.
if command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  run=""
elif command -v sudo >/dev/null 2>&1; then
  if [ -t 0 ]; then run="sudo"; else run="sudo -n"; fi
else
  echo "install-java: need root or sudo to install a Java runtime" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-java: no apt-get here; install a Java runtime (17 or newer) by hand" >&2
  exit 0
fi
apt() { $run env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
echo "install-java: apt-get install default-jre-headless" >&2
apt install -y -q default-jre-headless >/dev/null \
  || { apt update -q >/dev/null && apt install -y -q default-jre-headless >/dev/null; } \
  || echo "install-java: could not install default-jre-headless" >&2
exit 0
