// Chapter 11: batches and transactions. What a transaction promises: readers see all of
// it or none of it; a crash keeps all of it or none of it (cut at every byte of a batch
// record below); a failure undoes it; MULTI/EXEC and WATCH behave as Redis's. These tests
// also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <iterator>
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
using Code = kl::Status::Code;

namespace {

kl::Options options_for(const std::string& dir) {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.info_log = [](const std::string&) {};
  return options;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The types of the records in a log, in order.
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

struct Client {
  kl::Dispatcher* dispatcher;
  kl::Session session;
  std::string run(const std::vector<std::string>& words) {
    std::string out;
    dispatcher->execute(words, &session, &out);
    return out;
  }
};

}  // namespace

TEST_SUITE("chapter 11: batches and transactions") {

TEST_CASE("a WriteBatch applies every change in order, or none of them") {
  kltest::TempDir dir;
  {
    auto store = open_store(options_for(dir.path()));
    REQUIRE(store->set("gone", "x").ok());
    kl::WriteBatch batch;
    batch.set("a", "1");
    batch.set("b", "2");
    batch.del("gone");
    batch.set("a", "3");  // later changes see earlier ones
    REQUIRE(store->write(batch).ok());
    CHECK(contents(*store) == Model{{"a", "3"}, {"b", "2"}});

    kl::WriteBatch refused;
    refused.set("c", "4");
    refused.set(std::string(kl::kMaxKeyBytes + 1, 'k'), "too long a key");
    CHECK(store->write(refused).code() == Code::kInvalidArgument);
    CHECK_FALSE(store->exists("c"));
  }
  auto store = open_store(options_for(dir.path()));
  CHECK(contents(*store) == Model{{"a", "3"}, {"b", "2"}});
}

TEST_CASE("a transaction that fails leaves nothing behind, in memory and in the log") {
  kltest::TempDir dir;
  auto store = open_store(options_for(dir.path()));
  REQUIRE(store->set("n", "10").ok());
  const std::uint64_t log_bytes = store->stats().log_bytes;
  kl::Status s = store->transaction([&] {
    if (kl::Status t = store->set("new", "v"); !t.ok()) return t;
    if (kl::Status t = store->increment("n", 5); !t.ok()) return t;
    CHECK(store->get("n") == "15");  // the transaction sees its own changes
    if (kl::Status t = store->del("n"); !t.ok()) return t;
    return kl::Status::invalid_argument("changed my mind");
  });
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(contents(*store) == Model{{"n", "10"}});
  CHECK(store->stats().log_bytes == log_bytes);
}

TEST_CASE("a batch that cannot be written is undone before anyone sees it") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir.path());
  options.file_system = &fs;
  auto store = open_store(options);
  REQUIRE(store->set("a", "old").ok());
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFail, "No space left on device");
  kl::Status s = store->set_all({{"a", "new"}, {"b", "new"}});
  CHECK(s.code() == Code::kIOError);
  CHECK(s.message().find("No space left on device") != std::string::npos);
  CHECK(contents(*store) == Model{{"a", "old"}});
}

TEST_CASE("a failed fsync under always undoes a whole batch, for the writer and for readers") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  kl::Options options = options_for(dir.path());
  options.fsync = kl::FsyncPolicy::kAlways;
  options.file_system = &fs;
  auto store = open_store(options);
  REQUIRE(store->set("a", "old").ok());
  fs.arm(kltest::Op::kSync, 0, kltest::Fault::kFail, "Input/output error");
  kl::Status s = store->set_all({{"a", "new"}, {"b", "new"}});
  CHECK(s.code() == Code::kIOError);
  CHECK(contents(*store) == Model{{"a", "old"}});  // written to the file, but never durable
  CHECK(store->set("c", "v").code() == Code::kIOError);  // and the store refuses writes now
}

TEST_CASE("MSET, DEL of many keys and a transaction each write one batch record") {
  kltest::TempDir dir;
  auto store = open_store(options_for(dir.path()));
  REQUIRE(store->set_all({{"a", "1"}, {"b", "2"}, {"c", "3"}}).ok());
  std::size_t removed = 0;
  REQUIRE(store->del_all({"a", "b", "missing"}, &removed).ok());
  CHECK(removed == 2);
  REQUIRE(store->set_all({{"d", "4"}}).ok());  // one change: an ordinary record
  REQUIRE(store->transaction([] { return kl::Status(); }).ok());  // none: nothing at all
  using T = kl::RecordType;
  CHECK(record_types(dir.file(kl::kLogFileName)) == std::vector<T>{T::kBatch, T::kBatch, T::kPut});
}

