// Chapter 4: compaction rewrites the log from memory, shrinks it, survives a crash at
// every step, and leaves the old log untouched when it fails. These tests also run
// against every later chapter and the final header.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <random>
#include <string>
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
using kltest::Fault;
using kltest::Op;

namespace {

kl::Options options_for(const kltest::TempDir& dir, kl::FileSystem* fs = nullptr) {
  kl::Options options;
  options.dir = dir.path();
  options.fsync = kl::FsyncPolicy::kNever;
  options.file_system = fs;
  options.compact_ratio = 0;  // only the compactions a test asks for
  options.info_log = [](const std::string&) {};
  return options;
}

std::uint64_t file_size(const std::string& path) { return kltest::read_file(path).size(); }

// Sets, overwrites, deletes and empty values, the same for a given seed; applied to the
// store and to the model alike. Values are large enough that a compaction writes several
// chunks.
void churn(kl::Store& store, Model& model, unsigned seed, int operations) {
  std::mt19937 random(seed);
  for (int i = 0; i < operations; ++i) {
    const std::string key = "key" + std::to_string(random() % 200);
    const auto what = random() % 10;
    if (what < 2) {
      REQUIRE(store.del(key).ok());
      model.erase(key);
    } else {
      std::string value(what == 2 ? 0 : random() % 20000, static_cast<char>('a' + random() % 26));
      REQUIRE(store.set(key, value).ok());
      model[key] = value;
    }
  }
}

}  // namespace

TEST_SUITE("chapter 4: compaction") {

TEST_CASE("after compaction and reopen the contents are exactly the same, and the log is smaller") {
  kltest::TempDir dir;
  const std::string log = dir.file(kl::kLogFileName);
  Model model;
  {
    auto store = open_store(options_for(dir));
    churn(*store, model, 1, 3000);
    const std::uint64_t before = file_size(log);
    REQUIRE(store->compact().ok());
    CHECK(contents(*store) == model);
    const std::uint64_t after = file_size(log);
    CHECK(after < before / 2);
    CHECK(after == store->stats().live_bytes);
    CHECK(store->stats().log_bytes == after);
    // The store goes on appending to the new log.
    churn(*store, model, 2, 500);
    REQUIRE(store->compact().ok());
    churn(*store, model, 3, 500);
  }
  auto store = open_store(options_for(dir));
  CHECK(contents(*store) == model);
  CHECK(store->recovery().bytes_dropped == 0);
}

TEST_CASE("a compacted log holds one record per live key and nothing for deleted keys") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir));
    REQUIRE(store->set("a", "1").ok());
    REQUIRE(store->set("a", "2").ok());
    REQUIRE(store->set("gone", "x").ok());
    REQUIRE(store->del("gone").ok());
    REQUIRE(store->set("empty", "").ok());
    REQUIRE(store->compact().ok());
  }
  CHECK(file_size(dir.file(kl::kLogFileName)) ==
        kl::kFileHeaderBytes + 2 * kl::kRecordHeaderBytes + 2 + 5);
  auto store = open_store(options_for(dir));
  CHECK(contents(*store) == Model{{"a", "2"}, {"empty", ""}});
  CHECK(store->recovery().records == 2);
}

TEST_CASE("a store that only grows by new keys never compacts") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir);
  options.compact_min_bytes = 64 * 1024;
  options.compact_ratio = 2;
  auto store = open_store(options);
  for (int k = 0; k < 20000; ++k) REQUIRE(store->set("key" + std::to_string(k), "value").ok());
  CHECK(store->stats().compactions == 0);
  CHECK(store->stats().log_bytes == store->stats().live_bytes);
}

