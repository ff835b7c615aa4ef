# The counting helpers of the scripts in tests/programs, sourced, not run:
#
#   suite=check-tool
#   . "$(dirname "$0")/../support/script.sh"
#
# A script calls ok, not_ok, holds, has and expect as it checks, and ends with `summary`,
# whose closing line "SUITE: P passed, F failed" CI reads. Settings a script may change:
#   expect_where  how expect names the output it searched ("in the output")
#   show_lines    how many of the last lines of $out a failure shows (all when empty)
passed=0 failed=0
out=
expect_where='in the output'
show_lines=

ok() { passed=$((passed + 1)); }

# not_ok NAME: counts a failure and shows $out, the output of the last run, indented.
not_ok() {
  failed=$((failed + 1))
  echo "FAILED: $1"
  [ -n "$out" ] || return 0
  if [ -n "$show_lines" ]; then
    printf '%s\n' "$out" | tail -n "$show_lines" | sed 's/^/    | /'
  else
    printf '%s\n' "$out" | sed 's/^/    | /'
  fi
}

# holds NAME TEST...: counts whether the test command, such as [ ... ], succeeds.
holds() { name=$1; shift; if "$@"; then ok; else out=''; not_ok "$name"; fi; }

# has NAME FILE PATTERN: counts whether FILE holds the fixed string PATTERN.
has() {
  if grep -qF -- "$3" "$2"; then ok; else out=$(cat "$2"); not_ok "$1 (no '$3')"; fi
}

# expect NAME STATUS PATTERN...: the last run exited with STATUS ($code) and its output
# ($out) holds every PATTERN, each a fixed string.
expect() {
  name=$1 want=$2
  shift 2
  if [ "$code" -ne "$want" ]; then not_ok "$name (exit $code, expected $want)"; return; fi
  for pattern in "$@"; do
    if ! printf '%s\n' "$out" | grep -qF -- "$pattern"; then
      not_ok "$name (no '$pattern' $expect_where)"
      return
    fi
  done
  ok
}

# Sleeps a tenth of a second where sleep takes fractions, a second elsewhere.
nap() { sleep 0.1 2>/dev/null || sleep 1; }

# give_up MESSAGE: the script cannot go on (a program missing, a helper that does not
# compile): says why, closes with one failure, and exits.
give_up() {
  echo "$1"
  echo "$suite: 0 passed, 1 failed"
  exit 1
}

# summary: the closing line; its status is the script's verdict.
summary() {
  echo "$suite: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
