#!/bin/sh
# export-tool.sh BUILD: keystonelight-check --export writes exactly the live keys of a log
# as RESP2 SET commands, binary-safe and in log order; leaves out a torn tail (exit 0, a
# note on stderr) as opening the store does; writes nothing for a corrupt log or a bad
# header (exit 1); reports failed writes to standard output (exit 3); refuses --fix and
# --records (exit 2); changes nothing and works while a store holds the directory. When
# redis-server and redis-cli are installed, the export is loaded into a private
# redis-server with `redis-cli --pipe` and read back. Run from the repository root; the
# program is BUILD/bin/keystonelight-check.
#
# A helper compiled against keystonelight.hpp writes the logs through Store, computes the
# expected export from its own list of operations (not from the log), parses an export
# back strictly, and talks RESP to the redis-server to compare values byte for byte.
build=${1:-build}
check=$build/bin/keystonelight-check
suite=export-tool
. "$(dirname "$0")/../support/script.sh"
expect_where='on stderr'
holder='' redis_pid=''

work=$(mktemp -d) || exit 1
cleanup() {
  if [ -n "$holder" ]; then
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
  fi
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run NAME ARGS...: runs the program with its standard output in $work/NAME.out (the
# export is binary: no shell variable can hold a NUL), its standard error in $out, and
# its exit status in $code.
run() {
  name=$1; shift
  "$check" "$@" > "$work/$name.out" 2> "$work/$name.err"; code=$?
  out=$(cat "$work/$name.err")
}

# bounded SECONDS COMMAND...: runs COMMAND, killed after SECONDS where timeout(1) exists.
bounded() {
  if command -v timeout >/dev/null 2>&1; then timeout "$@"; else shift; "$@"; fi
}

if [ ! -x "$check" ]; then
  give_up "error: $check is missing; build it first (make $check)"
fi

cat > "$work/helper.cpp" <<'EOF'
// helper make DIR          applies the scenario's operations, one record each, and prints
//                          the log's size before each and at the end
// helper expect N          prints the export expected after the scenario's first N operations
// helper many DIR          thousands of keys, overwritten and deleted
// helper empty DIR         opens and closes a store: a log with its file header only
// helper badtype DIR       appends a record whose header checksum holds but whose type is 9
// helper expiring DIR      keys with expiry times: one long passed, one set by an expire
//                          record, one made persistent again, one put with its time;
//                          then batch records that put two keys and delete two
// helper verify FILE DIR   parses FILE as SET commands only, strictly, and compares them with
//                          the store in DIR (a copy: opening it may cut a torn tail);
//                          prints the number of commands
// helper redis PORT DIR    compares what the redis-server at 127.0.0.1:PORT holds with the
//                          store in DIR (a copy), byte for byte
// helper hold DIR S FILE   opens the store, creates FILE, and keeps it open S seconds
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

// A string literal with every byte, NULs included.
template <std::size_t N>
static std::string B(const char (&s)[N]) { return std::string(s, N - 1); }

struct Op {
  std::string key;
  std::optional<std::string> value;  // none: delete
};

// Keys and values with every awkward byte: spaces, CR, LF, NUL, RESP look-alikes, the
// empty key, the empty value, a 1 MiB value holding all 256 bytes; overwrites, deletes
// and a key put back after its delete. The last operation overwrites "plain": cut it off
// and the export must hold the value before it, in its earlier place.
static std::vector<Op> scenario() {
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>((i * 131 + i / 256) & 0xff);
  }
  big.replace(big.size() - 2, 2, "\r\n");
  return {
      {"plain", std::string("value")},
      {"with space", std::string("a value with spaces")},
      {B("cr\rlf\n"), std::string("line 1\r\nline 2\n")},
      {B("nul\0key"), B("nul\0value\0")},
      {"", std::string("the empty key")},
      {"empty value", std::string()},
      {"big", big},
      {"plain", std::string("overwritten")},
      {"doomed", std::string("x")},
      {"with space", std::nullopt},
      {"doomed", std::nullopt},
      {"with space", std::string("back again\r\n")},
      {B("*3\r\n$3\r\nSET\r\n"), std::string("$-1\r\n")},
      {"plain", std::string("the last value")},
  };
}

static int die(const std::string& message) {
  std::fprintf(stderr, "helper: %s\n", message.c_str());
  return 1;
}
static int die(const kl::Status& s) { return die(s.to_string()); }

static unsigned long long log_size(const std::string& dir) {
  struct stat st;
  if (::stat((dir + "/" + kl::kLogFileName).c_str(), &st) != 0) return 0;
  return static_cast<unsigned long long>(st.st_size);
}

static std::string resp(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return out;
}

// For messages: a key with its odd bytes escaped.
static std::string shown(const std::string& s) {
  std::string out;
  for (char byte : s) {
    const auto c = static_cast<unsigned char>(byte);
    char hex[8];
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return "\"" + (out.size() > 60 ? out.substr(0, 60) + "..." : out) + "\"";
}

static int open_store(const std::string& dir, std::unique_ptr<kl::Store>* store) {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.compact_ratio = 0;  // the records stay as written: their offsets are the test's
  if (kl::Status s = kl::Store::open(options, store); !s.ok()) return die(s);
  return 0;
}

static std::map<std::string, std::string> contents(kl::Store& store) {
  std::map<std::string, std::string> m;
  for (auto& e : store.entries()) m.emplace(std::move(e.first), std::move(e.second));
  return m;
}

// Parses `data` as nothing but whole `*3 $3 SET $n key $m value` commands.
using Sets = std::vector<std::pair<std::string, std::string>>;
static bool parse_export(const std::string& data, Sets* sets, std::string* error) {
  std::size_t pos = 0;
  auto bulk = [&](std::string* out) {
    if (pos >= data.size() || data[pos] != '$') return false;
    std::size_t digits = pos + 1, end = digits;
    while (end < data.size() && data[end] >= '0' && data[end] <= '9') ++end;
    if (end == digits || end - digits > 12 || data.compare(end, 2, "\r\n") != 0) return false;
    const std::size_t n = std::stoul(data.substr(digits, end - digits));
    pos = end + 2;
    if (data.size() - pos < n + 2 || data.compare(pos + n, 2, "\r\n") != 0) return false;
    *out = data.substr(pos, n);
    pos += n + 2;
    return true;
  };
  const std::string head = "*3\r\n$3\r\nSET\r\n";
  while (pos < data.size()) {
    std::string key, value;
    const std::size_t at = pos;
    if (data.compare(pos, head.size(), head) != 0) {
      *error = "no SET command at byte " + std::to_string(at);
      return false;
    }
    pos += head.size();
    if (!bulk(&key) || !bulk(&value)) {
      *error = "a malformed bulk string in the command at byte " + std::to_string(at);
      return false;
    }
    sets->emplace_back(std::move(key), std::move(value));
  }
  return true;
}

// A blocking RESP connection to 127.0.0.1, every wait bounded by a 10 s socket timeout.
struct Redis {
  int fd = -1;
  std::string buffer;
  ~Redis() { if (fd >= 0) ::close(fd); }

  bool connect_to(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  bool send_all(const std::string& data) {
    for (std::size_t done = 0; done < data.size();) {
      const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  bool fill(std::size_t want) {
    char chunk[65536];
    while (buffer.size() < want) {
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return false;
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
    return true;
  }
  bool line(std::string* out) {
    std::size_t end;
    while ((end = buffer.find("\r\n")) == std::string::npos) {
      if (!fill(buffer.size() + 1)) return false;
    }
    *out = buffer.substr(0, end);
    buffer.erase(0, end + 2);
    return true;
  }
  // One reply: a bulk string's bytes, or std::nullopt for a nil bulk; other replies
  // come back as their line, type byte included (":8", "-ERR ...").
  bool reply(std::optional<std::string>* out) {
    std::string head;
    if (!line(&head) || head.empty()) return false;
    if (head[0] != '$') {
      *out = head;
      return true;
    }
    const long n = std::strtol(head.c_str() + 1, nullptr, 10);
    if (n < 0) {
      out->reset();
      return true;
    }
    const std::size_t size = static_cast<std::size_t>(n);
    if (!fill(size + 2)) return false;
    *out = buffer.substr(0, size);
    buffer.erase(0, size + 2);
    return true;
  }
};

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string mode = argv[1];
  if (mode == "expect") {
    // The latest put of each key, in the order of those puts: what the log holds live.
    const std::vector<Op> ops = scenario();
    const std::size_t n = std::min<std::size_t>(std::strtoul(argv[2], nullptr, 10), ops.size());
    std::map<std::string, std::pair<std::size_t, std::string>> live;
    for (std::size_t i = 0; i < n; ++i) {
      if (ops[i].value) live[ops[i].key] = {i, *ops[i].value};
      else live.erase(ops[i].key);
    }
    std::vector<std::pair<std::size_t, std::string>> order;
    for (const auto& [key, latest] : live) order.emplace_back(latest.first, key);
    std::sort(order.begin(), order.end());
    std::string out;
    for (const auto& [index, key] : order) out += resp({"SET", key, live[key].second});
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  const std::string dir = argv[2];
  if (mode == "verify" && argc == 4) {
    std::ifstream in(argv[2], std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Sets sets;
    std::string error;
    if (!parse_export(data, &sets, &error)) return die(std::string(argv[2]) + ": " + error);
    std::map<std::string, std::string> exported;
    for (auto& [key, value] : sets) {
      if (!exported.emplace(key, value).second) return die("key " + shown(key) + " twice");
    }
    std::unique_ptr<kl::Store> store;
    if (int r = open_store(argv[3], &store); r != 0) return r;
    const auto stored = contents(*store);
    if (stored != exported) {
      for (const auto& [key, value] : stored) {
        auto it = exported.find(key);
        if (it == exported.end()) return die("key " + shown(key) + " is not in the export");
        if (it->second != value) return die("key " + shown(key) + " has another value");
      }
      return die("the export has keys the store does not have");
    }
    std::printf("%zu\n", sets.size());
    return 0;
  }
  if (mode == "redis" && argc == 4) {
    Redis redis;
    if (!redis.connect_to(std::atoi(argv[2]))) return die("cannot connect to 127.0.0.1");
    std::unique_ptr<kl::Store> store;
    if (int r = open_store(argv[3], &store); r != 0) return r;
    const auto stored = contents(*store);
    std::string requests = resp({"DBSIZE"});
    for (const auto& entry : stored) requests += resp({"GET", entry.first});
    if (!redis.send_all(requests)) return die("cannot send to redis-server");
    std::optional<std::string> reply;
    if (!redis.reply(&reply)) return die("no reply to DBSIZE");
    if (reply != ":" + std::to_string(stored.size())) {
      return die("DBSIZE is " + reply.value_or("nil") + ", the store holds " +
                 std::to_string(stored.size()) + " keys");
    }
    for (const auto& [key, value] : stored) {
      if (!redis.reply(&reply)) return die("no reply to GET " + shown(key));
      if (!reply) return die("redis-server has no key " + shown(key));
      if (*reply != value) {
        return die("redis-server has another value under " + shown(key) + ": " +
                   std::to_string(reply->size()) + " bytes " + shown(*reply) + " for " +
                   std::to_string(value.size()) + " bytes " + shown(value));
      }
    }
    std::printf("%zu\n", stored.size());
    return 0;
  }
  if (mode == "badtype") {
    std::string record;
    kl::detail::encode_record(kl::RecordType::kPut, "key", "value", 0, &record);
    record[8] = 9;  // the type byte
    kl::detail::seal_record_header(record.data());
    std::ofstream log(dir + "/" + kl::kLogFileName, std::ios::binary | std::ios::app);
    log.write(record.data(), static_cast<std::streamsize>(record.size()));
    return log.good() ? 0 : die("cannot append to the log");
  }

  if (mode == "expiring") {
    // The store's clock stands in 1970, so a ttl of 5 ms has long passed for the export.
    kl::Options options;
    options.dir = dir;
    options.clock = [] { return std::int64_t{1000000}; };
    options.active_expiry = false;
    std::unique_ptr<kl::Store> store;
    kl::Status s = kl::Store::open(options, &store);
    const std::int64_t year_2100 = 4102444800000;
    kl::Store::SetOptions at_2100;
    at_2100.expire_at_ms = year_2100;
    bool stored = false;
    if (s.ok()) s = store->set("gone", "x", std::chrono::milliseconds(5));
    if (s.ok()) s = store->set("later", "v1");
    if (s.ok()) s = store->expire_at("later", year_2100);
    if (s.ok()) s = store->set("plain", "v2");
    if (s.ok()) s = store->set("persisted", "v3", std::chrono::milliseconds(5));
    if (s.ok()) s = store->persist("persisted");
    if (s.ok()) s = store->set("ttl", "v4", at_2100, &stored);
    // Batch records: one that puts two keys, one that deletes one of them and "plain".
    std::size_t removed = 0;
    if (s.ok()) s = store->set_all({{"m1", "a"}, {"m2", "b"}});
    if (s.ok()) s = store->del_all({"m1", "plain"}, &removed);
    if (s.ok()) s = store->close();
    return s.ok() ? 0 : die(s);
  }

  if (mode == "appending") {
    // Appends of their own and inside a batch, to keys that were there or not.
    std::unique_ptr<kl::Store> store;
    if (int r = open_store(dir, &store); r != 0) return r;
    kl::Status s = store->set("a", "1");
    if (s.ok()) s = store->expire_at("a", 4102444800000);
    if (s.ok()) s = store->append("a", "2");
    if (s.ok()) s = store->append("b", "x");
    if (s.ok()) {
      s = store->transaction([&] {
        kl::Status t = store->append("b", "y");
        return t.ok() ? store->append("c", "z") : t;
      });
    }
    if (s.ok()) s = store->set("d", "old");
    if (s.ok()) s = store->append("d", "!");
    if (s.ok()) s = store->set("d", "new");
    if (s.ok()) s = store->append("e", "1");
    if (s.ok()) s = store->del("e");
    if (s.ok()) s = store->close();
    return s.ok() ? 0 : die(s);
  }

  std::unique_ptr<kl::Store> store;
  if (int r = open_store(dir, &store); r != 0) return r;
  if (mode == "make") {
    for (const Op& op : scenario()) {
      std::printf("%llu ", log_size(dir));
      kl::Status s = op.value ? store->set(op.key, *op.value) : store->del(op.key);
      if (!s.ok()) return die(s);
    }
    std::printf("%llu\n", log_size(dir));
  } else if (mode == "many") {
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < 3000; ++i) {
        const std::string key = "key:" + std::to_string(i);
        const std::string value(static_cast<std::size_t>(i % 97 + round),
                                static_cast<char>('a' + i % 26));
        kl::Status s = round == 1 && i % 3 == 0 ? store->del(key) : store->set(key, value);
        if (!s.ok()) return die(s);
      }
    }
  } else if (mode == "empty") {
    // Nothing to write: the log holds its file header alone.
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

if ! "$helper" make "$work/mixed" > "$work/offsets" 2>"$work/helper.err"; then
  give_up "$(cat "$work/helper.err")"
fi
# Where records 3, 4 and 14 (the last) of the scenario start, and the log's size.
read -r _ _ o3 o4 _ _ _ _ _ _ _ _ _ o14 end < "$work/offsets"
"$helper" expect 14 > "$work/expected-all"
"$helper" expect 13 > "$work/expected-13"
"$helper" expect 2 > "$work/expected-2"
log=keystonelight.log
copy() { rm -rf "${work:?}/$2"; cp -R "$work/$1" "$work/$2"; }
sum_of() { cksum < "$1"; }
empty_out() { [ ! -s "$work/$1.out" ]; }
same() { cmp -s "$work/$1" "$work/$2"; }
# verify NAME DIR: parses NAME's export back and compares it with the store in a copy of
# DIR (opening a store cuts a torn tail: the original must stay as it is); the number of
# keys goes to $count, the helper's complaint to $out.
verify() {
  copy "$2" opened
  count=$("$helper" verify "$work/$1.out" "$work/opened" 2> "$work/verify.err"); code=$?
  out=$(cat "$work/verify.err")
}

# --- Empty stores ------------------------------------------------------------------------
"$helper" empty "$work/empty" || not_ok "the helper makes an empty store"
run empty --export "$work/empty"
expect "an empty store exports nothing, cleanly" 0
holds "an empty store's export is empty" empty_out empty
holds "an empty store's export says nothing on stderr" [ -z "$out" ]

mkdir "$work/zero" && : > "$work/zero/$log"
run zero --export "$work/zero"
expect "a log of zero bytes (created, header not yet written) exports nothing" 0
holds "a log of zero bytes exports nothing" empty_out zero

# --- Every byte, overwrites and deletes ---------------------------------------------------
before=$(sum_of "$work/mixed/$log")
run mixed --export "$work/mixed"
expect "a clean log exports with exit 0 and a quiet stderr" 0
holds "a clean export says nothing on stderr" [ -z "$out" ]
holds "the export is byte for byte the latest value of each live key, in log order" \
  same mixed.out expected-all
verify mixed mixed
expect "the export parses back to exactly what the store holds" 0
holds "8 live keys are exported (spaces, CR, LF, NUL, empty key and value, 1 MiB)" [ "$count" = 8 ]
holds "the 1 MiB value is there whole" [ "$(wc -c < "$work/mixed.out")" -gt 1048576 ]
holds "an export changes nothing in the log" [ "$(sum_of "$work/mixed/$log")" = "$before" ]

run order "$work/mixed" --export
expect "--export may follow DIR" 0
holds "--export after DIR exports the same bytes" same order.out expected-all

"$helper" many "$work/many" || not_ok "the helper writes many keys"
run many --export "$work/many"
expect "thousands of overwritten and deleted keys export" 0
verify many many
expect "thousands of keys parse back to exactly what the store holds" 0
holds "2000 of 3000 keys are live after deleting every third" [ "$count" = 2000 ]

# A directory holding only a copy of the log: no LOCK, no other file may appear.
mkdir "$work/bare" && cp "$work/mixed/$log" "$work/bare/"
run bare --export "$work/bare"
expect "a bare copy of a log exports" 0
holds "an export takes no lock and creates no file" [ "$(ls "$work/bare")" = "$log" ]

# --- A torn tail -------------------------------------------------------------------------
copy mixed torn
truncate -s $((end - 5)) "$work/torn/$log"
before=$(sum_of "$work/torn/$log")
run torn --export "$work/torn"
expect "a torn tail is left out with exit 0 and a note naming file and offset" 0 \
  "$work/torn/$log" "incomplete record at byte offset $o14" "torn tail" \
  "$((end - 5 - o14)) bytes were left out" "exported the 8 live keys of the 13 records"
holds "a torn overwrite exports the value before it, in its earlier place" \
  same torn.out expected-13
verify torn torn
expect "the torn export is what opening the store keeps" 0
holds "an export does not cut the torn tail" [ "$(sum_of "$work/torn/$log")" = "$before" ]

copy mixed zeros
dd if=/dev/zero bs=100 count=1 2>/dev/null >> "$work/zeros/$log"
run zeros --export "$work/zeros"
expect "zeros after the last record are a torn tail" 0 \
  "checksum mismatch at byte offset $end" "torn tail"
holds "zeros after the last record leave the export whole" same zeros.out expected-all

mkdir "$work/short" && printf 'KEYST' > "$work/short/$log"
run short --export "$work/short"
expect "a log cut inside its file header exports nothing, exit 0, with a note" 0 \
  "incomplete file header (5 bytes) at byte offset 0" "nothing was exported"
holds "a torn file header exports nothing" empty_out short

# --- Corruption: nothing at all on stdout ---------------------------------------------------
# The last byte of record 3's value changes: its checksum fails, and record 4 is whole.
copy mixed corrupt
printf 'X' | dd of="$work/corrupt/$log" bs=1 seek=$((o4 - 1)) conv=notrunc 2>/dev/null
before=$(sum_of "$work/corrupt/$log")
run corrupt --export "$work/corrupt"
expect "a corrupt log is refused with exit 1, naming file, offsets and the way out" 1 \
  "$work/corrupt/$log" "checksum mismatch at byte offset $o3" \
  "valid record follows at offset $o4" "Nothing was exported" "records before offset $o3" \
  "copy $work/corrupt" "--fix COPY" "--export COPY"
holds "a corrupt log writes nothing to stdout" empty_out corrupt
holds "a refused export changes nothing" [ "$(sum_of "$work/corrupt/$log")" = "$before" ]

# The way out the message gives: --fix a copy, export the copy.
copy corrupt salvage
"$check" --fix "$work/salvage" > /dev/null 2>&1 || not_ok "--fix salvages the copy"
run salvage --export "$work/salvage"
expect "the fixed copy of a corrupt log exports" 0
holds "the fixed copy exports the records before the damage" same salvage.out expected-2

copy mixed badtype
"$helper" badtype "$work/badtype" || not_ok "the helper appends a record of unknown type"
run badtype --export "$work/badtype"
expect "a record this build does not understand is refused, even at the tail" 1 \
  "unknown record type at byte offset $end" "Nothing was exported"
holds "a record of unknown type writes nothing to stdout" empty_out badtype

copy mixed header
printf 'k' | dd of="$work/header/$log" bs=1 seek=0 conv=notrunc 2>/dev/null
run header --export "$work/header"
expect "a damaged file header is refused with exit 1" 1 \
  "$work/header/$log" "KEYSTONE" "nothing was exported" "restore a backup"
holds "a damaged file header writes nothing to stdout" empty_out header

# --- Nothing to read, bad usage -----------------------------------------------------------
run nowhere --export "$work/nowhere"
expect "a missing directory is exit 3" 3 "$work/nowhere" "no such directory"
holds "a missing directory writes nothing to stdout" empty_out nowhere

run fix --export --fix "$work/mixed"
expect "--export with --fix is a usage error naming both" 2 "--export and --fix cannot be combined"
before=$(sum_of "$work/torn/$log")
run fix2 --fix --export "$work/torn"
expect "--fix before --export is the same usage error" 2 "--export and --fix cannot be combined"
holds "a refused --fix --export cuts no torn tail" [ "$(sum_of "$work/torn/$log")" = "$before" ]
run records --export --records "$work/mixed"
expect "--export with --records is a usage error naming both" 2 \
  "--export and --records cannot be combined"
holds "usage errors write nothing to stdout" empty_out records
run nodir --export
expect "--export without DIR is a usage error" 2 "missing DIR"
"$check" --help > "$work/help.out" 2>&1; code=$?; out=$(cat "$work/help.out")
expect "--help describes --export and its exit codes" 0 \
  "keystonelight-check --export DIR" "--export    write the live keys" "redis-cli --pipe" \
  "--export: corruption or a damaged header, and nothing was written"

# --- Failed writes ------------------------------------------------------------------------
if [ -w /dev/full ]; then
  "$check" --export "$work/mixed" > /dev/full 2> "$work/full.err"; code=$?
  out=$(cat "$work/full.err")
  expect "a full disk is exit 3, and the export called incomplete" 3 \
    "write standard output: No space left on device" "the export is incomplete"
  # Small enough to sit in the output buffer until the final flush, which must fail.
  "$check" --export "$work/salvage" > /dev/full 2> "$work/full.err"; code=$?
  out=$(cat "$work/full.err")
  expect "a full disk met only by the final flush is exit 3 too" 3 \
    "write standard output: No space left on device" "the export is incomplete"
else
  echo "export-tool: /dev/full is missing; the full-disk case was skipped"
fi

# The reader quits after one byte; the rest (over 1 MiB) meets a closed pipe: EPIPE, not
# a silent death by SIGPIPE.
{ "$check" --export "$work/mixed" 2> "$work/pipe.err"; echo $? > "$work/pipe.code"; } |
  dd of=/dev/null bs=1 count=1 2>/dev/null
code=$(cat "$work/pipe.code"); out=$(cat "$work/pipe.err")
expect "a reader that goes away is exit 3 (EPIPE), and the export called incomplete" 3 \
  "write standard output: Broken pipe" "the export is incomplete"

before=$(sum_of "$work/mixed/$log")
"$check" --export "$work/mixed" >&- 2> "$work/closed.err"; code=$?
out=$(cat "$work/closed.err")
expect "a closed stdout is refused with exit 3" 3 "standard output is closed"
holds "a closed stdout does not make the export land in the log" \
  [ "$(sum_of "$work/mixed/$log")" = "$before" ]

# --- Expiry times ------------------------------------------------------------------------
if "$helper" expiring "$work/expiring" 2> "$work/helper.err"; then
  run expiring --export "$work/expiring"
  expect "a log with expiry times exports" 0
  printf '*5\r\n$3\r\nSET\r\n$5\r\nlater\r\n$2\r\nv1\r\n$4\r\nPXAT\r\n$13\r\n4102444800000\r\n*3\r\n$3\r\nSET\r\n$9\r\npersisted\r\n$2\r\nv3\r\n*5\r\n$3\r\nSET\r\n$3\r\nttl\r\n$2\r\nv4\r\n$4\r\nPXAT\r\n$13\r\n4102444800000\r\n*3\r\n$3\r\nSET\r\n$2\r\nm2\r\n$1\r\nb\r\n' \
    > "$work/expected-expiring"
  holds "keys keep their expiry as PXAT (from a put or an expire record), a persisted key has none, a key whose time passed is left out, and batch records are read entry by entry" \
    same expiring.out expected-expiring
  run expiring-records "$work/expiring"
  holds "the summary counts the expiry changes and the batches" \
    grep -q "expiry changes 2; 4 of them in 2 batches" "$work/expiring-records.out"
else
  not_ok "the helper did not write the log with expiry times: $(cat "$work/helper.err")"
fi

# --- Appends -------------------------------------------------------------------------------
if "$helper" appending "$work/appending" 2> "$work/helper.err"; then
  run appending --export "$work/appending"
  expect "a log with appends exports" 0
  printf '*5\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n$4\r\nPXAT\r\n$13\r\n4102444800000\r\n*3\r\n$6\r\nAPPEND\r\n$1\r\na\r\n$1\r\n2\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\nx\r\n*3\r\n$6\r\nAPPEND\r\n$1\r\nb\r\n$1\r\ny\r\n*3\r\n$3\r\nSET\r\n$1\r\nc\r\n$1\r\nz\r\n*3\r\n$3\r\nSET\r\n$1\r\nd\r\n$3\r\nnew\r\n' \
    > "$work/expected-appending"
  holds "a key's SET comes with its expiry and is followed by its appends, in log order; a key an append made starts with a SET of its first piece; an overwritten or deleted key's appends stay out" \
    same appending.out expected-appending
  run appending-records "$work/appending"
  holds "the summary counts the appends" \
    grep -q "appends 6; 2 of them in 1 batches" "$work/appending-records.out"
else
  not_ok "the helper did not write the log with appends: $(cat "$work/helper.err")"
fi

# --- While a store holds the directory ------------------------------------------------------
copy mixed held
"$helper" hold "$work/held" 20 "$work/ready" &
holder=$!
tries=0
while [ ! -e "$work/ready" ] && [ "$tries" -lt 100 ]; do nap; tries=$((tries + 1)); done
if [ -e "$work/ready" ]; then
  lock_before=$(sum_of "$work/held/LOCK")
  run held --export "$work/held"
  expect "an export works while a store holds the lock" 0
  holds "the export of a held directory is exact" same held.out expected-all
  holds "the export leaves the holder's LOCK file alone" [ "$(sum_of "$work/held/LOCK")" = "$lock_before" ]
else
  not_ok "the store holding the lock did not start within its time"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=

# --- Into a real redis-server -----------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "export-tool: redis-server or redis-cli is not installed; the redis --pipe part was skipped"
else
  # A private server on 127.0.0.1 only, saving nothing. Ports are tried from a random
  # base; one taken by another program makes the server exit, and the next is tried.
  # The server is ours once its own log says it is ready (never talk to whatever else
  # may listen on a port) and INFO names its pid.
  mkdir "$work/redis"
  base=$(od -An -N2 -tu2 /dev/urandom 2>/dev/null | tr -d ' ')
  base=$((20000 + ${base:-$$} % 40000))
  port='' attempt=0
  while [ -z "$port" ] && [ "$attempt" -lt 10 ]; do
    try=$((base + attempt)); attempt=$((attempt + 1))
    : > "$work/redis/log"
    redis-server --port "$try" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no --dir "$work/redis" --logfile "$work/redis/log" &
    redis_pid=$!
    tries=0
    while [ "$tries" -lt 100 ] && kill -0 "$redis_pid" 2>/dev/null &&
          ! grep -q "Ready to accept connections" "$work/redis/log"; do
      nap; tries=$((tries + 1))
    done
    if kill -0 "$redis_pid" 2>/dev/null && grep -q "Ready to accept connections" "$work/redis/log" &&
       bounded 5 redis-cli -h 127.0.0.1 -p "$try" INFO server 2>/dev/null | tr -d '\r' |
         grep -qx "process_id:$redis_pid"; then
      port=$try
    else
      kill "$redis_pid" 2>/dev/null
      wait "$redis_pid" 2>/dev/null
      redis_pid=
    fi
  done
  if [ -z "$port" ]; then
    out=$(tail -n 5 "$work/redis/log" 2>/dev/null)
    not_ok "no redis-server started on 127.0.0.1 in 10 ports from $base"
  else
    # Exits nonzero when the export fails, whatever redis-cli does.
    { "$check" --export "$work/mixed" 2> "$work/pipe-redis.err"; echo $? > "$work/pipe-redis.code"; } |
      bounded 60 redis-cli -h 127.0.0.1 -p "$port" --pipe --pipe-timeout 10 > "$work/redis-cli.out" 2>&1
    cli=$?
    code=$(cat "$work/pipe-redis.code"); out=$(cat "$work/pipe-redis.err")
    expect "the export piped into redis-cli --pipe exits 0" 0
    code=$cli; out=$(cat "$work/redis-cli.out")
    expect "redis-cli --pipe loads every command without an error" 0 "errors: 0, replies: 8"
    copy mixed opened
    count=$(bounded 30 "$helper" redis "$port" "$work/opened" 2> "$work/verify.err"); code=$?
    out=$(cat "$work/verify.err")
    expect "redis-server holds every key with its exact value (read back over RESP)" 0
    holds "redis-server holds the 8 keys" [ "$count" = 8 ]

    bounded 5 redis-cli -h 127.0.0.1 -p "$port" SHUTDOWN NOSAVE > /dev/null 2>&1
    tries=0
    while kill -0 "$redis_pid" 2>/dev/null && [ "$tries" -lt 50 ]; do nap; tries=$((tries + 1)); done
    kill -9 "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
    redis_pid=
  fi
fi

summary