// The child builds a store, then compacts with a crash armed at one step; the parent
// reopens the directory and must find the same contents (the old log or the new, whole),
// and no temporary file.
TEST_CASE("a crash at any step of a compaction loses nothing and leaves no mix") {
  struct Point {
    const char* name;
    Op op;
    int skip;
    Fault fault;
  };
  const Point points[] = {
      {"while writing the temporary file", Op::kAppend, 1, Fault::kCrashAfter},
      {"after writing it, before its fsync", Op::kSync, 0, Fault::kCrashBefore},
      {"after its fsync, before the rename", Op::kRename, 0, Fault::kCrashBefore},
      {"after the rename, before the directory fsync", Op::kRename, 0, Fault::kCrashAfter},
      {"after the directory fsync", Op::kSyncDir, 0, Fault::kCrashAfter},
      {"never: the compaction finishes", Op::kRename, 0, Fault::kNone},
  };
  for (const Point& point : points) {
    CAPTURE(point.name);
    kltest::TempDir dir;
    Model model;
    {  // Build the model in the parent too: churn is deterministic for a seed.
      kltest::TempDir scratch;
      auto store = open_store(options_for(scratch));
      churn(*store, model, 7, 2000);
    }
    const std::string log = dir.file(kl::kLogFileName);
    int sizes[2];
    REQUIRE(::pipe(sizes) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      kltest::FaultyFileSystem fs;
      std::unique_ptr<kl::Store> store;
      if (!kl::Store::open(options_for(dir, &fs), &store).ok()) ::_exit(1);
      Model ignored;
      churn(*store, ignored, 7, 2000);
      std::uint64_t before = kltest::read_file(log).size();
      if (::write(sizes[1], &before, sizeof before) != sizeof before) ::_exit(2);
      if (point.fault != Fault::kNone) fs.arm(point.op, point.skip, point.fault);
      ::_exit(store->compact().ok() ? 0 : 3);
    }
    ::close(sizes[1]);
    std::uint64_t old_size = 0;
    REQUIRE(::read(sizes[0], &old_size, sizeof old_size) == sizeof old_size);
    ::close(sizes[0]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == (point.fault == Fault::kNone ? 0 : kltest::kCrashExitCode));

    const std::uint64_t size_left = file_size(log);
    auto store = open_store(options_for(dir));
    CHECK(contents(*store) == model);
    CHECK(store->recovery().bytes_dropped == 0);
    const std::uint64_t new_size = store->stats().live_bytes;
    CHECK((size_left == old_size || size_left == new_size));
    CHECK_FALSE(kl::default_file_system()->exists(dir.file(kl::kCompactFileName)));
  }
}

TEST_CASE("a compaction that fails leaves the old log untouched and the store writable") {
  struct Failure {
    const char* name;
    Op op;
    std::string reason;
  };
  const Failure failures[] = {
      {"the temporary file cannot be created", Op::kOpen, "Permission denied"},
      {"the disk is full", Op::kAppend, "No space left on device"},
      {"the temporary file's fsync fails", Op::kSync, "Input/output error"},
      {"the rename fails", Op::kRename, "Read-only file system"},
  };
  for (const Failure& failure : failures) {
    CAPTURE(failure.name);
    kltest::TempDir dir;
    kltest::FaultyFileSystem fs;
    const std::string log = dir.file(kl::kLogFileName);
    Model model;
    {
      auto store = open_store(options_for(dir, &fs));
      churn(*store, model, 11, 300);
      const std::string before = kltest::read_file(log);
      fs.arm(failure.op, 0, Fault::kFail, failure.reason);
      kl::Status s = store->compact();
      CHECK(s.code() == Code::kIOError);
      CHECK(s.message().find(failure.reason) != std::string::npos);
      CHECK(s.message().find("the log is unchanged") != std::string::npos);
      CHECK(kltest::read_file(log) == before);
      CHECK_FALSE(fs.exists(dir.file(kl::kCompactFileName)));
      CHECK(store->stats().failed_compactions == 1);
      CHECK(store->stats().last_compaction.code() == Code::kIOError);
      REQUIRE(store->set("after", "failure").ok());  // still writable
      model["after"] = "failure";
    }
    auto store = open_store(options_for(dir));
    CHECK(contents(*store) == model);
  }
}

TEST_CASE("a failed directory fsync after the rename stops writes, and nothing is lost") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  Model model;
  {
    auto store = open_store(options_for(dir, &fs));
    churn(*store, model, 5, 300);
    fs.arm(Op::kSyncDir, 0, Fault::kFail, "Input/output error");
    kl::Status s = store->compact();
    CHECK(s.code() == Code::kIOError);
    CHECK(s.message().find("fsync directory") != std::string::npos);
    CHECK(store->set("k", "v").code() == Code::kIOError);
    CHECK(contents(*store) == model);  // reads go on
  }
  auto store = open_store(options_for(dir));
  CHECK(contents(*store) == model);
}

TEST_CASE("a temporary file left by an interrupted compaction is removed on open") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir));
    REQUIRE(store->set("k", "v").ok());
  }
  kltest::write_file(dir.file(kl::kCompactFileName), "half a compaction");
  std::vector<std::string> notes;
  kl::Options options = options_for(dir);
  options.info_log = [&](const std::string& note) { notes.push_back(note); };
  auto store = open_store(options);
  CHECK_FALSE(kl::default_file_system()->exists(dir.file(kl::kCompactFileName)));
  CHECK(store->get("k") == "v");
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find(kl::kCompactFileName) != std::string::npos);
}

TEST_CASE("compaction under everysec keeps the flusher working on the new log") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir);
  options.fsync = kl::FsyncPolicy::kEverySecond;
  Model model;
  {
    auto store = open_store(options);
    churn(*store, model, 21, 400);
    REQUIRE(store->compact().ok());
    churn(*store, model, 22, 400);
    REQUIRE(store->sync().ok());
    REQUIRE(store->close().ok());
  }
  auto store = open_store(options);
  CHECK(contents(*store) == model);
}

