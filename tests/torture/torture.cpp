// torture: kill -9 keystonelight-server at random moments and check what survives.
//
//   torture SERVER [--trials N] [--seed S] [--policies always,everysec,no] [--ms MIN,MAX]
//                  [--ballast KEYS] [--one-key-writes] [--keep] [--io MODEL]
//   torture SERVER --soak SECONDS [--io MODEL]
//
// --io passes the server its I/O model (events or threads); without it, its default.
//
// Torture. For each fsync policy, the server runs on a fresh data directory holding a ballast
// of keys (so that a compaction and a replay take a while). Each trial restarts the server on
// that directory, checks what it recovered, runs concurrent writers for a random time and
// kills the server with SIGKILL: at a random moment, while a COMPACT is running, or (before
// the writers) while the server is still replaying its log at start-up.
//
// The check is exact because every key has one writer. A writer owns its keys and sends its
// commands in order on one connection (some writers pipeline), so the server applies them in
// order and the log holds them in order: after recovery, a writer's keys must all hold the
// state after some prefix j of its commands, with acked <= j <= sent. Anything else is a
// loss (a key holds a state from before its last acknowledged write), a wrong value (a
// state no prefix produces: bytes nobody sent, a counter too high), or an inconsistency
// (each key is possible alone but no single prefix explains them all: an MSET half applied,
// or a later write kept while an earlier one was lost). Each reply is checked against the
// model as it arrives. One counter is shared by every writer: it must lie between its value
// at the start plus the acknowledged increments and that plus the ones in flight.
//
// Soak. Mixed load for SECONDS: connections that come and go, pipelines, clients that stop
// reading and hang up, idle connections, compactions; the server's RSS, threads and open
// descriptors are read from /proc at the start, during and after, and must not keep growing.
//
// Every loop is bounded in count and time; the server listens on 127.0.0.1 only and is
// stopped by its pid. The closing line is "torture: P passed, F failed" (or "soak: ...").
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Value = std::optional<std::string>;  // nullopt: the key does not exist
using State = std::map<std::string, Value>;

namespace {

extern "C" char** environ;

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void nap_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// One run of the server program, with its output in `log`.
class ServerProcess {
 public:
  ServerProcess(std::string program, std::string log) : program_(std::move(program)), log_(std::move(log)) {}
  ~ServerProcess() { kill9(); }

  bool spawn(const std::vector<std::string>& args) {
    std::vector<std::string> all = {program_, "--port", "0", "--bind", "127.0.0.1"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    // One log for every start, appended to: a start killed while it replays says there
    // what it truncated, and the next start would not.
    offset_ = read_file(log_).size();
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, program_.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    started_ = Clock::now();
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }

  // Waits until the log says the server is ready (at most `seconds`); sets port().
  bool wait_ready(int seconds) {
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    while (Clock::now() < end && running()) {
      const std::string text = this_log();
      const std::size_t at = text.find("listening on 127.0.0.1:");
      if (at != std::string::npos && text.find("ready for connections", at) != std::string::npos) {
        port_ = std::atoi(text.c_str() + at + std::string("listening on 127.0.0.1:").size());
        return port_ > 0;
      }
      nap_ms(2);
    }
    return false;
  }

  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = status;
      return false;
    }
    return true;
  }

  // SIGKILL, then reaps it: when this returns the process, its files and its lock are gone.
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // A graceful stop (SIGTERM), at most `seconds`; whether it exited 0.
  bool terminate(int seconds) {
    if (pid_ <= 0) return false;
    ::kill(pid_, SIGTERM);
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    while (Clock::now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
      }
      nap_ms(10);
    }
    kill9();
    return false;
  }

  // The replay time the log reports ("... records in 12.3 ms"), or -1.
  double load_ms() const {
    const std::string text = this_log();
    const std::size_t at = text.find(" records in ");
    return at == std::string::npos ? -1 : std::atof(text.c_str() + at + 12);
  }

  // What this start has logged so far.
  std::string this_log() const {
    const std::string text = read_file(log_);
    return text.size() > offset_ ? text.substr(offset_) : std::string();
  }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& log() const { return log_; }
  double age_ms() const {
    return std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
  }

 private:
  std::string program_, log_;
  pid_t pid_ = -1;
  int port_ = 0;
  int exit_status_ = 0;
  std::size_t offset_ = 0;
  Clock::time_point started_;
};

std::unique_ptr<kl::Client> connect_to(int port, int timeout_ms = 5000) {
  std::unique_ptr<kl::Client> client;
  if (!kl::Client::connect("127.0.0.1", port, &client, std::chrono::milliseconds(timeout_ms)).ok()) {
    return nullptr;
  }
  return client;
}

std::string show(const Value& v) {
  if (!v) return "(nil)";
  std::string s = v->size() > 60 ? v->substr(0, 28) + "..." + v->substr(v->size() - 28) : *v;
  return "'" + s + "' (" + std::to_string(v->size()) + " bytes)";
}

// ---------------------------------------------------------------------------------------
// The model: one writer's commands and what each must do
// ---------------------------------------------------------------------------------------

enum class Kind { kSet, kIncr, kAppend, kMset, kDel, kIncrShared };

struct Op {
  Kind kind;
  std::vector<std::string> keys, values;
  std::int64_t expect = 0;  // the integer reply the model predicts (INCR, APPEND, DEL)
};

const char* const kShared = "shared:counter";

