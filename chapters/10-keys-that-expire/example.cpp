// Chapter 10's example: a cache whose keys expire. It sends the commands a web framework
// sends (django-redis stores every value with SET key value PX ms), lets time pass, and
// shows lazy expiry, active expiry, the log's records, a restart and a compaction.
//
//   g++ -std=c++17 -pthread example.cpp -o example && ./example
//
// The store's clock is a variable that the example moves by hand (Options::clock), and
// the background expiry cycle is off, so the output is the same on every run. The store
// lives in a temporary directory that the example removes before it exits.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

constexpr std::int64_t kStart = 1'767'225'600'000;  // 2026-01-01 00:00:00 UTC, in ms
std::atomic<std::int64_t> now{kStart};              // the store's clock

int fail(const kl::Status& s) {
  std::fprintf(stderr, "example: %s\n", s.to_string().c_str());
  return 1;
}

// Runs one command and prints it with its reply, as redis-cli shows them.
void run(kl::Store* store, const std::vector<std::string>& words) {
  kl::Dispatcher dispatcher(store);
  kl::Session session;
  std::string reply;
  dispatcher.execute(words, &session, &reply);
  std::string line = ">";
  for (const std::string& word : words) line += " " + word;
  const std::string body = reply.substr(1, reply.find("\r\n") - 1);
  std::string shown = body;                                     // +OK
  if (reply[0] == ':') shown = "(integer) " + body;             // :42
  if (reply[0] == '-') shown = "(error) " + body;               // -ERR ...
  if (reply[0] == '$') {                                        // $5 hello, $-1
    shown = body == "-1" ? "(nil)" : "\"" + reply.substr(reply.find("\r\n") + 2,
                                                         std::stoul(body)) + "\"";
  }
  std::printf("%-48s %s\n", line.c_str(), shown.c_str());
}

// Prints every record of the log: the put, delete and expire records that replay reads.
void show_log(const std::string& dir) {
  std::unique_ptr<kl::File> file;
  if (!kl::default_file_system()->open(dir + "/" + kl::kLogFileName, false, &file).ok()) return;
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  if (!reader.open(&header).ok()) return;
  std::printf("  the log (version %u), %llu bytes:\n", reader.version(),
              static_cast<unsigned long long>(reader.file_size()));
  kl::Record record;
  while (reader.next(&record) == kl::LogReader::Result::kRecord) {
    const char* type = record.type == kl::RecordType::kPut      ? "put"
                       : record.type == kl::RecordType::kDelete ? "delete"
                                                                : "expire";
    std::printf("    %-7s %-12.*s expiry %llu\n", type, static_cast<int>(record.key.size()),
                record.key.data(), static_cast<unsigned long long>(record.expiry_ms));
  }
}

void at(std::int64_t seconds, const char* what) {
  now = kStart + seconds * 1000;
  std::printf("%s-- t = %lld s: %s\n", seconds == 0 ? "" : "\n", static_cast<long long>(seconds),
              what);
}

}  // namespace

int main() {
  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  kl::Options options;
  options.dir = dir;
  options.clock = [] { return now.load(); };
  options.active_expiry = false;  // expired keys are removed below, by hand

  {
    std::unique_ptr<kl::Store> store;
    if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
    at(0, "a web application fills its cache");
    run(store.get(), {"SET", "session:ada", "user=1", "PX", "1800000"});
    run(store.get(), {"SET", "page:/home", "<html>", "EX", "60"});
    run(store.get(), {"SET", "visits", "0"});
    run(store.get(), {"TTL", "session:ada"});
    run(store.get(), {"PTTL", "page:/home"});
    run(store.get(), {"TTL", "visits"});

    at(61, "the page's minute is over");
    run(store.get(), {"GET", "page:/home"});
    run(store.get(), {"DBSIZE"});  // expired, but nobody has removed it yet
    std::size_t removed = 0;
    if (kl::Status s = store->remove_expired(20, &removed); !s.ok()) return fail(s);
    std::printf("%-48s %zu key removed\n", "  remove_expired(20), as the cycle does:", removed);
    run(store.get(), {"DBSIZE"});
    run(store.get(), {"EXPIRE", "session:ada", "120"});
    run(store.get(), {"EXPIRETIME", "session:ada"});
    show_log(dir);
  }

  at(200, "the store opens again, after session:ada's time has passed");
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
  std::printf("  recovery: %llu records replayed, %llu key left out as expired\n",
              static_cast<unsigned long long>(store->recovery().records),
              static_cast<unsigned long long>(store->recovery().keys_expired));
  run(store.get(), {"GET", "session:ada"});
  run(store.get(), {"DBSIZE"});
  run(store.get(), {"SET", "otp:ada", "492113", "EX", "30"});

  at(240, "a compaction, after otp:ada's time has passed too");
  if (kl::Status s = store->compact(); !s.ok()) return fail(s);
  show_log(dir);
  run(store.get(), {"DBSIZE"});  // otp:ada is out of the log, still in memory
  run(store.get(), {"GET", "otp:ada"});

  if (kl::Status s = store->close(); !s.ok()) return fail(s);
  const std::string log = std::string(dir) + "/" + kl::kLogFileName;
  const std::string lock = std::string(dir) + "/" + kl::kLockFileName;
  ::unlink(log.c_str());
  ::unlink(lock.c_str());
  ::rmdir(dir);
  return 0;
}
