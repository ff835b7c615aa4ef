// Chapter 12's example: the keyspace. A client walks a cache with SCAN, as Rails'
// delete_matched and django-redis's iter_keys do, while the application keeps writing and
// the table doubles under the walk; then a report is renamed, copied and left to expire,
// with the log's records shown, a restart in the middle, and the key commands' errors.
//
//   g++ -std=c++17 -pthread example.cpp -o example && ./example
//
// Nothing printed depends on where the hash function puts a key: the walk prints what it
// found, not its cursors, and RANDOMKEY is asked only when one live key (or none) is left.
// The store's clock is a variable the example moves by hand (Options::clock) and the
// background expiry cycle is off, so the output is the same on every run. The persistent
// store lives in a temporary directory that the example removes before it exits.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
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

// Runs one command and returns its reply, as the server would send it.
std::string send(kl::Store* store, const std::vector<std::string>& words) {
  kl::Dispatcher dispatcher(store);
  kl::Session session;
  std::string reply;
  dispatcher.execute(words, &session, &reply);
  return reply;
}

// Runs one command and prints it with its reply, as redis-cli shows them.
void run(kl::Store* store, const std::vector<std::string>& words) {
  const std::string reply = send(store, words);
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
  std::printf("%-52s %s\n", line.c_str(), shown.c_str());
}

// One SCAN step: sends it, and reads the reply *2 $N cursor *K $n key ... into the next
// cursor and the keys.
std::string scan(kl::Store* store, const std::string& cursor, const std::string& pattern,
                 const std::string& count, std::vector<std::string>* keys) {
  const std::string reply = send(store, {"SCAN", cursor, "MATCH", pattern, "COUNT", count});
  std::size_t at = 0;
  auto line = [&] {
    const std::size_t end = reply.find("\r\n", at);
    std::string text = reply.substr(at, end - at);
    at = end + 2;
    return text;
  };
  auto bulk = [&] {
    const std::size_t length = std::stoul(line().substr(1));
    std::string text = reply.substr(at, length);
    at += length + 2;
    return text;
  };
  line();  // *2
  const std::string next = bulk();
  keys->clear();
  for (std::size_t k = std::stoul(line().substr(1)); k > 0; --k) keys->push_back(bulk());
  return next;
}

// Walks every key matching `pattern`, calling `between` after each step with the step's
// number, and counts how often each key came back.
template <typename Between>
std::map<std::string, int> walk(kl::Store* store, const std::string& pattern,
                                const std::string& count, Between between) {
  std::map<std::string, int> seen;
  std::string cursor = "0";
  int step = 0;
  do {
    std::vector<std::string> keys;
    cursor = scan(store, cursor, pattern, count, &keys);
    for (const std::string& key : keys) ++seen[key];
    between(++step);
  } while (cursor != "0");
  return seen;
}

// Prints how many of the `expected` keys starting with `prefix` a walk returned, how many
// of them came more than once, and how many other keys it returned.
void report_walk(const std::map<std::string, int>& seen, const std::string& prefix,
                 const char* what, int expected) {
  int found = 0, twice = 0, other = 0;
  for (const auto& [key, times] : seen) {
    if (key.rfind(prefix, 0) != 0) {
      ++other;
      continue;
    }
    ++found;
    if (times > 1) ++twice;
  }
  std::printf("  returned: %d of the %d %s, %d of them more than once; other keys: %d\n", found,
              expected, what, twice, other);
}

// Prints every record of the log, and the entries of a batch record under it.
void show_log(const std::string& dir) {
  std::unique_ptr<kl::File> file;
  if (!kl::default_file_system()->open(dir + "/" + kl::kLogFileName, false, &file).ok()) return;
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  if (!reader.open(&header).ok()) return;
  std::printf("  the log (version %u), %llu bytes:\n", reader.version(),
              static_cast<unsigned long long>(reader.file_size()));
  auto print = [](const char* indent, const kl::Record& r) {
    const char* type = r.type == kl::RecordType::kPut      ? "put"
                       : r.type == kl::RecordType::kDelete ? "delete"
                                                           : "expire";
    std::printf("%s%-7s %-16.*s expiry %llu\n", indent, type, static_cast<int>(r.key.size()),
                r.key.data(), static_cast<unsigned long long>(r.expiry_ms));
  };
  kl::Record record;
  while (reader.next(&record) == kl::LogReader::Result::kRecord) {
    if (record.type != kl::RecordType::kBatch) {
      print("    ", record);
      continue;
    }
    std::printf("    batch, one record of:\n");
    kl::detail::BatchReader entries(record.value);
    kl::Record entry;
    while (entries.next(&entry)) print("      ", entry);
  }
}