// Applies `op` to `state` and returns the integer reply it must get.
std::int64_t apply_op(const Op& op, State* state) {
  switch (op.kind) {
    case Kind::kSet:
    case Kind::kMset:
      for (std::size_t i = 0; i < op.keys.size(); ++i) (*state)[op.keys[i]] = op.values[i];
      return 0;
    case Kind::kIncr: {
      Value& v = (*state)[op.keys[0]];
      const std::int64_t n = (v ? std::atoll(v->c_str()) : 0) + 1;
      v = std::to_string(n);
      return n;
    }
    case Kind::kAppend: {
      Value& v = (*state)[op.keys[0]];
      v = v.value_or("") + op.values[0];
      return static_cast<std::int64_t>(v->size());
    }
    case Kind::kDel: {
      std::int64_t n = 0;
      for (const std::string& k : op.keys) {
        Value& v = (*state)[k];
        n += v ? 1 : 0;
        v.reset();
      }
      return n;
    }
    case Kind::kIncrShared:
      return 0;
  }
  return 0;
}

std::vector<std::string> command_of(const Op& op) {
  switch (op.kind) {
    case Kind::kSet: return {"SET", op.keys[0], op.values[0]};
    case Kind::kIncr: return {"INCR", op.keys[0]};
    case Kind::kAppend: return {"APPEND", op.keys[0], op.values[0]};
    case Kind::kDel: {
      std::vector<std::string> c = {"DEL"};
      c.insert(c.end(), op.keys.begin(), op.keys.end());
      return c;
    }
    case Kind::kMset: {
      std::vector<std::string> c = {"MSET"};
      for (std::size_t i = 0; i < op.keys.size(); ++i) {
        c.push_back(op.keys[i]);
        c.push_back(op.values[i]);
      }
      return c;
    }
    case Kind::kIncrShared: return {"INCR", kShared};
  }
  return {};
}

struct Figures {
  long trials = 0, passed = 0, acked = 0, sent = 0, keys_checked = 0, ballast_checked = 0;
  long losses = 0, wrong = 0, inconsistent = 0, split = 0, bad_replies = 0;
  long sanitizer_reports = 0;  // a server built with a sanitizer reported a fault
  long compaction_kills = 0, startup_kills = 0, compactions = 0, restarts = 0;
  void add(const Figures& o) {
    trials += o.trials; passed += o.passed; acked += o.acked; sent += o.sent;
    keys_checked += o.keys_checked; ballast_checked += o.ballast_checked; losses += o.losses;
    wrong += o.wrong; inconsistent += o.inconsistent; split += o.split;
    bad_replies += o.bad_replies; sanitizer_reports += o.sanitizer_reports;
    compaction_kills += o.compaction_kills; startup_kills += o.startup_kills;
    compactions += o.compactions; restarts += o.restarts;
  }
  long failures() const {
    return losses + wrong + inconsistent + split + bad_replies + sanitizer_reports;
  }
};

// A writer owns 16 plain keys (SET, MSET, DEL), 4 counters (INCR) and 4 strings it
// appends to, and increments the shared counter now and then.
class Writer {
 public:
  Writer(int id, bool pipelined, bool multi_key, std::uint64_t seed)
      : id_(id), pipelined_(pipelined), multi_key_(multi_key), rng_(seed) {
    for (int i = 0; i < 16; ++i) plain_.push_back(name("s", i));
    for (int i = 0; i < 4; ++i) counters_.push_back(name("c", i));
    for (int i = 0; i < 4; ++i) appended_.push_back(name("a", i));
    for (auto* group : {&plain_, &counters_, &appended_}) {
      for (const std::string& k : *group) base_[k] = std::nullopt;
    }
  }

  std::vector<std::string> keys() const {
    std::vector<std::string> all;
    for (const auto& [k, v] : base_) all.push_back(k);
    return all;
  }

  // A new trial starts from what the server recovered.
  void begin(const State& recovered) {
    base_ = recovered;
    model_ = recovered;
    ops_.clear();
    acked_ = 0;
    shared_acked_ = shared_sent_ = 0;
    last_shared_ = 0;
  }

  // Writes until the connection fails or `stop` is set (at most `limit` commands).
  void run(int port, const std::atomic<bool>& stop, std::size_t limit, std::atomic<long>* bad) {
    auto client = connect_to(port);
    if (!client) return;
    kl::Reply reply;
    while (!stop && ops_.size() < limit) {
      const std::size_t batch = pipelined_ ? 1 + rng_() % 32 : 1;
      const std::size_t first = ops_.size();
      for (std::size_t i = 0; i < batch; ++i) {
        ops_.push_back(next_op());
        if (ops_.back().kind == Kind::kIncrShared) ++shared_sent_;
        client->send(command_of(ops_.back()));
      }
      for (std::size_t i = first; i < ops_.size(); ++i) {
        if (!client->read(&reply).ok()) return;  // killed: the rest are in flight
        if (!check_reply(ops_[i], reply)) ++*bad;
        ++acked_;
        if (ops_[i].kind == Kind::kIncrShared) ++shared_acked_;
      }
    }
  }

