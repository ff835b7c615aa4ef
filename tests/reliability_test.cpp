// Regression tests for what an adversarial review broke (issue 12): each case failed
// before its fix. They run against the final header only; the behaviour they pin down
// belongs to chapters 3 (recovery), 5 (concurrency) and 6 (FLUSHDB).
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "keystonelight.hpp"
#include "support/faulty_fs.hpp"
#include "support/power_cut_fs.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

namespace kl = keystonelight;
using Code = kl::Status::Code;

namespace {

kl::Options quiet_options(const std::string& dir, kl::FsyncPolicy fsync) {
  kl::Options options;
  options.dir = dir;
  options.fsync = fsync;
  options.compact_ratio = 0;
  options.info_log = [](const std::string&) {};
  return options;
}

// A file system that counts the bytes read and fails every read past `limit`: a
// recovery that does quadratic work fails fast and visibly instead of hanging.
class ReadBudgetFileSystem : public kl::FileSystem {
 public:
  explicit ReadBudgetFileSystem(std::uint64_t limit) : limit_(limit) {}
  kl::Status open(const std::string& path, bool create, std::unique_ptr<kl::File>* file) override {
    std::unique_ptr<kl::File> real;
    if (kl::Status s = real_->open(path, create, &real); !s.ok()) return s;
    file->reset(new Counted(this, std::move(real)));
    return kl::Status();
  }
  bool exists(const std::string& path) override { return real_->exists(path); }
  kl::Status rename(const std::string& from, const std::string& to) override {
    return real_->rename(from, to);
  }
  kl::Status remove(const std::string& path) override { return real_->remove(path); }
  kl::Status sync_dir(const std::string& dir) override { return real_->sync_dir(dir); }
  kl::Status create_dir(const std::string& dir) override { return real_->create_dir(dir); }
  kl::Status list_dir(const std::string& dir, std::vector<std::string>* names) override {
    return real_->list_dir(dir, names);
  }
  std::uint64_t bytes_read() const { return read_.load(); }

 private:
  class Counted : public kl::File {
   public:
    Counted(ReadBudgetFileSystem* fs, std::unique_ptr<kl::File> real)
        : fs_(fs), real_(std::move(real)) {}
    const std::string& path() const override { return real_->path(); }
    kl::Status read_at(std::uint64_t offset, char* buf, std::size_t n, std::size_t* got) override {
      if ((fs_->read_ += n) > fs_->limit_) {
        return kl::Status::io_error("read " + path() + ": over the test's read budget");
      }
      return real_->read_at(offset, buf, n, got);
    }
    kl::Status append(std::string_view data) override { return real_->append(data); }
    kl::Status sync() override { return real_->sync(); }
    kl::Status truncate(std::uint64_t size) override { return real_->truncate(size); }
    kl::Status size(std::uint64_t* size) override { return real_->size(size); }

   private:
    ReadBudgetFileSystem* fs_;
    std::unique_ptr<kl::File> real_;
  };

  kl::FileSystem* real_ = kl::default_file_system();
  const std::uint64_t limit_;
  std::atomic<std::uint64_t> read_{0};
};

// A log holding `records` puts (key i, value "value i"), as bytes.
std::string log_of(int records) {
  std::string log = kl::detail::encode_file_header();
  for (int i = 0; i < records; ++i) {
    kl::detail::encode_record(kl::RecordType::kPut, "key" + std::to_string(i),
                              "value" + std::to_string(i), 0, &log);
  }
  return log;
}

// `bytes` of record images: at every `stride` bytes a header whose own CRC holds and whose
// length runs to `claimed` bytes, with a body that does not match. What a value full of
// logs, or an attacker, can put where a search for valid records must look.
std::string record_images(std::size_t bytes, std::size_t stride, std::uint32_t claimed) {
  std::string out(bytes, 'x');
  for (std::size_t at = 0; at + kl::kRecordHeaderBytes <= bytes; at += stride) {
    std::string header;
    kl::detail::encode_record(kl::RecordType::kPut, "", "", 0, &header);
    char* h = &header[0];
    kl::detail::store_u32(h + 4, 0xDEADBEEF);  // a body CRC nothing will match
    kl::detail::store_u32(h + 13, claimed);     // value length
    kl::detail::seal_record_header(h);
    out.replace(at, kl::kRecordHeaderBytes, header);
  }
  return out;
}

}  // namespace

