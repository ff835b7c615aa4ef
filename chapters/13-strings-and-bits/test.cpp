// Chapter 13: strings as Redis sees them. The rest of Redis's string group and the bitmap
// commands, with Redis 7's replies and error texts word for word (the cases come from
// Redis's documentation and its edge cases); every read-modify-write is atomic for
// readers, for other writers and across a crash; no offset a client sends allocates
// past Redis's limit. These tests also run against every later chapter and the final
// header.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../../tests/support/faulty_fs.hpp"
#include "../../tests/support/store.hpp"
#include "../../tests/support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;
using kltest::contents;
using kltest::Model;
using kltest::open_store;

namespace {

kl::Options options_for(const std::string& dir) {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.info_log = [](const std::string&) {};
  return options;
}

// The types of the records in a store's log, in order.
std::vector<kl::RecordType> record_types(const std::string& path) {
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  REQUIRE(reader.open(&header).ok());
  std::vector<kl::RecordType> types;
  kl::Record record;
  while (reader.next(&record) == kl::LogReader::Result::kRecord) types.push_back(record.type);
  return types;
}

// A client of a dispatcher: run() returns the raw RESP reply.
struct Client {
  explicit Client(kl::Store* store) : dispatcher(store) {}
  kl::Dispatcher dispatcher;
  kl::Session session;
  std::string run(const std::vector<std::string>& words) {
    std::string out;
    dispatcher.execute(words, &session, &out);
    return out;
  }
};

std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }
std::string integer(long long n) { return ":" + std::to_string(n) + "\r\n"; }
std::string error(const std::string& message) { return "-" + message + "\r\n"; }
const std::string kOK = "+OK\r\n";
const std::string kNil = "$-1\r\n";

}  // namespace

