// Chapter 11's example: a small bank whose transfers must never be half done. It moves
// money in transactions (Store::transaction), lets one fail and shows that nothing of it
// remains, writes a WriteBatch, runs MULTI/EXEC and a WATCH that loses a race through the
// dispatcher, prints the log's batch records, and then cuts the log inside its last batch
// record, as a crash would, to show that a batch comes back whole or not at all.
//
//   g++ -std=c++17 -pthread example.cpp -o example && ./example
//
// Nothing in it depends on the clock or on timing, so the output is the same on every
// run. The stores live in temporary directories that the example removes before it exits.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

int fail(const kl::Status& s) {
  std::fprintf(stderr, "example: %s\n", s.to_string().c_str());
  return 1;
}

// Moves `amount` from one account to another: both changes, or neither. The first
// increment is already in the map when the check fails; the transaction undoes it.
kl::Status transfer(kl::Store* store, const std::string& from, const std::string& to,
                    std::int64_t amount) {
  return store->transaction([&]() -> kl::Status {
    std::int64_t left = 0;
    if (kl::Status s = store->increment(from, -amount, &left); !s.ok()) return s;
    if (left < 0) {
      return kl::Status::invalid_argument(from + " has " + std::to_string(left + amount) +
                                          ", less than " + std::to_string(amount));
    }
    return store->increment(to, amount);
  });
}

// Turns one reply into what redis-cli shows, at `at` in `text`; arrays one element a line.
std::string shown(const std::string& reply, std::size_t* at, const std::string& indent) {
  const char type = reply[*at];
  const std::size_t end = reply.find("\r\n", *at);
  const std::string body = reply.substr(*at + 1, end - *at - 1);
  *at = end + 2;
  if (type == '+') return body;                  // +OK, +QUEUED
  if (type == '-') return "(error) " + body;     // -ERR ...
  if (type == ':') return "(integer) " + body;   // :42
  if (type == '$') {                             // $5 hello, $-1
    if (body == "-1") return "(nil)";
    const std::string value = reply.substr(*at, std::stoul(body));
    *at += value.size() + 2;
    return "\"" + value + "\"";
  }
  if (body == "-1") return "(nil)";              // *-1: EXEC after a WATCH conflict
  if (body == "0") return "(empty array)";
  std::string text;
  for (unsigned long i = 0; i < std::stoul(body); ++i) {
    if (i > 0) text += "\n" + indent;
    text += std::to_string(i + 1) + ") " + shown(reply, at, indent);
  }
  return text;
}

// A client of the dispatcher: its own Session, so MULTI and WATCH are its own.
struct Client {
  const char* name;
  kl::Dispatcher* dispatcher;
  kl::Session session;
  void run(const std::vector<std::string>& words) {
    std::string reply;
    dispatcher->execute(words, &session, &reply);
    std::string line = std::string(name) + ">";
    for (const std::string& word : words) line += " " + word;
    std::size_t at = 0;
    std::printf("%-44s %s\n", line.c_str(), shown(reply, &at, std::string(45, ' ')).c_str());
  }
};

// Prints every record of the log, and the entries of each batch record.
void show_log(const std::string& dir) {
  std::unique_ptr<kl::File> file;
  if (!kl::default_file_system()->open(dir + "/" + kl::kLogFileName, false, &file).ok()) return;
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  if (!reader.open(&header).ok()) return;
  std::printf("  the log (version %u), %llu bytes:\n", reader.version(),
              static_cast<unsigned long long>(reader.file_size()));
  auto print = [](const kl::Record& r) {
    const std::string key(r.key);
    if (r.type == kl::RecordType::kPut) {
      std::printf("put    %-8s %s\n", key.c_str(), std::string(r.value).c_str());
    } else {
      std::printf("delete %s\n", key.c_str());
    }
  };
  kl::Record record;
  while (reader.next(&record) == kl::LogReader::Result::kRecord) {
    std::printf("    at %3llu, %3llu bytes: ", static_cast<unsigned long long>(record.offset),
                static_cast<unsigned long long>(record.size));
    if (record.type != kl::RecordType::kBatch) {
      print(record);
      continue;
    }
    std::printf("batch\n");
    kl::detail::BatchReader entries(record.value);
    kl::Record entry;
    while (entries.next(&entry)) {
      std::printf("%27s", "");
      print(entry);
    }
  }
}

std::string accounts(kl::Store* store) {
  std::string text;
  for (const char* key : {"acct:ada", "acct:bob", "acct:cy"}) {
    text += std::string(text.empty() ? "" : ", ") + (key + 5) + " " +
            store->get(key).value_or("-");
  }
  return text;
}

void say(const char* what) { std::printf("\n-- %s\n", what); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void remove_store(const std::string& dir) {
  ::unlink((dir + "/" + kl::kLogFileName).c_str());
  ::unlink((dir + "/" + kl::kLockFileName).c_str());
  ::rmdir(dir.c_str());
}

}  // namespace

