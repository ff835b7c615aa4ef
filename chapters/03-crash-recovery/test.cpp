// Chapter 3: a persistent store survives restarts and crashes, recovers a torn tail,
// refuses real corruption, fails loudly on I/O errors, and keeps a second opener out.
// These tests also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <random>
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
using Code = kl::Status::Code;

namespace {

kl::Options options_for(const kltest::TempDir& dir, kl::FsyncPolicy fsync = kl::FsyncPolicy::kNever) {
  kl::Options options;
  options.dir = dir.path();
  options.fsync = fsync;
  options.info_log = [](const std::string&) {};  // keep test output quiet
  return options;
}

std::string log_path(const kltest::TempDir& dir) { return dir.file(kl::kLogFileName); }

// A store with a history: sets, overwrites, deletes and odd bytes. Returns the end offset
// of each record in the log and the model after each record.
struct History {
  std::vector<std::uint64_t> ends;  // ends[i]: file size once record i is written
  std::vector<Model> after;         // after[i]: contents once records 0..i are applied
};
History write_history(const kltest::TempDir& dir) {
  auto store = open_store(options_for(dir));
  History h;
  Model model;
  std::uint64_t size = kl::kFileHeaderBytes;
  auto record = [&](std::size_t key_bytes, std::size_t value_bytes) {
    size += kl::kRecordHeaderBytes + key_bytes + value_bytes;
    h.ends.push_back(size);
    h.after.push_back(model);
  };
  for (int i = 0; i < 30; ++i) {
    std::string key = "k" + std::to_string(i % 7);
    if (i % 5 == 4 && model.count(key)) {
      REQUIRE(store->del(key).ok());
      model.erase(key);
      record(key.size(), 0);
    } else {
      std::string value = std::string(static_cast<std::size_t>(i % 4), char('a' + i % 26)) + "\r\n";
      REQUIRE(store->set(key, value).ok());
      model[key] = value;
      record(key.size(), value.size());
    }
  }
  REQUIRE(store->close().ok());
  REQUIRE(kltest::read_file(log_path(dir)).size() == size);
  return h;
}

}  // namespace

TEST_SUITE("chapter 3: crash recovery") {

TEST_CASE("a reopened store has every key it had, and deleted keys stay deleted") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir));
    REQUIRE(store->set("a", "1").ok());
    REQUIRE(store->set("b", "2").ok());
    REQUIRE(store->set("a", "3").ok());
    REQUIRE(store->del("b").ok());
    REQUIRE(store->set("empty", "").ok());
  }
  auto store = open_store(options_for(dir));
  CHECK(contents(*store) == Model{{"a", "3"}, {"empty", ""}});
  CHECK(store->recovery().records == 5);
  CHECK(store->recovery().bytes_dropped == 0);
}

TEST_CASE("binary keys and values, empty values and a 16 MiB value survive a restart") {
  kltest::TempDir dir;
  std::string big(16 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 256);
  const std::string nasty_key("\0key\r\n\xff", 7);
  const std::string nasty_value("\r\n\0\0\n", 5);
  {
    auto store = open_store(options_for(dir, kl::FsyncPolicy::kAlways));
    REQUIRE(store->set("big", big).ok());
    REQUIRE(store->set(nasty_key, nasty_value).ok());
    REQUIRE(store->set("", "").ok());
    REQUIRE(store->close().ok());
  }
  auto store = open_store(options_for(dir));
  CHECK(store->get("big") == big);
  CHECK(store->get(nasty_key) == nasty_value);
  REQUIRE(store->get("").has_value());
  CHECK(store->get("")->empty());
  CHECK(store->size() == 3);
}

TEST_CASE("a log cut at every byte recovers exactly the whole records, and stays appendable") {
  kltest::TempDir source;
  const History h = write_history(source);
  const std::string bytes = kltest::read_file(log_path(source));
  for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
    CAPTURE(cut);
    kltest::TempDir dir;
    kltest::write_file(log_path(dir), bytes.substr(0, cut));
    Model expected;
    std::size_t whole = 0;
    while (whole < h.ends.size() && h.ends[whole] <= cut) expected = h.after[whole++];
    {
      auto store = open_store(options_for(dir));
      REQUIRE(contents(*store) == expected);
      CHECK(store->recovery().records == whole);
      const std::uint64_t good_end = whole ? h.ends[whole - 1] : kl::kFileHeaderBytes;
      CHECK(store->recovery().bytes_dropped == (cut > good_end ? cut - good_end : 0));
      REQUIRE(store->set("after", "cut").ok());
    }
    auto store = open_store(options_for(dir));
    expected["after"] = "cut";
    REQUIRE(contents(*store) == expected);
    CHECK(store->recovery().bytes_dropped == 0);
  }
}

