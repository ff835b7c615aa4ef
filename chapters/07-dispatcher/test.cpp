// Chapter 7: the dispatcher and every command of its table, byte for byte, with no
// socket in sight: a request goes in as words, its reply comes out as RESP. These tests
// also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;
using Words = std::vector<std::string>;

namespace {

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

TEST_SUITE("chapter 7: dispatcher") {

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
