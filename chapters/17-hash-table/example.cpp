// Chapter 17's example: what a key costs in std::unordered_map and in the store's own
// table. It fills each with KEYS keys (16-byte keys, VALUE-byte values; 1 000 000 and 100
// unless given) and prints, for each: the memory it took (the growth of the resident set
// of a process forked for it, which counts what the allocator really holds), the time to
// fill it, the longest single insert, where a table that grows all at once stalls, and
// how many inserts took over a millisecond (on a busy machine, a few do anyway).
//
//   g++ -std=c++17 -O2 -pthread example.cpp -o example && ./example 1000000 100
//
// Figures vary with the machine; run it twice and compare each column with its neighbour.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unordered_map>

#include <sys/wait.h>
#include <unistd.h>

#include "keystonelight.hpp"

namespace kl = keystonelight;
using Clock = std::chrono::steady_clock;

namespace {

long resident_kib() {  // Linux: the second field of /proc/self/statm, in pages
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

std::string key_of(long i) {
  char key[24];
  std::snprintf(key, sizeof key, "%016ld", i);
  return std::string(key, 16);
}

// Fills a fresh Map with `keys` entries, in a child process of its own (memory a process
// frees stays in its heap, and would make the next fill look free); prints bytes per
// key, the time to fill, and the longest insert.
template <typename Map, typename Insert>
void measure(const char* name, long keys, std::size_t value_bytes, Insert insert) {
  std::fflush(stdout);
  if (pid_t child = fork(); child != 0) {
    waitpid(child, nullptr, 0);
    return;
  }
  const long before = resident_kib();
  auto* map = new Map;
  std::string value(value_bytes, 'v');
  double worst_us = 0;
  long slow = 0;  // inserts that took over a millisecond
  const Clock::time_point start = Clock::now();
  for (long i = 0; i < keys; ++i) {
    value[0] = static_cast<char>('a' + i % 26);
    const std::string key = key_of(i);
    const Clock::time_point t0 = Clock::now();
    insert(*map, key, value);
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    worst_us = std::max(worst_us, us);
    slow += us > 1000 ? 1 : 0;
  }
  const double total_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  const double per_key = static_cast<double>(resident_kib() - before) * 1024.0 / static_cast<double>(keys);
  std::printf("  %-28s %7.1f B/key %8.1f ms %8.1f ms %6ld\n", name, per_key, total_ms, worst_us / 1000, slow);
  std::fflush(stdout);
  _exit(map->size() == static_cast<std::size_t>(keys) ? 0 : 1);
}

}  // namespace

int main(int argc, char** argv) {
  const long keys = argc > 1 ? std::atol(argv[1]) : 1000000;
  const std::size_t value_bytes = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 100;
  std::printf("%ld keys of 16 bytes, %zu-byte values:\n", keys, value_bytes);
  std::printf("  %-28s %13s %11s %11s %6s\n", "", "memory", "fill", "worst", "> 1 ms");
  using StdMap = std::unordered_map<std::string, std::string>;  // chapters 1 to 11
  measure<StdMap>("std::unordered_map", keys, value_bytes,
                  [](StdMap& map, const std::string& key, const std::string& value) {
                    map.insert_or_assign(key, value);
                  });
  measure<kl::detail::Table>("detail::Table (chapter 17)", keys, value_bytes,
                             [](kl::detail::Table& table, const std::string& key, const std::string& value) {
                               table.insert_or_assign(key, value);
                             });
  // The store, its table and its bookkeeping, as a program embeds it.
  measure<kl::Store>("Store::set (in memory)", keys, value_bytes,
                     [](kl::Store& store, const std::string& key, const std::string& value) {
                       if (!store.set(key, value).ok()) std::abort();
                     });
  return 0;
}