  // Checks the recovered state of this writer's keys against every prefix of its commands
  // that may have survived; updates `f` and says why in `report`.
  void verify(const State& recovered, Figures* f, std::string* report) const {
    f->acked += static_cast<long>(acked_);
    f->sent += static_cast<long>(ops_.size());
    f->keys_checked += static_cast<long>(recovered.size());
    State state = base_;
    std::map<std::string, std::set<Value>> earlier, allowed;
    for (const auto& [k, v] : state) earlier[k].insert(v);
    for (std::size_t j = 0; j < acked_; ++j) {
      apply_op(ops_[j], &state);
      for (const std::string& k : ops_[j].keys) earlier[k].insert(state[k]);
    }
    const State at_acked = state;
    for (std::size_t j = acked_;; ++j) {
      if (state == recovered) return;  // prefix j survived
      for (const auto& [k, v] : state) allowed[k].insert(v);
      if (j == ops_.size()) break;
      apply_op(ops_[j], &state);
    }
    // No prefix: perhaps a prefix and then part of a command of several keys.
    state = at_acked;
    for (std::size_t j = acked_; j < ops_.size(); ++j) {
      if (split_command(ops_[j], state, recovered)) {
        ++f->split;
        const bool del = ops_[j].kind == Kind::kDel;
        State after = state;
        apply_op(ops_[j], &after);
        *report += std::string("  SPLIT ") + (del ? "DEL" : "MSET") + ": writer " +
                   std::to_string(id_) + ": its commands before number " + std::to_string(j) +
                   " survived, then part of that " + (del ? "DEL" : "MSET") + ", in flight:";
        for (const std::string& k : ops_[j].keys) {
          *report += " " + k + (state.at(k) == after.at(k) ? " (no change)," :
                                recovered.at(k) == after.at(k) ? " applied," : " not applied,");
        }
        *report += " and nothing after it (" + std::to_string(acked_) + " acknowledged, " +
                   std::to_string(ops_.size()) + " sent)\n";
        return;
      }
      apply_op(ops_[j], &state);
    }
    bool per_key_fault = false;
    for (const auto& [k, v] : recovered) {
      if (allowed[k].count(v)) continue;
      per_key_fault = true;
      const bool lost = earlier[k].count(v) > 0;
      ++(lost ? f->losses : f->wrong);
      *report += std::string(lost ? "  LOST" : "  WRONG") + ": writer " + std::to_string(id_) +
                 " key " + k + " holds " + show(v) + "; after its " + std::to_string(acked_) +
                 " acknowledged commands (of " + std::to_string(ops_.size()) +
                 " sent) it may only hold one of:";
      for (const Value& a : allowed[k]) *report += " " + show(a);
      *report += "\n";
    }
    if (!per_key_fault) {
      ++f->inconsistent;
      *report += "  INCONSISTENT: writer " + std::to_string(id_) +
                 ": each key holds a possible value, but no prefix of its commands between " +
                 std::to_string(acked_) + " and " + std::to_string(ops_.size()) +
                 " explains them all together; in flight:\n";
      State at = base_;
      for (std::size_t j = 0; j < acked_; ++j) apply_op(ops_[j], &at);
      for (std::size_t j = acked_; j < ops_.size(); ++j) {
        std::string text;
        for (const std::string& word : command_of(ops_[j])) text += " " + show(word);
        *report += "    " + std::to_string(j) + ":" + text + "\n";
      }
      for (const auto& [k, v] : recovered) {
        if (at[k] != v) *report += "    " + k + " holds " + show(v) + ", after the acknowledged ones " + show(at[k]) + "\n";
      }
    }
  }

  // Whether `recovered` is `state` with the first m of a DEL's or MSET's keys written,
  // 0 < m < all: a command of several keys applied in part, which Redis never shows.
  static bool split_command(const Op& op, State state, const State& recovered) {
    if ((op.kind != Kind::kDel && op.kind != Kind::kMset) || op.keys.size() < 2) return false;
    for (std::size_t m = 0; m + 1 < op.keys.size(); ++m) {
      if (op.kind == Kind::kDel) state[op.keys[m]].reset();
      else state[op.keys[m]] = op.values[m];
      if (state == recovered) return true;
    }
    return false;
  }

  std::size_t shared_acked() const { return shared_acked_; }
  std::size_t shared_sent() const { return shared_sent_; }

 private:
  std::string name(const char* kind, int i) const {
    return "w" + std::to_string(id_) + ":" + kind + std::to_string(i);
  }

  // A value nobody else sends: writer, command number, and a random length of filler.
  std::string fresh_value() {
    std::string v = "w" + std::to_string(id_) + "#" + std::to_string(serial_++) + ":";
    v.append(rng_() % 200, static_cast<char>('a' + rng_() % 26));
    return v;
  }

  Op next_op() {
    Op op;
    const unsigned roll = static_cast<unsigned>(rng_() % 100);
    if (roll < 40) {
      op.kind = Kind::kSet;
      op.keys = {plain_[rng_() % plain_.size()]};
      op.values = {fresh_value()};
    } else if (roll < 60) {
      op.kind = Kind::kIncr;
      op.keys = {counters_[rng_() % counters_.size()]};
    } else if (roll < 75) {
      op.kind = Kind::kAppend;
      op.keys = {appended_[rng_() % appended_.size()]};
      const Value& now = model_[op.keys[0]];
      if (now && now->size() > 4000) {  // keep them short: DEL, and start again
        op.kind = Kind::kDel;
      } else {
        op.values = {"<" + std::to_string(id_) + "." + std::to_string(serial_++) + ">"};
      }
    } else if (roll < 85) {
      op.kind = Kind::kMset;
      const std::size_t n = multi_key_ ? 2 + rng_() % 3 : 1;
      for (std::size_t i = 0; i < n; ++i) {
        const std::string& k = plain_[rng_() % plain_.size()];
        if (std::find(op.keys.begin(), op.keys.end(), k) != op.keys.end()) continue;
        op.keys.push_back(k);
        op.values.push_back(fresh_value());
      }
    } else if (roll < 95) {
      op.kind = Kind::kDel;
      op.keys = {plain_[rng_() % plain_.size()]};
      if (multi_key_ && rng_() % 2) {
        const std::string& k = plain_[rng_() % plain_.size()];
        if (k != op.keys[0]) op.keys.push_back(k);
      }
    } else {
      op.kind = Kind::kIncrShared;
    }
    op.expect = apply_op(op, &model_);
    return op;
  }

