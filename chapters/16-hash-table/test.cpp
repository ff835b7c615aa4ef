// Chapter 16: a hash table built for the job. The table agrees with std::unordered_map,
// taken as a model, through inserts, overwrites, appends, deletes, growth and iteration;
// SCAN visits every key present for the whole walk while the table grows, in the middle
// of a growth included; readers under the shared lock stay right while a writer grows the
// table (run under ThreadSanitizer by make tsan); an entry costs one block. These tests
// also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

using Model = std::unordered_map<std::string, std::string>;

// Keys of every length from 0 to 40 bytes, drawn from `range` names, so that the same
// keys come back and are overwritten, appended to and deleted.
std::string key_of(std::mt19937& random, unsigned range) {
  const unsigned n = static_cast<unsigned>(random() % range);
  return std::string(n % 41, static_cast<char>('a' + n % 26)) + std::to_string(n);
}

void check_same(const kl::detail::Table& table, const Model& model) {
  REQUIRE(table.size() == model.size());
  for (const auto& [key, value] : model) {
    auto it = table.find(key);
    REQUIRE(it != table.end());
    CHECK(it->first == key);
    CHECK(it->second == value);
  }
  std::map<std::string, std::string> listed;
  std::size_t walked = 0;
  for (const auto& entry : table) {
    listed.emplace(std::string(entry.first), std::string(entry.second));
    ++walked;
  }
  CHECK(walked == model.size());  // each entry once
  CHECK(listed == std::map<std::string, std::string>(model.begin(), model.end()));
}

}  // namespace

