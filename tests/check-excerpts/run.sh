#!/bin/sh
# tests/check-excerpts/run.sh CHECKER: the excerpt check must catch what goes stale. In a
# scratch copy of chapter 13 it passes as the chapter is, and fails, naming the README
# line, once an excerpt no longer matches the code: one line edited, pieces out of order,
# a diff line changed, an unknown fence. It lets through what is meant to differ: a block
# marked ```cpp illustration, hunk headers whose numbers moved, indentation.
checker=${1:-build/check-excerpts}
suite=check-excerpts
. "$(dirname "$0")/../support/script.sh"
[ -x "$checker" ] || give_up "error: $checker is missing; run make test"

work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
chapter=chapters/13-strings-and-bits
fresh() {
  rm -rf "$work/ch" && mkdir "$work/ch" &&
    cp "$chapter/README.md" "$chapter/keystonelight.hpp" "$chapter/example.cpp" \
       "$chapter/test.cpp" "$chapter/CHANGES.diff" "$work/ch/"
}
check() { out=$("$checker" "$work/ch" 2>&1); code=$?; }
# add TEXT: appends a section holding TEXT to the README.
add() { printf '\n%s\n' "$1" >> "$work/ch/README.md"; }

fresh; check
expect "the chapter as committed passes" 0 "0 failed"

# The first line of the first cpp block, edited.
fresh
line=$(awk '/^```cpp$/ { getline; print NR; exit }' "$work/ch/README.md")
sed -i "${line}s/\$/ \/\/ edited/" "$work/ch/README.md"
check
expect "an excerpt with one line edited fails, naming its README line" 1 \
  "README.md:$((line - 1)): stale cpp excerpt" "1 failed"

# Two real lines (extend comes first in the header), in the wrong order around an elision.
fresh
add '```cpp
inline Status Store::append(std::string_view key, std::string_view suffix, std::size_t* length) {
...
inline Status Store::extend(Map::iterator it, std::string_view key, std::string_view suffix) {
```'
check
expect "pieces of a block out of the code's order fail" 1 "1 failed"

fresh
add '```cpp
inline Status Store::extend(Map::iterator it, std::string_view key, std::string_view suffix) {
// ...
inline Status Store::append(std::string_view key, std::string_view suffix, std::size_t* length) {
```'
check
expect "pieces in the code's order, an elision between them, pass" 0 "0 failed"

fresh
add '```cpp illustration
int this_is_not_in_any_file() { return 42; }
```'
check
expect "a block marked illustration is not checked" 0 "0 failed"

fresh
add '```cpp illustrative
int this_is_not_in_any_file() { return 42; }
```'
check
expect "an unknown fence fails and says what to write" 1 "unknown fence" "cpp illustration"

# A diff block: a hunk header as CHANGES.diff has it, then with other numbers.
fresh
hunk=$(grep -n '^@@' "$work/ch/CHANGES.diff" | sed -n 2p | cut -d: -f1)
body=$(sed -n "$((hunk + 1)),$((hunk + 4))p" "$work/ch/CHANGES.diff")
add "$(printf '```diff\n@@ -1,1 +999,999 @@\n%s\n```' "$body")"
check
expect "a diff block passes with its hunk header's numbers changed" 0 "0 failed"
fresh
add "$(printf '```diff\n%s\n+  an added line that is in no diff\n```' "$body")"
check
expect "a diff block with a line that is not in CHANGES.diff fails" 1 "stale diff excerpt"

fresh
sed -i 's/^\(inline Status Store::extend(Map::iterator it\)/    \1/' "$work/ch/keystonelight.hpp"
check
expect "indentation is not compared" 0 "0 failed"

out=$("$checker" "$work/nowhere" 2>&1); code=$?
expect "a folder without a README is a usage error" 2 "cannot read"

summary
