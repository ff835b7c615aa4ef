#!/bin/sh
# check-readme.sh [CXX]
#
# Every ```cpp block in README.md is a whole program: compile it against keystonelight.hpp
# with the test warnings, run it in an empty temporary directory (whatever it writes goes
# with it), and count it. A snippet that stops compiling or exits non-zero fails the build.
cxx=${1:-g++}
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
awk -v dir="$work" '
  /^```cpp$/ { n++; file = sprintf("%s/snippet%d.cpp", dir, n); inside = 1; next }
  /^```$/    { inside = 0; next }
  inside     { print > file }
' README.md
passed=0 failed=0
for snippet in "$work"/snippet*.cpp; do
  [ -e "$snippet" ] || break
  name=$(basename "$snippet" .cpp)
  mkdir "$work/$name.cwd"
  if "$cxx" -std=c++17 -pthread -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror -I. \
       "$snippet" -o "$work/$name" && (cd "$work/$name.cwd" && "$work/$name" > ../$name.out); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: README.md's code block number ${name#snippet} does not compile or run:"
    cat "$snippet"
  fi
done
[ "$passed" -gt 0 ] || { echo "FAILED: README.md has no \`\`\`cpp block"; failed=$((failed + 1)); }
echo "README: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
