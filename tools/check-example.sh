#!/bin/sh
# check-example.sh PROGRAM INPUT EXPECTED
#
# Runs PROGRAM with INPUT on standard input and compares what it prints with EXPECTED, so
# an example whose output is deterministic cannot rot unnoticed.
program=$1 input=$2 expected=$3
actual=$(mktemp) || exit 1
trap 'rm -f "$actual"' EXIT
if "$program" < "$input" > "$actual" 2>&1 && diff -u "$expected" "$actual"; then
  echo "example: 1 passed, 0 failed"
else
  echo "$program does not print $expected any more (diff above); if the change is"
  echo "intended, regenerate it: $program < $input > $expected"
  echo "example: 0 passed, 1 failed"
  exit 1
fi
