#!/bin/sh
# check-chapter-readmes.sh CHAPTER_DIR...   (the chapter folders, in order)
#
# Checks what a reader finds around each chapter's text, so that it stays true as the
# chapters change and are renumbered:
#   - a "## Before you start" section, with "What you need" and a reading map;
#   - a "## Build it yourself" section naming `make learn CHAPTER=N` and learn/NN-name;
#   - as many numbered items under "## What the tests prove" as test.cpp has TEST_CASEs;
#   - under "## Exercises", a collapsed hint and worked answer for every exercise;
#   - every link to a section (#anchor) names a heading of the README;
#   - the last line links the previous and the next chapter's folders, as they are now.
# Prints each failure, then "chapter-readmes: P passed, F failed" (six checks a chapter).
passed=0 failed=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "$1"; }
n=0 previous=""
for dir in "$@"; do
  n=$((n + 1))
  dir=${dir%/}
  name=$(basename "$dir")
  readme=$dir/README.md
  if [ ! -f "$readme" ] || [ ! -f "$dir/test.cpp" ]; then
    fail "$dir: no README.md or test.cpp"; continue
  fi
  if grep -q '^## Before you start$' "$readme" && grep -q '^\*\*What you need\.\*\*' "$readme" &&
     grep -q '^\*\*Reading map\.\*\*' "$readme"; then pass; else
    fail "$readme: no '## Before you start' with '**What you need.**' and '**Reading map.**'"; fi
  if grep -q '^## Build it yourself$' "$readme" && grep -q "^make learn CHAPTER=$n\$" "$readme" &&
     grep -q "learn/$name" "$readme"; then pass; else
    fail "$readme: '## Build it yourself' must show 'make learn CHAPTER=$n' and learn/$name"; fi
  tests=$(grep -c 'TEST_CASE(' "$dir/test.cpp")
  listed=$(awk '/^## What the tests prove/ { on = 1; next } /^## / { on = 0 }
                on && /^[0-9]+\. / { n++ } END { print n + 0 }' "$readme")
  if [ "$tests" -eq "$listed" ]; then pass; else
    fail "$readme: 'What the tests prove' lists $listed tests; test.cpp has $tests TEST_CASEs"; fi
  exercises=$(awk '/^## Exercises/ { on = 1; next } /^## |^---$/ { on = 0 }
                   on && /^[0-9]+\. / { n++ } END { print n + 0 }' "$readme")
  hints=$(awk '/^## Exercises/ { on = 1; next } /^## |^---$/ { on = 0 }
               on && /<summary>Hint<\/summary>/ { n++ } END { print n + 0 }' "$readme")
  answers=$(awk '/^## Exercises/ { on = 1; next } /^## |^---$/ { on = 0 }
                 on && /<summary>A worked answer<\/summary>/ { n++ } END { print n + 0 }' "$readme")
  if [ "$exercises" -eq "$hints" ] && [ "$exercises" -eq "$answers" ]; then pass; else
    fail "$readme: $exercises exercises, $hints hints and $answers worked answers (one each, collapsed)"; fi
  # GitHub's anchors: the heading in lower case, punctuation dropped, spaces as hyphens.
  missing=$(awk '
    /^```/ { fence = !fence; next }
    fence { next }
    /^#+ / { h = $0; sub(/^#+ /, "", h); h = tolower(h); gsub(/[^a-z0-9 _-]/, "", h);
             gsub(/ /, "-", h); anchors[h] = 1 }
    { line = $0
      while (match(line, /\]\(#[^)]*\)/)) {
        links[substr(line, RSTART + 3, RLENGTH - 4)] = 1; line = substr(line, RSTART + RLENGTH) } }
    END { for (l in links) if (!(l in anchors)) print l }' "$readme")
  if [ -z "$missing" ]; then pass; else
    fail "$readme: links to sections it does not have: $(echo $missing)"; fi
  next=$(echo "$@" | tr ' ' '\n' | sed -n "$((n + 1))p")
  last=$(grep -v '^[[:space:]]*$' "$readme" | tail -n 1)
  ok=1
  if [ -n "$previous" ]; then
    echo "$last" | grep -q "(\.\./$(basename "$previous")/README\.md)" || ok=0
  fi
  if [ -n "$next" ]; then
    echo "$last" | grep -q "(\.\./$(basename "${next%/}")/README\.md)" || ok=0
  fi
  n_links=$(echo "$last" | grep -o '(\.\./[0-9][0-9]-[^/]*/README\.md)' | wc -l)
  expected=$(( (${previous:+1}+0) + (${next:+1}+0) ))
  [ "$n_links" -eq "$expected" ] || ok=0
  if [ "$ok" -eq 1 ]; then pass; else
    fail "$readme: the last line must link ${previous:+the previous chapter ($(basename "$previous")) }${next:+and the next ($(basename "${next%/}"))}: $last"; fi
  previous=$dir
done
echo "chapter-readmes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
