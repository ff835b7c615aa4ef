// Chapter 14's example: the same store served both ways, chapter 8's thread per
// connection and this chapter's event loops, to the same clients; what each client sees
// is the same, and what differs is how many threads the server needs for them.
//
//   ./example
//
// It prints what the clients see, the same for both models whatever the machine, and
// nothing about timing: run the server program with --io threads and --io events under
// redis-benchmark to compare speeds (exercise 1).
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

// The threads of this process, from /proc (0 where there is none).
int threads_now() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.compare(0, 8, "Threads:") == 0) return std::stoi(line.substr(8));
  }
  return 0;
}

bool run(kl::ServerConfig::Io io, const char* name) {
  kl::Store store;  // in memory
  kl::ServerConfig config;
  config.port = 0;  // any free port
  config.io = io;
  config.loops = 2;  // under Io::kEvents; the default, 0, is one per core
  kl::Server server(&store, config);
  if (kl::Status s = server.start(); !s.ok()) {
    std::cerr << "cannot start the server: " << s.to_string() << "\n";
    return false;
  }
  const int idle_threads = threads_now();

  // 100 clients, each with its own counter; the first also pipelines 10 000 INCRs.
  std::vector<std::unique_ptr<kl::Client>> clients(100);
  kl::Reply reply;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    if (!kl::Client::connect("127.0.0.1", server.port(), &clients[i]).ok() ||
        !clients[i]->command({"INCRBY", "counter:" + std::to_string(i), std::to_string(i)}, &reply).ok()) {
      return false;
    }
  }
  for (int i = 0; i < 10000; ++i) clients[0]->send({"INCR", "hits"});
  if (!clients[0]->flush().ok()) return false;
  for (int i = 0; i < 10000; ++i) {
    if (!clients[0]->read(&reply).ok()) return false;
  }
  const int busy_threads = threads_now();

  std::cout << "-- " << name << "\n";
  std::cout << "last reply of 10000 pipelined INCRs: " << reply.integer << "\n";
  if (!clients[99]->command({"GET", "counter:99"}, &reply).ok()) return false;
  std::cout << "GET counter:99: " << reply.text << "\n";
  if (!clients[1]->command({"DBSIZE"}, &reply).ok()) return false;
  std::cout << "DBSIZE: " << reply.integer << "\n";
  std::cout << "connected_clients: " << server.counters()->connected_clients.load() << "\n";
  // Thread per connection: one more thread per client. Event loops: none.
  std::cout << "threads added for 100 clients: "
            << (busy_threads - idle_threads >= 100 ? "one per client" : "none") << "\n";
  clients.clear();
  const bool stopped = server.stop().ok();
  std::cout << "stopped: " << (stopped ? "yes" : "no") << "\n";
  return stopped;
}

}  // namespace

int main() {
  if (!run(kl::ServerConfig::Io::kThreads, "thread per connection (chapter 8)")) return 1;
  if (!run(kl::ServerConfig::Io::kEvents, "two event loops (chapter 14)")) return 1;
  return 0;
}
