#!/bin/sh
# `make check-chapters` must notice a stale snapshot: in a scratch copy of the repository,
# (the working tree as it is) it passes as committed, fails once keystonelight.hpp changes without `make chapters`
# being committed, and names the stale file.
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() {
  if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - 2>/dev/null | (cd "$work" && tar xf -) || exit 1
cd "$work" || exit 1
{ git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm base; } || exit 1
check "a fresh copy passes" 'make -s check-chapters > log 2>&1'
# A clone gives files arbitrary times: snapshots older than the header are regenerated
# to the same bytes and must not be rewritten.
clone="$work.clone"
trap 'rm -rf "$work" "$clone"' EXIT
git clone -q . "$clone" && touch -d 2000-01-01 "$clone"/chapters/*/* || exit 1
check "make chapters on a clone with old-looking snapshots rewrites nothing" \
  '(cd "$clone" && make -s chapters > "$work/log" 2>&1 && [ -z "$(git status --porcelain)" ] &&
    [ -z "$(find chapters -newer keystonelight.hpp -type f)" ])'
sed -i 's|^  // The value stored under `key`, or std::nullopt when there is none.|&  (edited)|' keystonelight.hpp
check "the edit landed in a line of chapter 1" '! git diff --quiet keystonelight.hpp'
check "an edited header with stale snapshots fails" '! make -s check-chapters > log 2>&1'
check "the failure names the stale snapshot" 'grep -q "chapters/01-in-memory-map/keystonelight.hpp" log'
git add -A && git -c user.name=t -c user.email=t@t commit -qm regenerated
check "committing the regenerated snapshots passes again" 'make -s check-chapters > log 2>&1'
echo "check-chapters: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
