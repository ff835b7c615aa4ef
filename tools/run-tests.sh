#!/bin/sh
# run-tests.sh LABEL COMMAND [LABEL COMMAND]...
#
# Runs each test command, shows its output, and reads its closing count: doctest's
# "[doctest] test cases: N | P passed | F failed" or our scripts' "name: P passed, F failed".
# A command that exits non-zero without counting a failure counts as one failed test.
# Says how long each command took ("== LABEL took N s": where CI's time goes). Ends with
# one line, "LABEL: P passed, F failed", and exits non-zero if anything failed.
total_label=$1
shift
passed=0 failed=0
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
while [ $# -ge 2 ]; do
  label=$1 command=$2
  shift 2
  echo "== $label"
  started=$(date +%s)
  sh -c "$command" > "$out" 2>&1
  status=$?
  cat "$out"
  echo "== $label took $(( $(date +%s) - started )) s"
  counts=$(sed -n \
    -e 's/^\[doctest\] test cases: *[0-9]* *| *\([0-9]*\) passed *| *\([0-9]*\) failed.*/\1 \2/p' \
    -e 's/^[A-Za-z0-9_ -]*: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
  p=${counts% *} f=${counts#* }
  [ -n "$counts" ] || { p=0 f=0; }
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "error: '$command' exited with status $status"
    f=1
  fi
  passed=$((passed + p)) failed=$((failed + f))
done
echo "$total_label: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
