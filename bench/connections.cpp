// bench/connections.cpp: many connections at once, for `make bench`.
//
//   connections PORT N PID [WINDOW]
//
// Opens N connections to 127.0.0.1:PORT, sends PING on each as soon as it is connected
// and waits for the answer (any line: +PONG, or the null server's +OK). At most WINDOW
// (default 500) connections are between connect() and their answer at any moment: below
// the 511 of a listen backlog, so what is timed is how fast the server accepts and answers,
// not the kernel's one-second SYN retransmission after a full backlog. WINDOW 0 opens all
// N at once, as a crowd of clients arriving together would. Then, every
// connection open and idle, it reads the server's VmRSS from /proc/PID/status again.
// Prints one line: "MS BYTES" (the time until every connection had its answer, and the
// growth of the server's RSS per connection), or an error on stderr with exit status 1.
// Needs N + a few file descriptors: the caller raises `ulimit -n`.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

long rss_kb(const std::string& pid) {
  std::ifstream status("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "connections: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) fail("usage: connections PORT N PID [WINDOW]");
  const int port = std::atoi(argv[1]);
  const long n = std::atol(argv[2]);
  const std::string pid = argv[3];
  long window = argc > 4 ? std::atol(argv[4]) : 500;
  if (window <= 0) window = n;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const char ping[] = "PING\r\n";
  int ep = epoll_create1(0);
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(n));
  long opened = 0, answered = 0;
  epoll_event events[512];
  char buf[256];

  const long rss_before = rss_kb(pid);
  if (rss_before < 0) fail("no process " + pid);
  const auto start = std::chrono::steady_clock::now();
  while (answered < n) {
    while (opened < n && opened - answered < window) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (fd < 0) fail("socket " + std::to_string(opened) + ": " + std::strerror(errno));
      int r = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      if (r != 0 && errno != EINPROGRESS)
        fail("connect " + std::to_string(opened) + ": " + std::strerror(errno));
      epoll_event ev{};
      ev.events = EPOLLOUT;  // writable once connected: then PING
      ev.data.fd = fd;
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      fds.push_back(fd);
      ++opened;
    }
    int ready = epoll_wait(ep, events, 512, 1000);
    if (std::chrono::steady_clock::now() > deadline)
      fail(std::to_string(answered) + " of " + std::to_string(n) + " answered after 120 s");
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      if (events[i].events & EPOLLOUT) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error != 0) fail(std::string("connect: ") + std::strerror(error));
        if (write(fd, ping, sizeof ping - 1) != static_cast<ssize_t>(sizeof ping - 1))
          fail(std::string("write: ") + std::strerror(errno));
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        continue;
      }
      ssize_t got = read(fd, buf, sizeof buf);
      if (got == 0) fail("the server closed connection " + std::to_string(answered + 1));
      if (got < 0) {
        if (errno == EAGAIN) continue;
        fail(std::string("read: ") + std::strerror(errno));
      }
      if (std::memchr(buf, '\n', static_cast<std::size_t>(got)) == nullptr) continue;
      epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);  // answered: it stays open, idle
      ++answered;
    }
  }
  const auto took = std::chrono::steady_clock::now() - start;
  // Let a server finish what it does per connection (a thread's start, a buffer's release).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long rss_after = rss_kb(pid);
  std::printf("%ld %ld\n",
              static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
              (rss_after - rss_before) * 1024 / n);
  for (int fd : fds) close(fd);
  return 0;
}
