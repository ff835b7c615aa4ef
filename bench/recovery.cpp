// How long Store::open takes to replay a log of KEYS keys (16-byte keys, 100-byte values),
// the start-up figure of chapter 15. Not part of `make bench`: build it against any stage
// of the header to compare two of them on one machine, with optimisation, for example
//
//   g++ -std=c++17 -O2 -pthread -Ichapters/13-strings-and-bits bench/recovery.cpp -o /tmp/before
//   g++ -std=c++17 -O2 -pthread -I. bench/recovery.cpp -o /tmp/after
//   /tmp/before /tmp/kl-1m 1000000 && /tmp/after /tmp/kl-1m 1000000
//
// usage: recovery DIR [KEYS] [ROUNDS] [--cold]
// DIR's log is written first when DIR does not exist (fsync never, one set per key), so
// both builds can open the same file; then it is opened ROUNDS times (default 7), and the
// fastest and the median open are printed, in wall-clock and in CPU time. --cold asks the
// kernel to drop the log's pages from its cache before each open (Linux), so the replay
// reads the disk. A shared or busy machine makes every figure noisy: compare medians of
// runs made one right after the other.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6;
}

kl::Options options_for(const std::string& dir) {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.compact_ratio = 0;
  return options;
}

int write_log(const std::string& dir, long keys) {
  std::unique_ptr<kl::Store> store;
  kl::Status s = kl::Store::open(options_for(dir), &store);
  std::string value(100, 'v');
  char key[32];
  for (long i = 0; s.ok() && i < keys; ++i) {
    std::snprintf(key, sizeof key, "key:%012ld", i);
    for (std::size_t j = 0; j < value.size(); ++j) value[j] = static_cast<char>('a' + (i * 7 + static_cast<long>(j)) % 26);
    s = store->set(std::string_view(key, 16), value);
  }
  if (s.ok()) s = store->close();
  if (!s.ok()) std::fprintf(stderr, "recovery: %s\n", s.to_string().c_str());
  return s.ok() ? 0 : 1;
}

void drop_cache(const std::string& path) {
#ifdef POSIX_FADV_DONTNEED
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
#else
  (void)path;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: recovery DIR [KEYS] [ROUNDS] [--cold]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const long keys = argc > 2 ? std::atol(argv[2]) : 1000000;
  const int rounds = argc > 3 ? std::max(1, std::atoi(argv[3])) : 7;
  const bool cold = argc > 4 && std::strcmp(argv[4], "--cold") == 0;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 && write_log(dir, keys) != 0) return 1;
  const std::string log = dir + "/keystonelight.log";
  std::vector<double> wall, cpu;
  std::size_t found = 0;
  for (int round = 0; round < rounds; ++round) {
    if (cold) drop_cache(log);
    const auto started = std::chrono::steady_clock::now();
    const double cpu_started = cpu_ms();
    std::unique_ptr<kl::Store> store;
    kl::Status s = kl::Store::open(options_for(dir), &store);
    cpu.push_back(cpu_ms() - cpu_started);
    wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    if (!s.ok()) {
      std::fprintf(stderr, "recovery: %s\n", s.to_string().c_str());
      return 1;
    }
    found = store->size();
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  std::printf("open of %zu keys%s: wall %.0f ms fastest, %.0f ms median; cpu %.0f ms fastest, %.0f ms median (%d rounds)\n",
              found, cold ? " (cold cache)" : "", wall.front(), wall[wall.size() / 2], cpu.front(),
              cpu[cpu.size() / 2], rounds);
  return 0;
}