TEST_CASE("a flipped bit anywhere never yields a wrong value: it is corruption or a torn tail") {
  kltest::TempDir source;
  {
    auto store = open_store(options_for(source));
    REQUIRE(store->set("alpha", "1").ok());
    REQUIRE(store->set("beta", "two").ok());
    REQUIRE(store->del("alpha").ok());
    REQUIRE(store->set("gamma", "").ok());
  }
  const std::string bytes = kltest::read_file(log_path(source));
  const std::uint64_t h = kl::kRecordHeaderBytes;
  const std::vector<std::uint64_t> ends = {16 + h + 6, 16 + h + 6 + h + 7, 16 + h + 6 + h + 7 + h + 5,
                                           16 + h + 6 + h + 7 + h + 5 + h + 5};
  REQUIRE(bytes.size() == ends.back());
  const std::vector<Model> after = {{{"alpha", "1"}},
                                    {{"alpha", "1"}, {"beta", "two"}},
                                    {{"beta", "two"}},
                                    {{"beta", "two"}, {"gamma", ""}}};
  int refused = 0, torn = 0;
  for (std::size_t bit = 0; bit < bytes.size() * 8; ++bit) {
    CAPTURE(bit);
    std::string flipped = bytes;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
    kltest::TempDir dir;
    kltest::write_file(log_path(dir), flipped);
    std::unique_ptr<kl::Store> store;
    kl::Status s = kl::Store::open(options_for(dir), &store);
    if (!s.ok()) {
      CHECK((s.code() == Code::kCorruption || s.code() == Code::kNotSupported));
      CHECK(s.message().find(log_path(dir)) != std::string::npos);
      ++refused;
      continue;
    }
    // Opened: the damaged record was the last, so it and only it is gone.
    std::size_t damaged = 0;
    while (ends[damaged] <= bit / 8) ++damaged;
    CHECK(damaged == ends.size() - 1);
    CHECK(contents(*store) == after[damaged - 1]);
    CHECK(store->recovery().bytes_dropped > 0);
    ++torn;
  }
  CHECK(refused > 0);
  CHECK(torn > 0);
}

TEST_CASE("a damaged record with valid records after it is corruption: refused, file untouched") {
  kltest::TempDir dir;
  const History h = write_history(dir);
  std::string bytes = kltest::read_file(log_path(dir));
  const std::uint64_t damaged_at = h.ends[9];  // the start of record 10
  bytes[static_cast<std::size_t>(damaged_at + 2)] ^= 0x40;
  kltest::write_file(log_path(dir), bytes);

  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options_for(dir), &store);
  CHECK(s.code() == Code::kCorruption);
  CHECK(store == nullptr);
  CHECK(s.message().find(log_path(dir)) != std::string::npos);
  CHECK(s.message().find("offset " + std::to_string(damaged_at)) != std::string::npos);
  CHECK(s.message().find("offset " + std::to_string(h.ends[10])) != std::string::npos);
  CHECK(s.message().find("keystonelight-check --fix") != std::string::npos);
  CHECK(kltest::read_file(log_path(dir)) == bytes);
}

TEST_CASE("the recovery of a torn tail is reported through info_log") {
  kltest::TempDir dir;
  write_history(dir);
  std::string bytes = kltest::read_file(log_path(dir));
  kltest::write_file(log_path(dir), bytes.substr(0, bytes.size() - 3));
  std::vector<std::string> notes;
  kl::Options options = options_for(dir);
  options.info_log = [&](const std::string& note) { notes.push_back(note); };
  auto store = open_store(options);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("dropped " + std::to_string(store->recovery().bytes_dropped) + " bytes") !=
        std::string::npos);
  CHECK(notes[0].find(log_path(dir)) != std::string::npos);
}

