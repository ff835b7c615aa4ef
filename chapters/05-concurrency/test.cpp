// Chapter 5: a Store shared between threads. Every test here also runs under
// ThreadSanitizer (`make tsan`), which reports any access to shared data that the locks
// do not order. These tests run against every later chapter and the final header too.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <limits>
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
using SetIf = kl::Store::SetIf;

namespace {

kl::Options options_for(const kltest::TempDir& dir, kl::FsyncPolicy fsync = kl::FsyncPolicy::kNever) {
  kl::Options options;
  options.dir = dir.path();
  options.fsync = fsync;
  options.compact_ratio = 0;
  options.info_log = [](const std::string&) {};
  return options;
}

// Waits, at most 30 s, until the background compactor has nothing left to do.
void wait_for_compactor(const kl::Store& store) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (store.stats().compaction_pending && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE_FALSE(store.stats().compaction_pending);
}

}  // namespace

TEST_SUITE("chapter 5: concurrency") {

TEST_CASE("increment counts from a missing key, accepts negatives and refuses what is not an integer") {
  kl::Store store;
  std::int64_t result = 0;
  REQUIRE(store.increment("n", 5, &result).ok());
  CHECK(result == 5);
  REQUIRE(store.increment("n", -7, &result).ok());
  CHECK(result == -2);
  CHECK(store.get("n") == "-2");

  for (const char* bad : {"", "abc", " 1", "1 ", "+1", "01", "-0", "1.5", "99999999999999999999"}) {
    CAPTURE(bad);
    REQUIRE(store.set("bad", bad).ok());
    kl::Status s = store.increment("bad", 1, &result);
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message() == "value is not an integer or out of range");
    CHECK(store.get("bad") == bad);  // unchanged
  }
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  const std::int64_t min = std::numeric_limits<std::int64_t>::min();
  REQUIRE(store.set("big", std::to_string(max)).ok());
  CHECK(store.increment("big", 1, &result).message() == "increment or decrement would overflow");
  REQUIRE(store.set("small", std::to_string(min)).ok());
  CHECK(store.increment("small", -1, &result).code() == Code::kInvalidArgument);
  REQUIRE(store.increment("small", 0, &result).ok());
  CHECK(result == min);
  REQUIRE(store.increment("small", max, &result).ok());
  CHECK(result == -1);
}

TEST_CASE("append extends a value, or starts one, and reports the new length") {
  kl::Store store;
  std::size_t length = 0;
  REQUIRE(store.append("k", "hello", &length).ok());
  CHECK(length == 5);
  REQUIRE(store.append("k", std::string(" \0world", 7), &length).ok());
  CHECK(length == 12);
  CHECK(store.get("k") == std::string("hello \0world", 12));
}

TEST_CASE("conditional set: if absent, if present, and the previous value") {
  kl::Store store;
  bool stored = false;
  std::optional<std::string> previous;
  REQUIRE(store.set("k", "1", SetIf::kIfPresent, &stored, &previous).ok());
  CHECK_FALSE(stored);
  CHECK(previous == std::nullopt);
  CHECK_FALSE(store.exists("k"));
  REQUIRE(store.set("k", "1", SetIf::kIfAbsent, &stored).ok());
  CHECK(stored);
  REQUIRE(store.set("k", "2", SetIf::kIfAbsent, &stored, &previous).ok());
  CHECK_FALSE(stored);
  CHECK(previous == "1");
  REQUIRE(store.set("k", "3", SetIf::kIfPresent, &stored, &previous).ok());
  CHECK(stored);
  CHECK(previous == "1");
  REQUIRE(store.set("k", "4", SetIf::kAlways, &stored, &previous).ok());
  CHECK(previous == "3");
  CHECK(store.get("k") == "4");
}

