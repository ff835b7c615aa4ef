// bench/embedded.cpp: the embedded Store beside LevelDB, for `make bench`, in the manner of
// LevelDB's db_bench: random 16-byte keys, 100-byte values, no fsync (Store's
// FsyncPolicy::kNever, LevelDB's default WriteOptions), one thread.
//
//   embedded DIR N ORDER     ORDER is "ks,leveldb" or "leveldb,ks": who goes first
//
// For each engine, in ORDER, in a fresh folder under DIR: fill (N sets of distinct keys in
// random order), then read (N gets of keys picked at random, all present). Prints
// "fill ENGINE OPS" and "read ENGINE OPS" lines, operations per second.
#include <leveldb/db.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

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

double per_second(std::size_t n, std::chrono::steady_clock::time_point since) {
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - since;
  return static_cast<double>(n) / took.count();
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "embedded: %s\n", what.c_str());
  std::exit(1);
}

// One engine's fill and read. Put and Get wrap its calls; both fail loudly.
template <typename Put, typename Get>
void run(const char* name, const std::vector<std::uint64_t>& order, std::size_t n, Put put,
         Get get) {
  std::string value(100, 'v');
  std::uint64_t state = 7;
  auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i : order) {
    for (char& c : value) c = static_cast<char>('a' + next(&state) % 26);
    put(key_of(i), value);
  }
  std::printf("fill %s %.0f\n", name, per_second(n, start));
  start = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < n; ++k) get(key_of(next(&state) % n));
  std::printf("read %s %.0f\n", name, per_second(n, start));
  std::fflush(stdout);
}

void keystonelight_run(const std::string& dir, const std::vector<std::uint64_t>& order,
                       std::size_t n) {
  keystonelight::Options options;
  options.dir = dir;
  options.fsync = keystonelight::FsyncPolicy::kNever;
  std::unique_ptr<keystonelight::Store> store;
  if (keystonelight::Status s = keystonelight::Store::open(options, &store); !s.ok())
    fail(s.to_string());
  run(
      "ks", order, n,
      [&](const std::string& k, const std::string& v) {
        if (!store->set(k, v).ok()) fail("Store::set failed");
      },
      [&](const std::string& k) {
        if (!store->get(k)) fail("Store::get: a key is missing");
      });
  if (!store->close().ok()) fail("Store::close failed");
}

void leveldb_run(const std::string& dir, const std::vector<std::uint64_t>& order,
                 std::size_t n) {
  leveldb::Options options;
  options.create_if_missing = true;
  leveldb::DB* raw = nullptr;
  if (leveldb::Status s = leveldb::DB::Open(options, dir, &raw); !s.ok()) fail(s.ToString());
  std::unique_ptr<leveldb::DB> db(raw);
  std::string got;
  run(
      "leveldb", order, n,
      [&](const std::string& k, const std::string& v) {
        if (!db->Put(leveldb::WriteOptions(), k, v).ok()) fail("leveldb Put failed");
      },
      [&](const std::string& k) {
        if (!db->Get(leveldb::ReadOptions(), k, &got).ok()) fail("leveldb Get: a key is missing");
      });
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
    if (engine == "ks") keystonelight_run(dir + "/ks", order, n);
    else if (engine == "leveldb") leveldb_run(dir + "/leveldb", order, n);
    else fail("unknown engine " + engine);
    pos = comma == std::string::npos ? engines.size() : comma + 1;
  }
  return 0;
}
