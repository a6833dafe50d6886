#!/usr/bin/env bash
# The sweep's HTML report as a person sees it: a mixed fleet seeded in the
# emulator (two regions, with a launch template and an exempt instance), the
# real `imds-guard sweep --output html`, rendered by headless Chromium
# (Debian's package). Checks the rendered DOM (the tables' rows, the chart's
# bars) and writes the screenshot to docs/img/sweep-report.png.
# Run under tools/with-moto.sh (make report-screenshot does).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
emu() { "$here/.venv/bin/python" "$here/tools/emulator.py" "$@"; }
chromium="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$chromium" ] || { echo "report-screenshot: chromium is not installed (make report-screenshot installs Debian's)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The fleet: what a sweep finds in a team's first week.
for region in us-east-1 eu-west-1; do
  for n in 1 2 3; do emu launch --region "$region" --tokens optional --hop 2 --name "web-$n" >/dev/null; done
  emu launch --region "$region" --tokens required --hop 2 --name "api-1" >/dev/null
done
emu launch --region eu-west-1 --tokens optional --hop 1 --name "batch-1" >/dev/null

cargo build --quiet --bin imds-guard
bin="${CARGO_TARGET_DIR:-target}/debug/imds-guard"
EXEMPT_TAG_KEY=legacy-imds AWS_REGION=us-east-1 \
  "$bin" sweep --region us-east-1 --region eu-west-1 --mode notify --output html \
  > "$work/report.html" || [ $? -eq 1 ]
mkdir -p docs/img
# No network: the page is self-contained (a CSP forbids any fetch).
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --force-device-scale-factor=1)
"$chromium" "${flags[@]}" --dump-dom "file://$work/report.html" > "$work/dom.html" 2>"$work/chromium.log"
"$chromium" "${flags[@]}" --window-size=1280,780 --screenshot="$here/docs/img/sweep-report.png" \
  "file://$work/report.html" 2>>"$work/chromium.log"

# The rendered DOM: the instance table's rows, both regions, the bars.
"$here/.venv/bin/python" - "$work/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
def rows(table_id):
    m = re.search(r'<table id="%s">(.*?)</table>' % table_id, dom, re.S)
    assert m, f"no table {table_id} in the rendered page"
    return len(re.findall(r"<tr>", m.group(1))) - 1
instances, regions = rows("instances"), rows("regions")
bars = len(re.findall(r'<rect class="bar"', dom))
assert instances == 7, f"7 noncompliant instances expected, the page shows {instances}"
assert regions == 2, f"2 regions expected, the page shows {regions}"
assert bars >= 2, f"the chart has {bars} bars"
assert "<script" not in dom
print(f"rendered: {instances} instances, {regions} regions, {bars} bars")
PY
echo "screenshot: docs/img/sweep-report.png ($(stat -c %s docs/img/sweep-report.png) bytes)"
