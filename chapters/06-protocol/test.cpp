// Chapter 6: the request parser, the RESP replies and every command of the dispatcher,
// byte for byte, with no socket in sight. These tests also run against every later
// chapter and the final header.
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

// A dispatcher over an in-memory store, and a way to run one command through it.
struct Fixture {
  kl::Store store;
  kl::Dispatcher dispatcher{&store};
  kl::Session session;
  std::string run(const Words& words) {
    std::string out;
    dispatcher.execute(words, &session, &out);
    return out;
  }
};

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

TEST_CASE("PING, ECHO, GET, SET, DEL, EXISTS: success, missing keys and wrong arity") {
  Fixture f;
  CHECK(f.run({"PING"}) == "+PONG\r\n");
  CHECK(f.run({"ping", "hi"}) == "$2\r\nhi\r\n");
  CHECK(f.run({"PING", "a", "b"}) == "-ERR wrong number of arguments for 'ping' command\r\n");
  CHECK(f.run({"ECHO", "x y"}) == "$3\r\nx y\r\n");
  CHECK(f.run({"ECHO"}) == "-ERR wrong number of arguments for 'echo' command\r\n");
  CHECK(f.run({"GET", "k"}) == "$-1\r\n");
  CHECK(f.run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(f.run({"GeT", "k"}) == "$1\r\nv\r\n");
  CHECK(f.run({"GET"}) == "-ERR wrong number of arguments for 'get' command\r\n");
  CHECK(f.run({"GET", "a", "b"}) == "-ERR wrong number of arguments for 'get' command\r\n");
  CHECK(f.run({"SET", "k"}) == "-ERR wrong number of arguments for 'set' command\r\n");
  CHECK(f.run({"EXISTS", "k", "k", "nope"}) == ":2\r\n");
  CHECK(f.run({"DEL", "k", "nope"}) == ":1\r\n");
  CHECK(f.run({"DEL"}) == "-ERR wrong number of arguments for 'del' command\r\n");
  CHECK(f.run({"EXISTS"}) == "-ERR wrong number of arguments for 'exists' command\r\n");
}

TEST_CASE("SET with NX, XX and GET, and options it does not support") {
  Fixture f;
  CHECK(f.run({"SET", "k", "1", "XX"}) == "$-1\r\n");
  CHECK(f.run({"SET", "k", "1", "nx"}) == "+OK\r\n");
  CHECK(f.run({"SET", "k", "2", "NX"}) == "$-1\r\n");
  CHECK(f.run({"SET", "k", "3", "XX", "GET"}) == "$1\r\n1\r\n");
  CHECK(f.run({"SET", "new", "v", "GET"}) == "$-1\r\n");
  CHECK(f.run({"GET", "new"}) == "$1\r\nv\r\n");
  CHECK(f.run({"SET", "k", "4", "NX", "XX"}) == "-ERR syntax error\r\n");
  CHECK(f.run({"SET", "k", "4", "BOGUS"}) == "-ERR syntax error\r\n");
  CHECK(f.run({"GET", "k"}) == "$1\r\n3\r\n");
}

TEST_CASE("MGET and MSET") {
  Fixture f;
  CHECK(f.run({"MSET", "a", "1", "b", "2"}) == "+OK\r\n");
  CHECK(f.run({"MGET", "a", "nope", "b"}) == "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
  CHECK(f.run({"MSET", "a", "1", "b"}) == "-ERR wrong number of arguments for 'mset' command\r\n");
  CHECK(f.run({"MGET"}) == "-ERR wrong number of arguments for 'mget' command\r\n");
}

TEST_CASE("INCR, DECR, INCRBY, DECRBY: counting, wrong types and overflow") {
  Fixture f;
  CHECK(f.run({"INCR", "n"}) == ":1\r\n");
  CHECK(f.run({"INCRBY", "n", "10"}) == ":11\r\n");
  CHECK(f.run({"DECR", "n"}) == ":10\r\n");
  CHECK(f.run({"DECRBY", "n", "-5"}) == ":15\r\n");
  CHECK(f.run({"INCRBY", "n", "x"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(f.run({"DECRBY", "n", "1.5"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(f.run({"SET", "s", "text"}) == "+OK\r\n");
  CHECK(f.run({"INCR", "s"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(f.run({"SET", "big", "9223372036854775807"}) == "+OK\r\n");
  CHECK(f.run({"INCR", "big"}) == "-ERR increment or decrement would overflow\r\n");
  CHECK(f.run({"DECRBY", "n", "-9223372036854775808"}) == "-ERR decrement would overflow\r\n");
  CHECK(f.run({"INCR"}) == "-ERR wrong number of arguments for 'incr' command\r\n");
  CHECK(f.run({"INCRBY", "n"}) == "-ERR wrong number of arguments for 'incrby' command\r\n");
  CHECK(f.run({"GET", "n"}) == "$2\r\n15\r\n");
}

TEST_CASE("APPEND and STRLEN") {
  Fixture f;
  CHECK(f.run({"STRLEN", "k"}) == ":0\r\n");
  CHECK(f.run({"APPEND", "k", "ab"}) == ":2\r\n");
  CHECK(f.run({"APPEND", "k", "cde"}) == ":5\r\n");
  CHECK(f.run({"STRLEN", "k"}) == ":5\r\n");
  CHECK(f.run({"APPEND", "k"}) == "-ERR wrong number of arguments for 'append' command\r\n");
  CHECK(f.run({"STRLEN"}) == "-ERR wrong number of arguments for 'strlen' command\r\n");
}

TEST_CASE("DBSIZE, KEYS with glob patterns, FLUSHDB and FLUSHALL") {
  Fixture f;
  CHECK(f.run({"DBSIZE"}) == ":0\r\n");
  CHECK(f.run({"MSET", "user:1", "a", "user:22", "b", "item:1", "c"}) == "+OK\r\n");
  CHECK(f.run({"DBSIZE"}) == ":3\r\n");
  CHECK(f.run({"KEYS", "nothing*"}) == "*0\r\n");
  std::string users = f.run({"KEYS", "user:*"});
  CHECK(users.rfind("*2\r\n", 0) == 0);
  CHECK(users.find("$6\r\nuser:1\r\n") != std::string::npos);
  CHECK(f.run({"KEYS", "user:?"}) == "*1\r\n$6\r\nuser:1\r\n");
  CHECK(f.run({"KEYS", "[i]tem:[0-9]"}) == "*1\r\n$6\r\nitem:1\r\n");
  CHECK(f.run({"KEYS"}) == "-ERR wrong number of arguments for 'keys' command\r\n");
  CHECK(f.run({"FLUSHDB", "bogus"}) == "-ERR syntax error\r\n");
  CHECK(f.run({"FLUSHDB"}) == "+OK\r\n");
  CHECK(f.run({"DBSIZE"}) == ":0\r\n");
  CHECK(f.run({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(f.run({"FLUSHALL", "ASYNC"}) == "+OK\r\n");
  CHECK(f.run({"DBSIZE", "x"}) == "-ERR wrong number of arguments for 'dbsize' command\r\n");
}

TEST_CASE("once the dispatcher is interrupted, KEYS, MGET and EXISTS give up with an error") {
  Fixture f;
  CHECK(f.run({"MSET", "a", "1", "b", "2"}) == "+OK\r\n");
  f.dispatcher.interrupt();  // what the server does when it stops
  CHECK(f.run({"KEYS", "*"}) == "-ERR 'keys' was stopped: the server is shutting down; send it "
                                "again once the server is back\r\n");
  CHECK(f.run({"MGET", "a", "b"}).rfind("-ERR 'mget' was stopped", 0) == 0);
  CHECK(f.run({"EXISTS", "a", "b"}).rfind("-ERR 'exists' was stopped", 0) == 0);
  CHECK(f.run({"GET", "a"}) == "$1\r\n1\r\n");  // one key: nothing long to cut short
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

TEST_CASE("COMPACT and BGREWRITEAOF, INFO, CONFIG GET, COMMAND, CLIENT, SELECT") {
  Fixture f;
  CHECK(f.run({"COMPACT"}) == "+OK\r\n");
  CHECK(f.run({"BGREWRITEAOF"}) == "+Background append only file rewriting started\r\n");
  CHECK(f.run({"SET", "k", "v"}) == "+OK\r\n");
  std::string info = f.run({"INFO"});
  for (const char* section : {"# Server", "# Clients", "# Persistence", "# Stats", "# Keyspace",
                              "db0:keys=1,", "total_commands_processed:"}) {
    CHECK(info.find(section) != std::string::npos);
  }
  std::string persistence = f.run({"INFO", "persistence"});
  CHECK(persistence.find("# Persistence") != std::string::npos);
  CHECK(persistence.find("# Server") == std::string::npos);
  CHECK(f.run({"CONFIG", "GET", "save"}) == "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
  CHECK(f.run({"CONFIG", "GET", "appendfsync"}) == "*2\r\n$11\r\nappendfsync\r\n$8\r\neverysec\r\n");
  CHECK(f.run({"CONFIG", "GET", "nosuch"}) == "*0\r\n");
  CHECK(f.run({"CONFIG", "SET", "x", "y"}).rfind("-ERR CONFIG SET is not supported", 0) == 0);
  CHECK(f.run({"CONFIG"}) == "-ERR wrong number of arguments for 'config' command\r\n");
  const std::string count = f.run({"COMMAND", "COUNT"});  // every command, at every stage
  CHECK(std::stoi(count.substr(1)) >= 28);
  CHECK(f.run({"COMMAND", "DOCS"}) == "*0\r\n");
  CHECK(f.run({"COMMAND"}).rfind("*" + count.substr(1), 0) == 0);
  CHECK(f.run({"CLIENT", "GETNAME"}) == "$-1\r\n");
  CHECK(f.run({"CLIENT", "SETNAME", "worker-1"}) == "+OK\r\n");
  CHECK(f.run({"CLIENT", "GETNAME"}) == "$8\r\nworker-1\r\n");
  CHECK(f.run({"CLIENT", "SETINFO", "lib-name", "redis-py"}) == "+OK\r\n");
  CHECK(f.run({"CLIENT", "KILL"}).rfind("-ERR unknown subcommand", 0) == 0);
  CHECK(f.run({"SELECT", "0"}) == "+OK\r\n");
  CHECK(f.run({"SELECT", "1"}) == "-ERR DB index is out of range\r\n");
}

TEST_CASE("unknown commands name themselves and their first arguments; the session goes on") {
  Fixture f;
  CHECK(f.run({"FOO", "a", "b"}) == "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n");
  CHECK(f.run({"nope"}) == "-ERR unknown command 'nope', with args beginning with: \r\n");
  CHECK_FALSE(f.session.close);
  CHECK(f.run({"PING"}) == "+PONG\r\n");
}

TEST_CASE("QUIT closes after its reply; SHUTDOWN asks the server to stop") {
  Fixture f;
  CHECK(f.run({"QUIT"}) == "+OK\r\n");
  CHECK(f.session.close);
  Fixture g;
  CHECK(g.run({"SHUTDOWN"}).empty());
  CHECK(g.session.shutdown);
}

TEST_CASE("with a password, every command but AUTH and QUIT needs AUTH first") {
  kl::Store store;
  kl::ServerConfig config;
  config.requirepass = "s3cret";
  kl::Dispatcher dispatcher(&store, config);
  kl::Session session;
  auto run = [&](const Words& words) {
    std::string out;
    dispatcher.execute(words, &session, &out);
    return out;
  };
  CHECK(run({"GET", "k"}) == "-NOAUTH Authentication required.\r\n");
  CHECK(run({"AUTH", "wrong"}) == "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
  CHECK(run({"AUTH", "someone", "s3cret"}) == "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
  CHECK(run({"AUTH", "s3cret"}) == "+OK\r\n");
  CHECK(run({"GET", "k"}) == "$-1\r\n");
  kl::Session other;
  std::string out;
  dispatcher.execute({"AUTH", "default", "s3cret"}, &other, &out);
  CHECK(out == "+OK\r\n");

  Fixture no_password;
  CHECK(no_password.run({"AUTH", "x"}).rfind("-ERR AUTH <password> called without any password", 0) == 0);
}

TEST_CASE("errors from the store reach the client as error replies") {
  Fixture f;
  CHECK(f.run({"SET", std::string(kl::kMaxKeyBytes + 1, 'k'), "v"})
            .rfind("-ERR key of " + std::to_string(kl::kMaxKeyBytes + 1) + " bytes", 0) == 0);
}

TEST_CASE("COMMAND reports each command's flags and key positions from the table") {
  Fixture f;
  const std::string all = f.run({"COMMAND"});
  auto entry = [&](const std::string& name) {  // the reply's entry for one command
    const std::string head = "*6\r\n$" + std::to_string(name.size()) + "\r\n" + name + "\r\n";
    const std::size_t at = all.find(head);
    REQUIRE(at != std::string::npos);
    const std::size_t next = all.find("*6\r\n", at + head.size());
    return all.substr(at + head.size(), next - at - head.size());
  };
  CHECK(entry("get") == ":2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n");
  CHECK(entry("set") == ":-3\r\n*1\r\n+write\r\n:1\r\n:1\r\n:1\r\n");  // one key, as Redis
  CHECK(entry("mset") == ":-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n");
  CHECK(entry("del") == ":-2\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:1\r\n");
  CHECK(entry("keys") == ":2\r\n*1\r\n+readonly\r\n:0\r\n:0\r\n:0\r\n");  // a pattern, no key
  CHECK(entry("auth") == ":-2\r\n*1\r\n+no_auth\r\n:0\r\n:0\r\n:0\r\n");
  CHECK(entry("config") == ":-2\r\n*1\r\n+admin\r\n:0\r\n:0\r\n:0\r\n");
}

TEST_CASE("total_commands_processed counts commands run, not commands refused") {
  Fixture f;
  f.run({"SET", "a", "1"});
  f.run({"NOSUCHCOMMAND"});
  f.run({"GET"});  // wrong number of arguments
  const std::string info = f.run({"INFO", "stats"});
  CHECK(info.find("total_commands_processed:2\r\n") != std::string::npos);  // SET and INFO
}

}  // TEST_SUITE

// Until chapter 10 gives keys an expiry, SET refuses its expiry options by name.
TEST_SUITE("up to chapter 9: keys do not expire") {

TEST_CASE("SET refuses the expiry options it does not support yet") {
  Fixture f;
  CHECK(f.run({"SET", "k", "3"}) == "+OK\r\n");
  CHECK(f.run({"SET", "k", "4", "EX", "10"}).rfind("-ERR EX is not supported", 0) == 0);
  CHECK(f.run({"GET", "k"}) == "$1\r\n3\r\n");
}

}  // TEST_SUITE