// A server stopped (SIGTERM) while it replays a long log must stop promptly, not after
// the replay, and must leave the log as it was.
TEST_CASE("keep_loading stops a replay at once, Cancelled, with the log unchanged") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir));
    for (int i = 0; i < 20000; ++i) REQUIRE(store->set("key" + std::to_string(i), "v").ok());
  }
  const std::string before = kltest::read_file(log_path(dir));
  kl::Options options = options_for(dir);
  int asked = 0;
  options.keep_loading = [&asked] { return ++asked < 2; };
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options, &store);
  CHECK(s.code() == Code::kCancelled);
  CHECK(s.message() == "loading " + log_path(dir) + " was stopped after 8192 records, as " +
                           "asked (Options::keep_loading); the log was not changed: open it "
                           "again");
  CHECK(asked == 2);
  CHECK(store == nullptr);
  CHECK(kltest::read_file(log_path(dir)) == before);

  asked = 0;
  options.keep_loading = [&asked] { return ++asked > 0; };
  store = open_store(options);  // the lock was let go
  CHECK(store->size() == 20000);
  CHECK(asked == 20000 / 4096);
}

TEST_CASE("a second opener of a locked directory is told the holder's pid") {
  kltest::TempDir dir;
  auto first = open_store(options_for(dir));
  std::unique_ptr<kl::Store> second;
  kl::Status s = kl::Store::open(options_for(dir), &second);
  CHECK(s.code() == Code::kBusy);
  CHECK(s.message().find("pid " + std::to_string(::getpid())) != std::string::npos);
  CHECK(s.message().find(dir.file("LOCK")) != std::string::npos);
  REQUIRE(first->close().ok());
  CHECK(kl::Store::open(options_for(dir), &second).ok());  // released by close()
}

TEST_CASE("another process holding the directory keeps us out, and its death lets us in") {
  kltest::TempDir dir;
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::unique_ptr<kl::Store> store;
    if (!kl::Store::open(options_for(dir), &store).ok()) ::_exit(1);
    (void)!::write(ready[1], "x", 1);
    ::pause();  // until killed
    ::_exit(0);
  }
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options_for(dir), &store);
  CHECK(s.code() == Code::kBusy);
  CHECK(s.message().find("pid " + std::to_string(child)) != std::string::npos);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  CHECK(kl::Store::open(options_for(dir), &store).ok());  // a dead holder holds nothing
}

// The child writes and tells the parent through a pipe after each acknowledged write;
// the parent kills it at a random moment and checks every acknowledged write on reopen.
TEST_CASE("kill -9 at random moments loses no acknowledged write, whatever the fsync policy") {
  std::mt19937 random(20261124);
  for (kl::FsyncPolicy policy : {kl::FsyncPolicy::kAlways, kl::FsyncPolicy::kEverySecond,
                                 kl::FsyncPolicy::kNever}) {
    for (int trial = 0; trial < 4; ++trial) {
      kltest::TempDir dir;
      int acks[2];
      REQUIRE(::pipe(acks) == 0);
      pid_t child = ::fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        ::close(acks[0]);
        std::unique_ptr<kl::Store> store;
        if (!kl::Store::open(options_for(dir, policy), &store).ok()) ::_exit(1);
        for (std::uint32_t i = 0; i < 1000000; ++i) {
          if (!store->set("key" + std::to_string(i), std::string(i % 100, 'v')).ok()) ::_exit(2);
          if (::write(acks[1], &i, sizeof i) != sizeof i) ::_exit(3);
        }
        ::_exit(0);
      }
      ::close(acks[1]);
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + random() % 100));
      ::kill(child, SIGKILL);
      int status = 0;
      ::waitpid(child, &status, 0);
      CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
      std::uint32_t acked = 0, last = 0;
      while (::read(acks[0], &last, sizeof last) == sizeof last) ++acked;
      ::close(acks[0]);
      CAPTURE(acked);
      auto store = open_store(options_for(dir));
      for (std::uint32_t i = 0; i < acked; ++i) {
        auto value = store->get("key" + std::to_string(i));
        REQUIRE(value.has_value());
        REQUIRE(*value == std::string(i % 100, 'v'));
      }
      CHECK(store->size() >= acked);  // the write in flight may have landed too
      CHECK(store->size() <= acked + 1);
    }
  }
}

TEST_CASE("a full disk fails the write, names the cause, and stops later writes; reads go on") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir);
  options.file_system = &fs;
  {
    auto store = open_store(options);
    REQUIRE(store->set("kept", "1").ok());
    fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kPartialAppend, "No space left on device", 7);
    kl::Status s = store->set("lost", "2");
    CHECK(s.code() == Code::kIOError);
    CHECK(s.message().find("No space left on device") != std::string::npos);
    CHECK(s.message().find(log_path(dir)) != std::string::npos);
    CHECK(store->get("lost") == std::nullopt);  // never applied
    // The disk has room again, but the store does not pretend: it stays failed.
    CHECK(store->set("later", "3").code() == Code::kIOError);
    CHECK(store->del("kept").code() == Code::kIOError);
    CHECK(store->get("kept") == "1");
    CHECK(store->close().code() == Code::kIOError);
  }
  auto store = open_store(options_for(dir));
  CHECK(contents(*store) == Model{{"kept", "1"}});
  CHECK(store->recovery().bytes_dropped == 0);  // the partial record was cut back
}