  bool check_reply(const Op& op, const kl::Reply& r) {
    using T = kl::Reply::Type;
    switch (op.kind) {
      case Kind::kSet:
      case Kind::kMset:
        return r.type == T::kStatus && r.text == "OK";
      case Kind::kIncrShared: {
        const bool ok = r.type == T::kInteger && r.integer > last_shared_;
        last_shared_ = r.integer;
        return ok;
      }
      default:
        return r.type == T::kInteger && r.integer == op.expect;
    }
  }

  int id_;
  bool pipelined_, multi_key_;
  std::mt19937_64 rng_;
  std::vector<std::string> plain_, counters_, appended_;
  State base_, model_;
  std::vector<Op> ops_;
  std::size_t acked_ = 0, shared_acked_ = 0, shared_sent_ = 0;
  std::int64_t last_shared_ = 0;
  long serial_ = 0;
};

// ---------------------------------------------------------------------------------------
// Reading the server's whole state back
// ---------------------------------------------------------------------------------------

// MGET of `keys`, 500 at a time; false when the connection fails.
bool mget(kl::Client* client, const std::vector<std::string>& keys, std::vector<Value>* values) {
  values->clear();
  for (std::size_t at = 0; at < keys.size(); at += 500) {
    std::vector<std::string> command = {"MGET"};
    for (std::size_t i = at; i < std::min(keys.size(), at + 500); ++i) command.push_back(keys[i]);
    kl::Reply reply;
    if (!client->command(command, &reply).ok() || reply.type != kl::Reply::Type::kArray) return false;
    for (const kl::Reply& e : reply.elements) {
      values->push_back(e.type == kl::Reply::Type::kBulk ? Value(e.text) : std::nullopt);
    }
  }
  return values->size() == keys.size();
}

std::string ballast_key(long i) { return "ballast:" + std::to_string(i); }
std::string ballast_value(long i) {
  std::string v = "ballast " + std::to_string(i) + " ";
  while (v.size() < 160) v += static_cast<char>('A' + (i * 7 + static_cast<long>(v.size())) % 26);
  return v;
}

// ---------------------------------------------------------------------------------------
// Torture
// ---------------------------------------------------------------------------------------

struct Settings {
  std::string server;
  long trials = 210;
  std::uint64_t seed = 0;
  std::vector<std::string> policies = {"always", "everysec", "no"};
  int min_ms = 100, max_ms = 700;
  long ballast = 60000;
  bool keep = false;
  bool multi_key = true;  // DEL and MSET of several keys, which must apply whole or not at all
  long soak_seconds = 0;
  std::string io;  // the server's --io; empty: its default
};

class Torture {
 public:
  Torture(const Settings& s, std::string policy, long trials, std::uint64_t seed, fs::path dir)
      : s_(s), policy_(std::move(policy)), trials_(trials), rng_(seed), dir_(std::move(dir)),
        server_(s.server, (dir_ / "server.log").string()) {
    for (int w = 0; w < 4; ++w) writers_.emplace_back(w, w % 2 == 1, s.multi_key, seed * 31 + static_cast<std::uint64_t>(w));
  }

  // Runs every trial; false if the set-up itself failed.
  bool run(Figures* f) {
    if (!start(false) || !load_ballast()) return false;
    for (long t = 0; t < trials_; ++t) {
      Figures trial;
      std::string report;
      if (!trial_once(t, &trial, &report)) {
        std::printf("%s trial %ld: the server did not come back; its log:\n%s\n", policy_.c_str(),
                    t, server_.this_log().c_str());
        f->add(trial);
        ++f->trials;
        return false;
      }
      ++trial.trials;
      // Under `make sanitize` and `make tsan` the server is instrumented: a report in its
      // log (a race, a bad access, undefined behaviour) fails the trial like a loss.
      const std::string log = read_file(server_.log()).substr(scanned_);
      scanned_ += log.size();
      for (const char* mark : {"Sanitizer", "runtime error:"}) {
        if (log.find(mark) != std::string::npos) {
          ++trial.sanitizer_reports;
          report += "  the server's log holds a sanitizer report:\n" + log + "\n";
          break;
        }
      }
      if (trial.failures() == 0) {
        ++trial.passed;
      } else {
        std::printf("%s trial %ld FAILED (%s):\n%s", policy_.c_str(), t, last_kill_.c_str(),
                    report.c_str());
        save_evidence(t);
      }
      f->add(trial);
    }
    verify_all(f, nullptr);  // the last kill's survivors, with no trial after it
    server_.terminate(30);
    return true;
  }