TEST_CASE("read-modify-write results survive a restart as plain values") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir));
    for (int i = 0; i < 10; ++i) REQUIRE(store->increment("n", 3).ok());
    REQUIRE(store->append("s", "ab").ok());
    REQUIRE(store->append("s", "cd").ok());
    bool stored = false;
    REQUIRE(store->set("once", "first", SetIf::kIfAbsent, &stored).ok());
    REQUIRE(store->set("once", "second", SetIf::kIfAbsent, &stored).ok());
  }
  auto store = open_store(options_for(dir));
  CHECK(store->get("n") == "30");
  CHECK(store->get("s") == "abcd");
  CHECK(store->get("once") == "first");
  CHECK(store->recovery().records == 13);  // 10 + 2 + 1: a refused set logs nothing
}

// Each thread owns a counter that only it increments; all of them also increment one
// shared counter and set, read and delete keys they share. Whatever the interleaving,
// the counters must come out exact.
TEST_CASE("8 threads mixing reads, writes, deletes and increments leave exact totals") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir);
  options.compact_min_bytes = 64 * 1024;
  options.compact_ratio = 2;  // background compactions happen along the way
  constexpr int kThreads = 8;
  constexpr int kRounds = 1500;
  {
    auto store = open_store(options);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 random(static_cast<unsigned>(t));
        const std::string mine = "counter:" + std::to_string(t);
        for (int i = 0; i < kRounds; ++i) {
          const std::string shared = "shared:" + std::to_string(random() % 16);
          bool ok = store->increment(mine, 1).ok() && store->increment("total", 1).ok();
          switch (random() % 3) {
            case 0: ok = ok && store->set(shared, std::to_string(i)).ok(); break;
            case 1: ok = ok && store->del(shared).ok(); break;
            default: {
              auto value = store->get(shared);  // any value, or none: but never torn
              ok = ok && (!value || value->find_first_not_of("0123456789") == std::string::npos);
            }
          }
          if (!ok) ++failures;
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(failures == 0);
    for (int t = 0; t < kThreads; ++t) {
      CHECK(store->get("counter:" + std::to_string(t)) == std::to_string(kRounds));
    }
    CHECK(store->get("total") == std::to_string(kThreads * kRounds));
    wait_for_compactor(*store);
    CHECK(store->stats().compactions > 0);
  }
  auto store = open_store(options_for(dir));
  CHECK(store->get("total") == std::to_string(kThreads * kRounds));
  for (int t = 0; t < kThreads; ++t) {
    CHECK(store->get("counter:" + std::to_string(t)) == std::to_string(kRounds));
  }
}

TEST_CASE("compactions in a loop while writers write: after reopen nothing acknowledged is lost") {
  kltest::TempDir dir;
  constexpr int kWriters = 4;
  std::vector<std::map<std::string, std::string>> acknowledged(kWriters);
  {
    auto store = open_store(options_for(dir, kl::FsyncPolicy::kEverySecond));
    std::atomic<bool> writing{true};
    std::atomic<int> compactions{0};
    std::thread compactor([&] {
      while (writing) {
        if (store->compact().ok()) ++compactions;
        auto any = store->get("w0:1");  // readers keep reading meanwhile
        (void)any;
      }
    });
    std::vector<std::thread> writers;
    for (int t = 0; t < kWriters; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; i < 3000; ++i) {
          const std::string key = "w" + std::to_string(t) + ":" + std::to_string(i % 50);
          const std::string value = std::to_string(i);
          if (i % 7 == 6) {
            if (store->del(key).ok()) acknowledged[static_cast<std::size_t>(t)].erase(key);
          } else if (store->set(key, value).ok()) {
            acknowledged[static_cast<std::size_t>(t)][key] = value;
          }
        }
      });
    }
    for (auto& writer : writers) writer.join();
    writing = false;
    compactor.join();
    CHECK(compactions > 0);
  }
  auto store = open_store(options_for(dir));
  std::size_t keys = 0;
  for (const auto& mine : acknowledged) {
    for (const auto& [key, value] : mine) CHECK(store->get(key) == value);
    keys += mine.size();
  }
  CHECK(store->size() == keys);
}

