// Chapter 8's example: the store behind a TCP server that redis-cli, redis-benchmark and
// nc can talk to.
//
//   ./example [PORT [DIR]]
//
// PORT defaults to 6380 (0 picks a free one); without DIR the store lives in memory.
// The server runs until a client sends SHUTDOWN. Ctrl-C kills it at once: every write it
// acknowledged is in the log already, and chapter 9 teaches it to stop gracefully instead.
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

int main(int argc, char** argv) {
  if (argc > 3) {
    std::cerr << "usage: " << argv[0] << " [PORT [DIR]]\n";
    return 2;
  }
  kl::Options options;
  options.dir = argc > 2 ? argv[2] : "";
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) {
    std::cerr << "cannot open the store: " << s.to_string() << "\n";
    return 1;
  }

  kl::ServerConfig config;
  config.port = argc > 1 ? std::atoi(argv[1]) : 6380;
  kl::Server server(store.get(), config);
  if (kl::Status s = server.start(); !s.ok()) {
    std::cerr << "cannot start the server: " << s.to_string() << "\n";
    return 1;
  }
  std::cout << "listening on " << config.bind << ":" << server.port() << " with "
            << (options.dir.empty() ? "a store in memory" : "the store in " + options.dir)
            << "; send SHUTDOWN to stop" << std::endl;

  server.wait_for_shutdown();
  kl::Status stopped = server.stop();  // in-flight replies go out, every thread is joined
  kl::Status closed = store->close();
  std::cout << "stopped after " << server.counters()->total_commands.load() << " commands"
            << std::endl;
  if (!stopped.ok() || !closed.ok()) {
    std::cerr << (stopped.ok() ? closed : stopped).to_string() << "\n";
    return 1;
  }
  return 0;
}
