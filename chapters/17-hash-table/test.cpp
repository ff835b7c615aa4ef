// Chapter 17: a hash table built for the job. The table agrees with std::unordered_map,
// taken as a model, through inserts, overwrites, appends, deletes, growth and iteration;
// SCAN visits every key present for the whole walk while the table grows, in the middle
// of a growth included; readers under the shared lock stay right while a writer grows the
// table (run under ThreadSanitizer by make tsan); an entry costs one block, and 8 bytes
// more when its key has an expiry, which the entry holds; the active expiry cycle finds
// expired keys in the main table. These tests also run against every later chapter and
// the final header.
#include <doctest/doctest.h>

#if defined(__GLIBC__)
#include <malloc.h>  // mallinfo2: the bytes in use, to count a store's allocations
#endif

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

constexpr std::int64_t kStart = 1'700'000'000'000;  // a plausible "now", ms since the epoch

using Model = std::unordered_map<std::string, std::string>;
using Expiries = std::unordered_map<std::string, std::int64_t>;  // keys with an expiry only
using namespace std::chrono_literals;

// Keys of every length from 0 to 40 bytes, drawn from `range` names, so that the same
// keys come back and are overwritten, appended to and deleted.
std::string key_of(std::mt19937& random, unsigned range) {
  const unsigned n = static_cast<unsigned>(random() % range);
  return std::string(n % 41, static_cast<char>('a' + n % 26)) + std::to_string(n);
}