TEST_CASE("group commit: concurrent writers with kAlways share fsyncs, and each is durable when it returns") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  fs.slow_sync(std::chrono::milliseconds(2));  // a slow disk, so that writers meet
  kl::Options options = options_for(dir, kl::FsyncPolicy::kAlways);
  options.file_system = &fs;
  constexpr int kThreads = 8;
  constexpr int kWrites = 40;
  {
    auto store = open_store(options);
    const int syncs_before = fs.calls(kltest::Op::kSync);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kWrites; ++i) {
          if (!store->set("t" + std::to_string(t) + ":" + std::to_string(i), "v").ok()) ++failures;
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(failures == 0);
    const int syncs = fs.calls(kltest::Op::kSync) - syncs_before;
    CHECK(syncs >= 1);
    CHECK(syncs < kThreads * kWrites);  // shared: fewer fsyncs than writes
  }
  auto store = open_store(options_for(dir));
  CHECK(store->size() == kThreads * kWrites);
}

TEST_CASE("group commit: a failed fsync fails every write waiting on it, and the store stops") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir, kl::FsyncPolicy::kAlways);
  options.file_system = &fs;
  auto store = open_store(options);
  REQUIRE(store->set("before", "1").ok());
  fs.arm(kltest::Op::kSync, 0, kltest::Fault::kFailAlways, "Input/output error");
  std::vector<std::thread> threads;
  std::atomic<int> succeeded{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      if (store->set("k" + std::to_string(t), "v").ok()) ++succeeded;
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(succeeded == 0);  // nobody is answered OK without a successful fsync
  CHECK(store->set("after", "x").code() == Code::kIOError);
  CHECK(store->get("before") == "1");
  fs.disarm();
}

// As chapter 3's kill -9 test, with several writer threads: each acknowledges through
// the pipe only after set() returned, which with kAlways means after the group's fsync.
TEST_CASE("group commit under kill -9: every write a thread acknowledged is there") {
  std::mt19937 random(5);
  for (int trial = 0; trial < 4; ++trial) {
    kltest::TempDir dir;
    int acks[2];
    REQUIRE(::pipe(acks) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(acks[0]);
      std::unique_ptr<kl::Store> store;
      if (!kl::Store::open(options_for(dir, kl::FsyncPolicy::kAlways), &store).ok()) ::_exit(1);
      std::vector<std::thread> threads;
      for (std::uint32_t t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
          for (std::uint32_t i = 0; i < 1000000; ++i) {
            const std::uint32_t id = t << 24 | i;
            if (!store->set("key" + std::to_string(id), std::to_string(id)).ok()) ::_exit(2);
            if (::write(acks[1], &id, sizeof id) != sizeof id) ::_exit(3);  // atomic: < PIPE_BUF
          }
        });
      }
      for (auto& thread : threads) thread.join();
      ::_exit(0);
    }
    ::close(acks[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + random() % 100));
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    std::vector<std::uint32_t> acked;
    std::uint32_t id = 0;
    while (::read(acks[0], &id, sizeof id) == sizeof id) acked.push_back(id);
    ::close(acks[0]);
    CAPTURE(acked.size());
    auto store = open_store(options_for(dir));
    for (std::uint32_t done : acked) {
      REQUIRE(store->get("key" + std::to_string(done)) == std::to_string(done));
    }
  }
}

TEST_CASE("the background compactor keeps a store that rewrites the same keys bounded") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir);
  options.compact_min_bytes = 256 * 1024;
  options.compact_ratio = 2;
  std::uint64_t largest = 0;
  auto store = open_store(options);
  for (int round = 0; round < 40; ++round) {
    for (int k = 0; k < 1000; ++k) {
      std::string value = "round " + std::to_string(round);
      value.resize(100, '.');
      REQUIRE(store->set("key" + std::to_string(k), value).ok());
    }
    wait_for_compactor(*store);
    largest = std::max(largest, store->stats().log_bytes);
  }
  const kl::Stats stats = store->stats();
  CHECK(stats.compactions > 5);
  // Each round writes about half of the trigger's slack, so waiting at the end of each
  // round keeps the log within the trigger plus one round.
  CHECK(largest <= 3 * stats.live_bytes);
  REQUIRE(store->size() == 1000);
  CHECK(store->get("key999")->rfind("round 39", 0) == 0);
}