TEST_SUITE("chapter 13: strings as Redis sees them") {

TEST_CASE("INCRBYFLOAT adds in long double and prints the sum as Redis does") {
  kl::Store store;
  Client c(&store);
  CHECK(c.run({"SET", "f", "10.5"}) == kOK);
  CHECK(c.run({"INCRBYFLOAT", "f", "0.1"}) == bulk("10.6"));  // not 10.59999999999999964
  CHECK(c.run({"SET", "f", "5.0e3"}) == kOK);
  CHECK(c.run({"INCRBYFLOAT", "f", "2.0e2"}) == bulk("5200"));  // no exponent, no ".0"
  CHECK(c.run({"INCRBYFLOAT", "missing", "1.5"}) == bulk("1.5"));
  CHECK(c.run({"INCRBYFLOAT", "f", "-5200"}) == bulk("0"));
  CHECK(c.run({"SET", "z", "-0"}) == kOK);
  CHECK(c.run({"INCRBYFLOAT", "z", "-0"}) == bulk("0"));  // -0 + -0 is -0, never shown
  CHECK(c.run({"INCRBYFLOAT", "f", "0x10"}) == bulk("16"));  // strtold reads hex, as Redis
  CHECK(c.run({"INCRBYFLOAT", "f", "1e-3"}) == bulk("16.001"));

  const std::string not_float = error("ERR value is not a valid float");
  const std::string infinite = error("ERR increment would produce NaN or Infinity");
  CHECK(c.run({"INCRBYFLOAT", "f", "inf"}) == infinite);
  CHECK(c.run({"INCRBYFLOAT", "f", "-inf"}) == infinite);
  CHECK(c.run({"INCRBYFLOAT", "f", "nan"}) == not_float);
  CHECK(c.run({"INCRBYFLOAT", "f", "1e99999"}) == not_float);  // out of range
  CHECK(c.run({"INCRBYFLOAT", "f", " 1"}) == not_float);
  CHECK(c.run({"INCRBYFLOAT", "f", "1 "}) == not_float);
  CHECK(c.run({"INCRBYFLOAT", "f", ""}) == not_float);
  CHECK(c.run({"SET", "text", "one"}) == kOK);
  CHECK(c.run({"INCRBYFLOAT", "text", "1"}) == not_float);
  CHECK(c.run({"SET", "nul", std::string("1\0" "2", 3)}) == kOK);  // a NUL ends strtold
  CHECK(c.run({"INCRBYFLOAT", "nul", "1"}) == not_float);
  CHECK(store.get("f") == "16.001");  // the refused ones changed nothing
  CHECK(c.run({"INCRBYFLOAT", "f"}) == error("ERR wrong number of arguments for 'incrbyfloat' command"));
}

TEST_CASE("GETRANGE and SUBSTR count from either end and stop at the value's ends") {
  kl::Store store;
  Client c(&store);
  REQUIRE(store.set("s", "This is a string").ok());
  CHECK(c.run({"GETRANGE", "s", "0", "3"}) == bulk("This"));
  CHECK(c.run({"GETRANGE", "s", "-3", "-1"}) == bulk("ing"));
  CHECK(c.run({"GETRANGE", "s", "0", "-1"}) == bulk("This is a string"));
  CHECK(c.run({"GETRANGE", "s", "10", "100"}) == bulk("string"));
  CHECK(c.run({"GETRANGE", "s", "-100", "3"}) == bulk("This"));
  CHECK(c.run({"GETRANGE", "s", "5", "3"}) == bulk(""));
  CHECK(c.run({"GETRANGE", "s", "-1", "-5"}) == bulk(""));
  CHECK(c.run({"GETRANGE", "s", "0", "9223372036854775807"}) == bulk("This is a string"));
  CHECK(c.run({"GETRANGE", "s", "-9223372036854775808", "0"}) == bulk("T"));
  CHECK(c.run({"GETRANGE", "missing", "0", "-1"}) == bulk(""));
  CHECK(c.run({"SUBSTR", "s", "5", "6"}) == bulk("is"));
  CHECK(c.run({"GETRANGE", "s", "0", "x"}) == error("ERR value is not an integer or out of range"));
}

TEST_CASE("SETRANGE pads with zero bytes and refuses an offset Redis refuses, before it grows anything") {
  kl::Store store;
  Client c(&store);
  REQUIRE(store.set("s", "Hello World").ok());
  CHECK(c.run({"SETRANGE", "s", "6", "Redis"}) == integer(11));
  CHECK(store.get("s") == "Hello Redis");
  CHECK(c.run({"SETRANGE", "new", "3", "ab"}) == integer(5));
  CHECK(store.get("new") == std::string("\0\0\0ab", 5));
  CHECK(c.run({"SETRANGE", "s", "13", "!"}) == integer(14));  // past the end: zeros between
  CHECK(store.get("s") == std::string("Hello Redis\0\0!", 14));

  // An empty value writes nothing: the length as it is, and no key made.
  CHECK(c.run({"SETRANGE", "none", "100", ""}) == integer(0));
  CHECK_FALSE(store.exists("none"));
  CHECK(c.run({"SETRANGE", "s", "999999999999", ""}) == integer(14));

  const std::string too_big = error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
  const std::string last = std::to_string(kl::kMaxValueBytes - 1);  // the last byte allowed
  CHECK(c.run({"SETRANGE", "s", last, "xy"}) == too_big);
  CHECK(c.run({"SETRANGE", "none", std::to_string(kl::kMaxValueBytes), "x"}) == too_big);
  CHECK(c.run({"SETRANGE", "none", "9223372036854775807", "x"}) == too_big);
  CHECK(c.run({"SETRANGE", "s", "-1", "x"}) == error("ERR offset is out of range"));
  CHECK(c.run({"SETRANGE", "s", "1e3", "x"}) == error("ERR value is not an integer or out of range"));
  CHECK_FALSE(store.exists("none"));
  CHECK(store.get("s")->size() == 14);
}

TEST_CASE("GETSET, GETDEL and SETNX") {
  kl::Store store;
  Client c(&store);
  CHECK(c.run({"GETSET", "k", "1"}) == kNil);
  CHECK(c.run({"GETSET", "k", "2"}) == bulk("1"));
  CHECK(c.run({"GETDEL", "k"}) == bulk("2"));
  CHECK_FALSE(store.exists("k"));
  CHECK(c.run({"GETDEL", "k"}) == kNil);
  CHECK(c.run({"SETNX", "k", "first"}) == integer(1));
  CHECK(c.run({"SETNX", "k", "second"}) == integer(0));
  CHECK(store.get("k") == "first");
}

TEST_CASE("writes in place keep the key's expiry; GETSET, SET and BITOP give it none") {
  std::atomic<std::int64_t> now{1'000'000};
  kl::Options options;
  options.clock = [&] { return now.load(); };
  options.active_expiry = false;
  auto store = open_store(options);
  Client c(store.get());
  const std::vector<std::vector<std::string>> in_place = {
      {"SETRANGE", "k", "0", "2"}, {"INCRBYFLOAT", "k", "1.5"}, {"SETBIT", "k", "0", "1"},
      {"APPEND", "k", "0"}};
  for (const auto& command : in_place) {
    CHECK(c.run({"SET", "k", "1", "EX", "100"}) == kOK);
    CHECK(c.run(command).rfind('-', 0) == std::string::npos);
    INFO(command[0]);
    CHECK(c.run({"TTL", "k"}) == integer(100));
  }
  for (const auto& command : std::vector<std::vector<std::string>>{
           {"GETSET", "k", "x"}, {"SET", "k", "x"}, {"BITOP", "NOT", "k", "k"}}) {
    CHECK(c.run({"SET", "k", "1", "EX", "100"}) == kOK);
    CHECK(c.run(command).rfind('-', 0) == std::string::npos);
    INFO(command[0]);
    CHECK(c.run({"TTL", "k"}) == integer(-1));
  }
  // A key whose time has passed counts as missing: SETRANGE starts from nothing.
  CHECK(c.run({"SET", "k", "old value", "PX", "10"}) == kOK);
  now += 11;
  CHECK(c.run({"SETRANGE", "k", "1", "x"}) == integer(2));
  CHECK(c.run({"TTL", "k"}) == integer(-1));
}

TEST_CASE("MSETNX sets all the keys or none, as one batch record that survives a reopen") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir.path()));
    Client c(store.get());
    CHECK(c.run({"MSETNX", "a", "1", "b", "2", "c", "3"}) == integer(1));
    CHECK(c.run({"MSETNX", "c", "x", "d", "4"}) == integer(0));  // c exists: d is not set
    CHECK(c.run({"MSETNX", "a"}) == error("ERR wrong number of arguments for 'msetnx' command"));
    CHECK(c.run({"MSETNX", "a", "1", "b"}) == error("ERR wrong number of arguments for 'msetnx' command"));
  }
  CHECK(record_types(dir.file(kl::kLogFileName)) == std::vector<kl::RecordType>{kl::RecordType::kBatch});
  auto store = open_store(options_for(dir.path()));
  CHECK(contents(*store) == Model{{"a", "1"}, {"b", "2"}, {"c", "3"}});
}

