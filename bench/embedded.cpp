// bench/embedded.cpp: the embedded Store beside LevelDB, for `make bench`, in the manner of
// LevelDB's db_bench: random 16-byte keys, 100-byte values.
//
//   embedded DIR N ORDER     ORDER is "ks,leveldb" or "leveldb,ks": who goes first
//
// For each engine, in ORDER, each row in a fresh folder under DIR, one line "ROW ENGINE
// OPS" (operations per second) per row:
//
//   fill-T      N sets of distinct keys in random order from T threads (1, 2), no fsync
//               (Store's FsyncPolicy::kNever, LevelDB's default WriteOptions)
//   read-T      then N gets of keys picked at random, all present, from T threads
//   fillsync-T  N / 1000 sets (at least 200, as db_bench's fillsync) from T threads, each
//               durable before it returns: FsyncPolicy::kAlways, LevelDB's sync = true
//   durable-4   the same from 4 threads, where group commit (both engines have one) shares
//               an fsync between writers
//
// The threads split the keys between them; the time is from their start to the last one's
// end.
#include <leveldb/db.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "keystonelight.hpp"

namespace {

// splitmix64: a fixed, fast sequence, the same for both engines.
std::uint64_t next(std::uint64_t* state) {
  std::uint64_t z = (*state += 0x9E3779B97F4A7C15u);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
  return z ^ (z >> 31);
}

// Key i as 16 decimal digits (db_bench's format), so that the keys are distinct.
std::string key_of(std::uint64_t i) {
  char buf[24];  // i < 10^16 here; the room is for what the compiler cannot know
  std::snprintf(buf, sizeof buf, "%016llu", static_cast<unsigned long long>(i));
  return std::string(buf, 16);
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "embedded: %s\n", what.c_str());
  std::exit(1);
}

// What a row needs of an engine, opened in a fresh folder, durable writes or not.
struct Engine {
  virtual ~Engine() = default;
  virtual void put(const std::string& key, const std::string& value) = 0;
  virtual void get(const std::string& key) = 0;
};

struct Keystonelight : Engine {
  Keystonelight(const std::string& dir, bool sync) {
    keystonelight::Options options;
    options.dir = dir;
    options.fsync = sync ? keystonelight::FsyncPolicy::kAlways : keystonelight::FsyncPolicy::kNever;
    if (keystonelight::Status s = keystonelight::Store::open(options, &store); !s.ok()) fail(s.to_string());
  }
  ~Keystonelight() override {
    if (!store->close().ok()) fail("Store::close failed");
  }
  void put(const std::string& key, const std::string& value) override {
    if (!store->set(key, value).ok()) fail("Store::set failed");
  }
  void get(const std::string& key) override {
    if (!store->get(key)) fail("Store::get: a key is missing");
  }
  std::unique_ptr<keystonelight::Store> store;
};

struct LevelDb : Engine {
  LevelDb(const std::string& dir, bool sync) {
    leveldb::Options options;
    options.create_if_missing = true;
    leveldb::DB* raw = nullptr;
    if (leveldb::Status s = leveldb::DB::Open(options, dir, &raw); !s.ok()) fail(s.ToString());
    db.reset(raw);
    write.sync = sync;
  }
  void put(const std::string& key, const std::string& value) override {
    if (!db->Put(write, key, value).ok()) fail("leveldb Put failed");
  }
  void get(const std::string& key) override {
    std::string got;
    if (!db->Get(leveldb::ReadOptions(), key, &got).ok()) fail("leveldb Get: a key is missing");
  }
  std::unique_ptr<leveldb::DB> db;
  leveldb::WriteOptions write;
};

// Runs work(t) on `threads` threads; operations per second for `ops` operations in all.
double timed(int threads, std::size_t ops, const std::function<void(int)>& work) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) running.emplace_back(work, t);
  for (std::thread& t : running) t.join();
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return static_cast<double>(ops) / took.count();
}

// Sets keys order[i] for i = t, t + threads, ... below n, with random 100-byte values.
void fill(Engine* engine, const std::vector<std::uint64_t>& order, std::size_t n, int threads, int t) {
  std::string value(100, 'v');
  std::uint64_t state = 7 + static_cast<std::uint64_t>(t);
  for (std::size_t i = static_cast<std::size_t>(t); i < n; i += static_cast<std::size_t>(threads)) {
    for (char& c : value) c = static_cast<char>('a' + next(&state) % 26);
    engine->put(key_of(order[i]), value);
  }
}

void print(const char* row, int threads, const char* engine, double ops) {
  std::printf("%s-%d %s %.0f\n", row, threads, engine, ops);
  std::fflush(stdout);
}

template <typename E>
void rows(const char* name, const std::string& dir, const std::vector<std::uint64_t>& order) {
  const std::size_t n = order.size();
  const std::size_t synced = std::max<std::size_t>(200, n / 1000);
  int folder = 0;
  auto fresh = [&] { return dir + "/" + name + "-" + std::to_string(folder++); };
  // The durable rows first, each after a sync(2): after a fill of a million keys the
  // kernel is still writing back its pages, and an fsync would wait for that, not for
  // the engine's own writes.
  for (int threads : {1, 2, 4}) {
    ::sync();
    E engine(fresh(), true);
    print(threads == 4 ? "durable" : "fillsync", threads, name,
          timed(threads, synced, [&](int t) { fill(&engine, order, synced, threads, t); }));
  }
  for (int threads : {1, 2}) {
    E engine(fresh(), false);
    print("fill", threads, name, timed(threads, n, [&](int t) { fill(&engine, order, n, threads, t); }));
    print("read", threads, name, timed(threads, n, [&](int t) {
            std::uint64_t state = 99 + static_cast<std::uint64_t>(t);
            for (std::size_t k = static_cast<std::size_t>(t); k < n; k += static_cast<std::size_t>(threads)) {
              engine.get(key_of(next(&state) % n));
            }
          }));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) fail("usage: embedded DIR N ks,leveldb|leveldb,ks");
  const std::string dir = argv[1];
  const std::size_t n = static_cast<std::size_t>(std::atoll(argv[2]));
  const std::string engines = argv[3];
  // 0 .. n-1 in a random order (Fisher-Yates), the same for both engines.
  std::vector<std::uint64_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::uint64_t state = 42;
  for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[next(&state) % i]);

  for (std::size_t pos = 0; pos < engines.size();) {
    std::size_t comma = engines.find(',', pos);
    std::string engine = engines.substr(pos, comma == std::string::npos ? comma : comma - pos);
    if (engine == "ks") rows<Keystonelight>("ks", dir, order);
    else if (engine == "leveldb") rows<LevelDb>("leveldb", dir, order);
    else fail("unknown engine " + engine);
    pos = comma == std::string::npos ? engines.size() : comma + 1;
  }
  return 0;
}