TEST_CASE("a failed background compaction is reported once, and not retried until the log grows") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir);
  options.file_system = &fs;
  options.compact_min_bytes = 4096;
  options.compact_ratio = 2;
  std::mutex notes_mu;
  std::vector<std::string> notes;
  options.info_log = [&](const std::string& note) {
    std::lock_guard<std::mutex> lock(notes_mu);  // called from the compactor thread
    notes.push_back(note);
  };
  auto store = open_store(options);
  fs.arm(kltest::Op::kRename, 0, kltest::Fault::kFailAlways, "Read-only file system");
  for (int i = 0; i < 400; ++i) {
    REQUIRE(store->set("same key", std::to_string(i)).ok());
    wait_for_compactor(*store);
  }
  const kl::Stats stats = store->stats();
  CHECK(stats.compactions == 0);
  CHECK(stats.failed_compactions >= 1);
  CHECK(stats.failed_compactions <= 400 * (kl::kRecordHeaderBytes + 11) / 4096 + 1);
  std::lock_guard<std::mutex> lock(notes_mu);
  CHECK(notes.size() == stats.failed_compactions);
  CHECK(notes[0].find("Read-only file system") != std::string::npos);
  fs.disarm();
}

// A compaction keeps writers out but must not keep readers out, even when a writer is
// queued behind it (a writer-preferring lock would queue readers behind that writer).
// The disk is slowed so the compaction lasts seconds; a read must finish well before.
TEST_CASE("readers are not held up by a compaction, even with a writer waiting behind it") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir);
  options.file_system = &fs;
  auto store = open_store(options);
  REQUIRE(store->set("k", "v").ok());
  const int syncs_before = fs.calls(kltest::Op::kSync);
  fs.slow_sync(std::chrono::seconds(3));
  std::atomic<bool> compacted{false};
  std::thread compactor([&] {
    CHECK(store->compact().ok());
    compacted = true;
  });
  while (fs.calls(kltest::Op::kSync) == syncs_before) std::this_thread::yield();  // in its fsync
  std::thread writer([&] { CHECK(store->set("k", "w").ok()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the writer queue up
  CHECK(store->get("k").has_value());
  CHECK_FALSE(compacted);  // the read did not wait for the compaction
  fs.slow_sync(std::chrono::microseconds(0));
  compactor.join();
  writer.join();
  CHECK(store->get("k") == "w");
}

// Writes racing close(): each must be told the truth. One answered OK is in the log;
// one answered with an error is not (close syncs everything appended before it).
TEST_CASE("writes racing close() are answered truthfully") {
  for (int round = 0; round < 5; ++round) {
    kltest::TempDir dir;
    constexpr int kThreads = 6;
    std::vector<std::vector<std::pair<std::string, bool>>> answers(kThreads);
    {
      auto store = open_store(options_for(dir, kl::FsyncPolicy::kAlways));
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < 400; ++i) {
            const std::string key = std::to_string(t) + ":" + std::to_string(i);
            answers[static_cast<std::size_t>(t)].emplace_back(key, store->set(key, "v").ok());
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + 10 * round));
      CHECK(store->close().ok());
      for (auto& thread : threads) thread.join();
    }
    auto store = open_store(options_for(dir));
    for (const auto& mine : answers) {
      for (const auto& answer : mine) {
        CAPTURE(answer.first);
        CHECK(store->exists(answer.first) == answer.second);
      }
    }
  }
}

TEST_CASE("open and close in a loop, with writes and the background threads, leaks nothing") {
  kltest::TempDir dir;
  kl::Options options = options_for(dir, kl::FsyncPolicy::kEverySecond);
  options.compact_ratio = 2;
  options.compact_min_bytes = 1024;
  for (int i = 0; i < 30; ++i) {
    auto store = open_store(options);
    for (int k = 0; k < 50; ++k) REQUIRE(store->set("k", std::to_string(i * 100 + k)).ok());
    if (i % 2 == 0) REQUIRE(store->close().ok());  // and half the time, by the destructor
  }
  CHECK(open_store(options)->get("k") == "2949");
}

}  // TEST_SUITE
