#!/bin/sh
# Install Debian packages for the test set-up: `sh tests/apt-install.sh WHO HINT PACKAGE...`.
# WHO names the caller in messages; HINT says what to install by hand where apt-get is not
# available. Runs apt-get as root, or through sudo (never waiting for a password when there
# is no terminal). Never fails: a missing tool is reported, and the tests that need it fail
# under CI (CI=true) with a message saying so, and skip on a developer's machine.
who=$1 hint=$2
shift 2
if [ "$(id -u)" = 0 ]; then
  run=""
elif command -v sudo >/dev/null 2>&1; then
  if [ -t 0 ]; then run="sudo"; else run="sudo -n"; fi
else
  echo "$who: need root or sudo to install: $*" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$who: no apt-get here; $hint" >&2
  exit 0
fi
apt() { $run env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
echo "$who: apt-get install $*" >&2
apt install -y -q "$@" >/dev/null \
  || { apt update -q >/dev/null && apt install -y -q "$@" >/dev/null; } \
  || echo "$who: could not install $*" >&2
exit 0
