// Which I/O model the server tests run against. From chapter 14 the Server has two
// (ServerConfig::io): KEYSTONELIGHT_TEST_IO=threads or =events in the environment picks
// one, and without it the tests use the default. `make test` runs the server's suites
// once each way. Against the chapters before 13, which have one model, it does nothing.
#ifndef KEYSTONELIGHT_TESTS_SERVER_IO_HPP
#define KEYSTONELIGHT_TESTS_SERVER_IO_HPP

#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>

namespace test_support {

template <typename Config, typename = void>
struct HasIo : std::false_type {};
template <typename Config>
struct HasIo<Config, std::void_t<decltype(std::declval<Config&>().io)>> : std::true_type {};

// Sets config.io from KEYSTONELIGHT_TEST_IO, where the header has it; returns `config`.
template <typename Config>
Config with_test_io(Config config) {
  if constexpr (HasIo<Config>::value) {
    const char* io = std::getenv("KEYSTONELIGHT_TEST_IO");
    const std::string name = io ? io : "";
    if (name == "threads") config.io = Config::Io::kThreads;
    if (name == "events") config.io = Config::Io::kEvents;
  }
  return config;
}

}  // namespace test_support

#endif  // KEYSTONELIGHT_TESTS_SERVER_IO_HPP
