#!/bin/sh
# `make install PREFIX=...` puts the header under PREFIX/include, a program compiles against
# the installed copy alone, and `make uninstall` removes it again.
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() {
  if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
make -s install PREFIX="$work/prefix" >/dev/null
check "the header is installed under PREFIX/include" \
  'cmp -s keystonelight.hpp "$work/prefix/include/keystonelight.hpp"'
printf '#include <keystonelight.hpp>\nint main() { keystonelight::Store s; return s.set("k", "v").ok() ? 0 : 1; }\n' \
  > "$work/use.cpp"
check "a program compiles against the installed header and runs" \
  '${CXX:-g++} -std=c++17 -I"$work/prefix/include" "$work/use.cpp" -o "$work/use" && "$work/use"'
make -s install PREFIX=/usr DESTDIR="$work/stage" >/dev/null
check "DESTDIR stages the install below it" '[ -f "$work/stage/usr/include/keystonelight.hpp" ]'
make -s uninstall PREFIX="$work/prefix" >/dev/null
check "uninstall removes the header" '[ ! -e "$work/prefix/include/keystonelight.hpp" ]'
echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
