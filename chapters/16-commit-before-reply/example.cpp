// Chapter 16's example: a write's record waits in the batch until someone needs it
// durable, and then everything that waited goes to the file in one write(2).
//
//   ./example
//
// It writes in ./example-data (removed first) and prints the log's size on disk as the
// batch waits and after it is committed; the output is the same on every machine.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

std::uintmax_t log_size(const std::string& dir) {
  return std::filesystem::file_size(dir + "/keystonelight.log");
}

}  // namespace

int main() {
  const std::string dir = "example-data";
  std::filesystem::remove_all(dir);
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kAlways;
  std::unique_ptr<kl::Store> store;
  if (kl::Status s = kl::Store::open(options, &store); !s.ok()) {
    std::cerr << s.to_string() << "\n";
    return 1;
  }

  // A Deferred: the calls of this thread return without waiting for the file.
  {
    kl::Store::Deferred deferred(store.get());
    for (int i = 0; i < 1000; ++i) {
      (void)store->set("user:" + std::to_string(1000 + i), "{\"visits\": 0}");
    }
    std::cout << "1000 sets applied; the log holds " << log_size(dir) << " bytes (its header)\n";
    std::cout << "a get sees them already: " << *store->get("user:1999") << "\n";
    if (kl::Status s = deferred.commit(); !s.ok()) {
      std::cerr << s.to_string() << "\n";
      return 1;
    }
    std::cout << "after commit(), one write(2) and one fsync: " << log_size(dir) << " bytes\n";
  }

  // A server commits once per pass: 100 pipelined INCRs, then their 100 replies.
  kl::ServerConfig config;
  config.port = 0;  // any free port
  config.loops = 1;
  kl::Server server(store.get(), config);
  std::unique_ptr<kl::Client> client;
  if (!server.start().ok() || !kl::Client::connect("127.0.0.1", server.port(), &client).ok()) {
    std::cerr << "cannot start the server or connect to it\n";
    return 1;
  }
  for (int i = 0; i < 100; ++i) client->send({"INCR", "visits"});
  kl::Reply reply;
  if (!client->flush().ok()) return 1;
  for (int i = 0; i < 100; ++i) {
    if (!client->read(&reply).ok()) return 1;
  }
  std::cout << "the 100th INCR replied " << reply.integer << "; the log holds " << log_size(dir)
            << " bytes\n";
  (void)server.stop();
  return store->close().ok() ? 0 : 1;
}
