#!/usr/bin/env bash
# Test set-up: what the test suite needs beyond `pip install -e ".[test]"`.
# - Debian's Chromium, for the headless-browser check of the report (tests/test_report.py).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
chromium --version
