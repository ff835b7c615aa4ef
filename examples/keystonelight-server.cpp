// keystonelight-server: a Keystonelight store served over TCP in Redis's protocol, as a
// program to run: flags, a PID file, a log, and signals. It is also chapter 10's example.
//
//   keystonelight-server [--port N] [--bind ADDR] [--dir DIR] [--pidfile PATH] ...
//   keystonelight-server --help | --version
//
// Start-up, in this order, each step undone if a later one fails:
//   1. block SIGHUP, SIGTERM and SIGINT before any thread starts (they are waited for by
//      one thread, below), and ignore SIGPIPE;
//   2. create the data directory when missing, take the PID file (a second instance
//      exits here, naming the first one's pid);
//   3. start the signal thread, so that a signal at any later moment takes effect at once;
//   4. open the store: replay the log, reporting keys loaded and the time it took (SIGTERM
//      or SIGINT stops the replay: exit 0, the log unchanged);
//   5. start the server; then wait.
// SIGHUP compacts the log. SIGTERM, SIGINT (Ctrl-C) and the SHUTDOWN command shut down:
// stop accepting, finish the commands in flight and send their replies, close every
// connection, sync and close the log, remove the PID file, exit 0.
//
// Exit status: 0 after a graceful shutdown (and for --help, --version); 1 when the server
// cannot start or cannot stop cleanly (the log says why); 2 for a wrong flag or value.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "keystonelight.hpp"

