#!/usr/bin/env bash
# Test set-up: what the test suite needs beyond `pip install -e ".[test]"`.
# - Debian's Chromium, for the headless-browser checks of the report (tests/test_report.py), the
#   crop viewer (tests/test_viewer.py) and the judging page (tests/test_judge_browser.py), driven
#   by the `playwright` package from the test extra, launched with executable_path=/usr/bin/chromium
#   (no `playwright install`: nothing downloads a browser).
# - Debian's Firefox ESR, for the crop viewer's Firefox check (driven over Marionette).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
chromium --version
firefox-esr --version