TEST_SUITE("chapter 16: a hash table built for the job") {

TEST_CASE("the table agrees with std::unordered_map through inserts, overwrites, appends, deletes and growth") {
  kl::detail::Table table;
  Model model;
  std::mt19937 random(15);
  bool saw_growth = false;
  for (int i = 0; i < 60000; ++i) {
    const std::string key = key_of(random, i < 30000 ? 20000 : 3000);
    const std::string value(random() % 3 == 0 ? random() % 300 : random() % 20, static_cast<char>('A' + i % 26));
    switch (random() % 6) {
      case 0:
      case 1: {  // insert or overwrite
        auto [it, added] = table.insert_or_assign(key, value);
        CHECK(added == (model.count(key) == 0));
        CHECK(it->second == value);
        model[key] = value;
        break;
      }
      case 2: {  // append, which may move the entry to a larger block
        auto [it, added] = table.try_emplace(key);
        it->second.append(value);
        CHECK(it->second == (model[key] += value));
        CHECK(table.find(key)->second == model[key]);  // the bucket follows a move
        break;
      }
      case 3: {  // cut the end off, or pad with zero bytes
        auto it = table.find(key);
        if (it == table.end()) break;
        const std::size_t size = random() % 50;
        it->second.resize(size);
        model[key].resize(size);
        CHECK(it->second == model[key]);
        break;
      }
      case 4:
        CHECK(table.erase(key) == model.erase(key));
        break;
      default: {
        auto it = table.find(key);
        CHECK((it == table.end()) == (model.count(key) == 0));
      }
    }
    saw_growth = saw_growth || table.growing();
    if (i % 5000 == 0) check_same(table, model);
  }
  CHECK(saw_growth);
  check_same(table, model);
  for (auto it = table.begin(); it != table.end();) it = table.erase(it);  // erase while walking
  CHECK(table.empty());
}

TEST_CASE("a growth moves a few buckets per insert, and lookups find keys in both arrays meanwhile") {
  kl::detail::Table table;
  for (int i = 0; i < 1024; ++i) table.emplace("key:" + std::to_string(i), std::to_string(i));
  CHECK_FALSE(table.growing());
  table.emplace("the one that starts it");
  REQUIRE(table.growing());  // 1025 entries in 1024 buckets: a new array of 2048
  CHECK(table.bucket_count() == 2048);
  int inserts = 1;
  while (table.growing()) {
    for (int i = 0; i < 1024; i += 7) REQUIRE(table.find("key:" + std::to_string(i))->second == std::to_string(i));
    table.emplace("more:" + std::to_string(inserts++));
  }
  CHECK(inserts > 20);           // not all at once
  CHECK(inserts <= 1024 / 4 + 1);  // and over before the new array fills
  for (int i = 0; i < 1024; ++i) CHECK(table.count("key:" + std::to_string(i)) == 1);
}

TEST_CASE("SCAN on the table visits every entry present for the whole walk while it grows") {
  for (std::size_t count : {std::size_t{1}, std::size_t{3}, std::size_t{10}, std::size_t{100}}) {
    kl::detail::Table table;
    for (int i = 0; i < 2040; ++i) table.emplace("stay:" + std::to_string(i));  // 2048 buckets
    std::multiset<std::string> seen;
    std::uint64_t cursor = 0;
    int added = 0, steps = 0, mid_growth = 0;
    do {
      cursor = table.scan(cursor, count, [&](const kl::detail::Table::value_type& entry) {
        seen.insert(std::string(entry.first));
        return true;
      });
      mid_growth += table.growing() ? 1 : 0;
      // Every other step the table gains `count` keys (a doubling or two over the walk:
      // faster, and a walk of small steps would never catch up) and loses one.
      if (steps % 2 == 0) {
        for (std::size_t j = 0; j < count; ++j) table.emplace("new:" + std::to_string(added++));
        table.erase("new:" + std::to_string(added / 3));
      }
      REQUIRE(++steps < 100000);
    } while (cursor != 0);
    INFO("count " << count);
    CHECK(mid_growth > 0);  // some steps began in the middle of a growth
    for (int i = 0; i < 2040; ++i) CHECK(seen.count("stay:" + std::to_string(i)) >= 1);
  }
}

TEST_CASE("SCAN's step stops where visit says, and the next step starts with that bucket") {
  kl::detail::Table table;
  for (int i = 0; i < 2048; ++i) table.emplace("k" + std::to_string(i));
  table.emplace("growing");
  REQUIRE(table.growing());
  std::set<std::string> seen;
  std::uint64_t cursor = 0;
  int calls = 0;
  do {
    int budget = 5;  // accept five entries per step, then refuse
    cursor = table.scan(cursor, 50, [&](const kl::detail::Table::value_type& entry) {
      if (budget-- == 0) return false;
      seen.insert(std::string(entry.first));
      return true;
    });
    REQUIRE(++calls < 100000);
  } while (cursor != 0);
  CHECK(seen.size() == 2049);
}

TEST_CASE("random() picks entries of both arrays while the table grows") {
  kl::detail::Table table;
  for (int i = 0; i < 64; ++i) table.emplace("k" + std::to_string(i));
  table.emplace("k64");
  REQUIRE(table.growing());
  std::set<std::string> picked;
  std::uint64_t seed = 1;
  for (int i = 0; i < 5000; ++i) {
    auto it = table.random(&seed);
    REQUIRE(it != table.end());
    picked.insert(std::string(it->first));
  }
  CHECK(picked.size() == 65);
}

TEST_CASE("an entry is one block: key, value and the table's share in about 150 bytes for 16 + 100") {
  kl::detail::Table table;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    char key[17];
    std::snprintf(key, sizeof key, "%016d", i);
    table.emplace(std::string_view(key, 16), std::string(100, 'v'));
  }
  const double per_key = static_cast<double>(table.allocated_bytes()) / n;
  INFO("bytes per key: " << per_key);
  // 16 + 16 + 100 bytes asked, 144 from glibc's allocator, and 8 to 16 for the buckets;
  // std::unordered_map<std::string, std::string> takes about 240.
  CHECK(per_key <= 160);
}

TEST_CASE("readers under the shared lock stay right while a writer grows the table") {
  kl::Store store;
  for (int i = 0; i < 1000; ++i) REQUIRE(store.set("stay:" + std::to_string(i), std::to_string(i)).ok());
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::uint64_t cursor = 0;
      std::size_t round = 0;
      while (!done.load()) {
        const int i = static_cast<int>((round++ * 7 + static_cast<std::size_t>(r)) % 1000);
        if (store.get("stay:" + std::to_string(i)) != std::to_string(i)) ++wrong;
        std::vector<std::string> keys;
        cursor = store.scan(cursor, 20, "stay:*", kl::Store::ReadBound(), &keys);
        for (const std::string& key : keys) {
          if (key.rfind("stay:", 0) != 0) ++wrong;
        }
      }
    });
  }
  for (int i = 0; i < 100000; ++i) {  // seven doublings, each spread over many inserts
    REQUIRE(store.set("grow:" + std::to_string(i), "v").ok());
    if (i % 3 == 0) REQUIRE(store.set("stay:" + std::to_string(i % 1000), std::to_string(i % 1000)).ok());
  }
  done = true;
  for (std::thread& t : readers) t.join();
  CHECK(wrong.load() == 0);
  CHECK(store.size() == 101000);
}

}  // TEST_SUITE
