// Redis behaviours of the protocol that no chapter's story is about: SHUTDOWN's options,
// the argument limit for inline requests, FLUSHDB's place in the statistics, AUTH.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "support/store.hpp"
#include "support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

std::string run(kl::Dispatcher* dispatcher, kl::Session* session, const std::vector<std::string>& words) {
  std::string out;
  dispatcher->execute(words, session, &out);
  return out;
}

}  // namespace

TEST_SUITE("commands") {

TEST_CASE("SHUTDOWN takes NOSAVE, SAVE, NOW and FORCE; ABORT has no shutdown to cancel") {
  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  for (const auto& words : std::vector<std::vector<std::string>>{
           {"SHUTDOWN", "NOSAVE"}, {"SHUTDOWN", "save", "now", "force"}, {"SHUTDOWN"}}) {
    kl::Session session;
    CHECK(run(&dispatcher, &session, words).empty());  // no reply: the link closes
    CHECK(session.shutdown);
  }
  for (const auto& words : std::vector<std::vector<std::string>>{
           {"SHUTDOWN", "SAVE", "NOSAVE"}, {"SHUTDOWN", "LATER"}, {"SHUTDOWN", "ABORT", "NOW"}}) {
    kl::Session session;
    CHECK(run(&dispatcher, &session, words) == "-ERR syntax error\r\n");
    CHECK_FALSE(session.shutdown);
  }
  kl::Session session;
  CHECK(run(&dispatcher, &session, {"SHUTDOWN", "ABORT"}) == "-ERR No shutdown in progress.\r\n");
  CHECK_FALSE(session.shutdown);
}

TEST_CASE("a 1 MiB key works with every kind of command") {
  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  kl::Session session;
  const std::string key(std::size_t{1} << 20, 'k');
  CHECK(run(&dispatcher, &session, {"SET", key, "v", "PX", "100000"}) == "+OK\r\n");
  CHECK(run(&dispatcher, &session, {"APPEND", key, "w"}) == ":2\r\n");
  CHECK(run(&dispatcher, &session, {"GET", key}) == "$2\r\nvw\r\n");
  CHECK(run(&dispatcher, &session, {"KEYS", "k*k"}).size() == 4 + 10 + key.size() + 2);
  CHECK(run(&dispatcher, &session, {"RENAME", key, "short"}) == "+OK\r\n");
  CHECK(run(&dispatcher, &session, {"COPY", "short", key}) == ":1\r\n");
  CHECK(run(&dispatcher, &session, {"EXISTS", key, "short"}) == ":2\r\n");
}

TEST_CASE("a costly glob match gives up when the server stops, even inside one key") {
  // '*a*a…b' against a long run of 'a': each * is retried at every byte, about
  // 10^10 steps; the stop must end it at once, not when the key is done.
  const std::string pattern = std::string("*a").append(5000, 'a') + "*b";
  const std::string text(std::size_t{1} << 20, 'a');
  std::atomic<bool> stop{true};
  CHECK_FALSE(kl::detail::glob_match(pattern, text, &stop));
  CHECK(kl::detail::glob_match("*a*", text, &stop));  // a cheap match still answers
}

TEST_CASE("an inline request is held to max_args like an array") {
  kl::ProtocolLimits limits;
  limits.max_args = 3;
  kl::RequestParser parser(limits);
  std::size_t consumed = 0;
  std::vector<std::string> args;
  CHECK(parser.parse("SET k v\r\n", &consumed, &args) == kl::RequestParser::Result::kCommand);
  kl::RequestParser strict(limits);
  CHECK(strict.parse("MSET a 1 b 2\r\n", &consumed, &args) == kl::RequestParser::Result::kError);
  CHECK(strict.error().find("too many arguments in inline request") != std::string::npos);
}

TEST_CASE("FLUSHDB empties the log without counting as a compaction") {
  kltest::TempDir dir;
  kl::Options options;
  options.dir = dir.path();
  options.info_log = [](const std::string&) {};
  auto store = kltest::open_store(options);
  REQUIRE(store->set("k", "v").ok());
  kl::Dispatcher dispatcher(store.get());
  kl::Session session;
  CHECK(run(&dispatcher, &session, {"FLUSHDB"}) == "+OK\r\n");
  CHECK(store->size() == 0);
  CHECK(store->stats().compactions == 0);
  CHECK(store->stats().log_bytes == kl::kFileHeaderBytes);
  REQUIRE(store->compact().ok());
  CHECK(store->stats().compactions == 1);
}

TEST_CASE("AUTH accepts the password and nothing that merely begins or ends like it") {
  kl::Store store;
  kl::ServerConfig config;
  config.requirepass = "correct horse";
  kl::Dispatcher dispatcher(&store, config);
  kl::Session session;
  const std::string wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
  for (const char* guess : {"", "correct", "correct horse ", "correct horsf", "Correct horse",
                            "correct horsecorrect horse"}) {
    CHECK(run(&dispatcher, &session, {"AUTH", guess}) == wrong);
  }
  CHECK(run(&dispatcher, &session, {"AUTH", "someone", "correct horse"}) == wrong);
  CHECK_FALSE(session.authenticated);
  CHECK(run(&dispatcher, &session, {"AUTH", "default", "correct horse"}) == "+OK\r\n");
  CHECK(session.authenticated);
}

}  // TEST_SUITE
