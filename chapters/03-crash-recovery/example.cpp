// Chapter 3's example: chapter 1's REPL, now on a persistent store.
//
//   g++ -std=c++17 -pthread example.cpp -o example && ./example [DIR]
//
// DIR (default ./example-data) is created when missing. Set some keys, kill the process
// with kill -9 from another terminal (or Ctrl-\ for SIGQUIT), start it again: the keys
// are there. Commands, one per line, names in any case:
//   SET key value | GET key | DEL key | EXISTS key | SIZE | SYNC
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

std::string reply(const kl::Status& s, const std::string& ok) {
  return s.ok() ? ok : "(error) " + s.to_string();
}

std::string execute(kl::Store& store, const std::string& line) {
  std::istringstream in(line);
  std::string command, key, value;
  in >> command >> key;
  std::transform(command.begin(), command.end(), command.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  std::getline(in >> std::ws, value);
  const bool one_key = !key.empty() && value.empty();

  if (command == "SET" && !key.empty() && !value.empty()) return reply(store.set(key, value), "OK");
  if (command == "GET" && one_key) {
    auto found = store.get(key);
    return found ? "\"" + *found + "\"" : "(nil)";
  }
  if (command == "DEL" && one_key) {
    bool existed = false;
    kl::Status s = store.del(key, &existed);
    return reply(s, existed ? "(integer) 1" : "(integer) 0");
  }
  if (command == "EXISTS" && one_key) return store.exists(key) ? "(integer) 1" : "(integer) 0";
  if (command == "SIZE" && key.empty()) return "(integer) " + std::to_string(store.size());
  if (command == "SYNC" && key.empty()) return reply(store.sync(), "OK");
  return "(error) usage: SET key value | GET key | DEL key | EXISTS key | SIZE | SYNC";
}

}  // namespace

int main(int argc, char** argv) {
  kl::Options options;
  options.dir = argc > 1 ? argv[1] : "example-data";
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) {
    std::cerr << "cannot open " << options.dir << ": " << s.to_string() << "\n";
    return 1;
  }
  const kl::RecoveryReport& r = store->recovery();
  std::cerr << "opened " << options.dir << ": " << store->size() << " keys from " << r.records
            << " records in " << r.duration.count() << " us";
  if (r.bytes_dropped > 0) std::cerr << ", " << r.bytes_dropped << " torn bytes dropped";
  std::cerr << "\n";

  const bool interactive = isatty(STDIN_FILENO) != 0;
  std::string line;
  while (true) {
    if (interactive) std::cout << "keystonelight> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::cout << execute(*store, line) << "\n";
  }
  kl::Status s = store->close();
  if (!s.ok()) std::cerr << s.to_string() << "\n";
  return s.ok() ? 0 : 1;
}