TEST_CASE("a read-modify-write that cannot be logged changes nothing and says why") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir.path());
  options.file_system = &fs;
  auto store = open_store(options);
  Client c(store.get());
  REQUIRE(store->set("n", "1.5").ok());
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFail, "No space left on device");
  const std::string reply = c.run({"MSETNX", "x", "1", "y", "2"});
  CHECK(reply.rfind("-ERR", 0) == 0);
  CHECK(reply.find("No space left on device") != std::string::npos);
  CHECK(contents(*store) == Model{{"n", "1.5"}});
}

TEST_CASE("SETBIT and GETBIT: the old bit, growth with zero bytes, Redis's limits") {
  kltest::TempDir dir;
  auto store = open_store(options_for(dir.path()));
  Client c(store.get());
  CHECK(c.run({"SETBIT", "b", "7", "1"}) == integer(0));
  CHECK(store->get("b") == "\x01");
  CHECK(c.run({"SETBIT", "b", "7", "1"}) == integer(1));  // unchanged: nothing logged
  CHECK(c.run({"SETBIT", "b", "7", "0"}) == integer(1));
  CHECK(c.run({"SETBIT", "b", "17", "1"}) == integer(0));
  CHECK(store->get("b") == std::string("\0\0\x40", 3));
  CHECK(c.run({"GETBIT", "b", "17"}) == integer(1));
  CHECK(c.run({"GETBIT", "b", "16"}) == integer(0));
  CHECK(c.run({"GETBIT", "b", "4294967295"}) == integer(0));  // past the end: 0
  CHECK(c.run({"GETBIT", "missing", "0"}) == integer(0));
  CHECK(record_types(dir.file(kl::kLogFileName)).size() == 3);

  const std::string bad_offset = error("ERR bit offset is not an integer or out of range");
  const std::string bad_bit = error("ERR bit is not an integer or out of range");
  CHECK(c.run({"SETBIT", "b", std::to_string(std::uint64_t{kl::kMaxValueBytes} * 8), "1"}) == bad_offset);
  CHECK(c.run({"SETBIT", "b", "4294967296", "1"}) == bad_offset);
  CHECK(c.run({"SETBIT", "b", "-1", "1"}) == bad_offset);
  CHECK(c.run({"GETBIT", "b", "x"}) == bad_offset);
  for (const char* bit : {"2", "-1", "10", "x"}) CHECK(c.run({"SETBIT", "b", "0", bit}) == bad_bit);
  CHECK(store->get("b")->size() == 3);
}

