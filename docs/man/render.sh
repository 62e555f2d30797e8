#!/usr/bin/env bash
# Renders a man page from docs/ with go-md2man (Debian package go-md2man):
#   render.sh OUT NAME SECTION VERSION PAGE.md [BODY.md]
# PAGE.md is the page's own text; BODY.md, a docs/ page, follows it with its title
# dropped and its headings raised one level (## becomes a section). man has no wide
# tables or links, so table rows become definition lists (a key table's row reads
# "`key` (type; default `x`)" over its meaning) and links become their text.
# The date is SOURCE_DATE_EPOCH's (dpkg sets it from debian/changelog), else today.
set -euo pipefail
out="$1" name="$2" section="$3" version="$4" page="$5" body="${6:-}"
date="$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" '+%B %Y')"
upper="$(tr '[:lower:]' '[:upper:]' <<<"$name")"

markdown() {
  printf '%% %s %s "%s" "pgsidecar %s" "pgsidecar manual"\n\n' "$upper" "$section" "$date" "$version"
  cat "$page"
  [[ -z "$body" ]] || awk 'NR == 1 && /^# / { next } /^##/ { sub(/^#/, "") } { print }' "$body"
}

# Splits a table row on | outside `code` (\| is a literal |); cells are trimmed.
awk_tables='
function split_row(line, cells,    n, i, c, code, cell) {
  n = 0; code = 0; cell = ""
  line = substr(line, 2, length(line) - 2)
  for (i = 1; i <= length(line); i++) {
    c = substr(line, i, 1)
    if (c == "\\" && substr(line, i + 1, 1) == "|") { cell = cell "|"; i++; continue }
    if (c == "`") code = !code
    if (c == "|" && !code) { cells[++n] = cell; cell = ""; continue }
    cell = cell c
  }
  cells[++n] = cell
  for (i = 1; i <= n; i++) gsub(/^ +| +$/, "", cells[i])
  return n
}
function emit(cells, n,    i, def) {
  if (n >= 4 && head[2] == "Type" && head[3] == "Default") {
    print cells[1] " (" cells[2] "; default " cells[3] ")"
    print ": " cells[4]
  } else {
    print cells[1]
    def = ""
    for (i = 2; i <= n; i++) def = def (def == "" ? "" : "; ") (n > 2 ? head[i] ": " : "") cells[i]
    print ": " (def == "" ? "-" : def)
  }
  print ""
}
/^\|/ {
  if (!intable) { intable = 1; nhead = split_row($0, head); next }
  if ($0 ~ /^\|[- :|]+\|$/) next
  n = split_row($0, cells); emit(cells, n); next
}
{ intable = 0; print }
'

markdown | awk "$awk_tables" | sed -E 's/\[([^]]*)\]\([^)]*\)/\1/g' | go-md2man -out "$out"
