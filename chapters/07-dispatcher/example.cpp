// Chapter 7's example: the protocol without a network. It reads requests from standard
// input, inline commands as you would type them or RESP as a client library sends it,
// runs them against an in-memory store, and prints every reply exactly as a server would
// send it, in RESP.
//
//   g++ -std=c++17 -pthread example.cpp -o example
//   ./example                                   then type: SET greeting hello
//   printf '*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n' | ./example
//
// A protocol error ends the input, as it would end a connection.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

int main() {
  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  kl::Session session;
  kl::RequestParser parser;
  std::string buffer;
  char chunk[4096];
  while (!session.close) {
    const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (n <= 0) break;
    buffer.append(chunk, static_cast<std::size_t>(n));
    std::string replies;
    while (!session.close) {
      std::size_t consumed = 0;
      std::vector<std::string> args;
      kl::RequestParser::Result r = parser.parse(buffer, &consumed, &args);
      buffer.erase(0, consumed);
      if (r == kl::RequestParser::Result::kNeedMore) break;
      if (r == kl::RequestParser::Result::kError) {
        kl::resp::error(&replies, "ERR " + parser.error());
        session.close = true;
        break;
      }
      dispatcher.execute(args, &session, &replies);
    }
    std::fwrite(replies.data(), 1, replies.size(), stdout);
    std::fflush(stdout);
  }
  return 0;
}
