#!/bin/sh
# check-tool.sh BUILD: keystonelight-check reports clean, torn and corrupt logs as such,
# with the right counts and offsets; --fix cuts a damaged log at its last good record and
# refuses while a store holds the directory's lock; bad usage and missing logs get their
# own exit codes. Run from the repository root; the program is BUILD/bin/keystonelight-check.
#
# The logs are made here: a small helper, compiled against keystonelight.hpp, writes them
# through Store and reports where each record starts (the log's size before each write),
# so the expected offsets come from the engine, not from numbers copied into this file.
build=${1:-build}
check=$build/bin/keystonelight-check
suite=check-tool
. "$(dirname "$0")/../support/script.sh"
holder=

work=$(mktemp -d) || exit 1
cleanup() {
  if [ -n "$holder" ]; then
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run ARGS...: runs the program, keeping its output in $out and its exit status in $code.
run() { out=$("$check" "$@" 2>&1); code=$?; }

if [ ! -x "$check" ]; then
  give_up "error: $check is missing; build it first (make $check)"
fi

cat > "$work/helper.cpp" <<'EOF'
// helper make DIR         writes six records and prints where each starts, then the end
// helper odd DIR          writes keys a terminal cannot show as they are
// helper dump DIR         opens the store and prints its size and key=value, sorted
// helper hold DIR S FILE  opens the store, creates FILE, and keeps it open S seconds
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "keystonelight.hpp"

namespace kl = keystonelight;

static int die(const kl::Status& s) {
  std::fprintf(stderr, "helper: %s\n", s.to_string().c_str());
  return 1;
}

static unsigned long long log_size(const std::string& dir) {
  struct stat st;
  if (::stat((dir + "/" + kl::kLogFileName).c_str(), &st) != 0) return 0;
  return static_cast<unsigned long long>(st.st_size);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1], dir = argv[2];
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return die(s);
  if (mode == "make") {
    // alpha is overwritten and beta deleted: three records of garbage.
    const char* ops[][2] = {{"alpha", "1"}, {"beta", "22"}, {"gamma", "333"},
                            {"alpha", "one"}, {"beta", nullptr}, {"delta", "4444"}};
    for (auto& op : ops) {
      std::printf("%llu ", log_size(dir));
      kl::Status s = op[1] ? store->set(op[0], op[1]) : store->del(op[0]);
      if (!s.ok()) return die(s);
    }
    std::printf("%llu\n", log_size(dir));
  } else if (mode == "odd") {
    if (kl::Status s = store->set(std::string("k\x01\xff\"\\", 5), "v"); !s.ok()) return die(s);
    if (kl::Status s = store->set(std::string(300, 'x'), "v"); !s.ok()) return die(s);
  } else if (mode == "dump") {
    auto entries = store->entries();
    std::sort(entries.begin(), entries.end());
    std::printf("size=%zu\n", entries.size());
    for (auto& e : entries) std::printf("%s=%s\n", e.first.c_str(), e.second.c_str());
  } else if (mode == "hold" && argc == 5) {
    std::FILE* ready = std::fopen(argv[4], "w");
    if (ready) std::fclose(ready);
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(argv[3])));
  } else {
    return 2;
  }
  kl::Status s = store->close();
  return s.ok() ? 0 : die(s);
}
EOF
if ! ${CXX:-g++} -std=c++17 -I. -pthread "$work/helper.cpp" -o "$work/helper"; then
  give_up "error: the helper does not compile against keystonelight.hpp"
fi
helper=$work/helper

# The reference log, and a fresh copy of it for each case that damages one.
if ! "$helper" make "$work/clean" > "$work/offsets" 2>"$work/helper.err"; then
  give_up "$(cat "$work/helper.err")"
fi
read -r o1 o2 o3 o4 o5 o6 end < "$work/offsets"
log=keystonelight.log
copy() { rm -rf "${work:?}/$1"; cp -R "$work/clean" "$work/$1"; }
size_of() { wc -c < "$1" | tr -d ' '; }

