#!/bin/sh
# Regenerates the rendered sample of `dr report` in docs/: report-sample.md, report-sample.html (from a crafted
# repository, by the snapshot test `the_docs_sample_is_what_the_report_renders` in tests/it/report.rs, at a
# fixed time, with DR_UPDATE_SNAPSHOTS=1) and report-sample.png (the HTML as headless Chromium draws it). The
# test fails when the .md or .html drifts from the report; the PNG is not compared (run this script after a
# change to the HTML).
#
# Needs Chromium (Debian: apt-get install -y chromium) and, to keep the PNG small, optipng if present.
set -eu

cd "$(dirname "$0")/.."
docs="$PWD/docs"

DR_UPDATE_SNAPSHOTS=1 cargo test --quiet --test it -- --exact report::the_docs_sample_is_what_the_report_renders

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
