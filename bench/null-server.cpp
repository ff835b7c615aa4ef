// bench/null-server.cpp: the ceiling of `make bench`. One thread, epoll, and nothing else:
// every request (a RESP command, or an inline command line) is answered "+OK", whatever it
// asks. It stores nothing and parses only enough to count requests, so what a client
// measures against it is the cost of the client, the loopback and the system calls
// themselves; a real server can approach it, not pass it.
//
//   null-server [PORT]     listens on 127.0.0.1:PORT (0, the default, picks a free one)
//                          and prints "listening on 127.0.0.1:PORT"; SIGTERM stops it.
//
// Deliberately simple (smallchat's spirit): level-triggered epoll, one read buffer per
// connection, replies written at once and dropped if the socket will not take them
// (redis-benchmark reads its replies; a client that does not is not our concern here).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

namespace {

// How many complete requests the front of `in` holds; *used is set to their bytes.
// A RESP request is "*N\r\n" then N bulk strings "$LEN\r\n...\r\n"; anything else is an
// inline command ending in "\n".
std::size_t count_requests(const std::string& in, std::size_t* used) {
  std::size_t pos = 0, count = 0;
  for (;;) {
    *used = pos;
    std::size_t eol = in.find('\n', pos);
    if (eol == std::string::npos) return count;
    std::size_t p = eol + 1;
    if (in[pos] == '*') {
      long args = std::strtol(in.c_str() + pos + 1, nullptr, 10);
      for (long i = 0; i < args; ++i) {
        eol = in.find('\n', p);
        if (eol == std::string::npos) return count;
        long len = std::strtol(in.c_str() + p + 1, nullptr, 10);
        p = eol + 1 + static_cast<std::size_t>(len < 0 ? 0 : len) + 2;  // bytes and "\r\n"
        if (p > in.size()) return count;
      }
    }
    pos = p, ++count;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = argc > 1 ? std::atoi(argv[1]) : 0;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t addr_len = sizeof addr;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 511) != 0 ||  // Redis's default tcp-backlog
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) {
    std::perror("null-server");
    return 1;
  }
  std::printf("null-server: listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
  std::fflush(stdout);

  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  std::unordered_map<int, std::string> pending;  // per connection: an unfinished request
  std::string replies;
  static char buf[1 << 16];
  epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int c;
        while ((c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          ev.events = EPOLLIN;
          ev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        }
        continue;
      }
      ssize_t got = read(fd, buf, sizeof buf);
      if (got <= 0) {
        pending.erase(fd);
        close(fd);  // also leaves the epoll set
        continue;
      }
      std::string& in = pending[fd];
      in.append(buf, static_cast<std::size_t>(got));
      std::size_t used = 0, count = count_requests(in, &used);
      in.erase(0, used);
      replies.clear();
      for (std::size_t k = 0; k < count; ++k) replies += "+OK\r\n";
      if (!replies.empty() && write(fd, replies.data(), replies.size()) < 0) {
        pending.erase(fd);
        close(fd);
      }
    }
  }
}
