#!/bin/sh
# `make install PREFIX=...` puts the header, without chapter markers, under PREFIX/include;
# a program compiles against the installed copy alone; `make uninstall` removes exactly it.
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() {
  if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
make -s install PREFIX="$work/prefix" >/dev/null
installed="$work/prefix/include/keystonelight.hpp"
check "the header is installed under PREFIX/include, and is what make builds" \
  'cmp -s build/include/keystonelight.hpp "$installed"'
check "install put that one file and nothing else" \
  '[ "$(cd "$work/prefix" && find . -type f)" = "./include/keystonelight.hpp" ]'
check "the installed header has no chapter marker line" \
  '! grep -nE "^[[:space:]]*(#if 0 |#endif )?//[<>] chapter" "$installed"'
check "the installed header says it is generated and where its source is" \
  'head -n 2 "$installed" | grep -q GENERATED &&
   head -n 2 "$installed" | grep -q "keystonelight.hpp in the Keystonelight"'
cat > "$work/use.cpp" <<'PROGRAM'
#include <keystonelight.hpp>

#include <iostream>
#include <memory>

int main() {
  keystonelight::Store memory;
  if (!memory.set("greeting", "hello").ok()) return 1;
  std::cout << memory.get("greeting").value_or("(nil)") << "\n";
  keystonelight::Options options;
  options.dir = "data";
  std::unique_ptr<keystonelight::Store> disk;
  if (!keystonelight::Store::open(options, &disk).ok()) return 1;
  return disk->set("k", "v").ok() && disk->get("k") == "v" ? 0 : 1;
}
PROGRAM
check "a program compiles against the installed header alone and runs" \
  '${CXX:-g++} -std=c++17 -Wall -Wextra -Werror -pthread -I"$work/prefix/include" \
       "$work/use.cpp" -o "$work/use" && (cd "$work" && ./use) | grep -qx hello'
make -s install PREFIX=/usr DESTDIR="$work/stage" >/dev/null
check "DESTDIR stages the install below it" '[ -f "$work/stage/usr/include/keystonelight.hpp" ]'
make -s uninstall PREFIX="$work/prefix" >/dev/null
check "uninstall removes the header" '[ ! -e "$installed" ]'
check "uninstall leaves the folder, which other headers may share" '[ -d "$work/prefix/include" ]'
echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
