// Chapter 16: commit before reply. A write's record waits in a batch until someone needs
// it durable; then one write(2), and under kAlways one fsync, takes every record appended
// so far to the file. Inside a Deferred, writes and reads return at once and commit()
// makes them durable together; a failed commit undoes what did not reach the file. The
// server runs each pass of requests, commits once, and only then sends the replies. These
// tests also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../../tests/support/faulty_fs.hpp"
#include "../../tests/support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;
using namespace std::chrono_literals;

namespace {

// The operating system's files, counting each write(2) that reaches one and each fsync
// that has returned, and taking `sync_delay` per fsync, as a slow disk would.
class CountingFileSystem : public kl::FileSystem {
 public:
  std::atomic<int> appends{0};
  std::atomic<int> syncs_done{0};
  std::chrono::milliseconds sync_delay{0};

  kl::Status open(const std::string& path, bool create, std::unique_ptr<kl::File>* file) override {
    std::unique_ptr<kl::File> real;
    kl::Status s = kl::default_file_system()->open(path, create, &real);
    if (s.ok()) *file = std::make_unique<Counted>(this, std::move(real));
    return s;
  }
  bool exists(const std::string& path) override { return os()->exists(path); }
  kl::Status rename(const std::string& from, const std::string& to) override { return os()->rename(from, to); }
  kl::Status remove(const std::string& path) override { return os()->remove(path); }
  kl::Status sync_dir(const std::string& dir) override { return os()->sync_dir(dir); }
  kl::Status create_dir(const std::string& dir) override { return os()->create_dir(dir); }
  kl::Status list_dir(const std::string& dir, std::vector<std::string>* names) override {
    return os()->list_dir(dir, names);
  }

 private:
  static kl::FileSystem* os() { return kl::default_file_system(); }
  class Counted : public kl::File {
   public:
    Counted(CountingFileSystem* fs, std::unique_ptr<kl::File> real) : fs_(fs), real_(std::move(real)) {}
    const std::string& path() const override { return real_->path(); }
    kl::Status read_at(std::uint64_t offset, char* buf, std::size_t n, std::size_t* got) override {
      return real_->read_at(offset, buf, n, got);
    }
    kl::Status append(std::string_view data) override {
      ++fs_->appends;
      return real_->append(data);
    }
    kl::Status sync() override {
      std::this_thread::sleep_for(fs_->sync_delay);
      kl::Status s = real_->sync();
      ++fs_->syncs_done;
      return s;
    }
    kl::Status truncate(std::uint64_t size) override { return real_->truncate(size); }
    kl::Status size(std::uint64_t* size) override { return real_->size(size); }

   private:
    CountingFileSystem* fs_;
    std::unique_ptr<kl::File> real_;
  };
};

kl::Options options_for(const kltest::TempDir& dir, kl::FileSystem* fs, kl::FsyncPolicy policy) {
  kl::Options options;
  options.dir = dir.path();
  options.fsync = policy;
  options.file_system = fs;
  options.compact_ratio = 0;  // no compaction: it would write the log its own way
  options.info_log = [](const std::string&) {};
  return options;
}

std::unique_ptr<kl::Store> open_store(const kl::Options& options) {
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options, &store);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return store;
}

// A server on a free port of 127.0.0.1 over `store`, stopped at the end of the scope.
struct Serving {
  Serving(kl::Store* store, kl::ServerConfig::Io io, std::size_t loops = 1) {
    kl::ServerConfig config;
    config.bind = "127.0.0.1";
    config.port = 0;
    config.io = io;
    config.loops = loops;
    config.info_log = [](const std::string&) {};
    server = std::make_unique<kl::Server>(store, config);
    kl::Status s = server->start();
    INFO(s.to_string());
    REQUIRE(s.ok());
  }
  std::unique_ptr<kl::Client> connect() const {
    std::unique_ptr<kl::Client> client;
    REQUIRE(kl::Client::connect("127.0.0.1", server->port(), &client).ok());
    return client;
  }
  std::unique_ptr<kl::Server> server;
};

const kl::ServerConfig::Io kBothModels[] = {kl::ServerConfig::Io::kEvents, kl::ServerConfig::Io::kThreads};

}  // namespace

