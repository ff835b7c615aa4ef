#!/bin/sh
# tests/check-chapter-readmes/run.sh: tools/check-chapter-readmes.sh must catch what goes
# stale. On a scratch copy of the chapters it passes as they are, and fails, naming
# the README, once a test is added without its line, a section link loses its heading,
# a chapter is renumbered under the links, "Build it yourself" names the wrong chapter, or
# an exercise loses its hint.
suite=check-chapter-readmes
. "$(dirname "$0")/../support/script.sh"
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
fresh() {
  rm -rf "$work/chapters" && mkdir -p "$work/chapters" &&
    for d in chapters/[0-9][0-9]-*/; do
      c=$(basename "$d")
      mkdir "$work/chapters/$c" && cp "$d/README.md" "$d/test.cpp" "$work/chapters/$c/"
    done
}
check() { out=$(sh tools/check-chapter-readmes.sh "$work"/chapters/*/ 2>&1); code=$?; }

fresh; check
expect "the chapters as committed pass" 0 "0 failed"

fresh; printf 'TEST_CASE("one more") {}\n' >> "$work/chapters/02-append-only-log/test.cpp"; check
expect "a test without its line in the README fails" 1 "02-append-only-log/README.md: 'What the tests prove' lists 15 tests; test.cpp has 16"

fresh; sed -i 's/^## The `LogReader`$/## The reader/' "$work/chapters/02-append-only-log/README.md"; check
expect "a link to a heading that is gone fails" 1 "links to sections it does not have: the-logreader"

fresh; mv "$work/chapters/02-append-only-log" "$work/chapters/02-the-log"; check
expect "a renumbered or renamed neighbour breaks the links, in both neighbours" 1 \
  "01-in-memory-map/README.md: the last line must link" "03-crash-recovery/README.md: the last line must link"

fresh; sed -i 's/^make learn CHAPTER=3$/make learn CHAPTER=4/' "$work/chapters/03-crash-recovery/README.md"; check
expect "Build it yourself naming another chapter fails" 1 "must show 'make learn CHAPTER=3'"
fresh; sed -i '0,/<summary>Hint<\/summary>/{/<summary>Hint<\/summary>/d}' "$work/chapters/04-compaction/README.md"; check
expect "an exercise without its hint fails" 1 "04-compaction/README.md: 5 exercises, 4 hints and 5 worked answers"
summary