TEST_SUITE("reliability") {

TEST_CASE("FLUSHDB on a store that refuses writes leaves memory and log alone") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = quiet_options(dir.path(), kl::FsyncPolicy::kNever);
  options.file_system = &fs;
  {
    auto store = kltest::open_store(options);
    REQUIRE(store->set("a", "1").ok());
    REQUIRE(store->set("b", "2").ok());
    fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFail, "No space left on device");
    REQUIRE(store->set("c", "3").code() == Code::kIOError);  // the store now refuses writes
    const kl::Status s = store->clear();
    CHECK(s.code() == Code::kIOError);
    CHECK(s.message().find("No space left on device") != std::string::npos);
    CHECK(store->size() == 2);  // reads say what the log says
    CHECK(store->get("a") == "1");
  }
  fs.disarm();
  auto store = kltest::open_store(quiet_options(dir.path(), kl::FsyncPolicy::kNever));
  CHECK(kltest::contents(*store) == kltest::Model{{"a", "1"}, {"b", "2"}});
}

TEST_CASE("every member may race close(): sync, stats, reads, writes, compact, clear") {
  for (int round = 0; round < 200; ++round) {
    kltest::TempDir dir;
    kl::Options options = quiet_options(dir.path(),
                                        round % 2 ? kl::FsyncPolicy::kAlways : kl::FsyncPolicy::kEverySecond);
    auto store = kltest::open_store(options);
    REQUIRE(store->set("k", "v").ok());
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < 20; ++i) {
          switch ((t + i) % 6) {
            case 0: (void)store->sync(); break;
            case 1: (void)store->stats(); break;
            case 2: (void)store->get("k"); (void)store->size(); break;
            case 3: (void)store->set("k" + std::to_string(i), "v"); break;
            case 4: (void)store->compact(); break;
            default: (void)store->recovery(); (void)store->exists("k"); break;
          }
        }
      });
    }
    go = true;
    if (round % 3 == 0) std::this_thread::yield();
    (void)store->close();
    for (auto& thread : threads) thread.join();
    CHECK(store->sync().code() == Code::kIOError);  // closed: says so, never touches the log
  }
}

TEST_CASE("a torn record whose value holds valid records is a torn tail, and the store opens") {
  kltest::TempDir dir;
  const std::string before = log_of(3);
  // The value of the last record is a whole log's worth of valid records; the write was
  // cut 40 KiB into its 100 KiB, as kill -9 can cut a large write(2).
  std::string inner;
  for (int i = 0; i < 2000; ++i) {
    kl::detail::encode_record(kl::RecordType::kPut, "forged" + std::to_string(i), "x", 0, &inner);
  }
  inner.resize(100 * 1024, 'y');
  std::string last;
  kl::detail::encode_record(kl::RecordType::kPut, "big", inner, 0, &last);
  kltest::write_file(dir.file(kl::kLogFileName), before + last.substr(0, 40 * 1024));
  auto store = kltest::open_store(quiet_options(dir.path(), kl::FsyncPolicy::kAlways));
  CHECK(store->size() == 3);
  CHECK_FALSE(store->exists("forged0"));
  CHECK(store->recovery().bytes_dropped == 40 * 1024);
  CHECK(kltest::read_file(dir.file(kl::kLogFileName)) == before);
}

TEST_CASE("recovery reads a bounded multiple of the log, whatever a torn or damaged tail holds") {
  constexpr std::size_t kImages = 2 << 20;  // 2 MiB of record images
  SUBCASE("a torn value full of record images: a torn tail") {
    kltest::TempDir dir;
    std::string last;
    kl::detail::encode_record(kl::RecordType::kPut, "big",
                              record_images(kImages, 25, 4 << 20), 0, &last);
    const std::string log = log_of(2) + last.substr(0, kImages);
    kltest::write_file(dir.file(kl::kLogFileName), log);
    ReadBudgetFileSystem fs(4 * log.size() + (4 << 20));
    kl::Options options = quiet_options(dir.path(), kl::FsyncPolicy::kNever);
    options.file_system = &fs;
    auto store = kltest::open_store(options);
    CHECK(store->size() == 2);
  }
  SUBCASE("a damaged header before record images whose bodies run to the end: refused") {
    kltest::TempDir dir;
    std::string log = log_of(2);
    const std::uint64_t damaged = log.size();
    log += log_of(1).substr(kl::kFileHeaderBytes);
    log[damaged + 10] ^= 0x40;  // the third record's header no longer checks
    log += record_images(kImages, 25, static_cast<std::uint32_t>(kImages - 100));
    kltest::write_file(dir.file(kl::kLogFileName), log);
    ReadBudgetFileSystem fs(4 * log.size() + (4 << 20));
    kl::Options options = quiet_options(dir.path(), kl::FsyncPolicy::kNever);
    options.file_system = &fs;
    std::unique_ptr<kl::Store> store;
    const kl::Status s = kl::Store::open(options, &store);
    CHECK(s.code() == Code::kCorruption);
    CHECK(s.message().find("offset " + std::to_string(damaged)) != std::string::npos);
    CHECK(s.message().find("keystonelight-check --fix") != std::string::npos);
    CHECK(fs.bytes_read() <= 4 * log.size() + (4 << 20));
  }
}

