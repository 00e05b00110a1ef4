#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Used by the README and by .ci/run.
#   scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "installing redis-server (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

PYTHON=${PYTHON:-python3}
# The CPU build of torch first: left to itself, pip would pull a multi-gigabyte GPU build.
"$PYTHON" -m pip install -q torch==2.13.0
"$PYTHON" -m pip install -q -e '.[test]'
exec "$PYTHON" -m pytest "$@"
