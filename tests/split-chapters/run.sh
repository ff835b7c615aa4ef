#!/bin/sh
# Tests for tools/split-chapters: a header with every kind of marker must give the expected
# snapshots, and every malformed header must be refused with its line named.
#   usage: tests/split-chapters/run.sh PATH/TO/split-chapters
splitter=$1
here=$(dirname "$0")
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAILED: $1"; }

# Good input: each chapter's snapshot matches its expected file exactly.
for chapter in 1 2 3; do
  if "$splitter" "$here/input.hpp" "$chapter" 3 > "$work/out" &&
     cmp -s "$work/out" "$here/expected-$chapter.hpp"; then
    pass
  else
    fail "chapter $chapter snapshot differs from expected-$chapter.hpp"
    diff -u "$here/expected-$chapter.hpp" "$work/out"
  fi
done

# Bad input: refused with exit 1, nothing on stdout, and stderr names FILE:LINE and the cause.
# Each case is: a description, the expected stderr fragment, then the header text.
refuse() {
  printf '%s\n' "$3" > "$work/bad.hpp"
  if "$splitter" "$work/bad.hpp" 1 3 > "$work/out" 2> "$work/err"; then
    fail "$1: accepted"
  elif [ -s "$work/out" ]; then
    fail "$1: wrote a snapshot anyway"
  elif ! grep -qF -- "$2" "$work/err"; then
    fail "$1: message lacks '$2': $(cat "$work/err")"
  else
    pass
  fi
}

refuse "never closed" "bad.hpp:2: chapter 2 is never closed" \
'int a;
//> chapter 2
int b;'
refuse "closed but never opened" "bad.hpp:2: \"//< chapter 2\" closes a block that was never opened" \
'int a;
//< chapter 2'
refuse "mismatched close" "bad.hpp:3: \"//< chapter 2\" does not match the innermost open block, chapter 3 opened at line 2" \
'//> chapter 2
//> chapter 3
//< chapter 2
//< chapter 3'
refuse "unknown chapter" "bad.hpp:1: unknown chapter 10: chapters are 1 to 3" \
'//> chapter 10
//< chapter 10'
refuse "chapter zero" "bad.hpp:1: unknown chapter 0" \
'//> chapter 0
//< chapter 0'
refuse "misspelt marker" 'bad.hpp:2: unknown marker: "//> chaptre 2"' \
'int a;
//> chaptre 2
//< chapter 2'
refuse "marker after code" "bad.hpp:1: unknown marker" \
'int a; //> chapter 2'
refuse "range without #if 0" "bad.hpp:1: unknown marker" \
'//> chapters 1-2
//< chapters 1-2'
refuse "replaced block reaching the last chapter" "bad.hpp:1: code fenced as chapters 1-3 would be compiled out of the final header" \
'#if 0 //> chapters 1-3
#endif //< chapters 1-3'
refuse "empty range" "bad.hpp:1: chapters 2-1 is an empty range" \
'#if 0 //> chapters 2-1
#endif //< chapters 2-1'
refuse "replaced block closed by a plain marker" "bad.hpp:2: \"//< chapter 1\" does not match" \
'#if 0 //> chapters 1-2
//< chapter 1'
refuse "inner block older than outer" "bad.hpp:2: chapter 2 inside chapter 3 (opened at line 1) could never appear before chapter 3" \
'//> chapter 3
//> chapter 2
//< chapter 2
//< chapter 3'
refuse "inner block after outer ends" "bad.hpp:2: chapter 3 inside chapters 1-2 (opened at line 1) would never appear" \
'#if 0 //> chapters 1-2
//> chapter 3
//< chapter 3
#endif //< chapters 1-2'

# --installed: the final stage under the installed header's banner, no marker left.
if "$splitter" "$here/input.hpp" 3 3 --installed > "$work/out" &&
   [ "$(sed 1,2d "$work/out")" = "$(sed 1,2d "$here/expected-3.hpp")" ] &&
   head -n 2 "$work/out" | grep -q 'make install' && ! grep -q '//[<>]' "$work/out"; then
  pass
else
  fail "--installed is not the final stage under the installed banner"
fi
if "$splitter" "$here/input.hpp" 2 3 --installed > /dev/null 2>&1; then fail "--installed below LAST accepted"
else [ $? -eq 2 ] && pass || fail "--installed below LAST: exit code is not 2"; fi

# Bad arguments: usage and exit 2.
if "$splitter" "$here/input.hpp" 4 3 > /dev/null 2>&1; then fail "chapter beyond LAST accepted"
else [ $? -eq 2 ] && pass || fail "chapter beyond LAST: exit code is not 2"; fi

echo "split-chapters: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