void check_same(const kl::detail::Table& table, const Model& model, const Expiries& expiries) {
  REQUIRE(table.size() == model.size());
  CHECK(table.expiring() == expiries.size());
  for (const auto& [key, value] : model) {
    auto it = table.find(key);
    REQUIRE(it != table.end());
    CHECK(it->first == key);
    CHECK(it->second == value);
    const auto expiry = expiries.find(key);
    CHECK(table.expiry_of(it->first) == (expiry == expiries.end() ? 0 : expiry->second));
    CHECK(table.expiry_of(key) == table.expiry_of(it->first));  // by lookup, and by entry
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

TEST_SUITE("chapter 17: a hash table built for the job") {

TEST_CASE("the table agrees with std::unordered_map through inserts, overwrites, appends, deletes, expiries and growth") {
  kl::detail::Table table;
  Model model;
  Expiries expiries;
  std::mt19937 random(15);
  bool saw_growth = false;
  for (int i = 0; i < 60000; ++i) {
    const std::string key = key_of(random, i < 30000 ? 20000 : 3000);
    const std::string value(random() % 3 == 0 ? random() % 300 : random() % 20, static_cast<char>('A' + i % 26));
    switch (random() % 7) {
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
        expiries.erase(key);
        break;
      case 5: {  // give an expiry, change it, or take it away: the entry moves, the value stays
        auto it = table.find(key);
        if (it == table.end()) break;
        const std::int64_t ms = random() % 3 == 0 ? 0 : 1 + static_cast<std::int64_t>(random() % 100000);
        table.set_expiry(it->first, ms);
        if (ms == 0) expiries.erase(key);
        else expiries[key] = ms;
        CHECK(it->first == key);  // the iterator followed the entry
        CHECK(it->second == model[key]);
        CHECK(table.expiry_of(it->first) == ms);
        CHECK(table.find(key)->second == model[key]);  // and so did the bucket
        break;
      }
      default: {
        auto it = table.find(key);
        CHECK((it == table.end()) == (model.count(key) == 0));
      }
    }
    saw_growth = saw_growth || table.growing();
    if (i % 5000 == 0) check_same(table, model, expiries);
  }
  CHECK(saw_growth);
  CHECK(table.expiring() > 0);
  check_same(table, model, expiries);
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

TEST_CASE("a key with an expiry costs 8 bytes more than one without, in the same block") {
  // Over 16 value sizes in a row, the allocator's 16-byte rounding averages out: the
  // blocks with an expiry take 8 bytes more each, on average, and nothing else.
  kl::detail::Table without, with;
  for (std::size_t i = 0; i < 16 * 1000; ++i) {
    const std::string key = "key:" + std::to_string(100000 + i);  // all 10 bytes
    const std::string value(100 + i % 16, 'v');
    without.emplace(key, value);
    auto [it, added] = with.emplace(key, value);
    with.set_expiry(it->first, kStart + static_cast<std::int64_t>(i));
    CHECK(it->second == value);
  }
  REQUIRE(with.bucket_count() == without.bucket_count());
  const double extra = static_cast<double>(with.allocated_bytes() - without.allocated_bytes()) / 16000;
  INFO("bytes per key for the expiry: " << extra);
  CHECK(extra == doctest::Approx(8).epsilon(0.01));
  CHECK(with.expiring() == 16000);
  for (auto it = with.begin(); it != with.end(); ++it) with.set_expiry(it->first, 0);
  CHECK(with.expiring() == 0);
  for (auto it = with.begin(); it != with.end(); ++it) CHECK(it->second == without.find(it->first)->second);
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // The store: giving 16 000 keys an expiry takes 8 bytes per key from the allocator, on
  // average, and no second block (chapter 10's expires_ took a node and a key's copy).
  kl::Store store;
  for (std::size_t i = 0; i < 16000; ++i) {
    REQUIRE(store.set("key:" + std::to_string(100000 + i), std::string(100 + i % 16, 'v')).ok());
  }
  const std::size_t before = mallinfo2().uordblks;
  const std::int64_t later = store.now_ms() + 100000;
  for (std::size_t i = 0; i < 16000; ++i) REQUIRE(store.expire_at("key:" + std::to_string(100000 + i), later).ok());
  const double per_key = (static_cast<double>(mallinfo2().uordblks) - static_cast<double>(before)) / 16000;
  INFO("the store's bytes per key for the expiry: " << per_key);
  CHECK(per_key >= 7.5);
  CHECK(per_key <= 9);
  CHECK(store.expiring() == 16000);
#endif
}

TEST_CASE("setting, changing and clearing an expiry keeps the value") {
  kl::Store store;
  const std::string value(200, 'x');
  const std::int64_t later = store.now_ms() + 100000;
  REQUIRE(store.set("k", value).ok());
  REQUIRE(store.expire_at("k", later).ok());
  CHECK(store.get("k") == value);
  CHECK(store.expiring() == 1);
  REQUIRE(store.append("k", "yz").ok());  // a value that grows keeps its expiry
  CHECK(store.get("k") == value + "yz");
  CHECK(store.expire_time("k") == later);
  REQUIRE(store.expire_at("k", later + 1).ok());  // one expiry for another, in place
  CHECK(store.expire_time("k") == later + 1);
  REQUIRE(store.persist("k").ok());
  CHECK(store.get("k") == value + "yz");
  CHECK(store.expire_time("k") == -1);
  CHECK(store.expiring() == 0);
  REQUIRE(store.set("empty", "").ok());  // no value at all: the key moves, nothing else
  REQUIRE(store.expire_at("empty", later).ok());
  CHECK(store.get("empty") == "");
  CHECK(store.expire_time("empty") == later);
}

TEST_CASE("active expiry finds the few expiring keys among many in the main table") {
  auto now = std::make_shared<std::atomic<std::int64_t>>(kStart);
  kl::Options options;
  options.clock = [now] { return now->load(); };
  options.active_expiry = false;  // the test runs the cycle's rounds itself
  std::unique_ptr<kl::Store> store;
  REQUIRE(kl::Store::open(options, &store).ok());
  std::size_t removed = 0;
  REQUIRE(store->remove_expired(20, &removed).ok());  // no key expiring: nothing to do
  CHECK(removed == 0);
  for (int i = 0; i < 20000; ++i) REQUIRE(store->set("keep:" + std::to_string(i), "v").ok());
  for (int i = 0; i < 50; ++i) REQUIRE(store->set("temp:" + std::to_string(i), "v", 10ms).ok());
  CHECK(store->expiring() == 50);
  *now += 11;
  std::size_t total = 0;
  int rounds = 0;
  for (; rounds < 20000 && total < 50; ++rounds) {
    REQUIRE(store->remove_expired(20, &removed).ok());
    CHECK(removed <= 20);
    total += removed;
  }
  INFO("rounds: " << rounds);
  CHECK(total == 50);
  CHECK(store->size() == 20000);
  CHECK(store->expiring() == 0);
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