 private:
  std::vector<std::string> flags() {
    std::vector<std::string> a = {"--dir", (dir_ / "data").string(), "--fsync", policy_,
                                  "--log-level", "info"};
    if (!s_.io.empty()) a.insert(a.end(), {"--io", s_.io});
    // Half the trials compact automatically and often, so kills land in those too.
    if (rng_() % 2) {
      a.insert(a.end(), {"--compact-min-bytes", std::to_string(1 << 20), "--compact-ratio", "1.3"});
    } else {
      a.insert(a.end(), {"--compact-ratio", "0"});
    }
    return a;
  }

  // Starts the server; with `kill_in_startup`, first kills one start while it replays.
  bool start(bool kill_in_startup) {
    if (kill_in_startup && load_ms_ > 1) {
      server_.spawn(flags());
      const auto delay = std::chrono::microseconds(
          static_cast<long>(rng_() % static_cast<std::uint64_t>(load_ms_ * 1000.0 + 1)));
      std::this_thread::sleep_for(delay);
      const bool ready = server_.this_log().find("ready for connections") != std::string::npos;
      server_.kill9();
      if (!ready) ++startup_kills_;
    }
    if (!server_.spawn(flags()) || !server_.wait_ready(120)) return false;
    load_ms_ = std::max(1.0, server_.load_ms());
    return true;
  }

  bool load_ballast() {
    auto client = connect_to(server_.port(), 30000);
    if (!client) return false;
    kl::Reply reply;
    for (long i = 0; i < s_.ballast; i += 100) {
      std::vector<std::string> command = {"MSET"};
      for (long k = i; k < std::min(s_.ballast, i + 100); ++k) {
        command.push_back(ballast_key(k));
        command.push_back(ballast_value(k));
      }
      client->send(command);
      if ((i / 100) % 16 == 15 || i + 100 >= s_.ballast) {
        for (long b = 0; b <= (i / 100) % 16; ++b) {
          if (!client->read(&reply).ok() || reply.text != "OK") return false;
        }
      }
    }
    return client->command({"SET", kShared, "0"}, &reply).ok() && reply.text == "OK";
  }

  // Reads everything back and checks it; the writers then start from what was read.
  bool verify_all(Figures* f, std::string* report) {
    std::string ignored;
    if (!report) report = &ignored;
    auto client = connect_to(server_.port(), 30000);
    if (!client) return false;
    std::vector<Value> values;
    std::size_t acked = 0, sent = 0;  // increments of the shared counter
    for (const Writer& w : writers_) acked += w.shared_acked(), sent += w.shared_sent();
    for (Writer& w : writers_) {
      const std::vector<std::string> keys = w.keys();
      if (!mget(client.get(), keys, &values)) return false;
      State recovered;
      for (std::size_t i = 0; i < keys.size(); ++i) recovered[keys[i]] = values[i];
      w.verify(recovered, f, report);
      w.begin(recovered);
    }
    if (!mget(client.get(), {kShared}, &values)) return false;
    const std::int64_t now = values[0] ? std::atoll(values[0]->c_str()) : -1;
    if (now < shared_ + static_cast<std::int64_t>(acked) || now > shared_ + static_cast<std::int64_t>(sent)) {
      ++(now < shared_ + static_cast<std::int64_t>(acked) ? f->losses : f->wrong);
      *report += "  shared counter holds " + show(values[0]) + "; it must be between " +
                 std::to_string(shared_ + static_cast<std::int64_t>(acked)) + " and " +
                 std::to_string(shared_ + static_cast<std::int64_t>(sent)) + "\n";
    }
    shared_ = now;
    // The ballast, all acknowledged before the first trial.
    std::vector<std::string> keys;
    for (long i = 0; i < s_.ballast; ++i) keys.push_back(ballast_key(i));
    if (!mget(client.get(), keys, &values)) return false;
    for (long i = 0; i < s_.ballast; ++i) {
      const Value& v = values[static_cast<std::size_t>(i)];
      if (v == ballast_value(i)) continue;
      ++(v ? f->wrong : f->losses);
      if (report->size() < 4000) *report += "  ballast key " + keys[static_cast<std::size_t>(i)] + " holds " + show(v) + "\n";
    }
    f->ballast_checked += s_.ballast;
    // Nothing else: no key that nobody wrote.
    kl::Reply reply;
    if (!client->command({"DBSIZE"}, &reply).ok()) return false;
    long expected = s_.ballast + 1;
    if (!mget(client.get(), all_writer_keys(), &values)) return false;
    for (const Value& v : values) expected += v ? 1 : 0;
    if (reply.integer != expected) {
      ++f->wrong;
      *report += "  DBSIZE is " + std::to_string(reply.integer) + ", but " +
                 std::to_string(expected) + " keys were written and not deleted\n";
    }
    return true;
  }

  std::vector<std::string> all_writer_keys() const {
    std::vector<std::string> all;
    for (const Writer& w : writers_) {
      for (const std::string& k : w.keys()) all.push_back(k);
    }
    return all;
  }