# --- A clean log ----------------------------------------------------------------------
# Live: gamma (record 3), alpha's overwrite (record 4), delta (record 6).
live=$(( (o4 - o3) + (o5 - o4) + (end - o6) ))
garbage=$(( (o2 - o1) + (o3 - o2) + (o6 - o5) ))
run "$work/clean"
expect "a clean log passes with its counts" 0 \
  "records:        6 (puts 5, deletes 1)" "live keys:      3" \
  "live bytes:     $live " "garbage bytes:  $garbage " "size:           $end bytes" \
  "problem:        none"
holds "overwrites and deletes leave garbage ($garbage bytes)" [ "$garbage" -gt 0 ]

run --records "$work/clean"
expect "--records lists every record with its offset" 0 \
  "$o1  put              5             1  \"alpha\"" \
  "$o5  delete           4             0  \"beta\"" \
  "$o6  put              5             4  \"delta\""

"$helper" odd "$work/odd" || not_ok "the helper writes odd keys"
run --records "$work/odd"
expect "--records escapes odd bytes and shortens long keys" 0 \
  '"k\x01\xff\"\\"' '"xxxxxxxxxxxx' '... (300 bytes)'

# --- A torn tail ----------------------------------------------------------------------
copy torn
truncate -s $((end - 5)) "$work/torn/$log"
before=$(cksum < "$work/torn/$log")
run "$work/torn"
expect "a log cut inside its last record is a torn tail" 1 \
  "incomplete record at byte offset $o6" "torn tail" "drop $((end - 5 - o6)) bytes" \
  "records:        5 (puts 4, deletes 1) before the problem"
holds "a check without --fix changes nothing" [ "$(cksum < "$work/torn/$log")" = "$before" ]

run --fix "$work/torn"
expect "--fix cuts a torn tail at the last good record" 0 \
  "removed $((end - 5 - o6)) bytes from offset $o6"
holds "the fixed log ends at $o6" [ "$(size_of "$work/torn/$log")" -eq "$o6" ]
run "$work/torn"
expect "a fixed torn log checks clean" 0 "records:        5 (puts 4, deletes 1)" "problem:        none"
out=$("$helper" dump "$work/torn" 2>&1); code=$?
expect "the store opens the fixed log with the records before the cut" 0 \
  "size=2" "alpha=one" "gamma=333"

run --fix "$work/clean"
expect "--fix leaves a clean log alone" 0 "problem:        none"
holds "--fix on a clean log keeps its size" [ "$(size_of "$work/clean/$log")" -eq "$end" ]

# --- Corruption in the middle ---------------------------------------------------------
# The last byte of gamma's value (record 3) changes from 3 to X: its checksum fails, and
# record 4 after it is whole.
copy corrupt
printf 'X' | dd of="$work/corrupt/$log" bs=1 seek=$((o4 - 1)) conv=notrunc 2>/dev/null
run "$work/corrupt"
expect "a damaged record with valid ones after it is corruption" 1 \
  "checksum mismatch at byte offset $o3" "corruption" "valid record follows at offset $o4" \
  "refuses to open" "records:        2 (puts 2, deletes 0) before the problem"

run --fix "$work/corrupt"
expect "--fix cuts a corrupt log at the damaged record" 0 \
  "removed $((end - o3)) bytes from offset $o3"
run "$work/corrupt"
expect "a fixed corrupt log checks clean" 0 "records:        2 (puts 2, deletes 0)" "problem:        none"
out=$("$helper" dump "$work/corrupt" 2>&1); code=$?
expect "the store opens the fixed log with the records before the damage" 0 \
  "size=2" "alpha=1" "beta=22"

# --- A file header cut short, and a damaged one ---------------------------------------
# A crash while a store created its log leaves a prefix of the header: a torn tail that
# --fix (like Store::open) replaces with a whole header.
copy short
printf 'KEYST' > "$work/short/$log"
run "$work/short"
expect "a log cut inside its file header is a torn tail at offset 0" 1 \
  "incomplete file header (5 bytes) at byte offset 0" "torn tail"
run --fix "$work/short"
expect "--fix writes a whole header over a torn one" 0 "removed 5 bytes from offset 0"
run "$work/short"
expect "a log fixed from a torn header is clean and empty" 0 "records:        0 " "problem:        none"

