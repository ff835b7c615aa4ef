#!/bin/sh
# check-before.sh DIR NAME [MAKE ARGUMENTS...]
#
# A learner who has written nothing must not pass: in DIR, which `make learn` prepared
# with the starting header (chapter N-1's), chapter NAME's own tests must fail to
# compile, fail to link, or fail. Only that chapter's test.cpp is built, so the check
# costs one compile. It passes when `make check ONLY=NAME` fails for that reason, and
# fails when it passes (tests that the previous chapter already satisfies prove nothing)
# or fails for another (a Makefile that does not run, say).
dir=$1 name=$2
shift 2
n=$(echo "$name" | sed 's/^0*\([0-9]*\)-.*/\1/')
out=$(make -s --no-print-directory -C "$dir" check ONLY="$name" "$@" 2>&1)
status=$?
echo "$out" | grep -A 1 "^chapter $n: "
if [ "$status" -ne 0 ] && echo "$out" | grep -q "^not yet: chapter *$n to go" &&
   echo "$out" | grep -Eq "^chapter $n: (its tests do not compile yet|its tests compile but do not link|[0-9]+ of [0-9]+ test cases pass)"; then
  echo "before $name: 1 passed, 0 failed"
else
  echo "$out" | tail -n 40
  echo "error: chapter $n's tests should fail against the header chapter $((n - 1)) left (exit status $status)"
  echo "before $name: 0 passed, 1 failed"
  exit 1
fi
