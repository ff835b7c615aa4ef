// Chapter 10: keys that expire. A test clock (Options::clock) moves time by hand, so
// nothing here sleeps except the test of the background cycle, which waits a bounded
// time for it. These tests also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../../tests/support/store.hpp"
#include "../../tests/support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;
using kltest::open_store;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kStart = 1'700'000'000'000;  // a plausible "now", ms since the epoch

// A clock that stands still until a test moves it.
struct TestClock {
  std::shared_ptr<std::atomic<std::int64_t>> now =
      std::make_shared<std::atomic<std::int64_t>>(kStart);
  std::function<std::int64_t()> function() const {
    auto shared = now;
    return [shared] { return shared->load(); };
  }
  void advance(std::int64_t ms) { *now += ms; }
};

kl::Options options_with(const TestClock& clock, const std::string& dir = "") {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.clock = clock.function();
  options.active_expiry = false;  // the tests decide when expired keys are removed
  options.info_log = [](const std::string&) {};
  return options;
}

// The records of a log, in order, for tests that look at what was written.
std::vector<kl::Record> records_of(const std::string& path, std::vector<std::string>* keys) {
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  REQUIRE(reader.open(&header).ok());
  std::vector<kl::Record> records;
  kl::Record record;
  while (reader.next(&record) == kl::LogReader::Result::kRecord) {
    keys->emplace_back(record.key);  // the views die with the reader's buffer
    records.push_back(record);
  }
  return records;
}

struct Server {
  TestClock clock;
  std::unique_ptr<kl::Store> store = open_store(options_with(clock));
  kl::Dispatcher dispatcher{store.get()};
  kl::Session session;
  std::string run(const std::vector<std::string>& words) {
    std::string out;
    dispatcher.execute(words, &session, &out);
    return out;
  }
};

std::string integer(std::int64_t n) { return ":" + std::to_string(n) + "\r\n"; }

}  // namespace