namespace {

namespace kl = keystonelight;

enum ExitCode : int { kExitOk = 0, kExitFailed = 1, kExitUsage = 2 };

// "DIR/name", or "name" alone when DIR is empty.
std::string path_in(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

// The directory that holds `path`: "a/b" -> "a", "b" -> ".", "/b" -> "/".
std::string parent_dir(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// "127.0.0.1:6380", or "[::1]:6380" for IPv6, as people write addresses.
std::string endpoint(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

constexpr const char* kUsage =
    "usage: keystonelight-server [FLAG VALUE | FLAG=VALUE]...\n"
    "       keystonelight-server --help | --version\n"
    "\n"
    "Serves a Keystonelight store over TCP in Redis's protocol (redis-cli, redis-benchmark\n"
    "and Redis client libraries work). SIGHUP compacts the log; SIGTERM, SIGINT and the\n"
    "SHUTDOWN command shut down gracefully.\n"
    "\n"
    "  --port N               TCP port; 0 picks a free one (default 6380)\n"
    "  --bind ADDR            address to listen on, IPv4 or IPv6 (default 127.0.0.1)\n"
    "  --dir DIR              data directory, created when missing (default ./data)\n"
    "  --pidfile PATH         PID file (default DIR/keystonelight.pid)\n"
    "  --fsync POLICY         always, everysec or no (default everysec)\n"
    "  --max-clients N        clients served at once (default 10000)\n"
#if defined(KEYSTONELIGHT_HAS_EVENT_LOOP)  // chapter 15: a header before it has no --io
    "  --io MODEL             events: a few event loops serve every client; threads: a\n"
    "                         thread per client (default events)\n"
    "  --loops N              event loops under --io events; 0 is one per core (default 0)\n"
#endif
    "  --timeout SECONDS      close clients idle this long; 0 never (default 0)\n"
    "  --requirepass PASS     clients must AUTH with PASS first (default: no password)\n"
    "  --max-clients-output-bytes N\n"
    "                         all clients' unread replies together; past it the client\n"
    "                         holding the most is closed (default 1073741824)\n"
    "  --compact-min-bytes N  no automatic compaction below this log size (default 67108864)\n"
    "  --compact-ratio X      compact when the log is X times the live data; 0 turns\n"
    "                         automatic compaction off (default 2.0)\n"
    "  --log-level LEVEL      debug, info, warning or error (default info)\n"
    "  --help                 print this text\n"
    "  --version              print the version\n"
    "\n"
    "Exit status: 0 after a graceful shutdown, 1 when it cannot start or stop cleanly,\n"
    "2 for a wrong flag or value.\n";

enum class Level { kDebug, kInfo, kWarning, kError };

// The program's log, on standard error: one line per message, with the time (UTC, to
// the millisecond) and the level, written whole under a lock since every thread logs.
class Log {
 public:
  void set_threshold(Level level) { threshold_ = level; }

  void write(Level level, const std::string& message) {
    if (level < threshold_) return;
    static const char* const kNames[] = {"debug", "info", "warning", "error"};
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                            now.time_since_epoch()).count() % 1000;
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
    std::lock_guard<std::mutex> lock(mu_);
    std::fprintf(stderr, "%s.%03dZ %s: %s\n", stamp, static_cast<int>(millis),
                 kNames[static_cast<int>(level)], message.c_str());
    std::fflush(stderr);
  }
  void debug(const std::string& m) { write(Level::kDebug, m); }
  void info(const std::string& m) { write(Level::kInfo, m); }
  void warning(const std::string& m) { write(Level::kWarning, m); }
  void error(const std::string& m) { write(Level::kError, m); }

 private:
  Level threshold_ = Level::kInfo;
  std::mutex mu_;
};

struct Settings {
  kl::ServerConfig server;
  kl::Options store;
  std::string pidfile;  // empty: DIR/keystonelight.pid
  Level log_level = Level::kInfo;
  bool help = false;
  bool version = false;
};

// Whole-string number parsing: "12x", "", "-1" where a count is wanted are all refused.
bool parse_count(const std::string& text, std::uint64_t max, std::uint64_t* value) {
  if (text.empty() || text.size() > 20) return false;
  std::uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (v > (max - digit) / 10) return false;
    v = v * 10 + digit;
  }
  *value = v;
  return true;
}

// Applies one flag; returns what is wrong with it, if anything.
std::optional<std::string> apply(const std::string& flag, const std::string& value,
                                 Settings* settings) {
  kl::ServerConfig& server = settings->server;
  std::uint64_t n = 0;
  if (flag == "--port") {
    if (!parse_count(value, 65535, &n)) return "'" + value + "' is not a port number (0 to 65535)";
    server.port = static_cast<int>(n);
  } else if (flag == "--bind") {
    if (value.empty()) return std::string("an address is needed, such as 127.0.0.1 or ::1");
    server.bind = value;
  } else if (flag == "--dir") {
    if (value.empty()) return std::string("a directory is needed");
    settings->store.dir = value;
  } else if (flag == "--pidfile") {
    if (value.empty()) return std::string("a path is needed");
    settings->pidfile = value;
  } else if (flag == "--fsync") {
    if (value == "always") settings->store.fsync = kl::FsyncPolicy::kAlways;
    else if (value == "everysec") settings->store.fsync = kl::FsyncPolicy::kEverySecond;
    else if (value == "no") settings->store.fsync = kl::FsyncPolicy::kNever;
    else return "'" + value + "' is not a policy: give always, everysec or no";
  } else if (flag == "--max-clients") {
    if (!parse_count(value, 1000000, &n) || n == 0) {
      return "'" + value + "' is not a number of clients (1 to 1000000)";
    }
    server.max_clients = static_cast<std::size_t>(n);
#if defined(KEYSTONELIGHT_HAS_EVENT_LOOP)
  } else if (flag == "--io") {
    if (value == "events") server.io = kl::ServerConfig::Io::kEvents;
    else if (value == "threads") server.io = kl::ServerConfig::Io::kThreads;
    else return "'" + value + "' is not an I/O model: give events or threads";
  } else if (flag == "--loops") {
    if (!parse_count(value, 1024, &n)) {
      return "'" + value + "' is not a number of loops (0 to 1024; 0 is one per core)";
    }
    server.loops = static_cast<std::size_t>(n);
#endif
  } else if (flag == "--timeout") {
    if (!parse_count(value, 365 * 24 * 3600, &n)) {
      return "'" + value + "' is not a number of seconds (0 turns the timeout off)";
    }
    server.timeout_seconds = static_cast<int>(n);
  } else if (flag == "--requirepass") {
    if (value.empty()) return std::string("the password may not be empty; leave the flag out for none");
    server.requirepass = value;
  } else if (flag == "--max-clients-output-bytes") {
    if (!parse_count(value, SIZE_MAX, &n) || n == 0) {
      return "'" + value + "' is not a number of bytes (1 or more)";
    }
    server.max_clients_output_bytes = static_cast<std::size_t>(n);
  } else if (flag == "--compact-min-bytes") {
    if (!parse_count(value, UINT64_MAX, &n)) return "'" + value + "' is not a number of bytes";
    settings->store.compact_min_bytes = n;
  } else if (flag == "--compact-ratio") {
    char* end = nullptr;
    const double ratio = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !(ratio == 0 || ratio > 1) || ratio > 1e9) {
      return "'" + value + "' is not a ratio: give a number above 1, or 0 to turn automatic "
             "compaction off";
    }
    settings->store.compact_ratio = ratio;
  } else if (flag == "--log-level") {
    if (value == "debug") settings->log_level = Level::kDebug;
    else if (value == "info") settings->log_level = Level::kInfo;
    else if (value == "warning") settings->log_level = Level::kWarning;
    else if (value == "error") settings->log_level = Level::kError;
    else return "'" + value + "' is not a level: give debug, info, warning or error";
  } else {
    return std::string("unknown flag");
  }
  return std::nullopt;
}

// Reads the command line into *settings; returns the message for a wrong flag or value.
std::optional<std::string> parse_flags(int argc, char** argv, Settings* settings) {
  settings->store.dir = "./data";
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      settings->help = true;
      continue;
    }
    if (flag == "--version") {
      settings->version = true;
      continue;
    }
    if (flag.compare(0, 2, "--") != 0) return "'" + flag + "' is not a flag; flags start with --";
    std::string value;
    const std::size_t equals = flag.find('=');
    if (equals != std::string::npos) {
      value = flag.substr(equals + 1);
      flag.resize(equals);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      // apply() alone knows the flags: ask it whether this one is one before asking for
      // its value, or "--bogus" at the end would be told it lacks a value.
      Settings probe;
      if (apply(flag, "", &probe) == std::optional<std::string>("unknown flag")) {
        return "unknown flag '" + flag + "'";
      }
      return flag + ": a value is needed";
    }
    if (std::optional<std::string> wrong = apply(flag, value, settings)) {
      return *wrong == "unknown flag" ? "unknown flag '" + flag + "'" : flag + ": " + *wrong;
    }
  }
  if (settings->pidfile.empty()) {
    settings->pidfile = path_in(settings->store.dir, "keystonelight.pid");
  }
  return std::nullopt;
}