TEST_CASE("BITCOUNT counts in byte or bit ranges, from either end") {
  kl::Store store;
  Client c(&store);
  REQUIRE(store.set("k", "foobar").ok());
  CHECK(c.run({"BITCOUNT", "k"}) == integer(26));
  CHECK(c.run({"BITCOUNT", "k", "0", "0"}) == integer(4));
  CHECK(c.run({"BITCOUNT", "k", "1", "1"}) == integer(6));
  CHECK(c.run({"BITCOUNT", "k", "1", "1", "BYTE"}) == integer(6));
  CHECK(c.run({"BITCOUNT", "k", "5", "30", "BIT"}) == integer(17));
  CHECK(c.run({"BITCOUNT", "k", "-5", "-1", "bit"}) == integer(2));  // r is 0111 0010
  CHECK(c.run({"BITCOUNT", "k", "-2", "-1"}) == integer(7));
  CHECK(c.run({"BITCOUNT", "k", "-1", "-5"}) == integer(0));
  CHECK(c.run({"BITCOUNT", "k", "100", "200"}) == integer(0));
  CHECK(c.run({"BITCOUNT", "k", "-100", "100"}) == integer(26));
  CHECK(c.run({"BITCOUNT", "missing", "x", "y"}) == integer(0));  // as Redis: no key, no check
  CHECK(c.run({"BITCOUNT", "k", "0"}) == error("ERR syntax error"));
  CHECK(c.run({"BITCOUNT", "k", "0", "1", "WORD"}) == error("ERR syntax error"));
  CHECK(c.run({"BITCOUNT", "k", "0", "1", "BIT", "x"}) == error("ERR syntax error"));
  CHECK(c.run({"BITCOUNT", "k", "a", "1"}) == error("ERR value is not an integer or out of range"));
}