TEST_CASE("a failed fsync with kAlways fails the write and every later one") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir, kl::FsyncPolicy::kAlways);
  options.file_system = &fs;
  auto store = open_store(options);
  REQUIRE(store->set("a", "1").ok());
  fs.arm(kltest::Op::kSync, 0, kltest::Fault::kFail, "Input/output error");
  kl::Status s = store->set("b", "2");
  CHECK(s.code() == Code::kIOError);
  CHECK(s.message().find("fsync " + log_path(dir) + ": Input/output error") != std::string::npos);
  CHECK(s.message().find("reopen") != std::string::npos);
  CHECK(store->set("c", "3").code() == Code::kIOError);
  CHECK(store->sync().code() == Code::kIOError);
}

TEST_CASE("the everysec flusher syncs in the background, and its failure stops writes") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir, kl::FsyncPolicy::kEverySecond);
  options.file_system = &fs;
  auto store = open_store(options);
  const int syncs_before = fs.calls(kltest::Op::kSync);
  fs.arm(kltest::Op::kSync, 0, kltest::Fault::kFailAlways, "Input/output error");
  REQUIRE(store->set("a", "1").ok());
  kl::Status s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((s = store->set("b", "2")).ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(fs.calls(kltest::Op::kSync) > syncs_before);
  CHECK(s.code() == Code::kIOError);
  CHECK(s.message().find("background fsync") != std::string::npos);
  fs.disarm();
}

TEST_CASE("a failed delete does not claim the key was removed") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir);
  options.file_system = &fs;
  auto store = open_store(options);
  REQUIRE(store->set("k", "v").ok());
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFail, "No space left on device");
  bool existed = true;
  CHECK(store->del("k", &existed).code() == Code::kIOError);
  CHECK_FALSE(existed);
  CHECK(store->get("k") == "v");
}

TEST_CASE("the parent of the data directory is synced, so a new directory survives power loss") {
  kltest::TempDir parent;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(parent, kl::FsyncPolicy::kAlways);
  options.dir = parent.file("data");
  options.file_system = &fs;
  auto store = open_store(options);
  CHECK(fs.calls(kltest::Op::kSyncDir) >= 2);  // the parent, and the data directory itself
}

TEST_CASE("a store opened without a directory stays in memory and makes no files") {
  kl::Options options;
  std::unique_ptr<kl::Store> store;
  REQUIRE(kl::Store::open(options, &store).ok());
  REQUIRE(store->set("k", "v").ok());
  CHECK(store->get("k") == "v");
  CHECK(store->close().ok());
  CHECK(store->recovery().records == 0);
}

TEST_CASE("a key of 1 MiB is written, recovered and compacted like any other") {
  kltest::TempDir dir;
  const std::string key(std::size_t{1} << 20, 'k');
  {
    auto store = open_store(options_for(dir));
    REQUIRE(store->set(key, "value of a long key").ok());
    REQUIRE(store->set("short", "v").ok());
    CHECK(store->close().ok());
  }
  auto store = open_store(options_for(dir));
  CHECK(store->get(key) == "value of a long key");
  CHECK(store->get("short") == "v");
  CHECK(store->recovery().records == 2);
}

TEST_CASE("keys and values over the limits are refused before anything is written") {
  kltest::TempDir dir;
  auto store = open_store(options_for(dir));
  kl::Status s = store->set(std::string(kl::kMaxKeyBytes + 1, 'k'), "v");
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(store->set("ok", "still writable").ok());  // a refused write does not fail the store
  CHECK(kltest::read_file(log_path(dir)).size() ==
        kl::kFileHeaderBytes + kl::kRecordHeaderBytes + 2 + 14);
}

