// Chapter 15: recovery at the speed of memory. The CRC-32C in hardware gives the table's
// answer for every length, alignment and published vector, and a log written one way
// reads the other way; the table is sized from the log, never from a length the log
// claims; a replay keeps the live size exact without walking the table. These tests also
// run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../tests/support/store.hpp"
#include "../../tests/support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;
using kltest::contents;
using kltest::open_store;

namespace {

kl::Options options_for(const std::string& dir) {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.info_log = [](const std::string&) {};
  return options;
}

// Runs the test's CRCs on the table until it ends, then puts back the processor's choice.
struct TableCrcOnly {
  TableCrcOnly() : was(kl::detail::crc32c_uses_hardware().exchange(false)) {}
  ~TableCrcOnly() { kl::detail::crc32c_uses_hardware() = was; }
  bool was;
};

std::uint32_t crc_table(const std::string& s) {
  return kl::detail::crc32c_extend_table(0, s.data(), s.size());
}

// A log opened for reading, at its first record.
struct OpenLog {
  explicit OpenLog(const std::string& path) {
    REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
    reader.reset(new kl::LogReader(file.get()));
    kl::LogReader::Header header;
    REQUIRE(reader->open(&header).ok());
  }
  std::unique_ptr<kl::File> file;
  std::unique_ptr<kl::LogReader> reader;
};

}  // namespace

TEST_SUITE("chapter 15: fast recovery") {

TEST_CASE("the table and the instruction give the published CRC-32C check values") {
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending += static_cast<char>(i);
    descending += static_cast<char>(31 - i);
  }
  struct Vector {
    std::string bytes;
    std::uint32_t crc;
  };
  // RFC 3720 (iSCSI), appendix B.4, and the check value of the CRC catalogue.
  const std::vector<Vector> vectors = {{"123456789", 0xE3069283u},
                                       {std::string(32, '\0'), 0x8A9136AAu},
                                       {std::string(32, '\xff'), 0x62A8AB43u},
                                       {ascending, 0x46DD794Eu},
                                       {descending, 0x113FDB5Cu},
                                       {"", 0u}};
  for (const Vector& v : vectors) {
    CAPTURE(v.bytes.size());
    CHECK(crc_table(v.bytes) == v.crc);
    CHECK(kl::detail::crc32c(v.bytes) == v.crc);  // whichever the processor picked
    if (kl::detail::has_hardware_crc32c()) {
      CHECK(kl::detail::crc32c_extend_hardware(0, v.bytes.data(), v.bytes.size()) == v.crc);
    }
  }
  if (!kl::detail::has_hardware_crc32c()) MESSAGE("no CRC-32C instruction here: table only");
}

TEST_CASE("the instruction agrees with the table at every length to 4 KiB and every alignment") {
  if (!kl::detail::has_hardware_crc32c()) {
    MESSAGE("no CRC-32C instruction on this processor: nothing to compare");
    return;
  }
  std::mt19937 random(13);
  std::vector<char> bytes(4096 + 8);
  for (char& b : bytes) b = static_cast<char>(random());
  for (std::size_t align = 0; align < 8; ++align) {
    const char* p = bytes.data() + align;
    for (std::size_t n = 0; n <= 4096; ++n) {
      const std::uint32_t seed = n % 3 == 0 ? 0 : static_cast<std::uint32_t>(random());
      if (kl::detail::crc32c_extend_hardware(seed, p, n) != kl::detail::crc32c_extend_table(seed, p, n)) {
        FAIL_CHECK("differs at alignment " << align << ", length " << n);
        return;
      }
    }
  }
  // Extending in pieces gives the CRC of the whole, wherever the cut falls.
  const std::uint32_t whole = kl::detail::crc32c_extend_table(0, bytes.data(), 100);
  for (std::size_t cut = 0; cut <= 100; ++cut) {
    const std::uint32_t first = kl::detail::crc32c_extend_hardware(0, bytes.data(), cut);
    CHECK(kl::detail::crc32c_extend_hardware(first, bytes.data() + cut, 100 - cut) == whole);
  }
}

TEST_CASE("the log format does not change: a log written with either CRC reads with the other") {
  kltest::TempDir table_dir, other_dir;
  auto fill = [](kl::Store& store) {
    for (int i = 0; i < 300; ++i) {
      REQUIRE(store.set("key:" + std::to_string(i), std::string(static_cast<std::size_t>(i), 'v')).ok());
    }
    REQUIRE(store.del("key:7").ok());
    REQUIRE(store.append("key:8", "+tail").ok());
  };
  {
    TableCrcOnly table;
    auto store = open_store(options_for(table_dir.path()));
    fill(*store);
    REQUIRE(store->close().ok());
  }
  {
    auto store = open_store(options_for(other_dir.path()));  // the instruction, if any
    fill(*store);
    REQUIRE(store->close().ok());
  }
  // The same writes make the same bytes, and each store opens under the other CRC.
  CHECK(kltest::read_file(table_dir.file("keystonelight.log")) ==
        kltest::read_file(other_dir.file("keystonelight.log")));
  auto reopened = open_store(options_for(table_dir.path()));
  CHECK(reopened->size() == 299);
  CHECK(reopened->get("key:8") == std::string(8, 'v') + "+tail");
  TableCrcOnly table;
  auto by_table = open_store(options_for(other_dir.path()));
  CHECK(contents(*by_table) == contents(*reopened));
}