TEST_CASE("a zeroed page before valid records is a power cut's hole: cut, reported, bytes kept") {
  kltest::TempDir dir;
  // Records of 1000 bytes, so that pages 1 and 2 each hold parts of several.
  std::string log = kl::detail::encode_file_header();
  for (int i = 0; i < 20; ++i) {
    kl::detail::encode_record(kl::RecordType::kPut, "k" + std::to_string(i),
                              std::string(1000, static_cast<char>('a' + i % 26)), 0, &log);
  }
  std::string damaged = log;
  std::fill(damaged.begin() + 8192, damaged.begin() + 12288, '\0');  // page 2 lost
  kltest::write_file(dir.file(kl::kLogFileName), damaged);
  std::vector<std::string> notes;
  kl::Options options = quiet_options(dir.path(), kl::FsyncPolicy::kAlways);
  options.info_log = [&](const std::string& message) { notes.push_back(message); };
  auto store = kltest::open_store(options);
  const kl::RecoveryReport& report = store->recovery();
  // Every record that ends before byte 8192 is whole; the next one is cut.
  const std::uint64_t record_bytes = kl::kRecordHeaderBytes + 2 + 1000;
  const std::uint64_t whole = (8192 - kl::kFileHeaderBytes) / record_bytes;
  CHECK(store->size() == whole);
  CHECK(report.records_dropped > 0);
  const std::uint64_t cut = kl::kFileHeaderBytes + whole * record_bytes;
  CHECK(report.bytes_dropped == damaged.size() - cut);
  CHECK(kltest::read_file(report.dropped_file) == damaged.substr(cut));
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("power cut") != std::string::npos);
  CHECK(notes[0].find(report.dropped_file) != std::string::npos);

  // The same hole at the same offset again: the first copy is kept, the second has a
  // name of its own.
  const std::string first = report.dropped_file;
  store.reset();
  kltest::write_file(dir.file(kl::kLogFileName), damaged);
  auto again = kltest::open_store(options);
  CHECK(again->recovery().dropped_file != first);
  CHECK(kltest::read_file(first) == damaged.substr(cut));
  CHECK(kltest::read_file(again->recovery().dropped_file) == damaged.substr(cut));
}

TEST_CASE("with fsync always, a power cut that loses pages out of order loses nothing acknowledged") {
  for (std::uint32_t seed = 1; seed <= 12; ++seed) {
    CAPTURE(seed);
    kltest::TempDir temp;
    kltest::PowerCutFileSystem fs(temp.file("data"), temp.file("shadow"));
    kl::Options options = quiet_options(temp.file("data"), kl::FsyncPolicy::kAlways);
    options.file_system = &fs;
    auto store = kltest::open_store(options);
    constexpr int kThreads = 4;
    std::vector<std::vector<std::string>> acknowledged(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 400; ++i) {
          const std::string key = std::to_string(t) + ":" + std::to_string(i);
          // 1-3 KiB values: a group commit's records span several pages.
          const std::string value(1000 + static_cast<std::size_t>((i * 37 + t) % 2000), 'a' + static_cast<char>(t));
          if (!store->set(key, value).ok()) return;  // the power is off
          acknowledged[static_cast<std::size_t>(t)].push_back(key);
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + 7 * seed));
    fs.cut();
    for (auto& thread : threads) thread.join();
    store.reset();
    fs.restore_scattered(seed);
    kl::Options plain = quiet_options(temp.file("data"), kl::FsyncPolicy::kAlways);
    std::unique_ptr<kl::Store> reopened;
    const kl::Status s = kl::Store::open(plain, &reopened);
    INFO(s.to_string());
    REQUIRE(s.ok());  // never Corruption, never a need for --fix
    for (int t = 0; t < kThreads; ++t) {
      for (const std::string& key : acknowledged[static_cast<std::size_t>(t)]) {
        CAPTURE(key);
        const auto value = reopened->get(key);
        REQUIRE(value.has_value());
        CHECK(value->front() == 'a' + t);
      }
    }
    for (const auto& [key, value] : reopened->entries()) {  // nothing that was never written
      CHECK(value.find_first_not_of(value.front()) == std::string::npos);
    }
  }
}