  // One trial: writers run, the server is killed, restarted (perhaps killed again while it
  // replays), and what it recovered is checked.
  bool trial_once(long t, Figures* f, std::string* report) {
    std::atomic<bool> stop{false};
    std::atomic<long> bad{0};
    std::atomic<int> compacting{0};  // COMPACTs sent and not yet answered
    std::atomic<long> compactions{0};
    const int mode = static_cast<int>(rng_() % 3);  // 0: any moment, 1: during a COMPACT
    std::vector<std::thread> threads;
    for (Writer& w : writers_) {
      threads.emplace_back([&, port = server_.port()] { w.run(port, stop, 200000, &bad); });
    }
    std::thread compactor([&, port = server_.port(), seed = rng_()] {
      std::mt19937_64 rng(seed);
      auto client = connect_to(port, 30000);
      kl::Reply reply;
      for (int i = 0; client && !stop && i < 1000; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(mode == 1 ? rng() % 50 : 50 + rng() % 300));
        if (stop) break;
        client->send({rng() % 2 ? "COMPACT" : "BGREWRITEAOF"});
        ++compacting;
        const bool ok = client->read(&reply).ok();
        --compacting;
        if (!ok) break;
        ++compactions;
      }
    });
    const auto length = std::chrono::milliseconds(s_.min_ms + static_cast<int>(rng_() % static_cast<std::uint64_t>(s_.max_ms - s_.min_ms + 1)));
    const auto end = Clock::now() + length;
    while (Clock::now() < end && server_.running()) {
      nap_ms(1);
      // In mode 1, kill at a random point of a COMPACT once past half the time.
      if (mode == 1 && compacting > 0 && Clock::now() > end - length / 2) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 20000));
        break;
      }
    }
    const bool during_compaction = compacting > 0;
    const bool died_alone = !server_.running();
    server_.kill9();
    stop = true;
    for (std::thread& th : threads) th.join();
    compactor.join();
    last_kill_ = std::string(during_compaction ? "killed during a COMPACT" : "killed") + " after " +
                 std::to_string(length.count()) + " ms";
    if (died_alone) {
      ++f->wrong;
      *report += "  the server exited by itself before the kill; its log:\n" + server_.this_log();
    }
    f->compaction_kills += during_compaction ? 1 : 0;
    f->compactions += compactions;
    f->bad_replies += bad;
    if (bad > 0) *report += "  " + std::to_string(bad.load()) + " replies differed from the model\n";
    // Restart; one trial in four first kills a start while it replays the log.
    const long before = startup_kills_;
    if (!start(rng_() % 4 == 0)) return false;
    f->startup_kills += startup_kills_ - before;
    ++f->restarts;
    (void)t;
    return verify_all(f, report);
  }

  void save_evidence(long t) {
    const fs::path to = dir_ / ("failed-trial-" + std::to_string(t));
    std::error_code ec;
    fs::copy(dir_ / "data", to, fs::copy_options::recursive, ec);
    fs::copy(server_.log(), to / "server.log", ec);
    std::printf("  the data directory as recovered is kept in %s\n", to.c_str());
    kept_ = true;
  }

 public:
  bool kept() const { return kept_; }

 private:
  const Settings& s_;
  std::string policy_;
  long trials_;
  std::mt19937_64 rng_;
  fs::path dir_;
  ServerProcess server_;
  std::vector<Writer> writers_;
  std::int64_t shared_ = 0;
  double load_ms_ = 0;
  long startup_kills_ = 0;
  std::string last_kill_;
  bool kept_ = false;
  std::size_t scanned_ = 0;  // bytes of the server's log already searched for sanitizer reports
};

void print_figures(const char* label, const Figures& f) {
  std::printf("%-9s %4ld trials, %ld passed; %ld acknowledged writes checked (of %ld sent), "
              "%ld keys read back, %ld ballast keys read back; %ld losses, %ld wrong values, %ld inconsistent, "
              "%ld DEL/MSET applied in part, %ld bad replies; %ld kills during a COMPACT (%ld COMPACTs done), %ld kills during "
              "start-up\n",
              label, f.trials, f.passed, f.acked, f.sent, f.keys_checked, f.ballast_checked,
              f.losses, f.wrong, f.inconsistent, f.split, f.bad_replies, f.compaction_kills, f.compactions,
              f.startup_kills);
}

int torture(const Settings& s) {
  char pattern[] = "/tmp/keystonelight-torture.XXXXXX";
  const char* tmp = ::mkdtemp(pattern);
  if (!tmp) {
    std::perror("mkdtemp");
    return 1;
  }
  std::printf("torture: %ld trials over fsync %zu policies, seed %llu, work in %s\n", s.trials,
              s.policies.size(), static_cast<unsigned long long>(s.seed), tmp);
  std::fflush(stdout);
  Figures total;
  bool setup_ok = true, kept = false;
  const auto started = Clock::now();
  for (std::size_t p = 0; p < s.policies.size(); ++p) {
    const long trials = s.trials / static_cast<long>(s.policies.size()) +
                        (static_cast<long>(p) < s.trials % static_cast<long>(s.policies.size()) ? 1 : 0);
    const fs::path dir = fs::path(tmp) / s.policies[p];
    fs::create_directories(dir);
    Figures f;
    Torture t(s, s.policies[p], trials, s.seed * 1000 + p, dir);
    if (!t.run(&f)) setup_ok = false;
    kept = kept || t.kept();
    print_figures(("fsync " + s.policies[p]).c_str(), f);
    std::fflush(stdout);
    total.add(f);
  }
  print_figures("total", total);
  std::printf("torture took %.1f s\n",
              std::chrono::duration<double>(Clock::now() - started).count());
  const long failed = total.trials - total.passed + (setup_ok ? 0 : 1);
  if (kept || !setup_ok || s.keep) {
    std::printf("the data directories are kept in %s; reproduce with: torture %s --seed %llu "
                "--trials %ld\n", tmp, s.server.c_str(), static_cast<unsigned long long>(s.seed), s.trials);
  } else {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }
  std::printf("torture: %ld passed, %ld failed\n", total.passed, failed);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------

struct Sample {
  long rss_kb = 0, threads = 0, fds = 0;
};

Sample sample(pid_t pid) {
  Sample s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::atol(line.c_str() + 6);
    if (line.rfind("Threads:", 0) == 0) s.threads = std::atol(line.c_str() + 8);
  }
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++s.fds;
  }
  return s;
}