TEST_CASE("the record estimate comes from the first records and never exceeds the file") {
  kltest::TempDir dir;
  const std::string path = dir.file("keystonelight.log");
  {
    auto store = open_store(options_for(dir.path()));
    CHECK(OpenLog(path).reader->estimate_records() == 0);  // a header and no record
    for (int i = 0; i < 5000; ++i) {
      char key[17];
      std::snprintf(key, sizeof key, "key:%012d", i);
      REQUIRE(store->set(std::string_view(key, 16), std::string(100, 'v')).ok());
    }
    REQUIRE(store->close().ok());
  }
  OpenLog log(path);
  CHECK(log.reader->estimate_records() == 5000);  // records of one size: exact
  kl::Record record;  // and the reader has not moved
  REQUIRE(log.reader->next(&record) == kl::LogReader::Result::kRecord);
  CHECK(record.key == "key:000000000000");

  // A first record whose header is sealed but claims 400 MB, in a file of 700 KB: no
  // record reads, so nothing is estimated from it.
  std::string bytes = kltest::read_file(path);
  kl::detail::store_u32(&bytes[kl::kFileHeaderBytes + 13], 400u << 20);
  kl::detail::seal_record_header(&bytes[kl::kFileHeaderBytes]);
  kltest::write_file(path, bytes);
  CHECK(OpenLog(path).reader->estimate_records() == 0);

  // However the records are sized, at most one per kRecordHeaderBytes of the file.
  kltest::TempDir small;
  {
    auto store = open_store(options_for(small.path()));
    for (int i = 0; i < 100; ++i) REQUIRE(store->set("", "").ok());  // 25-byte records
    REQUIRE(store->close().ok());
  }
  CHECK(OpenLog(small.file("keystonelight.log")).reader->estimate_records() == 100);
}

TEST_CASE("peek_key shows the keys ahead in the buffer, and nothing past it") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir.path()));
    REQUIRE(store->set("a", "1").ok());
    REQUIRE(store->set("bb", "22").ok());
    REQUIRE(store->del("a").ok());
    REQUIRE(store->close().ok());
  }
  OpenLog log(dir.file("keystonelight.log"));
  kl::Record record;
  REQUIRE(log.reader->next(&record) == kl::LogReader::Result::kRecord);  // fills the buffer
  CHECK(log.reader->peek_key(0) == "bb");
  CHECK(log.reader->peek_key(1) == "a");
  CHECK(log.reader->peek_key(2).empty());  // the end of the file
  CHECK(log.reader->peek_key(50).empty());
}

TEST_CASE("a reserved table takes that many keys without growing, and finds them all") {
  kl::detail::Table table;
  table.reserve(1000);
  const std::size_t buckets = table.bucket_count();
  CHECK(buckets >= 1000);
  for (int i = 0; i < 1000; ++i) {
    auto [it, added] = table.find_or_add("key:" + std::to_string(i));
    CHECK(added);
    it->second = std::to_string(i);
  }
  CHECK(table.bucket_count() == buckets);
  table.reserve(10);  // never shrinks
  CHECK(table.bucket_count() == buckets);
  for (int i = 0; i < 1000; i += 37) {
    table.prefetch("key:" + std::to_string(i), i % 2 == 0);  // a hint; changes nothing
    auto [it, added] = table.find_or_add("key:" + std::to_string(i));
    CHECK_FALSE(added);
    CHECK(it->second == std::to_string(i));
  }
  CHECK(table.size() == 1000);
}

TEST_CASE("a replay keeps the live size exact without a walk: what a compaction writes") {
  kltest::TempDir dir;
  std::atomic<std::int64_t> now{1000000};
  kl::Options options = options_for(dir.path());
  options.clock = [&now] { return now.load(); };
  options.active_expiry = false;
  {
    auto store = open_store(options);
    for (int i = 0; i < 200; ++i) REQUIRE(store->set("k" + std::to_string(i), std::string(static_cast<std::size_t>(i), 'x')).ok());
    for (int i = 0; i < 200; i += 3) REQUIRE(store->set("k" + std::to_string(i), "short").ok());
    for (int i = 1; i < 200; i += 7) REQUIRE(store->del("k" + std::to_string(i)).ok());
    for (int i = 2; i < 200; i += 5) REQUIRE(store->append("k" + std::to_string(i), "++").ok());
    REQUIRE(store->append("made-by-append", "abc").ok());
    REQUIRE(store->set("soon", "gone", std::chrono::milliseconds(10)).ok());
    REQUIRE(store->set("later", "kept", std::chrono::hours(1)).ok());
    kl::WriteBatch batch;
    batch.set("b1", "one");
    batch.del("k5");
    REQUIRE(store->write(batch).ok());
    REQUIRE(store->close().ok());
  }
  now += 1000;  // "soon" expires while the store is closed
  auto store = open_store(options);
  CHECK(store->recovery().keys_expired == 1);
  CHECK_FALSE(store->exists("soon"));
  std::uint64_t live = kl::kFileHeaderBytes;  // Stats::live_bytes counts the file header
  for (const auto& [key, value] : store->entries()) live += kl::kRecordHeaderBytes + key.size() + value.size();
  CHECK(store->stats().live_bytes == live);
  REQUIRE(store->compact().ok());
  CHECK(store->stats().log_bytes == live);
}

}  // TEST_SUITE