TEST_CASE("BITPOS finds the first 0 or 1; past a value without an end, bits are 0") {
  kl::Store store;
  Client c(&store);
  REQUIRE(store.set("k", std::string("\xff\xf0\x00", 3)).ok());
  CHECK(c.run({"BITPOS", "k", "0"}) == integer(12));
  REQUIRE(store.set("k", std::string("\x00\xff\xf0", 3)).ok());
  CHECK(c.run({"BITPOS", "k", "1", "0"}) == integer(8));
  CHECK(c.run({"BITPOS", "k", "1", "2"}) == integer(16));
  CHECK(c.run({"BITPOS", "k", "1", "2", "-1", "BYTE"}) == integer(16));
  CHECK(c.run({"BITPOS", "k", "1", "7", "15", "BIT"}) == integer(8));
  CHECK(c.run({"BITPOS", "k", "0", "9", "-1", "BIT"}) == integer(20));
  REQUIRE(store.set("k", std::string(3, '\0')).ok());
  CHECK(c.run({"BITPOS", "k", "1"}) == integer(-1));
  CHECK(c.run({"BITPOS", "k", "1", "7", "-3", "BIT"}) == integer(-1));
  REQUIRE(store.set("k", "\xff\xff\xff").ok());
  CHECK(c.run({"BITPOS", "k", "0"}) == integer(24));  // the first bit after the value
  CHECK(c.run({"BITPOS", "k", "0", "1"}) == integer(24));
  CHECK(c.run({"BITPOS", "k", "0", "3", "BIT"}) ==  // BIT needs an end before it
        error("ERR value is not an integer or out of range"));
  CHECK(c.run({"BITPOS", "k", "0", "0", "-1"}) == integer(-1));  // with an end, none
  CHECK(c.run({"BITPOS", "k", "0", "5", "9"}) == integer(-1));  // an empty range
  CHECK(c.run({"BITPOS", "missing", "0"}) == integer(0));
  CHECK(c.run({"BITPOS", "missing", "1"}) == integer(-1));
  REQUIRE(store.set("empty", "").ok());
  CHECK(c.run({"BITPOS", "empty", "0"}) == integer(-1));
  CHECK(c.run({"BITPOS", "k", "2"}) == error("ERR The bit argument must be 1 or 0."));
  CHECK(c.run({"BITPOS", "k", "0", "0", "1", "BIT", "x"}) == error("ERR syntax error"));
  CHECK(c.run({"BITPOS", "k", "0", "0", "1", "BITS"}) == error("ERR syntax error"));
}

TEST_CASE("BITOP AND, OR, XOR and NOT store their result, zero-padded; an empty one deletes") {
  kl::Store store;
  Client c(&store);
  REQUIRE(store.set("key1", "foobar").ok());
  REQUIRE(store.set("key2", "abcdef").ok());
  CHECK(c.run({"BITOP", "AND", "dest", "key1", "key2"}) == integer(6));
  CHECK(store.get("dest") == "`bc`ab");
  CHECK(c.run({"BITOP", "OR", "dest", "key1", "key2"}) == integer(6));
  CHECK(store.get("dest") == "goofev");
  CHECK(c.run({"BITOP", "XOR", "dest", "key1", "key2"}) == integer(6));
  CHECK(store.get("dest") == std::string("\x07\x0d\x0c\x06\x04\x14", 6));
  CHECK(c.run({"BITOP", "not", "dest", "key1"}) == integer(6));
  CHECK(store.get("dest") == "\x99\x90\x90\x9d\x9e\x8d");
  REQUIRE(store.set("short", "\xff").ok());
  CHECK(c.run({"BITOP", "OR", "dest", "short", "missing", "key1"}) == integer(6));
  CHECK(store.get("dest") == "\xffoobar");
  CHECK(c.run({"BITOP", "AND", "dest", "short", "key1"}) == integer(6));
  CHECK(store.get("dest") == std::string("f\0\0\0\0\0", 6));
  CHECK(c.run({"BITOP", "AND", "dest", "missing", "missing2"}) == integer(0));
  CHECK_FALSE(store.exists("dest"));
  CHECK(c.run({"BITOP", "NOT", "dest", "key1", "key2"}) ==
        error("ERR BITOP NOT must be called with a single source key."));
  CHECK(c.run({"BITOP", "NAND", "dest", "key1"}) == error("ERR syntax error"));
  CHECK(c.run({"BITOP", "AND", "dest"}) == error("ERR wrong number of arguments for 'bitop' command"));
}

