#!/bin/sh
# Installs what the test suite needs: the Python test requirements and, for the browser tests,
# Debian's Chromium (Playwright's own browser download needs the internet; we drive the system
# browser instead). Used by the README's test command and therefore by CI (.ci/run).
set -eu
python -m pip install -r requirements-test.txt
if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 \
    || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "${SEGCORE_SKIP_BROWSER:-}" = "1" ]; then
  echo "install-test-deps: no Chromium; browser tests will be skipped (SEGCORE_SKIP_BROWSER=1)"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  echo "install-test-deps: installing Debian's chromium for the browser tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "install-test-deps: install Chromium (or set CHROMIUM=/path/to/chromium) for the browser" \
  "tests, or set SEGCORE_SKIP_BROWSER=1 to skip them" >&2
exit 1
