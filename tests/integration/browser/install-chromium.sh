#!/bin/sh
# Install Debian's Chromium for the browser tests when it is missing (never a downloaded
# browser build), plus a small CJK font so Chinese pages render readably in screenshots.
# Called by `make test`. Never fails the build: without Chromium the browser tests fail
# under CI (CI=true) with a message saying so, and skip on a developer's machine.
CHROMIUM=${HEALTHSPACE_CHROMIUM:-/usr/bin/chromium}

packages=""
[ -x "$CHROMIUM" ] || packages=" chromium"
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh family 2>/dev/null)" ]; then
  packages="$packages fonts-wqy-microhei"
fi
[ -n "$packages" ] || exit 0

if [ "$(id -u)" = 0 ]; then
  run=""
elif command -v sudo >/dev/null 2>&1; then
  # No terminal (CI, scripts): sudo must not wait for a password nobody can type.
  if [ -t 0 ]; then run="sudo"; else run="sudo -n"; fi
else
  echo "install-chromium: need root or sudo to install:$packages" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here; install Chromium at $CHROMIUM by hand" >&2
  exit 0
fi

apt() { $run env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
echo "install-chromium: apt-get install$packages" >&2
# shellcheck disable=SC2086 # the package list is meant to split
apt install -y -q $packages >/dev/null \
  || { apt update -q >/dev/null && apt install -y -q $packages >/dev/null; } \
  || echo "install-chromium: could not install$packages" >&2
[ -x "$CHROMIUM" ] || echo "install-chromium: still no Chromium at $CHROMIUM" >&2
exit 0
