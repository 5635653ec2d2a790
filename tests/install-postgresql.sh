#!/bin/sh
# Install Debian's PostgreSQL server for the tests that run the hub on PostgreSQL, when it is
# missing. Called by `make test`; never fails the build (tests/apt-install.sh). The tests
# start their own throw-away cluster on 127.0.0.1 (tests/pgcluster.py); the package's own
# cluster is not used.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
exec sh "$(dirname "$0")/apt-install.sh" install-postgresql \
  "install the PostgreSQL server by hand" postgresql