std::string milliseconds_since(std::chrono::steady_clock::time_point start) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - start).count();
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f ms", static_cast<double>(us) / 1000.0);
  return text;
}

// What is wrong with `pidfile` as the PID file of a store in `dir`, if anything: it may
// not be the directory or one of the store's files, which the PID file would overwrite
// and remove. Compared by name (the file may not exist yet: a PID file created as
// DIR/keystonelight.log would then be taken for a damaged log) and, where it exists, by
// identity (a symbolic link, another path to the same file). PidFile::acquire refuses
// any other file that holds more than a pid.
std::optional<std::string> store_file_in_the_way(const std::string& pidfile,
                                                 const std::string& dir) {
  struct stat dir_stat, named;
  if (::stat(dir.c_str(), &dir_stat) != 0) return std::nullopt;  // open will say why
  auto same = [](const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  };
  const bool exists = ::stat(pidfile.c_str(), &named) == 0;
  if (exists && same(named, dir_stat)) return std::string("is the data directory");
  const std::size_t slash = pidfile.rfind('/');
  const std::string name = slash == std::string::npos ? pidfile : pidfile.substr(slash + 1);
  struct stat parent;
  const bool in_dir = ::stat(parent_dir(pidfile).c_str(), &parent) == 0 &&
                      same(parent, dir_stat);
  const std::pair<const char*, const char*> kStoreFiles[] = {
      {kl::kLogFileName, "the store's log"},
      {kl::kLockFileName, "the data directory's lock file"},
      {kl::kCompactFileName, "the file a compaction writes"}};
  for (const auto& [file, what] : kStoreFiles) {
    struct stat store_file;
    const std::string path = path_in(dir, file);
    if ((in_dir && name == file) ||
        (exists && ::stat(path.c_str(), &store_file) == 0 && same(named, store_file))) {
      return "is " + std::string(what) + ", " + path;
    }
  }
  return std::nullopt;
}

