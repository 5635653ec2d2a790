#!/bin/sh
# Install Debian's Java runtime when it is missing, for the tests that run nodes on Spark SQL
# (pyspark starts a JVM; Spark 4 needs Java 17 or newer). Called by `make test`; never fails
# the build (tests/apt-install.sh).
if command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; then
  exit 0
fi
exec sh "$(dirname "$0")/apt-install.sh" install-java \
  "install a Java runtime (17 or newer) by hand" default-jre-headless
