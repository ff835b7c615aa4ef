// libFuzzer target for the Dispatcher (chapter 7) over a store in memory and a persistent
// one, built and run by `make fuzz`.
//
// The input is a stream of requests (RESP arrays or inline commands) that RequestParser
// splits. Each request runs through two Dispatchers: one over a Store in memory, one over
// a persistent Store whose log lives in a MemoryFileSystem. Besides "no crash, no
// sanitizer report", the properties are:
//   - each request gets exactly one well-formed RESP2 reply (none for SHUTDOWN), read
//     back by the small reader below, with nothing left over;
//   - both stores give the same reply bytes (INFO and CONFIG excepted: they report
//     uptime, the pid, the data directory and the log's size, which differ by design);
//   - at the end both hold the same (key, value) pairs, and so does the persistent store
//     once closed and opened again, with no byte dropped: every acknowledged write, and
//     nothing else, reached its log. COMPACT and FLUSHDB swap logs, so they are covered.
// QUIT and SHUTDOWN end the stream, as they end a connection. The build lowers the key
// and value limits (KEYSTONELIGHT_MAX_KEY_BYTES, ..._VALUE_BYTES: see the Makefile), so
// that small inputs reach them; the work per input is bounded by the commands it may run.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "keystonelight.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/fuzz/memory_fs.hpp"

namespace kl = keystonelight;

namespace {

constexpr std::size_t kMaxCommands = 200;  // bounds each run, with -max_len

// Reads one RESP2 value at *at, moving past it; false when the bytes there are not one
// whole, well-formed value. Simple strings and errors hold no CR or LF; integers are
// decimal; lengths are -1 (null) or the exact count that follows.
bool read_line(const std::string& in, std::size_t* at, std::string* text) {
  const std::size_t cr = in.find("\r\n", *at);
  if (cr == std::string::npos) return false;
  *text = in.substr(*at, cr - *at);
  if (text->find_first_of("\r\n") != std::string::npos) return false;
  *at = cr + 2;
  return true;
}
bool read_integer(const std::string& text, long long* value) {
  if (text.empty() || text.size() > 20) return false;
  std::size_t i = text[0] == '-' ? 1 : 0;
  if (i == text.size()) return false;
  for (std::size_t j = i; j < text.size(); ++j) {
    if (text[j] < '0' || text[j] > '9') return false;
  }
  *value = std::stoll(text);
  return true;
}
bool read_reply(const std::string& in, std::size_t* at, int depth = 0) {
  if (*at >= in.size() || depth > 8) return false;
  const char type = in[(*at)++];
  std::string text;
  if (!read_line(in, at, &text)) return false;
  long long n = 0;
  switch (type) {
    case '+': return true;
    case '-': return !text.empty();  // an error has at least its code
    case ':': return read_integer(text, &n);
    case '$':
      if (!read_integer(text, &n) || n < -1) return false;
      if (n == -1) return true;
      if (in.size() - *at < static_cast<std::size_t>(n) + 2) return false;
      *at += static_cast<std::size_t>(n);
      if (in.compare(*at, 2, "\r\n") != 0) return false;
      *at += 2;
      return true;
    case '*':
      if (!read_integer(text, &n) || n < -1) return false;
      for (long long i = 0; i < n; ++i) {
        if (!read_reply(in, at, depth + 1)) return false;
      }
      return true;
    default: return false;
  }
}

std::map<std::string, std::string> contents(const kl::Store& store) {
  std::map<std::string, std::string> out;
  for (auto& [key, value] : store.entries()) out.emplace(std::move(key), std::move(value));
  return out;
}

// Both stores read one clock that moves a millisecond per request, so that expiry (and
// every TTL reply) is the same for both, and the same again on every run of an input.
std::int64_t g_now_ms = 0;

kl::Options persistent_options(klfuzz::MemoryFileSystem* fs) {
  kl::Options options;
  options.clock = [] { return g_now_ms; };
  options.active_expiry = false;  // no thread removing keys at moments of its own
  options.dir = klfuzz::lock_dir();
  options.fsync = kl::FsyncPolicy::kNever;  // no flusher thread
  options.compact_ratio = 0;                // no compactor thread: COMPACT still works
  options.file_system = fs;
  options.info_log = [](const std::string&) {};
  return options;
}

std::string printable(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& a : args) out += (out.empty() ? "" : " ") + a.substr(0, 40);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  kl::ProtocolLimits limits;
  limits.max_inline_bytes = 256;
  limits.max_bulk_bytes = 1024;
  limits.max_args = 64;
  kl::RequestParser parser(limits);
  std::vector<std::vector<std::string>> requests;
  for (std::size_t offset = 0; requests.size() < kMaxCommands;) {
    std::size_t consumed = 0;
    std::vector<std::string> args;
    if (parser.parse(input.substr(offset), &consumed, &args) != kl::RequestParser::Result::kCommand) break;
    offset += consumed;
    requests.push_back(std::move(args));
  }
  if (requests.empty()) return 0;