// SIGHUP: compact now, and say what it did to the log's size.
void compact(kl::Store* store, Log* log) {
  const std::uint64_t before = store->stats().log_bytes;
  log->info("SIGHUP: compacting the log (" + std::to_string(before) + " bytes)");
  const auto start = std::chrono::steady_clock::now();
  if (kl::Status s = store->compact(); !s.ok()) {
    log->warning("compaction failed: " + s.to_string());
    return;
  }
  log->info("log compacted from " + std::to_string(before) + " to " +
            std::to_string(store->stats().log_bytes) + " bytes in " + milliseconds_since(start));
}

// The signal thread, started before the store is opened so that a signal at any moment
// of start-up takes effect at once: SIGTERM or SIGINT during the replay of a long log
// stops the replay (through Options::keep_loading), and once the server listens it
// starts the shutdown. SIGHUP compacts, once there is a store to compact. The store and
// the server are handed over when they exist, and the owner calls stop() before either
// goes: the thread must never see one destroyed.
class SignalThread {
 public:
  SignalThread(kl::SignalWaiter* signals, Log* log)
      : signals_(signals), log_(log), thread_([this] { run(); }) {}
  ~SignalThread() { stop(); }
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

  // Whether a shutdown was asked for: by a signal, or by stop().
  bool stopping() const { return stopping_; }

  void set_store(kl::Store* store) {
    std::lock_guard<std::mutex> lock(mu_);
    store_ = store;
  }

  // Hands over a started server; false when a shutdown was asked for meanwhile (the
  // caller then stops it at once).
  bool set_server(kl::Server* server) {
    std::lock_guard<std::mutex> lock(mu_);
    server_ = server;
    return !stopping_;
  }

  // Ends the thread, after the compaction it may be running. Returns whether a signal
  // (rather than this call) started the shutdown.
  bool stop() {
    const bool by_signal = stopping_.exchange(true);
    if (!by_signal) kl::SignalWaiter::interrupt(thread_);
    if (thread_.joinable()) thread_.join();
    return by_signal;
  }

 private:
  void run() {
    while (true) {
      const int signal = signals_->wait();
      if (signal == SIGHUP && !stopping_) {
        // Under the lock: stop() joins this thread before the store goes, but set_store
        // must not race with the read.
        std::lock_guard<std::mutex> lock(mu_);
        if (store_ != nullptr) compact(store_, log_);
        else log_->info("SIGHUP: the log is still being loaded; nothing to compact yet");
        continue;
      }
      if (stopping_.exchange(true)) return;  // stop()'s interrupt, or a shutdown under way
      log_->info(std::string(kl::SignalWaiter::name(signal)) + ": shutting down");
      std::lock_guard<std::mutex> lock(mu_);
      if (server_ != nullptr) server_->request_shutdown();
      return;
    }
  }

  kl::SignalWaiter* signals_;
  Log* log_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;  // guards store_ and server_
  kl::Store* store_ = nullptr;
  kl::Server* server_ = nullptr;
  std::thread thread_;  // last: it starts once the members above exist
};

