// Chapter 1's example: a tiny REPL over an in-memory Store.
//
//   g++ -std=c++17 -I. example.cpp -o example && ./example
//
// Commands, one per line, names in any case:
//   SET key value    stores value (the rest of the line, spaces included) under key
//   GET key          prints the value, or (nil)
//   DEL key          prints (integer) 1 if the key was there, else (integer) 0
//   EXISTS key       prints (integer) 1 or (integer) 0
//   SIZE             prints the number of keys
// Everything lives in memory: quit with Ctrl-D, start again, and the keys are gone.
// Chapter 3 makes this same REPL remember them.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>
#include <string>

#include "keystonelight.hpp"

namespace {

std::string upper(std::string word) {
  std::transform(word.begin(), word.end(), word.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return word;
}

// Runs one command line against the store and returns the reply to print.
std::string execute(keystonelight::Store& store, const std::string& line) {
  std::istringstream in(line);
  std::string command, key;
  in >> command >> key;
  command = upper(command);
  std::string rest;
  std::getline(in >> std::ws, rest);  // SET's value: everything after the key

  if (command == "SET" && !key.empty() && !rest.empty()) {
    keystonelight::Status s = store.set(key, rest);
    return s.ok() ? "OK" : "(error) " + s.to_string();
  }
  if (command == "GET" && !key.empty() && rest.empty()) {
    std::optional<std::string> value = store.get(key);
    return value ? "\"" + *value + "\"" : "(nil)";
  }
  if (command == "DEL" && !key.empty() && rest.empty()) {
    bool existed = false;
    keystonelight::Status s = store.del(key, &existed);
    if (!s.ok()) return "(error) " + s.to_string();
    return existed ? "(integer) 1" : "(integer) 0";
  }
  if (command == "EXISTS" && !key.empty() && rest.empty()) {
    return store.exists(key) ? "(integer) 1" : "(integer) 0";
  }
  if (command == "SIZE" && key.empty()) {
    return "(integer) " + std::to_string(store.size());
  }
  return "(error) usage: SET key value | GET key | DEL key | EXISTS key | SIZE";
}

}  // namespace

int main() {
  keystonelight::Store store;
  const bool interactive = isatty(STDIN_FILENO) != 0;  // prompt people, not pipes
  std::string line;
  while (true) {
    if (interactive) std::cout << "keystonelight> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::cout << execute(store, line) << "\n";
  }
  return 0;
}
