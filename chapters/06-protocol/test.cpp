// Chapter 6: the request parser and the RESP replies, byte for byte, with no socket in
// sight, and the store's reads of many keys that chapter 7's commands use. These tests
// also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;
using Parse = kl::RequestParser::Result;
using Words = std::vector<std::string>;

namespace {

// Parses all of `input` at once: the requests, and the error that stopped it, if any.
struct Parsed {
  std::vector<Words> requests;
  std::string error;
  std::size_t left = 0;  // bytes of an unfinished request at the end
};
Parsed parse_all(std::string_view input, kl::ProtocolLimits limits = kl::ProtocolLimits()) {
  kl::RequestParser parser(limits);
  Parsed parsed;
  std::string buffer(input);
  while (true) {
    std::size_t consumed = 0;
    Words words;
    Parse r = parser.parse(buffer, &consumed, &words);
    buffer.erase(0, consumed);
    if (r == Parse::kCommand) parsed.requests.push_back(words);
    if (r == Parse::kError) parsed.error = parser.error();
    if (r != Parse::kCommand) break;
  }
  parsed.left = buffer.size();
  return parsed;
}

// Feeds `input` in pieces cut at the given offsets, as a socket might deliver it.
Parsed parse_in_pieces(std::string_view input, const std::vector<std::size_t>& cuts,
                       kl::ProtocolLimits limits = kl::ProtocolLimits()) {
  kl::RequestParser parser(limits);
  Parsed parsed;
  std::string buffer;
  std::size_t from = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(input.size());
  for (std::size_t end : ends) {
    buffer.append(input.substr(from, end - from));
    from = end;
    while (parsed.error.empty()) {
      std::size_t consumed = 0;
      Words words;
      Parse r = parser.parse(buffer, &consumed, &words);
      buffer.erase(0, consumed);
      if (r == Parse::kCommand) parsed.requests.push_back(words);
      if (r == Parse::kError) parsed.error = parser.error();
      if (r != Parse::kCommand) break;
    }
  }
  parsed.left = buffer.size();
  return parsed;
}

std::string resp_request(const Words& words) {
  std::string out = "*" + std::to_string(words.size()) + "\r\n";
  for (const std::string& w : words) out += "$" + std::to_string(w.size()) + "\r\n" + w + "\r\n";
  return out;
}

}  // namespace

TEST_SUITE("chapter 6: protocol") {

TEST_CASE("inline commands split on spaces and honour quotes and escapes as Redis does") {
  Parsed p = parse_all("SET a b\r\nGET  a\n  \r\n\n"
                       "SET \"with space\" 'single \\' quote'\r\n"
                       "SET \"\\x00\\xff\\n\\r\\t\\\\\\\"\" x\r\n"
                       "ECHO \"\"\r\n");
  CHECK(p.error.empty());
  CHECK(p.left == 0);
  REQUIRE(p.requests.size() == 5);  // blank lines are skipped
  CHECK(p.requests[0] == Words{"SET", "a", "b"});
  CHECK(p.requests[1] == Words{"GET", "a"});
  CHECK(p.requests[2] == Words{"SET", "with space", "single ' quote"});
  CHECK(p.requests[3] == Words{"SET", std::string("\0\xff\n\r\t\\\"", 7), "x"});
  CHECK(p.requests[4] == Words{"ECHO", ""});
}

TEST_CASE("RESP arrays carry any bytes, and *0 and *-1 carry nothing") {
  const Words binary = {"SET", std::string("k\r\n\0", 4), std::string(1000, '\n')};
  Parsed p = parse_all("*0\r\n*-1\r\n" + resp_request(binary) + resp_request({"PING"}));
  CHECK(p.error.empty());
  REQUIRE(p.requests.size() == 2);
  CHECK(p.requests[0] == binary);
  CHECK(p.requests[1] == Words{"PING"});
}

TEST_CASE("a stream parsed whole and split at every byte boundary gives the same requests") {
  const std::string stream = "PING\r\n" + resp_request({"SET", "key", std::string("a\r\nb", 4)}) +
                             "\r\n*0\r\n" + "set 'x y' \"\\x41\"\n" +
                             resp_request({"MSET", "a", "1", "b", ""}) + "GET key\r\n";
  const Parsed whole = parse_all(stream);
  REQUIRE(whole.error.empty());
  REQUIRE(whole.requests.size() == 5);
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    CAPTURE(cut);
    Parsed split = parse_in_pieces(stream, {cut});
    CHECK(split.requests == whole.requests);
    CHECK(split.error.empty());
    CHECK(split.left == 0);
  }
  std::vector<std::size_t> every_byte;
  for (std::size_t i = 1; i < stream.size(); ++i) every_byte.push_back(i);
  CHECK(parse_in_pieces(stream, every_byte).requests == whole.requests);
}