int serve(const Settings& settings, kl::SignalWaiter* signals, Log* log) {
  log->info("keystonelight-server " KEYSTONELIGHT_VERSION_STR " starting, pid " +
            std::to_string(::getpid()));

  // The PID file lives in the data directory by default, so that comes first.
  if (kl::Status s = kl::default_file_system()->create_dir(settings.store.dir); !s.ok()) {
    log->error(s.to_string() + ": check that the parent directory exists and is writable");
    return kExitFailed;
  }
  if (std::optional<std::string> wrong = store_file_in_the_way(settings.pidfile, settings.store.dir)) {
    log->error("--pidfile " + settings.pidfile + " " + *wrong + ", which a PID file would "
               "overwrite and then remove; nothing was changed: give the PID file a path of "
               "its own (the default is " +
               path_in(settings.store.dir, "keystonelight.pid") + ")");
    return kExitFailed;
  }
  std::unique_ptr<kl::PidFile> pid_file;
  std::string stale_pid;
  if (kl::Status s = kl::PidFile::acquire(settings.pidfile, &pid_file, &stale_pid); !s.ok()) {
    log->error(s.code() == kl::Status::Code::kBusy ? "keystonelight-server is " + s.message()
                                                   : s.to_string() + " (--pidfile)");
    return kExitFailed;
  }
  if (!stale_pid.empty()) {
    // Nobody held its lock, so no server uses it; whether a process with that pid runs
    // now is not known, nor does it matter (pids are reused).
    log->warning("PID file " + settings.pidfile + " held pid " + stale_pid +
                 ", but no process holds its lock, so no server is using it: taken over");
  }

  // Declared before the signal thread, so that it is stopped before they are destroyed.
  std::unique_ptr<kl::Store> store;
  std::unique_ptr<kl::Server> server;
  SignalThread signal_thread(signals, log);

  kl::Options options = settings.store;
  options.info_log = [log](const std::string& message) { log->warning(message); };
  options.keep_loading = [&signal_thread] { return !signal_thread.stopping(); };
  const auto opening = std::chrono::steady_clock::now();
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) {
    if (s.code() != kl::Status::Code::kCancelled) {
      log->error("cannot open the store: " + s.to_string());
      return kExitFailed;
    }
    signal_thread.stop();
    pid_file.reset();
    log->info("stopped while loading the log, after " + milliseconds_since(opening) +
              "; the log was not changed, PID file removed; bye");
    return kExitOk;
  }
  signal_thread.set_store(store.get());
  const kl::RecoveryReport& recovery = store->recovery();
  log->info("data directory " + settings.store.dir + ": " + std::to_string(store->size()) +
            " keys loaded from " + std::to_string(recovery.records) + " records in " +
            milliseconds_since(opening) + " (fsync " + kl::fsync_name(store->options().fsync) + ")");

  kl::ServerConfig config = settings.server;
  config.info_log = options.info_log;
  server.reset(new kl::Server(store.get(), config));
  if (!signal_thread.stopping()) {  // a signal during the replay's last records: no listening
    if (kl::Status s = server->start(); !s.ok()) {
      log->error("cannot start the server: " + s.to_string() +
                 (s.code() == kl::Status::Code::kBusy ? " (--port)" : ""));
      return kExitFailed;
    }
    log->info("listening on " + endpoint(config.bind, server->port()) +
              (config.requirepass.empty() ? "" : ", AUTH required") + "; ready for connections");
    if (signal_thread.set_server(server.get())) server->wait_for_shutdown();
  }
  if (!signal_thread.stop()) log->info("SHUTDOWN from a client: shutting down");

  const std::uint64_t clients = server->counters()->connected_clients.load();
  kl::Status stopped = server->stop();
  log->info("server stopped (connections closed: " + std::to_string(clients) +
            ", commands served: " + std::to_string(server->counters()->total_commands.load()) +
            ")");
  kl::Status closed = store->close();
  if (!stopped.ok() || !closed.ok()) {
    log->error("the log could not be flushed: " + (stopped.ok() ? closed : stopped).to_string() +
               "; run keystonelight-check " + settings.store.dir + " before the next start");
    return kExitFailed;
  }
  pid_file.reset();
  log->info("log synced and closed, PID file removed; bye");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  // First, before any thread exists: every thread started later inherits the mask.
  kl::SignalWaiter signals;

  Settings settings;
  if (std::optional<std::string> wrong = parse_flags(argc, argv, &settings)) {
    std::fprintf(stderr, "keystonelight-server: %s\n\n%s", wrong->c_str(), kUsage);
    return kExitUsage;
  }
  if (settings.help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (settings.version) {
    std::printf("keystonelight-server %s\n", KEYSTONELIGHT_VERSION_STR);
    return kExitOk;
  }
  Log log;
  log.set_threshold(settings.log_level);
  return serve(settings, &signals, &log);
}
