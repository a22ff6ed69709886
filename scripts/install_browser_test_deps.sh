#!/usr/bin/env bash
# Install what tests/test_web_browser.py needs: Debian's headless Chromium (+ driver) and Playwright for
# Python in the project venv. Idempotent: skips what is already there. Never runs `playwright install`
# (which downloads its own browser); the test drives /usr/bin/chromium instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PEDVIT_PYTHON:-$ROOT/.venv/bin/python}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "installing chromium + chromium-driver (apt)"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core
else
    echo "chromium already installed: $(command -v chromium)"
fi

if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
    echo "installing playwright (pip) into $PY"
    "$PY" -m pip install --quiet playwright
else
    echo "playwright already installed"
fi

chromium --version || true
