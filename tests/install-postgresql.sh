#!/bin/sh
# Install Debian's PostgreSQL server for the tests that run the hub on PostgreSQL, when it is
# missing. Called by `make test`. The tests start their own throw-away cluster on 127.0.0.1
# (tests/pgcluster.py); the package's own cluster is not used. Never fails the build:
# without the server those tests fail under CI (CI=true) with a message saying so, and skip
# on a developer's machine.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  run=""
elif command -v sudo >/dev/null 2>&1; then
  if [ -t 0 ]; then run="sudo"; else run="sudo -n"; fi
else
  echo "install-postgresql: need root or sudo to install postgresql" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgresql: no apt-get here; install the PostgreSQL server by hand" >&2
  exit 0
fi
apt() { $run env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
echo "install-postgresql: apt-get install postgresql" >&2
apt install -y -q postgresql >/dev/null \
  || { apt update -q >/dev/null && apt install -y -q postgresql >/dev/null; } \
  || echo "install-postgresql: could not install postgresql" >&2
exit 0
