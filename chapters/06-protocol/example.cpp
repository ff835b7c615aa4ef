// Chapter 6's example: the parser, on its own. It reads requests from standard input,
// inline commands as you would type them or RESP as a client library sends it, and
// prints each one back as the RESP array a client library would have sent for it: the
// words the parser found, each a bulk string. Nothing runs yet (that is chapter 7's
// dispatcher): this shows only how bytes become requests, and requests become bytes.
//
//   g++ -std=c++17 -pthread example.cpp -o example
//   ./example                                   then type: SET greeting "hello world"
//   printf '*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n' | ./example
//
// A protocol error is printed as a server would reply, and ends the input, as it would
// end a connection.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

int main() {
  kl::RequestParser parser;
  std::string buffer;  // bytes read and not yet consumed by the parser
  char chunk[4096];
  bool failed = false;
  while (!failed) {
    const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (n <= 0) break;
    buffer.append(chunk, static_cast<std::size_t>(n));
    std::string out;
    while (true) {
      std::size_t consumed = 0;
      std::vector<std::string> args;
      kl::RequestParser::Result r = parser.parse(buffer, &consumed, &args);
      buffer.erase(0, consumed);
      if (r == kl::RequestParser::Result::kNeedMore) break;
      if (r == kl::RequestParser::Result::kError) {
        kl::resp::error(&out, "ERR " + parser.error());
        failed = true;
        break;
      }
      kl::resp::array(&out, args.size());  // the request as a client library frames it
      for (const std::string& word : args) kl::resp::bulk(&out, word);
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }
  if (!failed && !buffer.empty()) std::printf("(%zu bytes of an unfinished request)\n", buffer.size());
  return 0;
}
