#!/usr/bin/env bash
# Set up, install the browser for the end-to-end demo test, then run the whole test suite with pytest
# (slow real-weight and multi-process tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ -x scripts/install_browser_test_deps.sh ]; then
  ./scripts/install_browser_test_deps.sh || echo "browser test dependencies could not be installed; the browser test will skip"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
