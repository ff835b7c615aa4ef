#!/bin/sh
# Replays inputs that once took far too long through a fuzz target, and fails when one
# still takes more than LIMIT_MS milliseconds (libFuzzer's own -timeout counts in whole
# seconds, and checks only about once a second).
#
#   sh tests/fuzz/replay-slow.sh build/fuzz/recovery_fuzz 500 tests/fuzz/slow/slow-*
if [ $# -lt 3 ]; then
  echo "usage: $0 TARGET LIMIT_MS INPUT..." >&2
  exit 2
fi
target=$1 limit=$2
shift 2
status=0
for input in "$@"; do
  out=$("$target" "$input" 2>&1)
  code=$?
  ms=$(printf '%s\n' "$out" | sed -n 's/^Executed .* in \([0-9]*\) ms$/\1/p')
  if [ $code -ne 0 ] || [ -z "$ms" ]; then
    printf '%s\n' "$out"
    echo "slow input $input failed in $target; replay it with: $target $input"
    status=1
  elif [ "$ms" -gt "$limit" ]; then
    echo "slow input $input took $ms ms in $target, more than $limit ms; replay it with: $target $input"
    status=1
  else
    echo "slow input $input: $ms ms in $target (limit $limit ms)"
  fi
done
exit $status
