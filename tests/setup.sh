#!/usr/bin/env bash
# Test set-up: what the test suite needs beyond `pip install -e ".[test]"`.
# - Debian's Chromium, for the headless-browser checks of the report (tests/test_report.py) and of
#   the judging page (tests/test_judge_browser.py, driven by the `playwright` package from the
#   test extra, launched with executable_path=/usr/bin/chromium: no `playwright install`).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
chromium --version