TEST_CASE("with fsync always, nobody sees a write whose fsync failed, and it is undone") {
  for (int round = 0; round < 3; ++round) {
    kltest::TempDir dir;
    kltest::FaultyFileSystem fs;
    fs.slow_sync(std::chrono::milliseconds(30));  // a long window between write and fsync
    kl::Options options = quiet_options(dir.path(), kl::FsyncPolicy::kAlways);
    options.file_system = &fs;
    auto store = kltest::open_store(options);
    REQUIRE(store->set("changed", "old").ok());
    REQUIRE(store->set("deleted", "here").ok());
    fs.arm(kltest::Op::kSync, 0, kltest::Fault::kFailAlways, "Input/output error");
    std::atomic<bool> done{false};
    std::atomic<int> seen_new{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 3; ++r) {
      readers.emplace_back([&] {
        while (!done.load()) {
          if (store->get("changed") == "new") ++seen_new;
          if (!store->exists("deleted")) ++seen_new;
          if (store->exists("added")) ++seen_new;
          if (store->get_all({"added"})[0]) ++seen_new;
        }
      });
    }
    std::vector<kl::Status> answers(3);
    std::thread w1([&] { answers[0] = store->set("changed", "new"); });
    std::thread w2([&] { answers[1] = store->del("deleted"); });
    std::thread w3([&] { answers[2] = store->set("added", "x"); });
    w1.join();
    w2.join();
    w3.join();
    done = true;
    for (auto& reader : readers) reader.join();
    for (const kl::Status& s : answers) CHECK(s.code() == Code::kIOError);
    CHECK(seen_new == 0);
    CHECK(store->get("changed") == "old");
    CHECK(store->get("deleted") == "here");
    CHECK_FALSE(store->exists("added"));
    CHECK(store->size() == 2);
    fs.disarm();
    store.reset();
    // The records reached the file before the fsync failed: what a reopen finds is either
    // state. Each key is as one of the two, never anything else.
    auto reopened = kltest::open_store(quiet_options(dir.path(), kl::FsyncPolicy::kNever));
    const auto changed = reopened->get("changed");
    CHECK((changed == "old" || changed == "new"));
  }
}

TEST_CASE("DEL of several keys is one step for readers: MGET never sees half of it") {
  kltest::TempDir dir;
  auto store = kltest::open_store(quiet_options(dir.path(), kl::FsyncPolicy::kNever));
  kl::Dispatcher dispatcher(store.get());
  std::atomic<bool> done{false};
  std::atomic<int> halves{0};
  std::thread reader([&] {
    kl::Session session;
    while (!done.load()) {
      std::string out;
      dispatcher.execute({"MGET", "a", "b"}, &session, &out);
      const bool a = out.find("$1\r\na") != std::string::npos;
      const bool b = out.find("$1\r\nb") != std::string::npos;
      if (a != b) ++halves;
    }
  });
  kl::Session session;
  for (int i = 0; i < 3000; ++i) {
    std::string out;
    dispatcher.execute({"MSET", "a", "a", "b", "b"}, &session, &out);
    REQUIRE(out == "+OK\r\n");
    out.clear();
    dispatcher.execute({"DEL", "a", "b", "a"}, &session, &out);
    REQUIRE(out == ":2\r\n");  // a key named twice is removed, and counted, once
  }
  done = true;
  reader.join();
  CHECK(halves == 0);
}

TEST_CASE("debug builds stop a thread that takes the store's locks out of order") {
#ifdef NDEBUG
  MESSAGE("NDEBUG build: the lock order is not checked");
#else
  kl::detail::LockOrder::acquire(1);  // in order: 1, then 2
  kl::detail::LockOrder::acquire(2);
  kl::detail::LockOrder::release(2);
  kl::detail::LockOrder::release(1);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(1);  // the assert's message, and doctest's report of the crash, are expected:
    ::close(2);  // keep the test's output clean
    kl::detail::LockOrder::acquire(2);
    kl::detail::LockOrder::acquire(1);  // out of order: the assert ends the process
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
#endif
}

}  // TEST_SUITE
