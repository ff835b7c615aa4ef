// Close-on-exec: no descriptor of the store or the server reaches a child process, even
// when a thread of the embedding program forks at the very moment another thread makes
// one. Setting FD_CLOEXEC with fcntl(2) after socket(2), accept(2) or pipe(2) leaves a
// window; a fork in it gives the child a descriptor that survives exec.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "keystonelight.hpp"
#include "support/server_io.hpp"
#include "support/temp_dir.hpp"

namespace kl = keystonelight;

namespace {

// The descriptors this process has open, from /proc/self/fd (Linux), or fds 0..1023.
std::set<int> open_descriptors() {
  std::set<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    const int own = ::dirfd(d);
    while (dirent* entry = ::readdir(d)) {
      if (entry->d_name[0] == '.') continue;
      const int fd = std::atoi(entry->d_name);
      if (fd != own) fds.insert(fd);
    }
    ::closedir(d);
    return fds;
  }
  for (int fd = 0; fd < 1024; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) fds.insert(fd);
  }
  return fds;
}

// The descriptors open without FD_CLOEXEC, which an exec would pass on.
std::set<int> inherited_by_exec() {
  std::set<int> fds;
  for (int fd : open_descriptors()) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags != -1 && (flags & FD_CLOEXEC) == 0) fds.insert(fd);
  }
  return fds;
}

}  // namespace

TEST_CASE("every descriptor of an open store, a server and its connections is close-on-exec") {
  const std::set<int> before = inherited_by_exec();  // the test runner's own (0, 1, 2)
  kltest::TempDir dir;
  kl::Options options;
  options.dir = dir.path();
  std::unique_ptr<kl::Store> store;
  REQUIRE(kl::Store::open(options, &store).ok());
  kl::ServerConfig config;
  config.port = 0;
  config.info_log = [](const std::string&) {};
  kl::Server server(store.get(), test_support::with_test_io(config));
  REQUIRE(server.start().ok());
  std::unique_ptr<kl::Client> client;
  REQUIRE(kl::Client::connect("127.0.0.1", server.port(), &client).ok());
  kl::Reply reply;
  REQUIRE(client->command({"SET", "k", "v"}, &reply).ok());  // the connection is accepted
  std::unique_ptr<kl::PidFile> pid_file;
  REQUIRE(kl::PidFile::acquire(dir.file("server.pid"), &pid_file).ok());

  CHECK(inherited_by_exec() == before);
  (void)server.stop();
}

// Forks again and again while another thread makes sockets and pipes. Each child looks
// at its descriptors at once (fcntl and _exit are safe after fork in a threaded process)
// and fails when one that the parent did not have before lacks FD_CLOEXEC.
TEST_CASE("a fork from another thread while sockets and pipes are made inherits none of them") {
  const std::set<int> before = inherited_by_exec();
  std::atomic<bool> done{false};
  std::thread maker([&] {
    while (!done) {
      kl::detail::Wakeup wakeup;
      (void)wakeup.open();
      kl::detail::Socket listener;
      int port = 0;
      if (!kl::detail::listen_tcp("127.0.0.1", 0, &listener, &port).ok()) continue;
      kl::detail::Socket connected;
      if (!kl::detail::connect_tcp("127.0.0.1", port, 1000, &connected).ok()) continue;
      kl::detail::Socket accepted;
      for (int i = 0; i < 100 && !accepted.valid(); ++i) {
        (void)kl::detail::accept_connection(listener.fd(), &accepted);
      }
    }
  });
  int leaks = 0;
  int forks = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < end && leaks == 0) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      for (int fd = 3; fd < 1024; ++fd) {
        const int flags = ::fcntl(fd, F_GETFD);
        if (flags != -1 && (flags & FD_CLOEXEC) == 0 && before.count(fd) == 0) ::_exit(1);
      }
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ++forks;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++leaks;
  }
  done = true;
  maker.join();
  INFO(forks << " forks");
  CHECK(leaks == 0);
}