  klfuzz::MemoryFileSystem fs;
  g_now_ms = 1'700'000'000'000;
  const kl::Options options = persistent_options(&fs);
  kl::Options in_memory = options;
  in_memory.dir.clear();
  std::unique_ptr<kl::Store> memory_store;
  KLFUZZ_CHECK(kl::Store::open(in_memory, &memory_store).ok(), "a store in memory did not open");
  kl::Store& memory = *memory_store;
  std::unique_ptr<kl::Store> disk;
  const kl::Status opened = kl::Store::open(options, &disk);
  KLFUZZ_CHECK(opened.ok(), "an empty directory did not open: %s", opened.to_string().c_str());
  kl::Dispatcher on_memory(&memory);
  kl::Dispatcher on_disk(disk.get());
  kl::Session memory_session, disk_session;

  bool queue_describes_store = false;  // the MULTI queue holds INFO or CONFIG
  for (const auto& request : requests) {
    ++g_now_ms;
    std::string memory_reply, disk_reply;
    on_memory.execute(request, &memory_session, &memory_reply);
    on_disk.execute(request, &disk_session, &disk_reply);
    const std::string name = kl::detail::lower(request[0]);
    std::size_t at = 0;
    if (memory_session.shutdown) {
      KLFUZZ_CHECK(memory_reply.empty(), "SHUTDOWN replied: %s", memory_reply.c_str());
    } else {
      KLFUZZ_CHECK(read_reply(memory_reply, &at) && at == memory_reply.size(),
                   "not one well-formed RESP reply to [%s]: %s", printable(request).c_str(),
                   memory_reply.c_str());
    }
    // INFO and CONFIG GET describe the store itself (its directory, whether it has a log),
    // which is the one thing the two stores are meant to differ in; so does an EXEC whose
    // queue holds one of them.
    const bool describes_store = name == "info" || name == "config";
    const bool queued = memory_session.multi && memory_reply == "+QUEUED\r\n";
    if (queued && describes_store) queue_describes_store = true;
    const bool ends_multi = name == "exec" || name == "discard";
    if (!describes_store && !(ends_multi && queue_describes_store)) {
      KLFUZZ_CHECK(memory_reply == disk_reply, "[%s]: in memory %s, persistent %s",
                   printable(request).c_str(), memory_reply.c_str(), disk_reply.c_str());
    }
    if (!memory_session.multi) queue_describes_store = false;
    KLFUZZ_CHECK(memory_session.close == disk_session.close, "the sessions differ");
    if (memory_session.close) break;
  }

  const std::map<std::string, std::string> expected = contents(memory);
  KLFUZZ_CHECK(contents(*disk) == expected, "the stores differ: %zu keys in memory, %zu persistent",
               expected.size(), disk->size());
  // A Watch must not outlive its store: the sessions' WATCHes go before the store does.
  memory_session.watch.reset();
  disk_session.watch.reset();
  const kl::Status closed = disk->close();
  KLFUZZ_CHECK(closed.ok(), "close failed: %s", closed.to_string().c_str());
  disk.reset();
  const kl::Status reopened = kl::Store::open(options, &disk);
  KLFUZZ_CHECK(reopened.ok(), "the log did not open again: %s", reopened.to_string().c_str());
  KLFUZZ_CHECK(disk->recovery().bytes_dropped == 0, "reopening dropped %llu bytes",
               static_cast<unsigned long long>(disk->recovery().bytes_dropped));
  KLFUZZ_CHECK(contents(*disk) == expected, "after reopening: %zu keys, %zu in memory",
               disk->size(), expected.size());
  return 0;
}
