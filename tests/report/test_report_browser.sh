#!/usr/bin/env bash
# `apot report` as a person sees it: a short training run, its report opened in headless Chromium
# (Debian's chromium-headless-shell, or chromium), which must load it without a script, resource
# or console error and draw data in every plot; a screenshot is kept in the build tree.
# Exits 77 (skipped) when no Chromium is installed.
set -u
apot="$1"
shots="$2"
browser=$(command -v chromium-headless-shell || command -v chromium || true)
if [ -z "$browser" ]; then
  echo "SKIP: no chromium-headless-shell or chromium (scripts/setup.sh installs chromium-headless-shell)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
recipe="$(dirname "$0")/../../recipes/fashion-mnist-resnet20-w4a4.toml"
"$apot" train "$recipe" --out "$tmp/run" --set optim.epochs=2 --set run.max_steps_per_epoch=3 --set data.workers=1 \
  >"$tmp/train.log" 2>&1 || { cat "$tmp/train.log"; echo "FAIL: training"; exit 1; }
"$apot" report "$tmp/run" --out "$tmp/report.html" --images 64 || { echo "FAIL: apot report"; exit 1; }

# The page with the check script first in <head>.
{
  sed -n '1,/<head>/p' "$tmp/report.html" | sed 's/<head>.*//'
  printf '<head><script>\n'
  cat "$(dirname "$0")/browser_check.js"
  printf '</script>'
  sed -n '/<head>/,$p' "$tmp/report.html" | sed 's/.*<head>//'
} >"$tmp/checked.html"
flags=(--headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars --allow-file-access-from-files)
timeout 120 "$browser" "${flags[@]}" --virtual-time-budget=30000 --dump-dom "file://$tmp/checked.html" \
  >"$tmp/dom.html" 2>"$tmp/browser.log"
verdict=$(grep -o 'plots=[0-9]* blank=.* errors=.*</pre>' "$tmp/dom.html" | sed 's#</pre>##')
echo "chromium: $("$browser" --version 2>/dev/null | head -1); $verdict"
fail=0
[ -n "$verdict" ] || { echo "FAIL: the check script gave no verdict"; tail -20 "$tmp/browser.log"; exit 1; }
plots=$(sed 's/plots=\([0-9]*\).*/\1/' <<<"$verdict")
want=$(grep -o '<figure class="plot"' "$tmp/report.html" | wc -l)
[ "$plots" -eq "$want" ] && [ "$plots" -ge 10 ] || { echo "FAIL: $plots plots seen, $want in the page"; fail=1; }
grep -q 'blank=\[\]' <<<"$verdict" || { echo "FAIL: plots without data"; fail=1; }
grep -q 'errors=\[\]' <<<"$verdict" || { echo "FAIL: errors while loading"; fail=1; }
if grep -q 'Uncaught\|CONSOLE.*[Ee]rror' "$tmp/browser.log"; then
  echo "FAIL: console errors:"; grep 'Uncaught\|CONSOLE' "$tmp/browser.log"; fail=1
fi
mkdir -p "$shots"
timeout 120 "$browser" "${flags[@]}" --window-size=1280,2400 --screenshot="$shots/report.png" \
  "file://$tmp/report.html" >/dev/null 2>&1 || { echo "FAIL: screenshot"; fail=1; }
[ -s "$shots/report.png" ] || { echo "FAIL: no screenshot"; fail=1; }
exit $fail
