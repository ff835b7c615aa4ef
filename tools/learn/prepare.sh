#!/bin/sh
# prepare.sh N DIR [HEADER]   (run from the top of the repository; `make learn` runs it)
#
# Makes DIR a place to write chapter N: chapter 1 to N's tests (chapters/NN-name/test.cpp),
# the test helpers and doctest main they need (tests/), the Makefile whose `make check`
# runs them (tools/learn/Makefile), a README, and keystonelight.hpp, the learner's: chapter
# N-1's snapshot without its GENERATED banner (tools/learn/start.hpp for chapter 1). A
# keystonelight.hpp already in DIR is the learner's work and is kept; with HEADER, DIR's
# is a copy of HEADER instead (make test passes each chapter's own snapshot), and with
# HEADER "-" the starting header, whatever was there (make test's "before" check). Every file
# is written only when its contents change, so a second run rebuilds nothing.
n=$1 dir=$2 header=$3
case $n in ''|*[!0-9]*) echo "make learn: CHAPTER must be a chapter's number, as in make learn CHAPTER=3" >&2; exit 2;; esac
chapters=$(ls -d chapters/[0-9][0-9]-*/ | sed 's|^chapters/||; s|/$||' | sort)
count=$(echo "$chapters" | wc -l)
if [ "$n" -lt 1 ] || [ "$n" -gt "$count" ]; then
  echo "make learn: there is no chapter $n; the chapters are 1 to $count" >&2; exit 2
fi
name=$(echo "$chapters" | sed -n "${n}p")
previous=$([ "$n" -gt 1 ] && echo "$chapters" | sed -n "$((n - 1))p")
dir=${dir:-learn/$name}

# put SOURCE TARGET: copy when different, keeping an unchanged file's time.
put() {
  mkdir -p "$(dirname "$2")" || exit 1
  cmp -s "$1" "$2" || cp "$1" "$2" || exit 1
}
for c in $(echo "$chapters" | sed -n "1,${n}p"); do
  put "chapters/$c/test.cpp" "$dir/chapters/$c/test.cpp"
done
for f in tests/doctest_main.cpp tests/second_tu.cpp tests/support/*.hpp tools/learn/Makefile; do
  case $f in tools/learn/Makefile) put "$f" "$dir/Makefile";; *) put "$f" "$dir/$f";; esac
done
# A chapter folder left from a copy of a later chapter would be tested too: drop it.
for old in "$dir"/chapters/*/; do
  [ -d "$old" ] || continue
  echo "$chapters" | sed -n "1,${n}p" | grep -qx "$(basename "$old")" || rm -rf "$old"
done

tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<TEXT
# Writing chapter $n yourself

\`keystonelight.hpp\` here is yours: $(if [ "$n" -eq 1 ]; then echo "an empty namespace to start from"; else echo "the engine as chapter $((n - 1)) left it"; fi).
Chapter $n's text, [chapters/$name/README.md](../../chapters/$name/README.md), says what
to add; its section "Build it yourself" lists the declarations the tests use.

    make check                 # every test of chapters 1 to $n against your header
    make check ONLY=$name   # chapter $n's tests alone

Each chapter's tests are reported on one line ("chapter $n: 12 of 21 test cases pass"),
with the first compiler errors of a chapter that does not compile yet. Chapter $n is done
when every line passes. Stuck? \`diff keystonelight.hpp ../../chapters/$name/keystonelight.hpp\`
shows what the book's version has that yours has not.
TEXT
put "$tmp" "$dir/README.md"

# The learner's starting header, in $tmp.
if [ "$n" -eq 1 ]; then
  cp tools/learn/start.hpp "$tmp" || exit 1
else
  sed '1{/^\/\/ GENERATED/d}; 2{/^\/\/ Do not edit/d}' "chapters/$previous/keystonelight.hpp" > "$tmp" || exit 1
fi
if [ "$header" = "-" ]; then
  put "$tmp" "$dir/keystonelight.hpp"  # the start, even over a header already there
elif [ -n "$header" ]; then
  put "$header" "$dir/keystonelight.hpp"
elif [ -f "$dir/keystonelight.hpp" ]; then
  echo "make learn: kept your $dir/keystonelight.hpp (remove it to start chapter $n again)"
else
  put "$tmp" "$dir/keystonelight.hpp"
fi
[ -n "$header" ] || echo "make learn: chapter $n is ready in $dir; cd there, then make check"