TEST_CASE("a crash at any byte of a batch record keeps all of the batch or none of it") {
  kltest::TempDir dir;
  std::uint64_t before = 0, after = 0;
  {
    auto store = open_store(options_for(dir.path()));
    REQUIRE(store->set_all({{"a", "1"}, {"b", "1"}}).ok());
    before = store->stats().log_bytes;
    kl::WriteBatch batch;
    batch.set("a", "2");
    batch.del("b");
    batch.set("c", std::string(300, 'c'));
    REQUIRE(store->write(batch).ok());
    after = store->stats().log_bytes;
  }
  const std::string log = read_file(dir.file(kl::kLogFileName));
  REQUIRE(log.size() == after);
  const Model old_state{{"a", "1"}, {"b", "1"}};
  const Model new_state{{"a", "2"}, {"c", std::string(300, 'c')}};
  for (std::uint64_t cut = before; cut <= after; ++cut) {
    kltest::TempDir crashed;
    write_file(crashed.file(kl::kLogFileName), log.substr(0, static_cast<std::size_t>(cut)));
    auto store = open_store(options_for(crashed.path()));
    INFO("log cut at byte " << cut);
    CHECK(contents(*store) == (cut == after ? new_state : old_state));
    CHECK(store->recovery().bytes_dropped == (cut == after ? 0 : cut - before));
  }
}

TEST_CASE("a batch whose entries do not add up is refused whole, though its CRC holds") {
  std::string body;
  kl::detail::encode_batch_entry(kl::RecordType::kPut, "a", "1", 0, &body);
  kl::detail::encode_batch_entry(kl::RecordType::kPut, "b", "2", 0, &body);
  CHECK(kl::detail::valid_batch(body));
  CHECK_FALSE(kl::detail::valid_batch(body.substr(0, body.size() - 1)));  // the last entry cut
  CHECK_FALSE(kl::detail::valid_batch(body + "x"));                      // a byte too many
  std::string one;
  kl::detail::encode_batch_entry(kl::RecordType::kPut, "a", "1", 0, &one);
  CHECK_FALSE(kl::detail::valid_batch(one));  // one change is an ordinary record
  std::string nested = body;
  nested[0] = static_cast<char>(kl::RecordType::kBatch);
  CHECK_FALSE(kl::detail::valid_batch(nested));  // a batch inside a batch

  kltest::TempDir dir;
  std::string log = kl::detail::encode_file_header();
  kl::detail::encode_record(kl::RecordType::kBatch, "", body + "x", 0, &log);
  write_file(dir.file(kl::kLogFileName), log);
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(dir.file(kl::kLogFileName), false, &file).ok());
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  REQUIRE(reader.open(&header).ok());
  kl::Record record;
  CHECK(reader.next(&record) == kl::LogReader::Result::kBadLength);
}

TEST_CASE("readers never see half of an MSET") {
  kl::Store store;
  std::atomic<bool> done{false};
  std::atomic<int> halves{0};
  std::thread reader([&] {
    while (!done) {
      const auto values = store.get_all({"x", "y"});
      if (values[0] != values[1]) ++halves;
    }
  });
  for (int i = 0; i < 20000; ++i) {
    const std::string v = std::to_string(i);
    REQUIRE(store.set_all({{"x", v}, {"y", v}}).ok());
  }
  done = true;
  reader.join();
  CHECK(halves == 0);
}

TEST_CASE("a Watch notices a write, a delete, an expiry change, an expiry and FLUSHDB") {
  std::atomic<std::int64_t> now{1'000'000};
  kl::Options options;
  options.clock = [&] { return now.load(); };
  options.active_expiry = false;
  auto store = open_store(options);
  auto changed_after = [&](const std::function<void()>& change) {
    REQUIRE(store->set("k", "v").ok());
    kl::Store::Watch watch(store.get());
    watch.add("k");
    watch.add("other");
    CHECK_FALSE(watch.changed());
    change();
    return watch.changed();
  };
  CHECK(changed_after([&] { REQUIRE(store->set("k", "v").ok()); }));  // even to the same value
  CHECK(changed_after([&] { REQUIRE(store->del("k").ok()); }));
  CHECK(changed_after([&] { REQUIRE(store->expire_at("k", now + 100).ok()); }));
  CHECK(changed_after([&] { REQUIRE(store->set("other", "new").ok()); }));  // a missing key made
  CHECK(changed_after([&] { REQUIRE(store->clear().ok()); }));
  CHECK(changed_after([&] {
    REQUIRE(store->expire_at("k", now + 100).ok());
  }));
  CHECK_FALSE(changed_after([&] { REQUIRE(store->set("unwatched", "v").ok()); }));
  {  // FLUSHDB changes only the watched keys that exist, as in Redis
    REQUIRE(store->del("k").ok());
    kl::Store::Watch missing(store.get());
    missing.add("k");
    REQUIRE(store->clear().ok());
    CHECK_FALSE(missing.changed());
  }
  // Expired since it was watched, though nobody has removed it yet.
  REQUIRE(store->set("k", "v").ok());
  REQUIRE(store->expire_at("k", now + 10).ok());
  kl::Store::Watch watch(store.get());
  watch.add("k");
  now += 11;
  CHECK(watch.changed());
}

