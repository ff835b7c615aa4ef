// Chapter 1: what the in-memory map promises. These tests run against this chapter's
// snapshot, every later one, and the final header: later chapters must keep every promise.
#include <doctest/doctest.h>

#include <string>

#include "keystonelight.hpp"

using keystonelight::Status;
using keystonelight::Store;

TEST_SUITE("chapter 1: in-memory map") {

TEST_CASE("a new store is empty and a missing key reads as nullopt") {
  Store store;
  CHECK(store.size() == 0);
  CHECK(store.get("nothing") == std::nullopt);
  CHECK_FALSE(store.exists("nothing"));
  CHECK(store.entries().empty());
}

TEST_CASE("set then get returns the value, and set again replaces it") {
  Store store;
  REQUIRE(store.set("language", "C++").ok());
  CHECK(store.get("language") == "C++");
  CHECK(store.exists("language"));
  REQUIRE(store.set("language", "C++17").ok());
  CHECK(store.get("language") == "C++17");
  CHECK(store.size() == 1);
}

TEST_CASE("del removes a key and says whether it was there") {
  Store store;
  REQUIRE(store.set("a", "1").ok());
  bool existed = false;
  REQUIRE(store.del("a", &existed).ok());
  CHECK(existed);
  CHECK(store.get("a") == std::nullopt);
  CHECK(store.size() == 0);

  REQUIRE(store.del("a", &existed).ok());
  CHECK_FALSE(existed);
  REQUIRE(store.del("never-set").ok());  // the out-parameter is optional
}

TEST_CASE("keys and values are arbitrary bytes: NUL, CR, LF and high bytes round-trip") {
  Store store;
  const std::string key("k\0e\r\ny", 6);
  const std::string value("\0\r\n\xff\x80 tail", 10);
  REQUIRE(store.set(key, value).ok());
  REQUIRE(store.get(key).has_value());
  CHECK(*store.get(key) == value);
  CHECK(store.get(key)->size() == 10);
  // A key that differs only after the NUL is a different key.
  CHECK(store.get(std::string("k\0f", 3)) == std::nullopt);
  CHECK(store.get("k") == std::nullopt);
}

TEST_CASE("the empty key and the empty value are ordinary values, not absence") {
  Store store;
  REQUIRE(store.set("", "empty key").ok());
  REQUIRE(store.set("empty value", "").ok());
  CHECK(store.get("") == "empty key");
  REQUIRE(store.get("empty value").has_value());
  CHECK(store.get("empty value")->empty());
  CHECK(store.exists("empty value"));
  CHECK(store.size() == 2);
}

TEST_CASE("a value of one mebibyte is stored whole") {
  Store store;
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 % 251);
  REQUIRE(store.set("big", big).ok());
  CHECK(store.get("big") == big);
}

TEST_CASE("a value returned by get is a copy that outlives later changes") {
  Store store;
  REQUIRE(store.set("k", "before").ok());
  std::optional<std::string> seen = store.get("k");
  REQUIRE(store.set("k", "after").ok());
  REQUIRE(store.del("k").ok());
  CHECK(seen == "before");
}

TEST_CASE("entries lists every pair exactly once") {
  Store store;
  for (int i = 0; i < 100; ++i) {
    REQUIRE(store.set("key" + std::to_string(i), "value" + std::to_string(i)).ok());
  }
  REQUIRE(store.del("key7").ok());
  auto entries = store.entries();
  CHECK(entries.size() == 99);
  std::size_t matched = 0;
  for (const auto& [key, value] : entries) {
    CHECK(key != "key7");
    CHECK(value == "value" + key.substr(3));
    ++matched;
  }
  CHECK(matched == store.size());
}

TEST_CASE("Status says OK by default and names its code and message otherwise") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.to_string() == "OK");
  Status bad = Status::io_error("write data/log: No space left on device");
  CHECK_FALSE(bad.ok());
  CHECK(bad.code() == Status::Code::kIOError);
  CHECK(bad.to_string() == "IO error: write data/log: No space left on device");
  CHECK(Status::corruption("x").to_string() == "Corruption: x");
  CHECK(Status::invalid_argument("x").to_string() == "Invalid argument: x");
  CHECK(Status::busy("x").to_string() == "Busy: x");
}

}  // TEST_SUITE
