// Chapter 5's example: reader and writer threads sharing one persistent store, with the
// throughput printed once a second. Try different mixes and fsync policies:
//
//   g++ -std=c++17 -O2 -pthread example.cpp -o example
//   ./example [READERS] [WRITERS] [SECONDS] [always|everysec|no]
//
// Defaults: 4 readers, 2 writers, 3 seconds, everysec. With "always", every write waits
// for an fsync, yet several writers together write more per second than one: group
// commit lets them share each fsync.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

int main(int argc, char** argv) {
  const int readers = argc > 1 ? std::atoi(argv[1]) : 4;
  const int writers = argc > 2 ? std::atoi(argv[2]) : 2;
  const int seconds = argc > 3 ? std::atoi(argv[3]) : 3;
  const char* policy = argc > 4 ? argv[4] : "everysec";
  if (readers < 0 || writers < 0 || seconds <= 0) {
    std::fprintf(stderr, "usage: %s [READERS] [WRITERS] [SECONDS] [always|everysec|no]\n", argv[0]);
    return 2;
  }

  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  kl::Options options;
  options.dir = dir;
  options.fsync = std::strcmp(policy, "always") == 0 ? kl::FsyncPolicy::kAlways
                  : std::strcmp(policy, "no") == 0   ? kl::FsyncPolicy::kNever
                                                     : kl::FsyncPolicy::kEverySecond;
  options.compact_min_bytes = 4 << 20;  // let the background compactor show itself
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) {
    std::fprintf(stderr, "example: %s\n", s.to_string().c_str());
    return 1;
  }
  constexpr int kKeys = 10000;
  for (int k = 0; k < kKeys; ++k) (void)store->set("key" + std::to_string(k), "0");

  std::atomic<bool> running{true};
  std::atomic<long> reads{0}, writes{0}, errors{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      unsigned k = static_cast<unsigned>(r);
      while (running) {
        k = k * 1103515245u + 12345u;
        if (store->get("key" + std::to_string(k % kKeys))) ++reads;
      }
    });
  }
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      unsigned k = static_cast<unsigned>(w) + 7;
      while (running) {
        k = k * 1103515245u + 12345u;
        if (store->increment("key" + std::to_string(k % kKeys), 1).ok()) ++writes;
        else ++errors;
      }
    });
  }

  std::printf("%d readers, %d writers, fsync %s\n", readers, writers, policy);
  long last_reads = 0, last_writes = 0;
  for (int second = 1; second <= seconds; ++second) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const long r = reads, w = writes;
    const kl::Stats stats = store->stats();
    std::printf("second %d: %9ld reads/s %8ld writes/s   log %6.1f MiB, %llu compactions\n",
                second, r - last_reads, w - last_writes, static_cast<double>(stats.log_bytes) / (1 << 20),
                static_cast<unsigned long long>(stats.compactions));
    last_reads = r;
    last_writes = w;
  }
  running = false;
  for (auto& thread : threads) thread.join();
  kl::Status s = store->close();
  std::printf("%ld failed writes; close: %s\n", errors.load(), s.to_string().c_str());

  const std::string log = std::string(dir) + "/" + kl::kLogFileName;
  const std::string lock = std::string(dir) + "/" + kl::kLockFileName;
  ::unlink(log.c_str());
  ::unlink(lock.c_str());
  ::rmdir(dir);
  return s.ok() && errors == 0 ? 0 : 1;
}
