#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian's packages, for the browser tests (tests/test_web_*.py).
# Idempotent: does nothing when /usr/bin/chromedriver is already there. Needs root (apt-get).
# Selenium is pointed at these two binaries explicitly; nothing is downloaded at test time.
set -euo pipefail
if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "ltmc setup: cannot install Chromium (no apt-get here): the browser tests will be skipped" >&2
    exit 0
fi
sudo=()
[ "$(id -u)" -ne 0 ] && sudo=(sudo)
echo "ltmc setup: installing chromium and chromium-driver (apt-get) for the browser tests" >&2
"${sudo[@]}" apt-get update >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends chromium chromium-driver >&2
