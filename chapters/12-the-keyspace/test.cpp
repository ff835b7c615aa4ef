// Chapter 12: the keyspace. The store's own hash table, SCAN's promise under growth and
// change, RANDOMKEY, and the key commands (TYPE, TOUCH, UNLINK, RENAME, RENAMENX, COPY).
// These tests also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../../tests/support/store.hpp"
#include "../../tests/support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;
using kltest::contents;
using kltest::Model;
using kltest::open_store;

namespace {

// Every key one full SCAN walk returns, calling `between` after each step.
template <typename Between>
std::multiset<std::string> walk(const kl::Store& store, std::size_t count, Between between) {
  std::multiset<std::string> seen;
  std::uint64_t cursor = 0;
  int steps = 0;
  do {
    std::vector<std::string> keys;
    cursor = store.scan(cursor, count, "", kl::Store::ReadBound(), &keys);
    seen.insert(keys.begin(), keys.end());
    between(++steps);
    REQUIRE(steps < 1000000);
  } while (cursor != 0);
  return seen;
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

TEST_SUITE("chapter 12: the keyspace") {

TEST_CASE("the table finds, adds, replaces and removes like a map, through growth") {
  kl::detail::Table table;
  std::map<std::string, std::string> model;
  std::mt19937 random(11);
  for (int i = 0; i < 20000; ++i) {
    const std::string key = "k" + std::to_string(random() % 3000);
    switch (random() % 3) {
      case 0: table.insert_or_assign(key, std::to_string(i)); model[key] = std::to_string(i); break;
      case 1: CHECK(table.erase(key) == model.erase(key)); break;
      default: {
        auto it = table.find(std::string_view(key));
        CHECK((it == table.end()) == (model.count(key) == 0));
        if (it != table.end()) CHECK(it->second == model[key]);
      }
    }
  }
  CHECK(table.size() == model.size());
  std::map<std::string, std::string> listed(table.begin(), table.end());
  CHECK(listed == model);
  for (auto it = table.begin(); it != table.end();) it = table.erase(it);  // erase while walking
  CHECK(table.empty());
}

TEST_CASE("a full SCAN returns every key once when nothing changes") {
  kl::Store store;
  for (int i = 0; i < 5000; ++i) REQUIRE(store.set("key:" + std::to_string(i), "v").ok());
  const std::multiset<std::string> seen = walk(store, 10, [](int) {});
  CHECK(seen.size() == 5000);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 5000);
}

TEST_CASE("SCAN returns every key present for the whole walk while the table grows and keys come and go") {
  kl::Store store;
  for (int i = 0; i < 2000; ++i) REQUIRE(store.set("stay:" + std::to_string(i), "v").ok());
  int added = 0;
  const std::multiset<std::string> seen = walk(store, 7, [&](int step) {
    // Each step adds keys (the table doubles several times during the walk) and removes
    // some of those it added.
    for (int j = 0; j < 40; ++j) REQUIRE(store.set("new:" + std::to_string(added++), "v").ok());
    if (step % 3 == 0) REQUIRE(store.del("new:" + std::to_string(added / 2)).ok());
  });
  CHECK(added > 8000);  // it grew past 4x its size while walking
  for (int i = 0; i < 2000; ++i) CHECK(seen.count("stay:" + std::to_string(i)) >= 1);
  for (const std::string& key : seen) CHECK((key.rfind("stay:", 0) == 0 || key.rfind("new:", 0) == 0));
}

TEST_CASE("SCAN skips expired keys, filters by pattern, and stops at the output bound") {
  std::atomic<std::int64_t> now{1'000'000};
  kl::Options options;
  options.clock = [&] { return now.load(); };
  options.active_expiry = false;
  auto store = open_store(options);
  REQUIRE(store->set("user:1", "a").ok());
  REQUIRE(store->set("user:2", "b", std::chrono::milliseconds(5)).ok());
  REQUIRE(store->set("item:1", "c").ok());
  now += 6;
  std::vector<std::string> keys;
  CHECK(store->scan(0, 1000, "user:*", kl::Store::ReadBound(), &keys) == 0);
  CHECK(keys == std::vector<std::string>{"user:1"});
  kl::Store::ReadBound tight;
  tight.max_bytes = 3;  // less than one key
  bool complete = true;
  store->scan(0, 1000, "", tight, &keys, &complete);
  CHECK_FALSE(complete);
}

TEST_CASE("RANDOMKEY returns live keys, each of them in time, and nil when there are none") {
  kl::Store store;
  CHECK(store.random_key() == std::nullopt);
  for (int i = 0; i < 20; ++i) REQUIRE(store.set("k" + std::to_string(i), "v").ok());
  std::set<std::string> picked;
  for (int i = 0; i < 2000; ++i) picked.insert(*store.random_key());
  CHECK(picked.size() == 20);
}

TEST_CASE("RENAME and COPY move values with their expiry, in one batch record") {
  kltest::TempDir dir;
  std::atomic<std::int64_t> now{1'000'000};
  kl::Options options;
  options.dir = dir.path();
  options.fsync = kl::FsyncPolicy::kNever;
  options.clock = [&] { return now.load(); };
  options.active_expiry = false;
  options.info_log = [](const std::string&) {};
  {
    auto store = open_store(options);
    REQUIRE(store->set("a", "1", std::chrono::milliseconds(1000)).ok());
    REQUIRE(store->set("b", "2").ok());
    bool found = false, moved = false;
    REQUIRE(store->rename("a", "b", true, &found, &moved).ok());  // RENAMENX: b exists
    CHECK((found && !moved));
    REQUIRE(store->rename("a", "c", false, &found, &moved).ok());
    CHECK((found && moved));
    CHECK(store->expire_time("c") == 1'001'000);
    REQUIRE(store->rename("nope", "d", false, &found, &moved).ok());
    CHECK_FALSE(found);
    bool copied = false;
    REQUIRE(store->copy("c", "b", false, &copied).ok());
    CHECK_FALSE(copied);
    REQUIRE(store->copy("c", "b", true, &copied).ok());
    CHECK(copied);
    CHECK(store->expire_time("b") == 1'001'000);
  }
  auto store = open_store(options);
  CHECK(contents(*store) == Model{{"b", "1"}, {"c", "1"}});
}

TEST_CASE("the key commands: TYPE, TOUCH, UNLINK, RENAME, RENAMENX, COPY, RANDOMKEY, SCAN") {
  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  Client c{&dispatcher, {}};
  CHECK(c.run({"RANDOMKEY"}) == "$-1\r\n");
  CHECK(c.run({"MSET", "a", "1", "b", "2"}) == "+OK\r\n");
  CHECK(c.run({"TYPE", "a"}) == "+string\r\n");
  CHECK(c.run({"TYPE", "nope"}) == "+none\r\n");
  CHECK(c.run({"TOUCH", "a", "b", "nope"}) == ":2\r\n");
  CHECK(c.run({"RENAME", "nope", "x"}) == "-ERR no such key\r\n");
  CHECK(c.run({"RENAME", "a", "a"}) == "+OK\r\n");
  CHECK(c.run({"RENAMENX", "a", "a"}) == ":0\r\n");
  CHECK(c.run({"RENAMENX", "a", "b"}) == ":0\r\n");
  CHECK(c.run({"RENAME", "a", "c"}) == "+OK\r\n");
  CHECK(c.run({"COPY", "c", "c"}) == "-ERR source and destination objects are the same\r\n");
  CHECK(c.run({"COPY", "c", "b"}) == ":0\r\n");
  CHECK(c.run({"COPY", "c", "b", "REPLACE", "DB", "0"}) == ":1\r\n");
  CHECK(c.run({"COPY", "c", "d", "DB", "1"}) == "-ERR DB index is out of range\r\n");
  CHECK(c.run({"COPY", "c", "d", "FORCE"}) == "-ERR syntax error\r\n");
  CHECK(c.run({"UNLINK", "b", "c", "nope"}) == ":2\r\n");
  CHECK(c.run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(c.run({"RANDOMKEY"}) == "$1\r\nk\r\n");
  CHECK(c.run({"SCAN", "0"}) == "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
  CHECK(c.run({"SCAN", "0", "TYPE", "string", "MATCH", "k*", "COUNT", "5"}) ==
        "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
  CHECK(c.run({"SCAN", "0", "TYPE", "hash"}) == "*2\r\n$1\r\n0\r\n*0\r\n");
  CHECK(c.run({"SCAN", "abc"}) == "-ERR invalid cursor\r\n");
  CHECK(c.run({"SCAN", "-1"}) == "-ERR invalid cursor\r\n");
  CHECK(c.run({"SCAN", "18446744073709551616"}) == "-ERR invalid cursor\r\n");
  CHECK(c.run({"SCAN", "0", "COUNT", "0"}) == "-ERR syntax error\r\n");
  CHECK(c.run({"SCAN", "0", "COUNT"}) == "-ERR syntax error\r\n");
  CHECK(c.run({"SCAN", "0", "LIMIT", "1"}) == "-ERR syntax error\r\n");
}

}  // TEST_SUITE
