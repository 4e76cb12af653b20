#!/bin/sh
# Regenerates the rendered sample of `dr report` in docs/: report-sample.md, report-sample.html (from a crafted
# repository, by the ignored test `write_the_docs_sample` in tests/report.rs, at a fixed time) and
# report-sample.png (the HTML as headless Chromium draws it). Not run by CI.
#
# Needs Chromium (Debian: apt-get install -y chromium) and, to keep the PNG small, optipng if present.
set -eu

cd "$(dirname "$0")/.."
docs="$PWD/docs"

DR_REPORT_SAMPLE_DIR="$docs" cargo test --quiet --test report -- --ignored --exact write_the_docs_sample

chromium=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chromium" ]; then
    echo "chromium not found: install it (apt-get install -y chromium) for docs/report-sample.png" >&2
    exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# A fresh profile and no background traffic: the page itself fetches nothing, and neither should the browser.
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$docs/report-sample.png" --window-size=1100,2860 "file://$docs/report-sample.html" 2>/dev/null
if command -v optipng >/dev/null; then
    optipng -quiet -o2 "$docs/report-sample.png"
fi
ls -l "$docs/report-sample.md" "$docs/report-sample.html" "$docs/report-sample.png"