void print_sample(const char* when, const Sample& s) {
  std::printf("  %-28s RSS %7.1f MB, %4ld threads, %4ld open descriptors\n", when,
              static_cast<double>(s.rss_kb) / 1024.0, s.threads, s.fds);
  std::fflush(stdout);
}

int soak(const Settings& s) {
  char pattern[] = "/tmp/keystonelight-soak.XXXXXX";
  const char* tmp = ::mkdtemp(pattern);
  if (!tmp) return 1;
  const fs::path dir = tmp;
  ServerProcess server(s.server, (dir / "server.log").string());
  std::vector<std::string> flags = {"--dir", (dir / "data").string(), "--fsync", "everysec",
                                    "--compact-min-bytes", std::to_string(4 << 20),
                                    "--compact-ratio", "1.5"};
  if (!s.io.empty()) flags.insert(flags.end(), {"--io", s.io});
  if (!server.spawn(flags) ||
      !server.wait_ready(30)) {
    std::printf("the server did not start:\n%s\nsoak: 0 passed, 1 failed\n", read_file(server.log()).c_str());
    return 1;
  }
  const int port = server.port();
  std::printf("soak: %ld s of mixed load on pid %d (port %d)\n", s.soak_seconds,
              static_cast<int>(server.pid()), port);
  nap_ms(200);
  const Sample base = sample(server.pid());
  print_sample("start (idle)", base);

  std::atomic<bool> stop{false};
  std::atomic<long> commands{0}, connections{0}, errors{0}, bad{0}, greedy{0}, compactions{0};
  std::vector<std::thread> threads;
  // Workers: connect, a random run of pipelined mixed commands, hang up, again.
  for (int w = 0; w < 12; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(s.seed * 100 + static_cast<std::uint64_t>(w));
      for (long round = 0; !stop && round < 1000000; ++round) {
        auto client = connect_to(port);
        if (!client) { ++errors; nap_ms(50); continue; }
        ++connections;
        const long runs = 1 + static_cast<long>(rng() % 40);
        for (long r = 0; r < runs && !stop; ++r) {
          const std::size_t batch = 1 + rng() % (w % 3 == 0 ? 1 : 64);
          std::vector<int> kinds;
          for (std::size_t i = 0; i < batch; ++i) {
            const int kind = static_cast<int>(rng() % 6);
            const std::string key = "soak:" + std::to_string(rng() % 2000);
            const std::string value(rng() % 1024, static_cast<char>('a' + rng() % 26));
            if (kind == 0) client->send({"SET", key, value});
            if (kind == 1) client->send({"GET", key});
            if (kind == 2) client->send({"INCR", "soak:counter:" + std::to_string(w)});
            if (kind == 3) client->send({"APPEND", "soak:append:" + std::to_string(w), value.substr(0, 100)});
            if (kind == 4) client->send({"MSET", key, value, key + ":b", value});
            if (kind == 5) client->send({"DEL", key, key + ":b"});
            kinds.push_back(kind);
          }
          kl::Reply reply;
          for (int kind : kinds) {
            if (!client->read(&reply).ok()) { ++errors; r = runs; break; }
            ++commands;
            if (reply.type == kl::Reply::Type::kError) ++bad;
            if (kind == 3 && reply.integer > 64 * 1024) {  // keep the appended string bounded
              client->send({"DEL", "soak:append:" + std::to_string(w)});
              if (!client->read(&reply).ok()) { ++errors; r = runs; break; }
            }
          }
        }
      }
    });
  }
  // Greedy clients: ask for a large value many times, read little or nothing, hang up.
  threads.emplace_back([&] {
    std::mt19937_64 rng(s.seed + 7);
    auto first = connect_to(port);
    kl::Reply reply;
    if (!first || !first->command({"SET", "soak:big", std::string(256 * 1024, 'B')}, &reply).ok()) ++errors;
    first.reset();
    for (long i = 0; !stop && i < 100000; ++i) {
      auto client = connect_to(port);
      if (!client) { ++errors; nap_ms(50); continue; }
      for (int k = 0; k < 64; ++k) client->send({"GET", "soak:big"});
      if (!client->flush().ok()) ++errors;
      const long read = static_cast<long>(rng() % 3);
      for (long k = 0; k < read; ++k) {
        if (!client->read(&reply).ok()) ++errors;
      }
      ++greedy;
      client.reset();
      nap_ms(20 + static_cast<int>(rng() % 80));
    }
  });
  // Idle connections, opened and closed in bursts.
  threads.emplace_back([&] {
    for (long i = 0; !stop && i < 100000; ++i) {
      std::vector<std::unique_ptr<kl::Client>> held;
      for (int k = 0; k < 50; ++k) {
        if (auto c = connect_to(port)) held.push_back(std::move(c));
        else ++errors;
      }
      connections += static_cast<long>(held.size());
      nap_ms(300);
    }
  });
  // Compactions, every second or two.
  threads.emplace_back([&] {
    std::mt19937_64 rng(s.seed + 9);
    auto client = connect_to(port, 60000);
    kl::Reply reply;
    for (long i = 0; client && !stop && i < 100000; ++i) {
      for (int k = 0; k < 10 + static_cast<int>(rng() % 10) && !stop; ++k) nap_ms(100);
      if (stop) break;
      if (!client->command({"COMPACT"}, &reply).ok()) { ++errors; break; }
      ++compactions;
    }
  });

  const auto start = Clock::now();
  const auto at = [&](double fraction) {
    return start + std::chrono::milliseconds(static_cast<long>(static_cast<double>(s.soak_seconds) * 1000.0 * fraction));
  };
  Sample warm, mid, end;
  bool alive = true;
  for (int phase = 0; phase < 3 && alive; ++phase) {
    const auto until = at(phase == 0 ? 0.25 : phase == 1 ? 0.5 : 1.0);
    while (Clock::now() < until && (alive = server.running())) nap_ms(50);
    if (!alive) break;
    Sample& to = phase == 0 ? warm : phase == 1 ? mid : end;
    to = sample(server.pid());
    print_sample(phase == 0 ? "after warm-up (25%), loaded" : phase == 1 ? "middle (50%), loaded"
                                                                         : "end (100%), loaded", to);
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  // The clients are gone: threads and descriptors must come back to the start's, soon.
  Sample after;
  for (int i = 0; i < 100 && alive; ++i) {
    after = sample(server.pid());
    if (after.threads <= base.threads + 1 && after.fds <= base.fds + 1) break;
    nap_ms(100);
  }
  if (alive) print_sample("clients gone", after);
  std::printf("  %ld commands, %ld connections, %ld greedy clients, %ld COMPACTs; %ld connection "
              "errors, %ld error replies\n", commands.load(), connections.load(), greedy.load(),
              compactions.load(), errors.load(), bad.load());

  long passed = 0, failed = 0;
  const auto judge = [&](bool ok, const std::string& what) {
    ++(ok ? passed : failed);
    if (!ok) std::printf("FAILED: %s\n", what.c_str());
  };
  judge(alive, "the server stays up under load");
  if (alive) {
    // Memory: after warm-up it may settle, not climb; generous, since malloc keeps freed
    // pages and a compaction needs room for a second copy of the data for a while.
    const long limit_kb = mid.rss_kb * 3 / 2 + 32 * 1024;
    judge(end.rss_kb <= limit_kb, "RSS at the end (" + std::to_string(end.rss_kb / 1024) +
                                     " MB) at most 1.5 x the middle's + 32 MB (" +
                                     std::to_string(limit_kb / 1024) + " MB)");
    judge(after.threads <= base.threads + 1, "threads back to the start's (" +
                                                 std::to_string(base.threads) + ") + 1 once the clients are gone: " +
                                                 std::to_string(after.threads));
    judge(after.fds <= base.fds + 1, "descriptors back to the start's (" + std::to_string(base.fds) +
                                         ") + 1 once the clients are gone: " + std::to_string(after.fds));
    judge(errors == 0, "no connection errors for clients that behave");
    judge(bad == 0, "no error replies");
    auto client = connect_to(port);
    kl::Reply reply;
    judge(client && client->command({"PING"}, &reply).ok() && reply.text == "PONG",
          "the server answers PING at the end");
    judge(server.terminate(30), "SIGTERM stops it cleanly (exit 0)");
  }
  if (failed == 0) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  } else {
    std::printf("the server's log and data are kept in %s\n", tmp);
  }
  std::printf("soak: %ld passed, %ld failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

int usage() {
  std::fprintf(stderr,
               "usage: torture SERVER [--trials N] [--seed S] [--policies always,everysec,no]\n"
               "                      [--ms MIN,MAX] [--ballast KEYS] [--one-key-writes]\n"
               "                      [--keep] [--io MODEL]\n"
               "       torture SERVER --soak SECONDS [--seed S] [--io MODEL]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) return usage();
  Settings s;
  s.server = argv[1];
  s.seed = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--keep") { s.keep = true; continue; }
    if (flag == "--one-key-writes") { s.multi_key = false; continue; }
    if (i + 1 >= argc) return usage();
    const std::string value = argv[++i];
    if (flag == "--trials") s.trials = std::atol(value.c_str());
    else if (flag == "--seed") s.seed = std::strtoull(value.c_str(), nullptr, 10);
    else if (flag == "--ballast") s.ballast = std::atol(value.c_str());
    else if (flag == "--soak") s.soak_seconds = std::atol(value.c_str());
    else if (flag == "--io") s.io = value;
    else if (flag == "--ms") {
      s.min_ms = std::atoi(value.c_str());
      s.max_ms = std::max(s.min_ms, std::atoi(value.c_str() + value.find(',') + 1));
    } else if (flag == "--policies") {
      s.policies.clear();
      std::stringstream list(value);
      for (std::string p; std::getline(list, p, ',');) s.policies.push_back(p);
    } else {
      return usage();
    }
  }
  if (s.trials < 1 || s.policies.empty() || s.ballast < 0 || s.min_ms < 1) return usage();
  return s.soak_seconds > 0 ? soak(s) : torture(s);
}