TEST_CASE("a compact_ratio that would compact after every write is refused on open") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir);
  for (double ratio : {0.5, 1.0, -2.0}) {
    options.compact_ratio = ratio;
    std::unique_ptr<kl::Store> store;
    kl::Status s = kl::Store::open(options, &store);
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find("compact_ratio") != std::string::npos);
  }
}

TEST_CASE("compacting a store in memory is a harmless no-op") {
  kl::Store store;
  REQUIRE(store.set("k", "v").ok());
  CHECK(store.compact().ok());
  CHECK(store.get("k") == "v");
  CHECK(store.stats().log_bytes == 0);
  CHECK(store.stats().live_bytes == kl::kRecordHeaderBytes + 2);
}

}  // TEST_SUITE

// Automatic compaction runs in the writing thread in this chapter, so these tests can read
// its effects the moment a write returns. From chapter 5 on it runs on a thread of its
// own; chapter 5's tests check the same properties once that thread has caught up.
TEST_SUITE("up to chapter 4: automatic compaction in the writer's thread") {

TEST_CASE("writing the same 1000 keys over and over, the directory stops growing") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir);
  options.compact_min_bytes = 256 * 1024;
  options.compact_ratio = 2;
  const std::string log = dir.file(kl::kLogFileName);
  std::uint64_t largest_late = 0;
  {
    auto store = open_store(options);
    for (int round = 0; round < 40; ++round) {
      for (int k = 0; k < 1000; ++k) {
        std::string value = "round " + std::to_string(round) + " key " + std::to_string(k);
        value.resize(100, '.');
        REQUIRE(store->set("key" + std::to_string(k), value).ok());
      }
      if (round >= 10) largest_late = std::max(largest_late, file_size(log));
    }
    const kl::Stats stats = store->stats();
    CHECK(stats.compactions > 5);
    CHECK(stats.failed_compactions == 0);
    // Bounded by the trigger: twice the live data, plus the write that crossed it.
    CHECK(largest_late <= 2 * stats.live_bytes + kl::kRecordHeaderBytes + 200);
  }
  std::vector<std::string> names;
  REQUIRE(kl::default_file_system()->list_dir(dir.path(), &names).ok());
  CHECK(names.size() == 2);  // the log and LOCK: no temporary file left behind
  auto store = open_store(options);
  REQUIRE(store->size() == 1000);
  for (int k = 0; k < 1000; ++k) {
    auto value = store->get("key" + std::to_string(k));
    REQUIRE(value.has_value());
    CHECK(value->rfind("round 39 key " + std::to_string(k) + ".", 0) == 0);
  }
}

TEST_CASE("a failed automatic compaction is reported, not retried on every write") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir, &fs);
  options.compact_min_bytes = 4096;
  options.compact_ratio = 2;
  std::vector<std::string> notes;
  options.info_log = [&](const std::string& note) { notes.push_back(note); };
  auto store = open_store(options);
  fs.arm(Op::kRename, 0, Fault::kFailAlways, "Read-only file system");
  for (int i = 0; i < 2000; ++i) REQUIRE(store->set("same key", std::to_string(i)).ok());
  const kl::Stats stats = store->stats();
  CHECK(stats.compactions == 0);
  CHECK(stats.failed_compactions >= 1);
  // One try per compact_min_bytes of growth: the log grew by about 2000 * 37 bytes.
  CHECK(stats.failed_compactions <= 2000 * (kl::kRecordHeaderBytes + 12) / 4096 + 1);
  CHECK(notes.size() == stats.failed_compactions);
  fs.disarm();
}

TEST_CASE("after a failed automatic compaction, a later success resets the back-off") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir, &fs);
  options.compact_min_bytes = 4096;
  options.compact_ratio = 2;
  auto store = open_store(options);
  fs.arm(Op::kRename, 0, Fault::kFail, "Read-only file system");
  int writes = 0;
  while (store->stats().failed_compactions == 0 && writes < 10000) {
    REQUIRE(store->set("same key", std::to_string(writes++)).ok());
  }
  REQUIRE(store->stats().failed_compactions == 1);
  REQUIRE(store->compact().ok());  // by hand, now that the disk is fine
  const std::uint64_t compacted = store->stats().log_bytes;
  for (int i = 0; i < 2000; ++i) REQUIRE(store->set("same key", std::to_string(i)).ok());
  CHECK(store->stats().compactions > 1);  // automatic ones again, in the small new log
  CHECK(store->stats().log_bytes < compacted + 2 * 4096);
}

}  // TEST_SUITE
