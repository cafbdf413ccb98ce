#!/usr/bin/env bash
# The README's results table: every number links to its row in docs/RESULTS.md (an anchor
# <a id="..."></a> that exists there). Usage: test_readme_links.sh SOURCE_DIR
set -euo pipefail
root=$1
readme=$root/README.md results=$root/docs/RESULTS.md
# The rows of the first table after the "## Results" heading, without its header.
table=$(awk '/^## Results/{on=1; next} on && /^\|/{print; seen=1; next} on && seen{exit}' "$readme" | tail -n +3)
[ -n "$table" ] || { echo "FAIL: no results table in README.md"; exit 1; }
fail=0
while IFS= read -r row; do
  cell=${row%|}
  cell=${cell##*|}
  # Numbers left once the links are taken out are numbers without a link.
  bare=$(sed -E 's/\[[^]]*\]\([^)]*\)//g' <<<"$cell" | grep -oE '[0-9]+(\.[0-9]+)?' || true)
  if [ -n "$bare" ]; then
    echo "FAIL: unlinked number(s) $(tr '\n' ' ' <<<"$bare")in: $row"
    fail=1
  fi
  for target in $(grep -oE '\]\([^)]*\)' <<<"$cell" | sed -E 's/^\]\(//; s/\)$//'); do
    case $target in
      docs/RESULTS.md#*) id=${target#docs/RESULTS.md#} ;;
      *) echo "FAIL: $target is not a row of docs/RESULTS.md"; fail=1; continue ;;
    esac
    grep -q "<a id=\"$id\"></a>" "$results" || { echo "FAIL: docs/RESULTS.md has no anchor '$id'"; fail=1; }
  done
done <<<"$table"
[ $fail = 0 ] && echo "every number of the README's results table links to an anchor in docs/RESULTS.md"
exit $fail