TEST_CASE("MULTI queues, EXEC runs the queue as one transaction, DISCARD drops it") {
  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  Client c{&dispatcher, {}};
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"SET", "a", "1"}) == "+QUEUED\r\n");
  CHECK(c.run({"INCR", "a"}) == "+QUEUED\r\n");
  CHECK(c.run({"GET", "a"}) == "+QUEUED\r\n");
  CHECK(store.get("a") == std::nullopt);  // nothing ran yet
  CHECK(c.run({"EXEC"}) == "*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n");
  // An error inside EXEC is that command's reply; the others run, and stay.
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"SET", "s", "text"}) == "+QUEUED\r\n");
  CHECK(c.run({"INCR", "s"}) == "+QUEUED\r\n");
  CHECK(c.run({"SET", "t", "1"}) == "+QUEUED\r\n");
  CHECK(c.run({"EXEC"}) ==
        "*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n");
  CHECK(store.get("t") == "1");
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"SET", "d", "1"}) == "+QUEUED\r\n");
  CHECK(c.run({"DISCARD"}) == "+OK\r\n");
  CHECK(store.get("d") == std::nullopt);
  CHECK(c.run({"EXEC"}) == "-ERR EXEC without MULTI\r\n");
  CHECK(c.run({"DISCARD"}) == "-ERR DISCARD without MULTI\r\n");
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"MULTI"}) == "-ERR MULTI calls can not be nested\r\n");
  CHECK(c.run({"WATCH", "a"}) == "-ERR WATCH inside MULTI is not allowed\r\n");
  CHECK(c.run({"EXEC"}) == "*0\r\n");
  // A compaction inside EXEC is refused, by a store in memory as by a persistent one.
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"COMPACT"}) == "+QUEUED\r\n");
  CHECK(c.run({"EXEC"}).rfind("*1\r\n-ERR a compaction cannot run inside a transaction", 0) == 0);
}

TEST_CASE("a command refused while queuing aborts the whole EXEC") {
  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  Client c{&dispatcher, {}};
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"NOSUCHCOMMAND"}, {"GET"}, {"SHUTDOWN"}}) {
    CHECK(c.run({"MULTI"}) == "+OK\r\n");
    CHECK(c.run({"SET", "x", "1"}) == "+QUEUED\r\n");
    CHECK(c.run(bad).rfind("-ERR", 0) == 0);
    CHECK(c.run({"EXEC"}) == "-EXECABORT Transaction discarded because of previous errors.\r\n");
    CHECK(store.get("x") == std::nullopt);
    CHECK_FALSE(c.session.shutdown);
  }
}

TEST_CASE("WATCH makes EXEC give a null array when a watched key changed since") {
  std::atomic<std::int64_t> now{1'000'000};
  kl::Options options;
  options.clock = [&] { return now.load(); };
  options.active_expiry = false;
  auto store = open_store(options);
  kl::Dispatcher dispatcher(store.get());
  Client c{&dispatcher, {}}, other{&dispatcher, {}};
  REQUIRE(store->set("balance", "10").ok());

  CHECK(c.run({"WATCH", "balance"}) == "+OK\r\n");
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"INCRBY", "balance", "5"}) == "+QUEUED\r\n");
  CHECK(other.run({"INCRBY", "balance", "1"}) == ":11\r\n");  // another client writes
  CHECK(c.run({"EXEC"}) == "*-1\r\n");
  CHECK(store->get("balance") == "11");

  CHECK(c.run({"WATCH", "balance"}) == "+OK\r\n");  // EXEC dropped the old watch
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"INCRBY", "balance", "5"}) == "+QUEUED\r\n");
  CHECK(c.run({"EXEC"}) == "*1\r\n:16\r\n");

  CHECK(c.run({"WATCH", "balance"}) == "+OK\r\n");
  CHECK(c.run({"SET", "balance", "0"}) == "+OK\r\n");  // the watcher's own write counts too
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"EXEC"}) == "*-1\r\n");

  CHECK(c.run({"WATCH", "balance"}) == "+OK\r\n");
  CHECK(c.run({"UNWATCH"}) == "+OK\r\n");
  CHECK(other.run({"SET", "balance", "1"}) == "+OK\r\n");
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"EXEC"}) == "*0\r\n");

  // A watched key that expires before EXEC.
  CHECK(c.run({"SET", "lease", "me", "PX", "100"}) == "+OK\r\n");
  CHECK(c.run({"WATCH", "lease"}) == "+OK\r\n");
  now += 101;
  CHECK(c.run({"MULTI"}) == "+OK\r\n");
  CHECK(c.run({"SET", "lease", "me", "PX", "100"}) == "+QUEUED\r\n");
  CHECK(c.run({"EXEC"}) == "*-1\r\n");
}

}  // TEST_SUITE