int main() {
  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  kl::Options options;
  options.dir = dir;
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
  kl::Dispatcher dispatcher(store.get());
  Client web{"web", &dispatcher, {}};
  Client batch_job{"job", &dispatcher, {}};

  std::printf("-- two accounts, opened with one MSET: one batch record\n");
  web.run({"MSET", "acct:ada", "100", "acct:bob", "50"});

  say("a transfer of 30 from ada to bob, in Store::transaction");
  std::printf("  transfer(ada -> bob, 30): %s\n",
              transfer(store.get(), "acct:ada", "acct:bob", 30).to_string().c_str());
  std::printf("  %s\n", accounts(store.get()).c_str());

  say("a transfer of 500: ada has too little, and the transaction is undone");
  const std::uint64_t log_bytes = store->stats().log_bytes;
  std::printf("  transfer(ada -> bob, 500): %s\n",
              transfer(store.get(), "acct:ada", "acct:bob", 500).to_string().c_str());
  std::printf("  %s; the log grew by %llu bytes\n", accounts(store.get()).c_str(),
              static_cast<unsigned long long>(store->stats().log_bytes - log_bytes));

  say("two transfers in one transaction: the inner ones join it, the second fails");
  kl::Status both = store->transaction([&] {
    if (kl::Status s = transfer(store.get(), "acct:bob", "acct:ada", 10); !s.ok()) return s;
    return transfer(store.get(), "acct:ada", "acct:bob", 1000);
  });
  std::printf("  both: %s\n", both.to_string().c_str());
  std::printf("  %s: the first transfer is undone too\n", accounts(store.get()).c_str());

  say("a WriteBatch: cy's account opens as bob's closes");
  kl::WriteBatch batch;
  batch.set("acct:cy", "80");
  batch.del("acct:bob");
  std::printf("  write(batch of %zu): %s\n", batch.size(),
              store->write(batch).to_string().c_str());
  std::printf("  %s\n", accounts(store.get()).c_str());

  say("MULTI/EXEC: commands queue, then run as one transaction");
  web.run({"MULTI"});
  web.run({"DECRBY", "acct:ada", "20"});
  web.run({"INCRBY", "acct:cy", "20"});
  web.run({"EXEC"});

  say("errors: one while queuing aborts EXEC; one while running fails alone");
  web.run({"MULTI"});
  web.run({"SET", "acct:ada", "1"});
  web.run({"INCRBY", "acct:ada"});
  web.run({"EXEC"});
  web.run({"MULTI"});
  web.run({"SET", "note", "hello"});
  web.run({"INCR", "note"});
  web.run({"DEL", "note"});
  web.run({"EXEC"});

  say("WATCH: a check-and-set that loses a race, and its retry");
  web.run({"WATCH", "acct:ada"});
  web.run({"GET", "acct:ada"});
  batch_job.run({"DECRBY", "acct:ada", "5"});  // a fee, charged in between
  web.run({"MULTI"});
  web.run({"SET", "acct:ada", "0"});
  web.run({"INCRBY", "acct:cy", "50"});
  web.run({"EXEC"});
  web.run({"WATCH", "acct:ada"});
  web.run({"GET", "acct:ada"});
  web.run({"MULTI"});
  web.run({"SET", "acct:ada", "0"});
  web.run({"INCRBY", "acct:cy", "45"});
  web.run({"EXEC"});

  say("the log");
  if (kl::Status s = store->close(); !s.ok()) return fail(s);
  show_log(dir);

  say("a crash in the middle of the last batch record, simulated by cutting the log");
  const std::string log = read_file(std::string(dir) + "/" + kl::kLogFileName);
  kl::Options crashed = options;
  crashed.info_log = [](const std::string&) {};  // the numbers are printed below
  for (std::size_t cut : {log.size() - 1, log.size() - 30, log.size()}) {
    char copy[] = "/tmp/keystonelight-example-XXXXXX";
    if (::mkdtemp(copy) == nullptr) return 1;
    std::ofstream(std::string(copy) + "/" + kl::kLogFileName, std::ios::binary)
        << log.substr(0, cut);
    crashed.dir = copy;
    std::unique_ptr<kl::Store> reopened;
    if (kl::Status s = kl::Store::open(crashed, &reopened); !s.ok()) return fail(s);
    const std::string label = "  " + std::to_string(cut) + " of " + std::to_string(log.size()) +
                              " bytes (" +
                              std::to_string(reopened->recovery().bytes_dropped) +
                              " dropped):";
    std::printf("%-32s %s, keys %zu\n", label.c_str(), accounts(reopened.get()).c_str(),
                reopened->size());
    if (kl::Status s = reopened->close(); !s.ok()) return fail(s);
    remove_store(copy);
  }
  remove_store(dir);
  return 0;
}
