// Chapter 13's example: strings as Redis sees them. The same bytes used as a bitmap of
// daily active users, as a decimal number, as a fixed-width record patched in place, as
// names claimed all together or not at all, and as text two versions of which share a
// longest common subsequence. Then the store is opened again, to show what the log kept.
//
//   g++ -std=c++17 -pthread example.cpp -o example && ./example
//
// The store lives in a temporary directory that the example removes before it exits; the
// output is the same on every run.
#include <unistd.h>

#include <cstdio>
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

// Bytes as redis-cli shows them: printable ones as they are, others as \xHH.
std::string quoted(const std::string& bytes) {
  std::string out = "\"";
  for (char byte : bytes) {
    const auto c = static_cast<unsigned char>(byte);
    char hex[5];
    std::snprintf(hex, sizeof hex, "\\x%02x", c);
    out += c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? std::string(1, static_cast<char>(c)) : hex;
  }
  return out + "\"";
}

// One reply, at *at, as redis-cli prints it (an array on one line, its items numbered).
std::string shown(const std::string& reply, std::size_t* at) {
  const std::size_t eol = reply.find("\r\n", *at);
  const char type = reply[*at];
  const std::string body = reply.substr(*at + 1, eol - *at - 1);
  *at = eol + 2;
  if (type == ':') return "(integer) " + body;
  if (type == '-') return "(error) " + body;
  if (type == '+') return body;
  if (type == '$') {
    if (body == "-1") return "(nil)";
    const std::string value = reply.substr(*at, std::stoul(body));
    *at += value.size() + 2;
    return quoted(value);
  }
  std::string items;  // '*'
  for (unsigned long i = 1; i <= std::stoul(body); ++i) {
    items += (i > 1 ? "  " : "") + std::to_string(i) + ") " + shown(reply, at);
  }
  return items;
}

void run(kl::Store* store, const std::vector<std::string>& words) {
  kl::Dispatcher dispatcher(store);
  kl::Session session;
  std::string reply;
  dispatcher.execute(words, &session, &reply);
  std::string line = ">";
  for (const std::string& word : words) line += " " + word;
  std::size_t at = 0;
  std::printf("%-56s %s\n", line.c_str(), shown(reply, &at).c_str());
}

}  // namespace

int main() {
  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  kl::Options options;
  options.dir = dir;
  {
    std::unique_ptr<kl::Store> store;
    if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
    kl::Store* db = store.get();

    std::printf("-- a bitmap: one bit per user id, one key per day\n");
    run(db, {"SETBIT", "active:mon", "5", "1"});
    run(db, {"SETBIT", "active:mon", "12", "1"});
    run(db, {"SETBIT", "active:tue", "5", "1"});
    run(db, {"SETBIT", "active:tue", "7", "1"});
    run(db, {"GET", "active:mon"});
    run(db, {"BITCOUNT", "active:mon"});
    run(db, {"BITOP", "AND", "active:both", "active:mon", "active:tue"});
    run(db, {"BITPOS", "active:both", "1"});
    run(db, {"BITOP", "OR", "active:any", "active:mon", "active:tue"});
    run(db, {"BITCOUNT", "active:any"});
    run(db, {"SETBIT", "active:mon", "4294967296", "1"});

    std::printf("\n-- a number: decimal text, added to in long double\n");
    run(db, {"SET", "balance", "10.50"});
    run(db, {"INCRBYFLOAT", "balance", "0.1"});
    run(db, {"INCRBYFLOAT", "balance", "5.0e3"});
    run(db, {"INCRBYFLOAT", "balance", "inf"});

    std::printf("\n-- a fixed-width record, patched in place\n");
    run(db, {"SET", "person:1", "Ada       1815"});
    run(db, {"SETRANGE", "person:1", "0", "Lovelace"});
    run(db, {"GETRANGE", "person:1", "0", "9"});
    run(db, {"GETRANGE", "person:1", "-4", "-1"});
    run(db, {"SETRANGE", "person:1", "536870912", "x"});

    std::printf("\n-- names claimed together, or not at all\n");
    run(db, {"MSETNX", "user:ada", "1", "email:ada@example.org", "1"});
    run(db, {"MSETNX", "user:bob", "2", "email:ada@example.org", "2"});
    run(db, {"EXISTS", "user:bob"});

    std::printf("\n-- text: what two versions have in common\n");
    run(db, {"SET", "v1", "ohmytext"});
    run(db, {"SET", "v2", "mynewtext"});
    run(db, {"LCS", "v1", "v2"});
    run(db, {"LCS", "v1", "v2", "LEN"});
  }

  std::printf("\n-- the store opens again: the log kept each change\n");
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) return fail(s);
  std::printf("  recovery: %llu records replayed\n",
              static_cast<unsigned long long>(store->recovery().records));
  run(store.get(), {"MGET", "user:ada", "email:ada@example.org", "user:bob"});
  run(store.get(), {"GET", "balance"});
  run(store.get(), {"BITCOUNT", "active:any"});

  if (kl::Status s = store->close(); !s.ok()) return fail(s);
  const std::string log = std::string(dir) + "/" + kl::kLogFileName;
  const std::string lock = std::string(dir) + "/" + kl::kLockFileName;
  ::unlink(log.c_str());
  ::unlink(lock.c_str());
  ::rmdir(dir);
  return 0;
}
