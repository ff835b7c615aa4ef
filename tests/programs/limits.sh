#!/bin/sh
# limits.sh BUILD: a build whose limits are smaller than the writer's refuses a log it
# could not write back, and changes nothing. The same small program is compiled twice
# against keystonelight.hpp: with the default limits it writes the log; with
# KEYSTONELIGHT_MAX_VALUE_BYTES=8 it opens it. A put over 8 bytes is refused by the
# reader ("impossible length"); so are appends whose sum passes 8 bytes, alone or inside
# a batch, though each record is small. Run from the repository root.
suite=limits
. "$(dirname "$0")/../support/script.sh"

work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cat > "$work/program.cpp" <<'PROGRAM'
#include <cstdio>
#include <memory>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

// program write DIR CASE | program open DIR
int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1];
  kl::Options options;
  options.dir = argv[2];
  options.compact_ratio = 0;
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options, &store);
  if (s.ok() && mode == "write" && argc == 4) {
    const std::string which = argv[3];
    if (which == "appends") {  // 6 bytes, then 6 more: 12
      s = store->set("k", "123456");
      if (s.ok()) s = store->append("k", "789012");
    } else if (which == "batch") {  // inside one batch: 4 + 4 + 4 = 12, in three entries
      s = store->transaction([&] {
        kl::Status t = store->set("k", "1234");
        if (t.ok()) t = store->append("k", "5678");
        if (t.ok()) t = store->append("k", "9012");
        return t;
      });
    } else if (which == "fits") {  // 6 bytes put, deleted, then 4 + 4 appended: 8
      s = store->set("k", "123456");
      if (s.ok()) s = store->del("k");
      if (s.ok()) s = store->append("k", "1234");
      if (s.ok()) s = store->append("k", "5678");
      if (s.ok()) s = store->set("other", "x");
    }
  }
  if (s.ok() && mode == "open") std::printf("%s\n", store->get("k").value_or("(nil)").c_str());
  if (!s.ok()) {
    std::printf("%s\n", s.to_string().c_str());
    return 1;
  }
  return 0;
}
PROGRAM
for flags in "" "-DKEYSTONELIGHT_MAX_VALUE_BYTES=8"; do
  name=default
  [ -n "$flags" ] && name=small
  ${CXX:-g++} -std=c++17 -pthread -I. $flags "$work/program.cpp" -o "$work/$name" ||
    give_up "error: the test program does not compile against keystonelight.hpp"
done

for case in appends batch; do
  "$work/default" write "$work/$case" "$case" > /dev/null || not_ok "the default build writes the $case log"
  before=$(cksum < "$work/$case/keystonelight.log")
  out=$("$work/small" open "$work/$case"); code=$?
  expect "a build with an 8-byte value limit refuses $case that pass it" 1 \
    "Not supported" "appends to make a value longer than this build's KEYSTONELIGHT_MAX_VALUE_BYTES (8)" \
    "open it with that build"
  holds "refusing the $case log changed nothing" [ "$(cksum < "$work/$case/keystonelight.log")" = "$before" ]
  out=$("$work/default" open "$work/$case"); code=$?
  expect "the build that wrote the $case log opens it" 0 "123456789012"
done

"$work/default" write "$work/fits" fits > /dev/null || not_ok "the default build writes the fits log"
out=$("$work/small" open "$work/fits"); code=$?
expect "appends that stay within the small limit (a delete resets the size) open there" 0 "12345678"
summary