TEST_CASE("LCS: the string, its length, the matching ranges, as Redis's documentation shows") {
  kl::Store store;
  Client c(&store);
  REQUIRE(store.set("key1", "ohmytext").ok());
  REQUIRE(store.set("key2", "mynewtext").ok());
  CHECK(c.run({"LCS", "key1", "key2"}) == bulk("mytext"));
  CHECK(c.run({"LCS", "key1", "key2", "LEN"}) == integer(6));
  CHECK(c.run({"LCS", "key1", "key2", "IDX"}) ==
        "*4\r\n" + bulk("matches") + "*2\r\n" +
            "*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n" +
            "*2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n" + bulk("len") + integer(6));
  CHECK(c.run({"LCS", "key1", "key2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"}) ==
        "*4\r\n" + bulk("matches") + "*1\r\n" + "*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n" +
            bulk("len") + integer(6));
  CHECK(c.run({"LCS", "key1", "missing"}) == bulk(""));
  CHECK(c.run({"LCS", "key1", "key2", "LEN", "IDX"}) ==
        error("ERR If you want both the length and indexes, please just use IDX."));
  CHECK(c.run({"LCS", "key1", "key2", "MINMATCHLEN"}) == error("ERR syntax error"));
  CHECK(c.run({"LCS", "key1", "key2", "MINMATCHLEN", "x"}) ==
        error("ERR value is not an integer or out of range"));

  // Its table would take (|a|+1) x (|b|+1) 4-byte lengths, past proto-max-bulk-len
  // bytes: refused before anything is allocated, as in Redis.
  std::size_t side = 1;
  while ((side + 1) * (side + 1) <= kl::kMaxValueBytes / 4) ++side;
  REQUIRE(store.set("big", std::string(side, 'x')).ok());
  CHECK(c.run({"LCS", "big", "big", "LEN"}) ==
        error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"));
}

TEST_CASE("an APPEND of k bytes logs k bytes, however long the value has grown") {
  kltest::TempDir dir;
  auto store = open_store(options_for(dir.path()));
  Client c(store.get());
  REQUIRE(store->set("log", std::string(1 << 20, 'x')).ok());
  const std::uint64_t before = store->stats().log_bytes;
  for (int i = 0; i < 100; ++i) REQUIRE(c.run({"APPEND", "log", "0123456789"}) == integer((1 << 20) + 10 * (i + 1)));
  CHECK(store->stats().log_bytes - before == 100 * (kl::kRecordHeaderBytes + 3 + 10));
  CHECK(c.run({"APPEND", "fresh", "abc"}) == integer(3));  // a missing key starts empty
  using T = kl::RecordType;
  const std::vector<T> types = record_types(dir.file(kl::kLogFileName));
  CHECK(types.size() == 102);
  CHECK(types.front() == T::kPut);
  CHECK(types.back() == T::kAppend);
}

TEST_CASE("appends replay onto the value, keep its expiry, and compact into one put") {
  kltest::TempDir dir;
  std::int64_t now = 1'700'000'000'000;
  kl::Options options = options_for(dir.path());
  options.clock = [&now] { return now; };
  {
    auto store = open_store(options);
    Client c(store.get());
    REQUIRE(c.run({"SET", "k", "a", "PX", "5000"}) == kOK);
    REQUIRE(c.run({"APPEND", "k", "b"}) == integer(2));
    REQUIRE(c.run({"APPEND", "new", "x"}) == integer(1));
    REQUIRE(c.run({"DEL", "new"}) == integer(1));
    REQUIRE(c.run({"APPEND", "new", "y"}) == integer(1));  // after the delete, from empty
    REQUIRE(c.run({"APPEND", "k", "c"}) == integer(3));
  }
  auto store = open_store(options);
  CHECK(contents(*store) == Model{{"k", "abc"}, {"new", "y"}});
  CHECK(store->expire_time("k") == now + 5000);
  CHECK(store->expire_time("new") == -1);
  REQUIRE(store->compact().ok());
  using T = kl::RecordType;
  CHECK(record_types(dir.file(kl::kLogFileName)) == std::vector<T>{T::kPut, T::kPut});
  store.reset();
  now += 5001;  // k's time passes while the store is closed
  store = open_store(options);
  CHECK(contents(*store) == Model{{"new", "y"}});
}

TEST_CASE("an append that cannot be made durable is cut back off, for readers too") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir.path());
  options.fsync = kl::FsyncPolicy::kAlways;
  options.file_system = &fs;
  auto store = open_store(options);
  Client c(store.get());
  REQUIRE(store->set("k", "kept").ok());
  fs.arm(kltest::Op::kSync, 0, kltest::Fault::kFail, "Input/output error");
  CHECK(c.run({"APPEND", "k", "-lost"}).rfind("-ERR", 0) == 0);
  CHECK(contents(*store) == Model{{"k", "kept"}});
}