copy header
printf 'k' | dd of="$work/header/$log" bs=1 seek=0 conv=notrunc 2>/dev/null
before=$(cksum < "$work/header/$log")
run --fix "$work/header"
expect "a damaged file header is reported, and --fix leaves it" 1 "KEYSTONE" "restore a backup"
holds "--fix does not touch a bad header" [ "$(cksum < "$work/header/$log")" = "$before" ]

# --- Nothing to read, bad usage ---------------------------------------------------------
mkdir "$work/empty"
run --fix "$work/empty"
expect "a directory without a log is exit 3" 3 "$work/empty/$log" "no such file"
holds "a directory without a log gets no LOCK file" [ ! -e "$work/empty/LOCK" ]
run "$work/nowhere"
expect "a missing directory is exit 3" 3 "$work/nowhere" "no such directory"

run --bogus "$work/clean"
expect "an unknown flag is a usage error naming it" 2 "unknown option '--bogus'" "usage:"
run
expect "a missing DIR is a usage error" 2 "missing DIR" "usage:"
run "$work/clean" "$work/torn"
expect "two directories are a usage error" 2 "one DIR at a time"
run --help
expect "--help prints the usage and the exit codes" 0 "usage:" "Exit codes:" "  3  "
run --version
expect "--version prints the version" 0 "keystonelight-check $(sed -n 's/^#define KEYSTONELIGHT_VERSION_STR "\(.*\)"$/\1/p' keystonelight.hpp)"

# --- A read-only copy: a check and an export read it; --fix needs write access. ---------
# Root may write whatever the permissions say, so as root the program runs as nobody
# (setpriv or runuser); without either, this part is skipped with a note.
copy ro
chmod -R a-w "$work/ro"
as_reader=
if [ "$(id -u)" -ne 0 ]; then
  as_reader=direct
elif command -v setpriv > /dev/null 2>&1 &&
     setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
  as_reader=setpriv
elif command -v runuser > /dev/null 2>&1 && runuser -u nobody -- true 2>/dev/null; then
  as_reader=runuser
fi
if [ -z "$as_reader" ]; then
  echo "note: running as root without setpriv or runuser, so the read-only copy was not tried"
else
  chmod 755 "$work"  # nobody must reach the copy and the program
  cp "$check" "$work/check-ro"
  chmod 755 "$work/check-ro"
  # run_reader ARGS...: like run, as a user who may only read the copy.
  run_reader() {
    case $as_reader in
      direct) out=$("$work/check-ro" "$@" 2>&1); code=$? ;;
      setpriv) out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$work/check-ro" "$@" 2>&1); code=$? ;;
      runuser) out=$(runuser -u nobody -- "$work/check-ro" "$@" 2>&1); code=$? ;;
    esac
  }
  before=$(cksum < "$work/ro/$log")
  run_reader "$work/ro"
  expect "a read-only copy checks clean ($as_reader)" 0 "records:        6 (puts 5, deletes 1)" \
    "problem:        none"
  run_reader --export "$work/ro"
  expect "a read-only copy exports" 0 "gamma"
  run_reader --fix "$work/ro"
  expect "--fix on a read-only copy is refused, naming the file" 3 "$work/ro/LOCK" \
    "Permission denied"
  holds "the read-only copy is unchanged" [ "$(cksum < "$work/ro/$log")" = "$before" ]
fi
chmod -R u+w "$work/ro"

# --- --fix refused while a store holds the lock ----------------------------------------
copy locked
"$helper" hold "$work/locked" 20 "$work/ready" &
holder=$!
tries=0
while [ ! -e "$work/ready" ] && [ "$tries" -lt 100 ]; do nap; tries=$((tries + 1)); done
if [ -e "$work/ready" ]; then
  truncate -s $((end - 5)) "$work/locked/$log"  # a torn tail --fix would otherwise cut
  run --fix "$work/locked"
  expect "--fix refuses while a store holds the lock" 3 "Busy" "locked by pid $holder" \
    "nothing was changed"
  holds "the locked log is untouched" [ "$(size_of "$work/locked/$log")" -eq $((end - 5)) ]
else
  not_ok "the store holding the lock did not start within its time"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=

summary
