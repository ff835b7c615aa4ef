#!/bin/sh
# check-example.sh PROGRAM INPUT EXPECTED
#
# Runs PROGRAM in an empty temporary directory with INPUT on standard input and compares
# its standard output with EXPECTED, so an example whose output is deterministic cannot
# rot unnoticed. Whatever the example writes to disk is removed afterwards.
here=$(pwd)
abs() { case $1 in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
program=$(abs "$1") input=$(abs "$2") expected=$(abs "$3")
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
if (cd "$work" && "$program" < "$input" > "$work/actual") &&
   diff -u "$expected" "$work/actual"; then
  echo "example: 1 passed, 0 failed"
else
  echo "$1 does not print $3 any more (diff above); if the change is intended,"
  echo "regenerate it: (cd \$(mktemp -d) && $program < $input) > $3"
  echo "example: 0 passed, 1 failed"
  exit 1
fi