TEST_SUITE("chapter 16: commit before reply") {

TEST_CASE("inside a Deferred, writes reach the file only at commit(), all in one write(2)") {
  for (auto policy : {kl::FsyncPolicy::kNever, kl::FsyncPolicy::kEverySecond, kl::FsyncPolicy::kAlways}) {
    CAPTURE(static_cast<int>(policy));
    kltest::TempDir dir;
    CountingFileSystem fs;
    auto store = open_store(options_for(dir, &fs, policy));
    const int appends_before = fs.appends.load();
    const int syncs_before = fs.syncs_done.load();
    {
      kl::Store::Deferred deferred(store.get());
      for (int i = 0; i < 100; ++i) REQUIRE(store->set("key" + std::to_string(i), "value").ok());
      CHECK(store->get("key7") == "value");  // the writer's own thread reads its writes
      CHECK(fs.appends.load() == appends_before);  // nothing has reached the file yet
      CHECK(deferred.take() > deferred.durable());  // so nothing may be shown yet
      REQUIRE(deferred.commit().ok());
      CHECK(fs.appends.load() == appends_before + 1);
      CHECK(fs.syncs_done.load() == syncs_before + (policy == kl::FsyncPolicy::kAlways ? 1 : 0));
      CHECK(deferred.commit().ok());  // nothing more to do
      CHECK(fs.appends.load() == appends_before + 1);
    }
    REQUIRE(store->close().ok());
    auto reopened = open_store(options_for(dir, &fs, policy));
    CHECK(reopened->size() == 100);
  }
}

TEST_CASE("a reader outside the Deferred that sees its writes commits them before answering") {
  kltest::TempDir dir;
  CountingFileSystem fs;
  auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kNever));
  kl::Store::Deferred deferred(store.get());
  REQUIRE(store->set("k", "v").ok());
  const int appends_before = fs.appends.load();
  std::optional<std::string> seen;
  std::thread reader([&] { seen = store->get("k"); });
  reader.join();
  CHECK(seen == "v");
  CHECK(fs.appends.load() == appends_before + 1);  // the reader wrote the batch first
  CHECK(deferred.durable() >= deferred.take());      // so the writer has nothing left to do
}

TEST_CASE("a failed commit undoes every write of the batch, and the store refuses writes") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kNever));
  REQUIRE(store->set("kept", "1").ok());
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFail, "No space left on device");
  {
    kl::Store::Deferred deferred(store.get());
    REQUIRE(store->set("lost", "x").ok());  // applied, waiting for the commit
    REQUIRE(store->set("kept", "2").ok());
    REQUIRE(store->del("kept").ok());
    CHECK_FALSE(store->exists("kept"));
    const std::uint64_t ticket = deferred.take();
    kl::Status s = deferred.commit();
    CHECK(s.code() == kl::Status::Code::kIOError);
    CHECK(deferred.failure().message().find("No space left on device") != std::string::npos);
    CHECK(deferred.durable() < ticket);  // the answers that depended on it must not go
  }
  CHECK_FALSE(store->exists("lost"));  // undone, newest first: "kept" is "1" again
  CHECK(store->get("kept") == "1");
  CHECK(store->set("more", "1").code() == kl::Status::Code::kIOError);
  fs.disarm();
  (void)store->close();
  auto reopened = open_store(options_for(dir, &fs, kl::FsyncPolicy::kNever));
  CHECK(reopened->get("kept") == "1");
  CHECK_FALSE(reopened->exists("lost"));
}

TEST_CASE("concurrent embedded writers share their write(2)s and fsyncs") {
  kltest::TempDir dir;
  CountingFileSystem fs;
  fs.sync_delay = 2ms;  // a slow disk, so that writers meet at the commit
  auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kAlways));
  const int appends_before = fs.appends.load();
  constexpr int kThreads = 4, kWrites = 100;
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        CHECK(store->set("t" + std::to_string(t) + ":" + std::to_string(i), "v").ok());
      }
    });
  }
  for (auto& w : writers) w.join();
  CHECK(store->size() == kThreads * kWrites);
  // Each set() returned only after its fsync; four writers share most of them.
  CHECK(fs.appends.load() - appends_before < kThreads * kWrites);
  CHECK(fs.syncs_done.load() < kThreads * kWrites);
}

TEST_CASE("sixteen pipelined SETs reach the file in one write(2)") {
  for (auto io : kBothModels) {
    CAPTURE(static_cast<int>(io));
    kltest::TempDir dir;
    CountingFileSystem fs;
    auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kNever));
    Serving serving(store.get(), io);
    auto client = serving.connect();
    kl::Reply reply;
    REQUIRE(client->command({"PING"}, &reply).ok());
    const int appends_before = fs.appends.load();
    for (int i = 0; i < 16; ++i) client->send({"SET", "key" + std::to_string(i), "value"});
    REQUIRE(client->flush().ok());  // one send: the server finds all 16 in one read
    for (int i = 0; i < 16; ++i) {
      REQUIRE(client->read(&reply).ok());
      CHECK(reply.text == "OK");
    }
    CHECK(fs.appends.load() == appends_before + 1);
    REQUIRE(client->command({"GET", "key15"}, &reply).ok());
    CHECK(reply.text == "value");
    CHECK(fs.appends.load() == appends_before + 1);  // a read of written data writes nothing
  }
}

TEST_CASE("under kAlways no reply leaves before the fsync that covers its batch") {
  for (auto io : kBothModels) {
    CAPTURE(static_cast<int>(io));
    kltest::TempDir dir;
    CountingFileSystem fs;
    fs.sync_delay = 50ms;  // a reply sent before the fsync would beat it by far
    auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kAlways));
    Serving serving(store.get(), io);
    auto writer = serving.connect();
    auto reader = serving.connect();
    const int syncs_before = fs.syncs_done.load();
    writer->send({"SET", "a", "1"});
    writer->send({"INCR", "a"});
    writer->send({"GET", "a"});
    REQUIRE(writer->flush().ok());
    kl::Reply reply;
    REQUIRE(writer->read(&reply).ok());
    CHECK(reply.text == "OK");
    CHECK(fs.syncs_done.load() > syncs_before);  // already done when the reply came
    REQUIRE(writer->read(&reply).ok());
    CHECK(reply.integer == 2);
    REQUIRE(writer->read(&reply).ok());
    CHECK(reply.text == "2");
    REQUIRE(reader->command({"GET", "a"}, &reply).ok());
    CHECK(reply.text == "2");
  }
}