void at(std::int64_t seconds, const char* what) {
  now = kStart + seconds * 1000;
  std::printf("\n-- t = %lld s: %s\n", static_cast<long long>(seconds), what);
}

}  // namespace

int main() {
  // 1. SCAN while the table grows.
  {
    kl::Store store;  // in memory
    std::printf("-- a cache of 1000 pages, walked with SCAN while the application writes\n");
    for (int i = 0; i < 1000; ++i) {
      if (kl::Status s = store.set("page:" + std::to_string(i), "<html>"); !s.ok()) return fail(s);
    }
    run(&store, {"DBSIZE"});
    std::printf("  SCAN <cursor> MATCH page:* COUNT 100 until the cursor is 0 again,\n"
                "  with 200 new keys (cart:N) written after each of the first 10 steps:\n");
    int carts = 0;
    const auto seen = walk(&store, "page:*", "100", [&](int step) {
      if (step > 10) return;
      for (int j = 0; j < 200; ++j) (void)store.set("cart:" + std::to_string(carts++), "1");
    });
    report_walk(seen, "page:", "pages", 1000);
    run(&store, {"DBSIZE"});
    std::printf("  the same walk again, nothing changing, every key (MATCH *, COUNT 10):\n");
    const auto all = walk(&store, "*", "10", [](int) {});
    report_walk(all, "", "keys", 3000);
    run(&store, {"COMMAND", "COUNT"});
  }

  // 2. RENAME and COPY keep the expiry, each in one record; the key commands.
  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  kl::Options options;
  options.dir = dir;
  options.clock = [] { return now.load(); };
  options.active_expiry = false;  // an expired key stays in memory until a write meets it

  {
    std::unique_ptr<kl::Store> store;
    if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
    at(0, "a report is written under a temporary name, then renamed");
    run(store.get(), {"SET", "report:tmp", "<pdf>", "EX", "60"});
    run(store.get(), {"RENAME", "report:tmp", "report:2026-01"});
    run(store.get(), {"EXISTS", "report:tmp"});
    run(store.get(), {"TTL", "report:2026-01"});
    show_log(dir);
  }

  at(30, "the store opens again");
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
  run(store.get(), {"TTL", "report:2026-01"});
  run(store.get(), {"COPY", "report:2026-01", "report:latest"});
  run(store.get(), {"TTL", "report:latest"});
  run(store.get(), {"RENAMENX", "report:latest", "report:2026-01"});
  run(store.get(), {"TYPE", "report:latest"});
  run(store.get(), {"TYPE", "report:tmp"});
  run(store.get(), {"TOUCH", "report:2026-01", "report:latest", "report:tmp"});
  run(store.get(), {"RENAME", "report:tmp", "report:old"});
  run(store.get(), {"COPY", "report:latest", "report:latest"});
  run(store.get(), {"COPY", "report:latest", "report:old", "DB", "1"});
  run(store.get(), {"SCAN", "0", "COUNT", "0"});
  run(store.get(), {"SCAN", "-1"});
  run(store.get(), {"UNLINK", "report:latest", "report:tmp"});
  run(store.get(), {"RANDOMKEY"});  // one live key left: it can only be that one
  show_log(dir);

  at(61, "the report's minute is over");
  run(store.get(), {"GET", "report:2026-01"});
  run(store.get(), {"DBSIZE"});     // expired, but no write has removed it yet
  run(store.get(), {"RANDOMKEY"});  // it skips the expired key: there is none to give

  if (kl::Status s = store->close(); !s.ok()) return fail(s);
  const std::string log = std::string(dir) + "/" + kl::kLogFileName;
  const std::string lock = std::string(dir) + "/" + kl::kLockFileName;
  ::unlink(log.c_str());
  ::unlink(lock.c_str());
  ::rmdir(dir);
  return 0;
}