TEST_SUITE("chapter 10: keys that expire") {

TEST_CASE("a key with a ttl is there through its last millisecond and gone after it") {
  TestClock clock;
  auto store = open_store(options_with(clock));
  REQUIRE(store->set("session", "alice", 100ms).ok());
  REQUIRE(store->set("forever", "x").ok());
  CHECK(store->expire_time("session") == kStart + 100);
  CHECK(store->expire_time("forever") == -1);
  CHECK(store->expire_time("missing") == -2);
  clock.advance(100);
  CHECK(store->get("session") == "alice");  // as in Redis: expired only once past the time
  clock.advance(1);
  CHECK(store->get("session") == std::nullopt);
  CHECK_FALSE(store->exists("session"));
  CHECK(store->expire_time("session") == -2);
  CHECK(store->entries().size() == 1);
  CHECK(store->get_all({"session", "forever"})[0] == std::nullopt);
  CHECK(store->set("session", "x", 0ms).code() == kl::Status::Code::kInvalidArgument);
}

TEST_CASE("SET clears an expiry; INCR and APPEND keep it; KEEPTTL keeps it on purpose") {
  TestClock clock;
  auto store = open_store(options_with(clock));
  REQUIRE(store->set("n", "1", 1000ms).ok());
  REQUIRE(store->increment("n", 1).ok());
  CHECK(store->expire_time("n") == kStart + 1000);
  REQUIRE(store->append("n", "0").ok());
  CHECK(store->get("n") == "20");
  CHECK(store->expire_time("n") == kStart + 1000);
  kl::Store::SetOptions keep;
  keep.keep_ttl = true;
  bool stored = false;
  REQUIRE(store->set("n", "3", keep, &stored).ok());
  CHECK(stored);
  CHECK(store->expire_time("n") == kStart + 1000);
  REQUIRE(store->set("n", "4").ok());
  CHECK(store->expire_time("n") == -1);
  // An expired key counts as missing for INCR: it starts again from 0, with no expiry.
  REQUIRE(store->set("gone", "41", 10ms).ok());
  clock.advance(11);
  std::int64_t result = 0;
  REQUIRE(store->increment("gone", 1, &result).ok());
  CHECK(result == 1);
  CHECK(store->expire_time("gone") == -1);
}

TEST_CASE("expire_at obeys NX, XX, GT and LT, and a time already passed removes the key") {
  TestClock clock;
  auto store = open_store(options_with(clock));
  REQUIRE(store->set("k", "v").ok());
  bool changed = true;
  REQUIRE(store->expire_at("k", kStart + 500, kl::Store::kIfSome, &changed).ok());
  CHECK_FALSE(changed);  // XX: it has none
  REQUIRE(store->expire_at("k", kStart + 500, kl::Store::kIfLater, &changed).ok());
  CHECK_FALSE(changed);  // GT: none counts as never, and nothing is later than never
  REQUIRE(store->expire_at("k", kStart + 500, kl::Store::kIfSooner, &changed).ok());
  CHECK(changed);  // LT: anything is sooner than never
  REQUIRE(store->expire_at("k", kStart + 400, kl::Store::kIfNone, &changed).ok());
  CHECK_FALSE(changed);  // NX: it has one now
  REQUIRE(store->expire_at("k", kStart + 600, kl::Store::kIfSome | kl::Store::kIfSooner, &changed).ok());
  CHECK_FALSE(changed);
  REQUIRE(store->expire_at("k", kStart + 600, kl::Store::kIfLater, &changed).ok());
  CHECK(changed);
  CHECK(store->expire_time("k") == kStart + 600);
  REQUIRE(store->persist("k", &changed).ok());
  CHECK(changed);
  REQUIRE(store->persist("k", &changed).ok());
  CHECK_FALSE(changed);
  REQUIRE(store->expire_at("missing", kStart + 600, 0, &changed).ok());
  CHECK_FALSE(changed);
  REQUIRE(store->expire_at("k", kStart, 0, &changed).ok());  // now counts as passed
  CHECK(changed);
  CHECK_FALSE(store->exists("k"));
  REQUIRE(store->set("k", "v").ok());
  REQUIRE(store->expire_at("k", -5000, 0, &changed).ok());  // before the epoch, too
  CHECK(changed);
  CHECK_FALSE(store->exists("k"));
}

TEST_CASE("get_and_expire reads the value and changes its expiry in one step") {
  TestClock clock;
  auto store = open_store(options_with(clock));
  REQUIRE(store->set("k", "v").ok());
  std::optional<std::string> value;
  REQUIRE(store->get_and_expire("k", kStart + 50, false, &value).ok());
  CHECK(value == "v");
  CHECK(store->expire_time("k") == kStart + 50);
  REQUIRE(store->get_and_expire("k", 0, true, &value).ok());
  CHECK(store->expire_time("k") == -1);
  REQUIRE(store->get_and_expire("k", kStart - 1, false, &value).ok());
  CHECK(value == "v");  // read, then removed: its time has passed
  CHECK_FALSE(store->exists("k"));
  REQUIRE(store->get_and_expire("k", 0, false, &value).ok());
  CHECK(value == std::nullopt);
}

TEST_CASE("expiry times survive a restart, and keys whose time passed stay gone") {
  kltest::TempDir dir;
  TestClock clock;
  {
    auto store = open_store(options_with(clock, dir.path()));
    REQUIRE(store->set("long", "1", 10000ms).ok());
    REQUIRE(store->set("short", "2", 10ms).ok());
    REQUIRE(store->set("plain", "3").ok());
    REQUIRE(store->set("extended", "4", 10ms).ok());
    REQUIRE(store->expire_at("extended", kStart + 20000).ok());  // a kExpire record
    REQUIRE(store->set("persisted", "5", 10ms).ok());
    REQUIRE(store->persist("persisted").ok());
  }
  clock.advance(100);
  auto store = open_store(options_with(clock, dir.path()));
  CHECK(store->recovery().keys_expired == 1);
  CHECK(store->get("short") == std::nullopt);
  CHECK(store->expire_time("long") == kStart + 10000);
  CHECK(store->expire_time("plain") == -1);
  CHECK(store->expire_time("extended") == kStart + 20000);
  CHECK(store->expire_time("persisted") == -1);
  CHECK(store->size() == 4);
}

TEST_CASE("compaction leaves out expired keys and keeps every expiry time in the records") {
  kltest::TempDir dir;
  TestClock clock;
  auto store = open_store(options_with(clock, dir.path()));
  REQUIRE(store->set("stays", "1", 5000ms).ok());
  REQUIRE(store->set("goes", "2", 10ms).ok());
  REQUIRE(store->set("plain", "3").ok());
  clock.advance(11);
  REQUIRE(store->compact().ok());
  std::vector<std::string> keys;
  const std::vector<kl::Record> records = records_of(dir.file(kl::kLogFileName), &keys);
  REQUIRE(records.size() == 2);
  for (std::size_t i = 0; i < records.size(); ++i) {
    CHECK(keys[i] != "goes");
    CHECK(records[i].expiry_ms == (keys[i] == "stays" ? std::uint64_t{kStart + 5000} : 0));
  }
}

TEST_CASE("remove_expired removes keys nobody reads, and logs each removal") {
  kltest::TempDir dir;
  TestClock clock;
  {
    auto store = open_store(options_with(clock, dir.path()));
    for (int i = 0; i < 200; ++i) {
      REQUIRE(store->set("temp:" + std::to_string(i), "v", 10ms).ok());
    }
    REQUIRE(store->set("kept", "v", 100000ms).ok());
    clock.advance(11);
    CHECK(store->size() == 201);  // expired, not yet removed: DBSIZE counts them, as Redis's
    std::size_t removed = 0, total = 0;
    for (int round = 0; round < 1000 && store->size() > 1; ++round) {
      REQUIRE(store->remove_expired(20, &removed).ok());
      CHECK(removed <= 20);
      total += removed;
    }
    CHECK(total == 200);
    CHECK(store->size() == 1);
  }
  // The clock goes back: the keys would be alive by their records, but their removal
  // was logged, so a restart agrees with what clients saw.
  clock.advance(-11);
  auto store = open_store(options_with(clock, dir.path()));
  CHECK(store->size() == 1);
  CHECK(store->get("temp:7") == std::nullopt);
}

TEST_CASE("the background cycle removes expired keys on its own") {
  kl::Store store;  // the system clock, active expiry on: the defaults
  for (int i = 0; i < 100; ++i) REQUIRE(store.set("k" + std::to_string(i), "v", 20ms).ok());
  REQUIRE(store.set("kept", "v").ok());
  const auto deadline = std::chrono::steady_clock::now() + 10s;  // a generous bound
  while (store.size() > 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  CHECK(store.size() == 1);
}

TEST_CASE("a version-1 log opens, and is rewritten as the current version") {
  kltest::TempDir dir;
  std::string v1(kl::kLogMagic, 8);
  kl::detail::put_u32(&v1, 1);
  kl::detail::put_u32(&v1, kl::detail::crc32c(v1));
  kl::detail::encode_record(kl::RecordType::kPut, "old", "data", 0, &v1);
  {
    std::unique_ptr<kl::File> file;
    REQUIRE(kl::default_file_system()->open(dir.file(kl::kLogFileName), true, &file).ok());
    REQUIRE(file->append(v1).ok());
  }
  TestClock clock;
  std::string notes;
  kl::Options options = options_with(clock, dir.path());
  options.info_log = [&](const std::string& note) { notes += note; };
  {
    auto store = open_store(options);
    CHECK(store->get("old") == "data");
    CHECK(store->recovery().log_version == 1);
    CHECK(notes.find("version 1 log") != std::string::npos);
    REQUIRE(store->expire_at("old", kStart + 100).ok());
  }
  auto store = open_store(options);
  CHECK(store->recovery().log_version == kl::kLogVersion);
  CHECK(store->expire_time("old") == kStart + 100);
}

TEST_CASE("a header torn while an older build created the log is a torn header, not damage") {
  kltest::TempDir dir;
  std::string v1(kl::kLogMagic, 8);
  kl::detail::put_u32(&v1, 1);
  {
    std::unique_ptr<kl::File> file;
    REQUIRE(kl::default_file_system()->open(dir.file(kl::kLogFileName), true, &file).ok());
    REQUIRE(file->append(v1.substr(0, 10)).ok());  // the magic and half the version
  }
  TestClock clock;
  auto store = open_store(options_with(clock, dir.path()));
  CHECK(store->size() == 0);
  REQUIRE(store->set("k", "v").ok());
}

TEST_CASE("a version-1 log that holds a kExpire record is damaged, not misread") {
  kltest::TempDir dir;
  std::string v1(kl::kLogMagic, 8);
  kl::detail::put_u32(&v1, 1);
  kl::detail::put_u32(&v1, kl::detail::crc32c(v1));
  kl::detail::encode_record(kl::RecordType::kPut, "k", "v", 0, &v1);
  kl::detail::encode_record(kl::RecordType::kExpire, "k", "", 5, &v1);
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(dir.file(kl::kLogFileName), true, &file).ok());
  REQUIRE(file->append(v1).ok());
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  REQUIRE(reader.open(&header).ok());
  kl::Record record;
  CHECK(reader.next(&record) == kl::LogReader::Result::kRecord);
  CHECK(reader.next(&record) == kl::LogReader::Result::kBadType);
}

TEST_CASE("SET takes EX, PX, EXAT, PXAT, KEEPTTL, GET, NX and XX in any valid mix") {
  Server s;
  CHECK(s.run({"SET", "k", "v", "EX", "10"}) == "+OK\r\n");
  CHECK(s.run({"PTTL", "k"}) == integer(10000));
  CHECK(s.run({"SET", "k", "v", "px", "1500", "GET"}) == "$1\r\nv\r\n");
  CHECK(s.run({"TTL", "k"}) == integer(2));  // 1.5 s rounds to the nearest second
  CHECK(s.run({"SET", "k", "w", "KEEPTTL", "XX"}) == "+OK\r\n");
  CHECK(s.run({"PTTL", "k"}) == integer(1500));
  CHECK(s.run({"SET", "k", "v", "EXAT", std::to_string(kStart / 1000 + 60)}) == "+OK\r\n");
  CHECK(s.run({"EXPIRETIME", "k"}) == integer(kStart / 1000 + 60));
  CHECK(s.run({"SET", "k", "v", "PXAT", std::to_string(kStart + 70)}) == "+OK\r\n");
  CHECK(s.run({"PEXPIRETIME", "k"}) == integer(kStart + 70));
  CHECK(s.run({"SET", "k", "v", "NX", "EX", "5"}) == "$-1\r\n");
  CHECK(s.run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(s.run({"TTL", "k"}) == integer(-1));
  CHECK(s.run({"TTL", "nosuch"}) == integer(-2));
  CHECK(s.run({"SET", "k", "v", "PXAT", std::to_string(kStart - 1)}) == "+OK\r\n");
  CHECK(s.run({"EXISTS", "k"}) == integer(0));  // stored and gone in the same instant
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"SET", "k", "v", "EX", "10", "PX", "100"}, {"SET", "k", "v", "EX", "10", "KEEPTTL"},
           {"SET", "k", "v", "KEEPTTL", "EXAT", "10"}, {"SET", "k", "v", "NX", "XX"},
           {"SET", "k", "v", "EX"}, {"SET", "k", "v", "PERSIST"}}) {
    CHECK(s.run(bad) == "-ERR syntax error\r\n");
  }
  CHECK(s.run({"SET", "k", "v", "EX", "0"}) == "-ERR invalid expire time in 'set' command\r\n");
  CHECK(s.run({"SET", "k", "v", "PX", "-1"}) == "-ERR invalid expire time in 'set' command\r\n");
  CHECK(s.run({"SET", "k", "v", "EX", "9223372036854775807"}) ==
        "-ERR invalid expire time in 'set' command\r\n");
  CHECK(s.run({"SET", "k", "v", "EX", "ten"}) == "-ERR value is not an integer or out of range\r\n");
  // One way of giving the expiry may come twice, as in Redis: the last one counts.
  CHECK(s.run({"SET", "k", "v", "EX", "10", "EX", "20"}) == "+OK\r\n");
  CHECK(s.run({"TTL", "k"}) == integer(20));
  CHECK(s.run({"SET", "k", "v", "KEEPTTL", "KEEPTTL", "NX", "NX"}) == "$-1\r\n");
  CHECK(s.run({"INFO", "keyspace"}).find("db0:keys=1,expires=1,avg_ttl=0") != std::string::npos);
}