TEST_CASE("appends inside a failed transaction are undone, a created key removed") {
  kl::Store store;
  REQUIRE(store.set("k", "kept").ok());
  kl::Status s = store.transaction([&] {
    REQUIRE(store.append("k", "-a").ok());
    REQUIRE(store.append("k", "-b").ok());
    REQUIRE(store.append("made", "x").ok());
    REQUIRE(store.append("k", "").ok());  // changes nothing, so undoes nothing
    return kl::Status::invalid_argument("changed my mind");
  });
  CHECK(s.code() == kl::Status::Code::kInvalidArgument);
  CHECK(contents(store) == Model{{"k", "kept"}});
}

TEST_CASE("appends in a MULTI are entries of its batch record, and replay in order") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir.path()));
    Client c(store.get());
    REQUIRE(c.run({"MULTI"}) == kOK);
    c.run({"SET", "k", "1"});
    c.run({"APPEND", "k", "2"});
    c.run({"APPEND", "k", "3"});
    REQUIRE(c.run({"EXEC"}) == "*3\r\n+OK\r\n:2\r\n:3\r\n");
    using T = kl::RecordType;
    CHECK(record_types(dir.file(kl::kLogFileName)) == std::vector<T>{T::kBatch});
  }
  auto store = open_store(options_for(dir.path()));
  CHECK(contents(*store) == Model{{"k", "123"}});
}

TEST_CASE("a batch entry may be an append but never a batch") {
  std::string body;
  kl::detail::encode_batch_entry(kl::RecordType::kPut, "k", "1", 0, &body);
  kl::detail::encode_batch_entry(kl::RecordType::kAppend, "k", "2", 0, &body);
  CHECK(kl::detail::valid_batch(body));
  std::string nested = body;
  kl::detail::encode_batch_entry(kl::RecordType::kBatch, "", "", 0, &nested);
  CHECK_FALSE(kl::detail::valid_batch(nested));
  std::string valued = body;  // an expiry change with a value is not one
  kl::detail::encode_batch_entry(kl::RecordType::kExpire, "k", "v", 0, &valued);
  CHECK_FALSE(kl::detail::valid_batch(valued));
}

TEST_CASE("a log of format version 3 opens, and is rewritten in version 4") {
  kltest::TempDir dir;
  std::string bytes = kl::detail::encode_file_header(3);
  kl::detail::encode_record(kl::RecordType::kPut, "k", "v", 0, &bytes);
  kltest::write_file(dir.file(kl::kLogFileName), bytes);
  auto store = open_store(options_for(dir.path()));
  CHECK(store->recovery().log_version == 3);
  CHECK(contents(*store) == Model{{"k", "v"}});
  REQUIRE(store->append("k", "w").ok());
  store.reset();
  kl::LogReader::Header header;
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(dir.file(kl::kLogFileName), false, &file).ok());
  kl::LogReader reader(file.get());
  REQUIRE(reader.open(&header).ok());
  CHECK(reader.version() == 4);
  store = open_store(options_for(dir.path()));
  CHECK(contents(*store) == Model{{"k", "vw"}});
}

TEST_CASE("concurrent read-modify-writes lose no update") {
  kl::Store store;
  constexpr int kThreads = 4, kEach = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&store, t] {
      Client c(&store);
      for (int i = 0; i < kEach; ++i) {
        c.run({"INCRBYFLOAT", "sum", "0.5"});
        c.run({"SETBIT", "bits", std::to_string(t * kEach + i), "1"});
        c.run({"SETRANGE", "text", std::to_string(t * kEach + i), "x"});
      }
    });
  }
  for (std::thread& t : threads) t.join();
  Client c(&store);
  CHECK(c.run({"GET", "sum"}) == bulk(std::to_string(kThreads * kEach / 2)));
  CHECK(c.run({"BITCOUNT", "bits"}) == integer(kThreads * kEach));
  CHECK(store.get("text") == std::string(kThreads * kEach, 'x'));
}

}  // TEST_SUITE
