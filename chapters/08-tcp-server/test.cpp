// Chapter 8: the server over real sockets on 127.0.0.1, each test on a port the system
// picks. Every command, long pipelines, requests a byte at a time, hundreds of clients,
// the limits (max clients, idle timeout, AUTH, clients that do not read), stop() under
// load, and redis-cli and redis-benchmark when redis-tools is installed. These tests also
// run against every later chapter and the final header, and from chapter 14 against both
// of the server's I/O models (see tests/support/server_io.hpp).
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keystonelight.hpp"
#include "../../tests/support/server_io.hpp"
#include "../../tests/support/store.hpp"
#include "../../tests/support/temp_dir.hpp"

namespace kl = keystonelight;
using Words = std::vector<std::string>;
using Type = kl::Reply::Type;
using namespace std::chrono_literals;

namespace {

// Encodes a reply the way the server sent it, to compare with the dispatcher's own bytes.
std::string to_resp(const kl::Reply& reply) {
  std::string out;
  switch (reply.type) {
    case Type::kStatus: kl::resp::simple(&out, reply.text); break;
    case Type::kError: kl::resp::error(&out, reply.text); break;
    case Type::kInteger: kl::resp::integer(&out, reply.integer); break;
    case Type::kBulk: kl::resp::bulk(&out, reply.text); break;
    case Type::kNil: kl::resp::null_bulk(&out); break;
    case Type::kArray:
      kl::resp::array(&out, reply.elements.size());
      for (const kl::Reply& element : reply.elements) out += to_resp(element);
      break;
  }
  return out;
}

// Polls `condition` every 10 ms for at most `limit`; whether it became true.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// A started server on a free port of 127.0.0.1, over a store in memory (or the one
// given), with its log notes kept for the test to read.
struct TestServer {
  explicit TestServer(kl::ServerConfig config = kl::ServerConfig(), kl::Store* store = nullptr)
      : store_(store ? store : &own_store_) {
    config.bind = "127.0.0.1";
    config.port = 0;
    config.info_log = [this](const std::string& message) {
      std::lock_guard<std::mutex> lock(notes_mu_);
      notes_.push_back(message);
    };
    server = std::make_unique<kl::Server>(store_, test_support::with_test_io(config));
    kl::Status s = server->start();
    INFO(s.to_string());
    REQUIRE(s.ok());
  }

  std::unique_ptr<kl::Client> connect() const {
    std::unique_ptr<kl::Client> client;
    kl::Status s = kl::Client::connect("127.0.0.1", server->port(), &client);
    INFO(s.to_string());
    REQUIRE(s.ok());
    return client;
  }

  std::uint64_t clients() const { return server->counters()->connected_clients.load(); }

  bool noted(const std::string& words) {
    std::lock_guard<std::mutex> lock(notes_mu_);
    for (const std::string& note : notes_) {
      if (note.find(words) != std::string::npos) return true;
    }
    return false;
  }