TEST_CASE("a whole record over this build's limits is refused, never cut off as torn") {
  kltest::TempDir dir;
  std::string bytes = kl::detail::encode_file_header();
  kl::detail::encode_record(kl::RecordType::kPut, "small", "v", 0, &bytes);
  // As a build with a larger KEYSTONELIGHT_MAX_KEY_BYTES would have written it.
  kl::detail::encode_record(kl::RecordType::kPut, std::string(kl::kMaxKeyBytes + 1, 'k'), "v", 0,
                            &bytes);
  kltest::write_file(log_path(dir), bytes);
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options_for(dir), &store);
  CHECK(s.code() == Code::kCorruption);
  CHECK(s.message().find("KEYSTONELIGHT_MAX_KEY_BYTES") != std::string::npos);
  CHECK(s.message().find("offset " + std::to_string(kl::kFileHeaderBytes + kl::kRecordHeaderBytes + 6)) !=
        std::string::npos);
  CHECK(kltest::read_file(log_path(dir)) == bytes);
}

TEST_CASE("a record of an unknown type behind a valid header CRC is refused, never cut off") {
  kltest::TempDir dir;
  std::string bytes = kl::detail::encode_file_header();
  kl::detail::encode_record(kl::RecordType::kPut, "kept", "v", 0, &bytes);
  const std::size_t second = bytes.size();
  kl::detail::encode_record(kl::RecordType::kPut, "from a newer build", "v", 0, &bytes);
  bytes[second + 8] = 7;  // a type this build does not know, sealed as a writer would
  kl::detail::seal_record_header(&bytes[second]);
  kltest::write_file(log_path(dir), bytes);
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options_for(dir), &store);
  CHECK(s.code() == Code::kCorruption);
  CHECK(s.message().find("a record type this build does not know") != std::string::npos);
  CHECK(s.message().find("offset " + std::to_string(second)) != std::string::npos);
  CHECK(kltest::read_file(log_path(dir)) == bytes);
}

TEST_CASE("diagnose tells a torn tail, damage before the end, and a header it cannot use apart") {
  kltest::TempDir dir;
  std::string good = kl::detail::encode_file_header();
  kl::detail::encode_record(kl::RecordType::kPut, "a", "1", 0, &good);
  const std::size_t second = good.size();
  kl::detail::encode_record(kl::RecordType::kPut, "b", "2", 0, &good);
  const std::size_t third = good.size();
  kl::detail::encode_record(kl::RecordType::kPut, "c", "3", 0, &good);
  auto diagnosis_of = [&](const std::string& bytes) {
    kltest::write_file(log_path(dir), bytes);
    std::unique_ptr<kl::File> file;
    REQUIRE(kl::default_file_system()->open(log_path(dir), false, &file).ok());
    kl::LogReader reader(file.get());
    kl::LogReader::Header header;
    REQUIRE(reader.open(&header).ok());
    kl::Record record;
    kl::LogReader::Result result;
    while ((result = reader.next(&record)) == kl::LogReader::Result::kRecord) {}
    kl::Diagnosis diagnosis;
    REQUIRE(kl::diagnose(reader, result, &diagnosis).ok());
    return diagnosis;
  };
  CHECK(diagnosis_of(good.substr(0, good.size() - 1)).damage == kl::Damage::kTornTail);
  std::string middle = good;
  middle[second + 26] ^= 1;  // the key of the second record
  const kl::Diagnosis corrupt = diagnosis_of(middle);
  CHECK(corrupt.damage == kl::Damage::kCorruption);
  CHECK(corrupt.next_valid == third);
  std::string unknown = good;
  unknown[third + 8] = 9;
  kl::detail::seal_record_header(&unknown[third]);
  CHECK(diagnosis_of(unknown).damage == kl::Damage::kNotUnderstood);
}

TEST_CASE("a torn file header is rewritten; a foreign file is refused") {
  kltest::TempDir dir;
  kltest::write_file(log_path(dir), kl::detail::encode_file_header().substr(0, 5));
  {
    auto store = open_store(options_for(dir));
    CHECK(store->size() == 0);
    REQUIRE(store->set("k", "v").ok());
  }
  CHECK(open_store(options_for(dir))->get("k") == "v");

  kltest::TempDir other;
  kltest::write_file(log_path(other), "hello, I am a text file\n");
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options_for(other), &store);
  CHECK(s.code() == Code::kCorruption);
  CHECK(kltest::read_file(log_path(other)) == "hello, I am a text file\n");
}

TEST_CASE("a missing parent directory is a clear IO error") {
  kl::Options options;
  options.dir = "/nonexistent-keystonelight-parent/data";
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options, &store);
  CHECK(s.code() == Code::kIOError);
  CHECK(s.message().find("/nonexistent-keystonelight-parent/data") != std::string::npos);
}

}  // TEST_SUITE