TEST_CASE("a header over the limit gets the same error however the stream is cut") {
  // Found by the fuzzer: cut before the header's CR, the parser saw too many bytes with
  // no CR ("too big"); whole, it saw a bad number. Both now look at the header alone.
  kl::ProtocolLimits limits;
  limits.max_inline_bytes = 8;
  for (const std::string stream : {"*1\r\n$1234567890123\r\nx\r\n", "*123456789012\r\n",
                                   "*1\r\n$12345678\r\n", "*1\r\n$1234567\r\nabcdefg\r\n"}) {
    CAPTURE(stream);
    const Parsed whole = parse_all(stream, limits);
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
      CAPTURE(cut);
      const Parsed split = parse_in_pieces(stream, {cut}, limits);
      CHECK(split.error == whole.error);
      CHECK(split.requests == whole.requests);
    }
  }
}

TEST_CASE("malformed requests get Redis's protocol errors, never a crash or a hang") {
  struct Case {
    const char* name;
    std::string input;
    const char* error;
  };
  const Case cases[] = {
      {"huge multibulk count", "*20000000\r\n", "Protocol error: invalid multibulk length"},
      {"non-numeric count", "*x\r\n", "Protocol error: invalid multibulk length"},
      {"non-numeric length", "*1\r\n$foo\r\n", "Protocol error: invalid bulk length"},
      {"negative length", "*1\r\n$-1\r\n", "Protocol error: invalid bulk length"},
      {"huge length", "*1\r\n$2000000000\r\n", "Protocol error: invalid bulk length"},
      {"missing $", "*1\r\nfoo\r\n", "Protocol error: expected '$', got 'f'"},
      {"length that lies short", "*1\r\n$1\r\nabc\r\n", "Protocol error: bulk data longer than its length"},
      {"unbalanced double quote", "SET \"a b\r\n", "Protocol error: unbalanced quotes in request"},
      {"unbalanced single quote", "SET 'a\n", "Protocol error: unbalanced quotes in request"},
      {"text after a closing quote", "SET \"a\"b c\n", "Protocol error: unbalanced quotes in request"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    Parsed p = parse_all(c.input);
    CHECK(p.error == c.error);
    CHECK(p.requests.empty());
  }
  // Negative counts other than -1 carry no command either, as in Redis.
  Parsed negative = parse_all("*-10\r\nPING\r\n");
  CHECK(negative.error.empty());
  CHECK(negative.requests == std::vector<Words>{{"PING"}});
  // A length that lies long just waits for bytes that will never come: the connection's
  // idle timeout, not the parser, deals with that.
  Parsed waiting = parse_all("*1\r\n$10\r\nabc\r\n");
  CHECK(waiting.error.empty());
  CHECK(waiting.left == 14);
}

TEST_CASE("a 100 MiB line with no newline is refused at the 64 KiB limit, memory bounded") {
  kl::RequestParser parser;
  std::string buffer;
  const std::string chunk(1 << 20, 'a');
  std::size_t fed = 0;
  Parse r = Parse::kNeedMore;
  std::size_t largest_buffer = 0;
  while (fed < (100u << 20) && r == Parse::kNeedMore) {
    buffer += chunk;
    fed += chunk.size();
    largest_buffer = std::max(largest_buffer, buffer.size());
    std::size_t consumed = 0;
    Words words;
    r = parser.parse(buffer, &consumed, &words);
    buffer.erase(0, consumed);
  }
  CHECK(r == Parse::kError);
  CHECK(parser.error() == "Protocol error: too big inline request");
  CHECK(fed == chunk.size());  // refused at the first read past the limit
  CHECK(largest_buffer <= kl::ProtocolLimits().max_inline_bytes + chunk.size());

  kl::RequestParser array_parser;
  std::size_t consumed = 0;
  Words words;
  CHECK(array_parser.parse("*" + std::string(70000, '1'), &consumed, &words) == Parse::kError);
  CHECK(array_parser.error() == "Protocol error: too big mbulk count string");
}

TEST_CASE("limits are options: a smaller bulk limit and argument count are enforced") {
  kl::ProtocolLimits limits;
  limits.max_bulk_bytes = 4;
  limits.max_args = 2;
  CHECK(parse_all(resp_request({"GET", "12345"}), limits).error == "Protocol error: invalid bulk length");
  CHECK(parse_all(resp_request({"GET", "1234"}), limits).error.empty());
  CHECK(parse_all(resp_request({"SET", "a", "b"}), limits).error == "Protocol error: invalid multibulk length");
}

TEST_CASE("replies are RESP2, and CR or LF cannot break a status line") {
  std::string out;
  kl::resp::simple(&out, "OK");
  kl::resp::error(&out, "ERR bad\r\nthing");
  kl::resp::integer(&out, -42);
  kl::resp::bulk(&out, std::string("a\0\r\n", 4));
  kl::resp::null_bulk(&out);
  kl::resp::array(&out, 2);
  kl::resp::null_array(&out);
  using namespace std::string_literals;
  CHECK(out == "+OK\r\n-ERR bad  thing\r\n:-42\r\n$4\r\na\0\r\n\r\n$-1\r\n*2\r\n*-1\r\n"s);
}

TEST_CASE("bounded reads of many keys stop before the copy that would pass the bound") {
  kl::Store store;
  REQUIRE(store.set("a", "12345").ok());
  REQUIRE(store.set("b", "67890").ok());
  kl::Store::ReadBound bound;
  bound.max_bytes = 8;
  bool complete = true;
  auto values = store.get_all({"a", "missing", "b"}, bound, &complete);
  CHECK_FALSE(complete);
  REQUIRE(values.size() == 2);  // "b" would take the copy to 10 bytes: not copied
  CHECK(*values[0] == "12345");
  CHECK_FALSE(values[1]);
  bound.max_bytes = 10;
  values = store.get_all({"a", "missing", "b"}, bound, &complete);
  CHECK(complete);
  CHECK(values.size() == 3);

  CHECK(store.keys("?", bound, &complete).size() == 2);
  CHECK(complete);
  bound.max_bytes = 1;
  CHECK(store.keys("*", bound, &complete).size() == 1);
  CHECK_FALSE(complete);
  CHECK(store.keys("a", bound, &complete).size() == 1);  // only matches count
  CHECK(complete);

  std::atomic<bool> stop{true};
  bound.max_bytes = 1000;
  bound.stop = &stop;
  CHECK(store.keys("*", bound, &complete).empty());
  CHECK_FALSE(complete);
  CHECK(store.get_all({"a"}, bound, &complete).empty());
  CHECK_FALSE(complete);
}

TEST_CASE("glob matching follows Redis's rules") {
  using kl::detail::glob_match;
  CHECK(glob_match("*", ""));
  CHECK(glob_match("a*b*c", "aXXbYYc"));
  CHECK_FALSE(glob_match("a*b*c", "aXXbYY"));
  CHECK(glob_match("h?llo", "hello"));
  CHECK(glob_match("h[ae]llo", "hallo"));
  CHECK_FALSE(glob_match("h[^e]llo", "hello"));
  CHECK(glob_match("h[a-b]llo", "hbllo"));
  CHECK(glob_match("\\*literal", "*literal"));
  CHECK_FALSE(glob_match("\\*literal", "xliteral"));
  CHECK(glob_match("**x", "abx"));
}

}  // TEST_SUITE