TEST_CASE("a reply that depended on a failed commit becomes an error; the others go as they were") {
  for (auto io : kBothModels) {
    CAPTURE(static_cast<int>(io));
    kltest::TempDir dir;
    kltest::FaultyFileSystem fs;
    auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kEverySecond));
    REQUIRE(store->set("kept", "1").ok());
    Serving serving(store.get(), io);
    auto client = serving.connect();
    kl::Reply reply;
    REQUIRE(client->command({"PING"}, &reply).ok());
    fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFailAlways, "No space left on device");
    client->send({"PING"});              // depends on nothing
    client->send({"SET", "lost", "1"});  // its record cannot be written
    client->send({"GET", "lost"});       // saw it
    client->send({"ECHO", "hello"});     // depends on nothing
    REQUIRE(client->flush().ok());
    REQUIRE(client->read(&reply).ok());
    CHECK(reply.text == "PONG");
    REQUIRE(client->read(&reply).ok());
    CHECK(reply.type == kl::Reply::Type::kError);
    REQUIRE(client->read(&reply).ok());
    CHECK(reply.type == kl::Reply::Type::kError);
    CHECK(reply.text.find("No space left on device") != std::string::npos);
    REQUIRE(client->read(&reply).ok());
    CHECK(reply.text == "hello");
    REQUIRE(client->command({"MGET", "lost", "kept"}, &reply).ok());  // reads go on
    REQUIRE(reply.elements.size() == 2);
    CHECK(reply.elements[0].type == kl::Reply::Type::kNil);
    CHECK(reply.elements[1].text == "1");
    fs.disarm();
    serving.server.reset();
    (void)store->close();
  }
}

TEST_CASE("a Deferred holding the writer lock keeps other threads out until it lets go") {
  kltest::TempDir dir;
  CountingFileSystem fs;
  auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kNever));
  std::atomic<bool> read_done{false};
  std::thread reader;
  {
    kl::Store::Deferred deferred(store.get());
    deferred.hold(true);
    REQUIRE(store->set("a", "1").ok());  // takes the lock, and keeps it
    REQUIRE(store->set("b", "2").ok());  // takes nothing: the lock is held
    CHECK(store->get("a") == "1");      // the holder reads under its own lock
    reader = std::thread([&] {
      CHECK(store->get("b") == "2");
      read_done = true;
    });
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(read_done.load());  // the whole run of writes is one critical section
    deferred.hold(false);
    reader.join();
    CHECK(read_done.load());
    REQUIRE(deferred.commit().ok());
  }
  CHECK(store->size() == 2);
}

TEST_CASE("a pipeline mixing writes, a compaction, a flush and a transaction runs in order") {
  for (auto io : kBothModels) {
    CAPTURE(static_cast<int>(io));
    kltest::TempDir dir;
    CountingFileSystem fs;
    auto store = open_store(options_for(dir, &fs, kl::FsyncPolicy::kAlways));
    Serving serving(store.get(), io);
    auto client = serving.connect();
    const std::vector<std::vector<std::string>> pipeline = {
        {"SET", "a", "1"}, {"BGREWRITEAOF"}, {"INCR", "a"}, {"GET", "a"},
        {"MULTI"}, {"INCR", "a"}, {"SET", "b", "x"}, {"EXEC"},
        {"FLUSHALL"}, {"SET", "c", "3"}, {"MGET", "a", "b", "c"}};
    for (const auto& request : pipeline) client->send(request);
    REQUIRE(client->flush().ok());
    std::vector<kl::Reply> replies(pipeline.size());
    for (auto& reply : replies) REQUIRE(client->read(&reply).ok());
    CHECK(replies[0].text == "OK");
    CHECK(replies[1].type != kl::Reply::Type::kError);  // the compaction gave the lock back
    CHECK(replies[2].integer == 2);
    CHECK(replies[3].text == "2");
    REQUIRE(replies[7].elements.size() == 2);
    CHECK(replies[7].elements[0].integer == 3);
    CHECK(replies[8].text == "OK");
    REQUIRE(replies[10].elements.size() == 3);
    CHECK(replies[10].elements[0].type == kl::Reply::Type::kNil);
    CHECK(replies[10].elements[2].text == "3");
    serving.server.reset();
    REQUIRE(store->close().ok());
    auto reopened = open_store(options_for(dir, &fs, kl::FsyncPolicy::kAlways));
    CHECK(reopened->size() == 1);
    CHECK(reopened->get("c") == "3");
  }
}

}  // TEST_SUITE
