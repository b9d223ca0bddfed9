#!/usr/bin/env bash
# The README's report screenshot, regenerated from a fresh `echo-edge run` on the built-in default:
#   bash tools/report_screenshot.sh [RUN_DIR]      (default: runs/run; writes docs/report_screenshot.png)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/run}
[ -f "$RUN/report.html" ] || .venv/bin/echo-edge run --out "$RUN"
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$PROFILE" \
  --window-size=1400,2800 --screenshot="$PWD/docs/report_screenshot.png" \
  "file://$(realpath "$RUN/report.html")" 2>/dev/null
echo "wrote docs/report_screenshot.png from $RUN/report.html"