TEST_CASE("EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT, with their conditions and errors") {
  Server s;
  CHECK(s.run({"EXPIRE", "k", "10"}) == integer(0));
  CHECK(s.run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(s.run({"EXPIRE", "k", "10", "XX"}) == integer(0));
  CHECK(s.run({"EXPIRE", "k", "10", "NX"}) == integer(1));
  CHECK(s.run({"PEXPIRE", "k", "5000", "GT"}) == integer(0));
  CHECK(s.run({"PEXPIRE", "k", "5000", "LT"}) == integer(1));
  CHECK(s.run({"PTTL", "k"}) == integer(5000));
  CHECK(s.run({"EXPIREAT", "k", std::to_string(kStart / 1000 + 100), "xx", "gt"}) == integer(1));
  CHECK(s.run({"PEXPIREAT", "k", std::to_string(kStart + 1234)}) == integer(1));
  CHECK(s.run({"PEXPIRETIME", "k"}) == integer(kStart + 1234));
  CHECK(s.run({"PERSIST", "k"}) == integer(1));
  CHECK(s.run({"PERSIST", "k"}) == integer(0));
  CHECK(s.run({"EXPIRE", "k", "-1"}) == integer(1));  // a negative time removes the key
  CHECK(s.run({"GET", "k"}) == "$-1\r\n");
  CHECK(s.run({"EXPIRE", "k", "10", "NX", "XX"}) ==
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n");
  CHECK(s.run({"EXPIRE", "k", "10", "GT", "LT"}) ==
        "-ERR GT and LT options at the same time are not compatible\r\n");
  CHECK(s.run({"EXPIRE", "k", "10", "SOON"}) == "-ERR Unsupported option SOON\r\n");
  CHECK(s.run({"EXPIRE", "k", "9223372036854775807"}) ==
        "-ERR invalid expire time in 'expire' command\r\n");
  CHECK(s.run({"PEXPIRE", "k", "9223372036854775807"}) ==
        "-ERR invalid expire time in 'pexpire' command\r\n");
  CHECK(s.run({"EXPIRE", "k", "1.5"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(s.run({"EXPIRE", "k"}) == "-ERR wrong number of arguments for 'expire' command\r\n");
}

TEST_CASE("SETEX, PSETEX and GETEX") {
  Server s;
  CHECK(s.run({"SETEX", "k", "10", "v"}) == "+OK\r\n");
  CHECK(s.run({"PTTL", "k"}) == integer(10000));
  CHECK(s.run({"PSETEX", "k", "250", "w"}) == "+OK\r\n");
  CHECK(s.run({"PTTL", "k"}) == integer(250));
  CHECK(s.run({"SETEX", "k", "0", "v"}) == "-ERR invalid expire time in 'setex' command\r\n");
  CHECK(s.run({"PSETEX", "k", "-5", "v"}) == "-ERR invalid expire time in 'psetex' command\r\n");
  CHECK(s.run({"GETEX", "k", "PERSIST"}) == "$1\r\nw\r\n");
  CHECK(s.run({"TTL", "k"}) == integer(-1));
  CHECK(s.run({"GETEX", "k", "EX", "30"}) == "$1\r\nw\r\n");
  CHECK(s.run({"TTL", "k"}) == integer(30));
  CHECK(s.run({"GETEX", "k"}) == "$1\r\nw\r\n");
  CHECK(s.run({"TTL", "k"}) == integer(30));
  CHECK(s.run({"GETEX", "k", "EX", "30", "PERSIST"}) == "-ERR syntax error\r\n");
  CHECK(s.run({"GETEX", "k", "KEEPTTL"}) == "-ERR syntax error\r\n");
  CHECK(s.run({"GETEX", "k", "PX", "0"}) == "-ERR invalid expire time in 'getex' command\r\n");
  CHECK(s.run({"GETEX", "k", "PXAT", std::to_string(kStart - 1)}) == "$1\r\nw\r\n");
  CHECK(s.run({"GET", "k"}) == "$-1\r\n");
  CHECK(s.run({"GETEX", "nosuch", "EX", "5"}) == "$-1\r\n");
  s.clock.advance(1);
  CHECK(s.run({"SET", "t", "v", "PX", "300"}) == "+OK\r\n");
  s.clock.advance(600);
  CHECK(s.run({"GET", "t"}) == "$-1\r\n");
  CHECK(s.run({"TTL", "t"}) == integer(-2));
}

}  // TEST_SUITE