  kl::Store own_store_;
  kl::Store* store_;
  std::mutex notes_mu_;
  std::vector<std::string> notes_;
  std::unique_ptr<kl::Server> server;
};

kl::Reply run(kl::Client& client, const Words& words) {
  kl::Reply reply;
  kl::Status s = client.command(words, &reply);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return reply;
}

// Whether the server has closed this client's connection: a read ends in "closed", or
// in "reset" when the server closed with requests of ours still unread (TCP then resets).
bool closed_by_server(kl::Client& client) {
  kl::Reply reply;
  kl::Status s = client.read(&reply);
  INFO(s.to_string());
  return !s.ok() && (s.message().find("closed") != std::string::npos ||
                     s.message().find("reset") != std::string::npos);
}

// The value of one INFO field ("connected_clients"), as text.
std::string info_field(kl::Client& client, const std::string& name) {
  const std::string text = run(client, {"INFO"}).text;
  const std::size_t at = text.find("\r\n" + name + ":");
  if (at == std::string::npos) return "";
  const std::size_t from = at + name.size() + 3;
  return text.substr(from, text.find("\r\n", from) - from);
}

// Runs a shell command; its exit status, and its standard output in *output.
int shell(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool have(const char* program) {
  std::string ignored;
  return shell(std::string("command -v ") + program + " >/dev/null 2>&1", &ignored) == 0;
}

}  // namespace

TEST_SUITE("chapter 8: the TCP server") {

TEST_CASE("every command answers over a socket exactly as the dispatcher answers it in process") {
  TestServer server;
  auto client = server.connect();
  kl::Store reference_store;
  kl::Dispatcher reference(&reference_store);
  kl::Session session;
  const std::vector<Words> script = {
      {"PING"}, {"PING", "hello"}, {"ECHO", std::string("a\0b\r\n", 5)},
      {"SET", "k", "v"}, {"GET", "k"}, {"GET", "missing"}, {"SET", "k", "w", "NX"},
      {"SET", "k", "w", "XX", "GET"}, {"SET", "k", "v", "EX", "10"}, {"EXISTS", "k", "nope", "k"},
      {"MSET", "a", "1", "b", "2"}, {"MGET", "a", "nope", "b"}, {"INCR", "a"}, {"DECR", "b"},
      {"INCRBY", "a", "10"}, {"DECRBY", "a", "3"}, {"INCR", "k"}, {"APPEND", "k", "++"},
      {"STRLEN", "k"}, {"DBSIZE"}, {"KEYS", "[ab]"}, {"DEL", "a", "nope"}, {"COMPACT"},
      {"BGREWRITEAOF"}, {"CONFIG", "GET", "appendfsync"}, {"COMMAND", "COUNT"},
      {"COMMAND", "DOCS"}, {"CLIENT", "SETNAME", "tester"}, {"CLIENT", "GETNAME"},
      {"CLIENT", "SETINFO", "lib-name", "test"}, {"SELECT", "0"}, {"SELECT", "1"},
      {"AUTH", "secret"}, {"NOSUCHCOMMAND", "x"}, {"GET"}, {"FLUSHDB"}, {"DBSIZE"}, {"FLUSHALL"},
  };
  for (const Words& words : script) {
    CAPTURE(words[0]);
    std::string expected;
    reference.execute(words, &session, &expected);
    CHECK(to_resp(run(*client, words)) == expected);
  }
  // COMMAND's table and INFO's sections vary only where they should (INFO's figures).
  std::string table;
  reference.execute({"COMMAND"}, &session, &table);
  CHECK(to_resp(run(*client, {"COMMAND"})) == table);
  kl::Reply info = run(*client, {"INFO"});
  CHECK(info.type == Type::kBulk);
  CHECK(info.text.find("# Keyspace") != std::string::npos);

  CHECK(run(*client, {"QUIT"}).text == "OK");
  CHECK(closed_by_server(*client));
}

TEST_CASE("a pipeline of 10 000 commands gets 10 000 replies, in order") {
  TestServer server;
  auto client = server.connect();
  for (int i = 0; i < 10000; ++i) client->send({"SET", "key" + std::to_string(i), std::to_string(i)});
  for (int i = 0; i < 10000; ++i) client->send({"GET", "key" + std::to_string(i)});
  for (int i = 0; i < 10000; ++i) {
    kl::Reply reply;
    REQUIRE(client->read(&reply).ok());
    REQUIRE(reply.text == "OK");
  }
  for (int i = 0; i < 10000; ++i) {
    kl::Reply reply;
    REQUIRE(client->read(&reply).ok());
    REQUIRE(reply.text == std::to_string(i));
  }
  // Inline commands pipeline too, as nc users type them.
  std::string inline_batch;
  for (int i = 0; i < 10000; ++i) inline_batch += "INCR counter\r\n";
  client->send_raw(inline_batch);
  kl::Reply last;
  for (int i = 0; i < 10000; ++i) REQUIRE(client->read(&last).ok());
  CHECK(last.integer == 10000);
}

TEST_CASE("requests sent one byte at a time are answered like whole ones") {
  TestServer server;
  auto client = server.connect();
  const std::string requests =
      "*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$5\r\n\r\nbin\r\n"  // a value that holds CR LF
      "GET slow\r\n"                                          // inline
      "*3\r\n$6\r\nAPPEND\r\n$4\r\nslow\r\n$1\r\n!\r\n";
  for (char byte : requests) {
    client->send_raw(std::string(1, byte));
    REQUIRE(client->flush().ok());
    std::this_thread::sleep_for(100us);  // let each byte travel on its own
  }
  kl::Reply reply;
  REQUIRE(client->read(&reply).ok());
  CHECK(reply.text == "OK");
  REQUIRE(client->read(&reply).ok());
  CHECK(reply.text == "\r\nbin");
  REQUIRE(client->read(&reply).ok());
  CHECK(reply.integer == 6);
}

TEST_CASE("200 clients at once, each with its own keys, all get their own answers") {
  TestServer server;
  constexpr int kClients = 200;
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<kl::Client> client;
      if (!kl::Client::connect("127.0.0.1", server.server->port(), &client).ok()) {
        ++failed;
        return;
      }
      const std::string key = "client" + std::to_string(t);
      kl::Reply reply;
      for (int i = 0; i < 20; ++i) {
        const std::string value = key + "-" + std::to_string(i);
        if (!client->command({"SET", key, value}, &reply).ok() ||
            !client->command({"GET", key}, &reply).ok()) {
          ++failed;
          return;
        }
        if (reply.text != value) ++wrong;
        if (!client->command({"INCR", key + ":count"}, &reply).ok()) {
          ++failed;
          return;
        }
        if (reply.integer != i + 1) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(failed == 0);
  CHECK(wrong == 0);
  CHECK(server.store_->size() == 2 * kClients);
  CHECK(eventually([&] { return server.clients() == 0; }));
}

TEST_CASE("past max clients a client is told so and closed; a freed place is taken again") {
  kl::ServerConfig config;
  config.max_clients = 2;
  TestServer server(config);
  auto first = server.connect();
  auto second = server.connect();
  CHECK(run(*first, {"PING"}).text == "PONG");
  CHECK(run(*second, {"PING"}).text == "PONG");
  auto third = server.connect();  // the kernel completes the handshake; the server refuses
  kl::Reply reply;
  REQUIRE(third->read(&reply).ok());
  CHECK(reply.type == Type::kError);
  CHECK(reply.text == "ERR max number of clients reached");
  CHECK(closed_by_server(*third));
  CHECK(info_field(*first, "rejected_connections") == "1");

  first.reset();
  REQUIRE(eventually([&] { return server.clients() == 1; }));
  auto fourth = server.connect();
  CHECK(run(*fourth, {"PING"}).text == "PONG");
}

TEST_CASE("an idle client is closed after the timeout; a busy one is not") {
  kl::ServerConfig config;
  config.timeout_seconds = 1;
  TestServer server(config);
  auto idle = server.connect();
  auto busy = server.connect();
  CHECK(run(*idle, {"PING"}).text == "PONG");
  // The busy client speaks every 100 ms for 2.5 s, well inside its timeout each time.
  for (int i = 0; i < 25; ++i) {
    CHECK(run(*busy, {"PING"}).text == "PONG");
    std::this_thread::sleep_for(100ms);
  }
  CHECK(closed_by_server(*idle));
  CHECK(run(*busy, {"PING"}).text == "PONG");
  CHECK(info_field(*busy, "connected_clients") == "1");
}

TEST_CASE("with a password, nothing but AUTH works until it is given, and strangers stay small") {
  kl::ServerConfig config;
  config.requirepass = "s3cret";
  TestServer server(config);
  auto client = server.connect();
  kl::Reply reply = run(*client, {"SET", "a", "b"});
  CHECK(reply.type == Type::kError);
  CHECK(reply.text == "NOAUTH Authentication required.");
  CHECK(run(*client, {"AUTH", "wrong"}).text ==
        "WRONGPASS invalid username-password pair or user is disabled.");
  CHECK(run(*client, {"AUTH", "s3cret"}).text == "OK");
  const std::string big(100 * 1024, 'x');  // more than a stranger may send
  CHECK(run(*client, {"SET", "a", big}).text == "OK");
  CHECK(run(*client, {"STRLEN", "a"}).integer == 100 * 1024);

  // Before AUTH, a request with a 100 KiB argument is a protocol error, not a buffer.
  auto stranger = server.connect();
  stranger->send({"AUTH", big});
  REQUIRE(stranger->read(&reply).ok());
  CHECK(reply.type == Type::kError);
  CHECK(reply.text.find("Protocol error") != std::string::npos);
  CHECK(closed_by_server(*stranger));
  CHECK(server.store_->get("a")->size() == big.size());
}

// The server answers a request it will not read to the end, and closes; the client is
// still sending, and its send fails with "Connection reset". The server's reply says
// why, and must reach the caller.
TEST_CASE("a request refused while it is still being sent gets the server's error, not a reset") {
  const std::string huge(32 << 20, 'x');  // far more than the sockets' buffers hold
  for (const bool stranger : {true, false}) {
    CAPTURE(stranger);
    kl::ServerConfig config;
    if (stranger) config.requirepass = "s3cret";  // before AUTH, 16 KiB at most
    else config.limits.max_bulk_bytes = 1024;
    TestServer server(config);
    auto client = server.connect();
    kl::Reply reply;
    kl::Status s = client->command({stranger ? "AUTH" : "SET", stranger ? huge : "k", huge}, &reply);
    INFO(s.to_string());
    REQUIRE(s.ok());
    CHECK(reply.type == Type::kError);
    CHECK(reply.text.find("Protocol error: invalid bulk length") != std::string::npos);
    CHECK_FALSE(client->command({"PING"}, &reply).ok());  // and the connection is gone
  }
}

TEST_CASE("a client that never reads its replies is closed, and does not stall the others") {
  kl::ServerConfig config;
  config.max_output_bytes = 64 * 1024;
  config.send_timeout_seconds = 1;
  TestServer server(config);
  REQUIRE(server.store_->set("big", std::string(256 * 1024, 'v')).ok());

  // A raw socket: a Client would read replies while it sends, and this one must not.
  kl::detail::Socket greedy;
  REQUIRE(kl::detail::connect_tcp("127.0.0.1", server.server->port(), 5000, &greedy).ok());
  std::string requests;
  for (int i = 0; i < 2000; ++i) requests += "GET big\r\n";  // 500 MiB of replies
  std::size_t sent = 0;
  for (int i = 0; i < 100 && sent < requests.size(); ++i) {
    std::size_t n = 0;
    if (!kl::detail::send_some(greedy.fd(), std::string_view(requests).substr(sent), &n).ok()) break;
    sent += n;
    std::this_thread::sleep_for(5ms);
  }

  auto polite = server.connect();
  for (int i = 0; i < 50; ++i) REQUIRE(run(*polite, {"INCR", "n"}).integer == i + 1);
  CHECK(eventually([&] { return server.clients() == 1; }));
  CHECK(server.noted("took none of its"));
  CHECK(run(*polite, {"GET", "n"}).text == "50");
}

TEST_CASE("before AUTH, a client that leaves its replies unread is closed past a few KiB") {
  kl::ServerConfig config;
  config.requirepass = "s3cret";
  TestServer server(config);
  // "GET\n" earns a 51-byte arity error (answered before the AUTH check, as Redis does):
  // without the cap, a stranger that never reads makes the server hold 13 times what it sends.
  kl::detail::Socket stranger;
  REQUIRE(kl::detail::connect_tcp("127.0.0.1", server.server->port(), 5000, &stranger).ok());
  std::string requests;
  for (int i = 0; i < 512 * 1024; ++i) requests += "GET\n";  // 2 MiB: 26 MiB of errors
  std::size_t sent = 0;
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (sent < requests.size() && std::chrono::steady_clock::now() < until &&
         !server.noted("before AUTH")) {
    std::size_t n = 0;
    if (!kl::detail::send_some(stranger.fd(), std::string_view(requests).substr(sent), &n).ok()) {
      break;  // closed by the server: what the test waits for
    }
    sent += n;
    if (n == 0) std::this_thread::sleep_for(1ms);
  }
  CHECK(eventually([&] { return server.noted("before AUTH"); }));
  CHECK(eventually([&] { return server.clients() == 0; }));
  auto owner = server.connect();
  REQUIRE(run(*owner, {"AUTH", "s3cret"}).text == "OK");
  // The most any client held: the stranger's capped batch, or the owner's own replies.
  const std::string peak = info_field(*owner, "client_max_output_bytes");
  REQUIRE_FALSE(peak.empty());
  CHECK(std::stoull(peak) <= 8 * 1024);
  CHECK(info_field(*owner, "clients_output_bytes") == "0");
}

TEST_CASE("a reply of many values past the client's output limit is an error, and one value is not bounded") {
  kl::ServerConfig config;
  config.max_output_bytes = 1024 * 1024;
  TestServer server(config);
  REQUIRE(server.store_->set("big", std::string(300 * 1024, 'v')).ok());
  REQUIRE(server.store_->set("huge", std::string(3 * 1024 * 1024, 'h')).ok());
  for (int i = 0; i < 20; ++i) {
    REQUIRE(server.store_->set("k" + std::to_string(i) + std::string(60 * 1024, 'k'), "v").ok());
  }
  auto client = server.connect();
  kl::Reply reply = run(*client, {"MGET", "big", "big", "big", "big"});  // 1.2 MiB
  CHECK(reply.type == Type::kError);
  CHECK(reply.text.find("ERR the reply to 'mget' would exceed the client output limit") == 0);
  CHECK(run(*client, {"MGET", "big", "big", "nothing"}).elements.size() == 3);  // 600 KiB: fits
  CHECK(run(*client, {"MGET", "huge"}).elements.at(0).text.size() == 3 * 1024 * 1024);
  CHECK(run(*client, {"GET", "huge"}).text.size() == 3 * 1024 * 1024);
  reply = run(*client, {"KEYS", "k*"});  // 20 keys of 60 KiB
  CHECK(reply.type == Type::kError);
  CHECK(reply.text.find("'keys' would exceed the client output limit") != std::string::npos);
  CHECK(run(*client, {"KEYS", "k1[0-4]*"}).elements.size() == 5);
  CHECK(run(*client, {"PING"}).text == "PONG");  // the connection goes on
}

TEST_CASE("past max_clients_output_bytes, the client holding the most replies is closed, not the others") {
  kl::ServerConfig config;
  config.max_clients_output_bytes = 8 * 1024 * 1024;
  TestServer server(config);
  REQUIRE(server.store_->set("big", std::string(1024 * 1024, 'v')).ok());
  auto polite = server.connect();
  CHECK(run(*polite, {"GET", "big"}).text.size() == 1024 * 1024);  // one reply fits

  // Within its own output limit (64 MiB) the greedy client may buffer; together with the
  // others it may not pass the server-wide budget.
  kl::detail::Socket greedy;
  REQUIRE(kl::detail::connect_tcp("127.0.0.1", server.server->port(), 5000, &greedy).ok());
  std::string requests;
  for (int i = 0; i < 200; ++i) requests += "GET big\r\n";  // 200 MiB of replies
  std::size_t n = 0;
  REQUIRE(kl::detail::send_some(greedy.fd(), requests, &n).ok());
  REQUIRE(n == requests.size());

  CHECK(eventually([&] { return server.noted("max_clients_output_bytes"); }));
  CHECK(eventually([&] { return server.clients() == 1; }));
  CHECK(info_field(*polite, "evicted_clients") == "1");
  CHECK(std::stoull(info_field(*polite, "client_max_output_bytes")) <= 10 * 1024 * 1024);
  CHECK(run(*polite, {"GET", "big"}).text.size() == 1024 * 1024);
}

TEST_CASE("stop() interrupts a long KEYS between keys, and its client is told why") {
  TestServer server;
  // Each key costs the glob about 50 ms here (more under a sanitizer): 600 of them would
  // hold stop() half a minute, where the check between keys lets it go at once.
  for (int i = 0; i < 600; ++i) {
    REQUIRE(server.store_->set(std::to_string(i) + std::string(16 * 1024 - 8, 'a'), "v").ok());
  }
  const std::string pattern = "*" + std::string(8 * 1024, 'a') + "b";
  auto client = server.connect();
  const std::uint64_t before = server.server->counters()->total_commands.load();
  kl::Reply reply;
  kl::Status status;
  std::thread keys([&] { status = client->command({"KEYS", pattern}, &reply); });
  CHECK(eventually([&] { return server.server->counters()->total_commands.load() > before; }));
  std::this_thread::sleep_for(50ms);  // inside the walk, most likely; either way it must end
  const auto stopping = std::chrono::steady_clock::now();
  CHECK(server.server->stop().ok());
  CHECK(std::chrono::steady_clock::now() - stopping < 15s);  // generous: a key is ~50 ms
  keys.join();
  REQUIRE(status.ok());
  CHECK(reply.type == Type::kError);
  CHECK(reply.text.find("shutting down") != std::string::npos);
}

TEST_CASE("a client that hangs up halfway through a command changes nothing") {
  TestServer server;
  {
    auto quitter = server.connect();
    quitter->send_raw("*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$100\r\nonly some of it");
    REQUIRE(quitter->flush().ok());
  }  // closed here, mid-value
  CHECK(eventually([&] { return server.clients() == 0; }));
  auto client = server.connect();
  CHECK(run(*client, {"EXISTS", "half"}).integer == 0);
  CHECK(run(*client, {"PING"}).text == "PONG");
}

TEST_CASE("a client that sends and closes its side still gets every reply") {
  TestServer server;
  kl::detail::Socket socket;
  REQUIRE(kl::detail::connect_tcp("127.0.0.1", server.server->port(), 5000, &socket).ok());
  const std::string requests = "SET a 1\r\nINCR a\r\nGET a\r\n";
  std::size_t n = 0;
  REQUIRE(kl::detail::send_some(socket.fd(), requests, &n).ok());
  REQUIRE(n == requests.size());
  REQUIRE(::shutdown(socket.fd(), SHUT_WR) == 0);  // as `nc -N` does at the end of its input
  std::string replies;
  CHECK(eventually([&] {
    char buffer[256];
    std::size_t got = 0;
    bool closed = false;
    if (!kl::detail::receive_some(socket.fd(), buffer, sizeof(buffer), &got, &closed).ok()) return true;
    replies.append(buffer, got);
    return closed;
  }));
  CHECK(replies == "+OK\r\n:2\r\n$1\r\n2\r\n");
}

TEST_CASE("a thousand idle connections are held, counted and let go") {
  TestServer server;
  std::vector<std::unique_ptr<kl::Client>> idle;
  for (int i = 0; i < 1000; ++i) idle.push_back(server.connect());
  // Starting 1000 threads takes a while under ThreadSanitizer: a hang guard, not a timing.
  CHECK(eventually([&] { return server.clients() == 1000; }, 120s));
  CHECK(info_field(*idle.back(), "connected_clients") == "1000");
  CHECK(run(*idle.front(), {"PING"}).text == "PONG");
  idle.clear();
  CHECK(eventually([&] { return server.clients() == 0; }, 120s));
}

TEST_CASE("INFO reports the real figures: clients, commands, keys, log bytes, compactions") {
  kltest::TempDir dir;
  kl::Options options;
  options.dir = dir.path();
  auto store = kltest::open_store(options);
  TestServer server(kl::ServerConfig(), store.get());
  auto a = server.connect();
  auto b = server.connect();
  for (int i = 0; i < 5; ++i) run(*a, {"SET", "k" + std::to_string(i), "v"});
  CHECK(run(*a, {"COMPACT"}).text == "OK");
  const kl::Stats stats = store->stats();
  CHECK(info_field(*b, "connected_clients") == "2");
  CHECK(info_field(*b, "total_commands_processed") == "8");  // 5 SET, COMPACT, 2 INFO
  CHECK(info_field(*b, "log_bytes") == std::to_string(stats.log_bytes));
  CHECK(info_field(*b, "compactions") == "1");
  CHECK(info_field(*b, "last_compaction_status") == "ok");
  CHECK(info_field(*b, "db0") == "keys=5,expires=0,avg_ttl=0");
  CHECK(info_field(*b, "tcp_port") == std::to_string(server.server->port()));
  CHECK(std::stoull(info_field(*b, "total_net_input_bytes")) > 0);
  server.server.reset();
  CHECK(store->close().ok());
}

TEST_CASE("SHUTDOWN wakes wait_for_shutdown; stop() ends every connection") {
  TestServer server;
  auto watcher = server.connect();
  auto client = server.connect();
  std::thread waiting([&] { server.server->wait_for_shutdown(); });
  client->send({"SHUTDOWN"});
  REQUIRE(client->flush().ok());
  waiting.join();  // returns because of SHUTDOWN, not because of a stop
  CHECK(closed_by_server(*client));
  CHECK(run(*watcher, {"PING"}).text == "PONG");  // the rest is the owner's decision
  CHECK(server.server->stop().ok());
  CHECK(closed_by_server(*watcher));
  kl::Status s = kl::Client::connect("127.0.0.1", server.server->port(), &client, 2s);
  CHECK_FALSE(s.ok());
}

TEST_CASE("stop() with clients writing returns promptly, and every acknowledged write is in the log") {
  kltest::TempDir dir;
  kl::Options options;
  options.dir = dir.path();
  auto store = kltest::open_store(options);
  TestServer server(kl::ServerConfig(), store.get());
  constexpr int kWriters = 8;
  std::vector<int> acknowledged(kWriters, -1);
  std::atomic<int> started{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      std::unique_ptr<kl::Client> client;
      if (!kl::Client::connect("127.0.0.1", server.server->port(), &client).ok()) return;
      ++started;
      kl::Reply reply;
      for (int i = 0; i < 1000000; ++i) {  // until the server goes away
        const std::string key = "w" + std::to_string(t) + ":" + std::to_string(i);
        if (!client->command({"SET", key, "x"}, &reply).ok() || reply.text != "OK") return;
        acknowledged[static_cast<std::size_t>(t)] = i;
      }
    });
  }
  // One more client fills its pipe with requests and reads nothing: stop() must not wait
  // for it beyond the grace period.
  kl::detail::Socket stuck;
  REQUIRE(kl::detail::connect_tcp("127.0.0.1", server.server->port(), 5000, &stuck).ok());
  std::string requests;
  for (int i = 0; i < 100000; ++i) requests += "PING\r\n";
  std::size_t ignored = 0;
  REQUIRE(kl::detail::send_some(stuck.fd(), requests, &ignored).ok());

  REQUIRE(eventually([&] { return started == kWriters; }));
  std::this_thread::sleep_for(200ms);
  const auto before = std::chrono::steady_clock::now();
  CHECK(server.server->stop().ok());
  CHECK(std::chrono::steady_clock::now() - before < 30s);  // a hang guard, not a benchmark
  for (std::thread& writer : writers) writer.join();
  server.server.reset();
  REQUIRE(store->close().ok());

  store = kltest::open_store(options);
  for (int t = 0; t < kWriters; ++t) {
    CAPTURE(t);
    CHECK(acknowledged[static_cast<std::size_t>(t)] >= 0);
    for (int i = 0; i <= acknowledged[static_cast<std::size_t>(t)]; ++i) {
      if (!store->exists("w" + std::to_string(t) + ":" + std::to_string(i))) {
        FAIL_CHECK("acknowledged write " << i << " is missing");
        break;
      }
    }
  }
}

TEST_CASE("a second server on a taken port is refused with Busy, naming the address") {
  TestServer first;
  kl::Store store;
  kl::ServerConfig config;
  config.port = first.server->port();
  kl::Server second(&store, test_support::with_test_io(config));
  kl::Status s = second.start();
  CHECK(s.code() == kl::Status::Code::kBusy);
  CHECK(s.message().find("127.0.0.1:" + std::to_string(config.port)) != std::string::npos);
}

TEST_CASE("the server listens on IPv6 when the bind address is one") {
  kl::Store store;
  kl::ServerConfig config;
  config.bind = "::1";
  config.port = 0;
  kl::Server server(&store, test_support::with_test_io(config));
  kl::Status s = server.start();
  if (!s.ok()) {
    MESSAGE("skipped: this machine has no IPv6 loopback (" << s.to_string() << ")");
    return;
  }
  std::unique_ptr<kl::Client> client;
  REQUIRE(kl::Client::connect("::1", server.port(), &client).ok());
  CHECK(run(*client, {"PING"}).text == "PONG");
}

TEST_CASE("when the open-files limit cannot fit max clients, max clients is lowered and said so") {
  // In a child: lowering the hard limit cannot be undone without root.
  std::fflush(nullptr);  // or the child would print the parent's buffered output again
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    rlimit limit{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(3);
    kl::Store store;
    kl::ServerConfig config;
    config.port = 0;
    config.max_clients = 1000;
    std::string note;
    config.info_log = [&](const std::string& message) { note = message; };
    kl::Server server(&store, test_support::with_test_io(config));
    if (!server.start().ok()) ::_exit(4);
    if (note.find("max clients lowered from 1000 to 32") == std::string::npos) ::_exit(5);
    std::unique_ptr<kl::Client> client;
    kl::Reply reply;
    if (!kl::Client::connect("127.0.0.1", server.port(), &client).ok() ||
        !client->command({"CONFIG", "GET", "maxclients"}, &reply).ok() ||
        reply.elements.size() != 2 || reply.elements[1].text != "32") {
      ::_exit(6);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("redis-cli and redis-benchmark work against the server") {
  if (!have("redis-cli") || !have("redis-benchmark")) {
    MESSAGE("skipped: redis-cli or redis-benchmark is missing (apt-get install redis-tools)");
    return;
  }
  TestServer server;
  const std::string cli = "redis-cli -h 127.0.0.1 -p " + std::to_string(server.server->port()) + " ";
  std::string out;
  CHECK(shell(cli + "SET greeting hello", &out) == 0);
  CHECK(out == "OK\n");
  CHECK(shell(cli + "GET greeting", &out) == 0);
  CHECK(out == "hello\n");
  CHECK(shell(cli + "INCRBY visits 5", &out) == 0);
  CHECK(out == "5\n");
  CHECK(shell(cli + "MGET greeting nothing", &out) == 0);
  CHECK(out == "hello\n\n");
  CHECK(shell(cli + "DBSIZE", &out) == 0);
  CHECK(out == "2\n");
  CHECK(shell(cli + "NOSUCH thing", &out) == 0);
  CHECK(out.find("ERR unknown command 'NOSUCH'") != std::string::npos);
  CHECK(shell("printf 'SET a 1\\nINCR a\\nGET a\\n' | " + cli, &out) == 0);  // its REPL
  CHECK(out == "OK\n2\n2\n");

  CHECK(shell("redis-benchmark -h 127.0.0.1 -p " + std::to_string(server.server->port()) +
                  " -t set,get,incr,ping -n 20000 -q 2>&1",
              &out) == 0);
  INFO(out);
  CHECK(out.find("SET: ") != std::string::npos);
  CHECK(out.find("GET: ") != std::string::npos);
  CHECK(out.find("INCR: ") != std::string::npos);
  CHECK(out.find("PING_MBULK: ") != std::string::npos);
  CHECK(out.find("rror") == std::string::npos);
  CHECK(shell(cli + "GET counter:__rand_int__", &out) == 0);  // every INCR counted
  CHECK(out == "20000\n");
}

}  // TEST_SUITE
