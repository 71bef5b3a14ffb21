#!/usr/bin/env bash
# Install Debian's chromium (and a font to render pages with) for the browser test, when the
# machine lacks them. Playwright drives this browser; `playwright install` is never used.
set -euo pipefail
installed="$(dpkg-query -W -f='${Status}\n' chromium fonts-dejavu-core 2>/dev/null |
  grep -c ' installed$' || true)"
if [ "$installed" = 2 ] && [ -x /usr/bin/chromium ]; then
  exit 0
fi
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
