#!/bin/sh
# Install Debian's Chromium for the browser tests when it is missing (never a downloaded
# browser build), plus a small CJK font so Chinese pages render readably in screenshots.
# Called by `make test`; never fails the build (tests/apt-install.sh).
CHROMIUM=${HEALTHSPACE_CHROMIUM:-/usr/bin/chromium}

packages=""
[ -x "$CHROMIUM" ] || packages=" chromium"
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh family 2>/dev/null)" ]; then
  packages="$packages fonts-wqy-microhei"
fi
[ -n "$packages" ] || exit 0

# shellcheck disable=SC2086 # the package list is meant to split
sh "$(dirname "$0")/../../apt-install.sh" install-chromium \
  "install Chromium at $CHROMIUM by hand" $packages
[ -x "$CHROMIUM" ] || echo "install-chromium: still no Chromium at $CHROMIUM" >&2
exit 0
