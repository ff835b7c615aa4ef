// Chapter 4's example: overwrite the same keys many times, watch the log grow, compact,
// and watch it shrink to the live data, which survives a reopen.
//
//   g++ -std=c++17 -pthread example.cpp -o example && ./example
//
// The store lives in a temporary directory that the example removes before it exits.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

int fail(const kl::Status& s) {
  std::fprintf(stderr, "example: %s\n", s.to_string().c_str());
  return 1;
}

void show(const char* when, const kl::Store& store) {
  const kl::Stats stats = store.stats();
  std::printf("%-28s log %8llu bytes, live data %6llu bytes, %zu keys\n", when,
              static_cast<unsigned long long>(stats.log_bytes),
              static_cast<unsigned long long>(stats.live_bytes), store.size());
}

}  // namespace

int main() {
  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  kl::Options options;
  options.dir = dir;
  options.compact_ratio = 0;  // no automatic compaction: this example compacts by hand

  {
    std::unique_ptr<kl::Store> store;
    if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
    // 100 counters, each set 100 times: 10 000 records, of which 100 are still live.
    for (int round = 1; round <= 100; ++round) {
      for (int counter = 0; counter < 100; ++counter) {
        kl::Status s = store->set("counter:" + std::to_string(counter), std::to_string(round));
        if (!s.ok()) return fail(s);
      }
    }
    for (int counter = 50; counter < 100; ++counter) {
      if (kl::Status s = store->del("counter:" + std::to_string(counter)); !s.ok()) return fail(s);
    }
    show("after 10 050 writes:", *store);
    if (kl::Status s = store->compact(); !s.ok()) return fail(s);
    show("after compact():", *store);
  }

  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
  show("after reopening:", *store);
  std::printf("counter:7 = %s, counter:77 = %s\n", store->get("counter:7").value_or("(nil)").c_str(),
              store->get("counter:77").value_or("(nil)").c_str());
  std::printf("%llu records replayed instead of 10 050\n",
              static_cast<unsigned long long>(store->recovery().records));

  if (kl::Status s = store->close(); !s.ok()) return fail(s);
  std::string log = std::string(dir) + "/" + kl::kLogFileName;
  std::string lock = std::string(dir) + "/" + kl::kLockFileName;
  ::unlink(log.c_str());
  ::unlink(lock.c_str());
  ::rmdir(dir);
  return 0;
}
