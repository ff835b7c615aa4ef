// Chapter 9: the PID file and the signal waiter, in process and in forked children. The
// server program itself is tested from outside, as a user runs it, by
// tests/programs/server.sh: flags, a second instance, kill -9, SIGHUP, SIGTERM, SHUTDOWN.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <csignal>
#include <memory>
#include <string>
#include <thread>

#include "keystonelight.hpp"
#include "../../tests/support/temp_dir.hpp"

namespace kl = keystonelight;

namespace {

// Runs `body` in a forked child and returns its exit status (or 128 + the signal that
// killed it), so that a signal mask or a killed process cannot touch the test runner.
template <typename Body>
int in_child(Body body) {
  std::fflush(nullptr);  // or the child would print the parent's buffered output again
  const pid_t child = ::fork();
  if (child == 0) ::_exit(body());
  int status = 0;
  if (child < 0 || ::waitpid(child, &status, 0) != child) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_SUITE("chapter 9: process management") {

TEST_CASE("a PID file holds our pid while it is held, and is gone once released") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  {
    std::unique_ptr<kl::PidFile> pid_file;
    std::string stale = "unset";
    REQUIRE(kl::PidFile::acquire(path, &pid_file, &stale).ok());
    CHECK(stale.empty());
    CHECK(pid_file->path() == path);
    CHECK(kltest::read_file(path) == std::to_string(::getpid()) + "\n");
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("a second taker is refused with the holder's pid and the file's path") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  std::unique_ptr<kl::PidFile> first;
  REQUIRE(kl::PidFile::acquire(path, &first).ok());
  std::unique_ptr<kl::PidFile> second;
  kl::Status s = kl::PidFile::acquire(path, &second);
  CHECK(s.code() == kl::Status::Code::kBusy);
  CHECK(s.message() == "already running as pid " + std::to_string(::getpid()) + " (PID file " +
                           path + ")");
  CHECK(second == nullptr);
  CHECK(kltest::read_file(path) == std::to_string(::getpid()) + "\n");  // untouched
}

TEST_CASE("a PID file left by a process that is gone is taken over, naming the old pid") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  kltest::write_file(path, "999999\n");  // no lock: its writer has exited
  std::unique_ptr<kl::PidFile> pid_file;
  std::string stale;
  REQUIRE(kl::PidFile::acquire(path, &pid_file, &stale).ok());
  CHECK(stale == "999999");
  CHECK(kltest::read_file(path) == std::to_string(::getpid()) + "\n");
}

TEST_CASE("after kill -9 of the holder, its PID file is taken over at once") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  std::fflush(nullptr);
  const pid_t holder = ::fork();
  REQUIRE(holder >= 0);
  if (holder == 0) {
    std::unique_ptr<kl::PidFile> pid_file;
    if (!kl::PidFile::acquire(path, &pid_file).ok()) ::_exit(1);
    const char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) ::_exit(1);
    ::pause();  // until killed
    ::_exit(0);
  }
  ::close(ready[1]);
  char byte = 0;
  REQUIRE(::read(ready[0], &byte, 1) == 1);
  ::close(ready[0]);

  std::unique_ptr<kl::PidFile> mine;
  kl::Status s = kl::PidFile::acquire(path, &mine);
  CHECK(s.code() == kl::Status::Code::kBusy);
  CHECK(s.message().find("pid " + std::to_string(holder) + " ") != std::string::npos);

  REQUIRE(::kill(holder, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(holder, &status, 0) == holder);
  std::string stale;
  REQUIRE(kl::PidFile::acquire(path, &mine, &stale).ok());
  CHECK(stale == std::to_string(holder));
}

TEST_CASE("SignalWaiter hands SIGHUP, SIGTERM and SIGINT to the waiting thread, in order") {
  const int status = in_child([] {
    kl::SignalWaiter signals;  // before the thread, which inherits the blocked mask
    std::atomic<int> seen[3] = {{0}, {0}, {0}};
    std::thread waiter([&] {
      for (int i = 0; i < 3; ++i) seen[i] = signals.wait();
    });
    // Sent to the process, as kill(1) does: any thread could take it, but every thread
    // blocks it, so only sigwait does. Sent one at a time: pending signals do not queue.
    const int order[3] = {SIGHUP, SIGINT, SIGTERM};
    for (int i = 0; i < 3; ++i) {
      ::kill(::getpid(), order[i]);
      for (int spin = 0; spin < 30000 && seen[i] == 0; ++spin) ::usleep(1000);  // a hang guard
    }
    waiter.join();
    for (int i = 0; i < 3; ++i) {
      if (seen[i] != order[i]) return 10 + i;
    }
    return 0;
  });
  CHECK(status == 0);
}

TEST_CASE("a pending SIGTERM or SIGINT is taken before a pending SIGHUP: shutdown first") {
  const int status = in_child([] {
    kl::SignalWaiter signals;
    // All three pending at once (nobody waits yet); Linux's own order would be 1, 2, 15.
    ::kill(::getpid(), SIGHUP);
    ::kill(::getpid(), SIGINT);
    ::kill(::getpid(), SIGTERM);
    const int first = signals.wait();
    const int second = signals.wait();
    const int third = signals.wait();
    return first == SIGTERM && second == SIGINT && third == SIGHUP ? 0 : 1;
  });
  CHECK(status == 0);
}

TEST_CASE("a PID file holding our own pid is not reported as left by another process") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  kltest::write_file(path, std::to_string(::getpid()) + "\n");  // a container's pid 1, restarted
  std::unique_ptr<kl::PidFile> pid_file;
  std::string stale = "unset";
  REQUIRE(kl::PidFile::acquire(path, &pid_file, &stale).ok());
  CHECK(stale.empty());
}

TEST_CASE("a released PID file leaves alone a file that replaced it") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  std::unique_ptr<kl::PidFile> pid_file;
  REQUIRE(kl::PidFile::acquire(path, &pid_file).ok());
  REQUIRE(::unlink(path.c_str()) == 0);  // deleted by hand...
  kltest::write_file(path, "4242\n");      // ...and another instance's file in its place
  pid_file.reset();
  CHECK(kltest::read_file(path) == "4242\n");
}

// --pidfile aimed at the store's log once truncated it, wrote a pid in it and deleted it
// at exit. A PID file is written and removed, so only a file that is one may be taken.
TEST_CASE("a path that holds anything but a pid is refused and left as it is") {
  kltest::TempDir dir;
  const std::string pid = std::to_string(::getpid());
  for (const std::string& content : {std::string("KEYSTONE\x01\0\0\0data", 16),
                                     std::string("notes, not a pid\n"), std::string("123\nabc"),
                                     std::string("12 34\n"), std::string("\n"),
                                     std::string(40, '7')}) {
    CAPTURE(content);
    const std::string path = dir.file("data");
    kltest::write_file(path, content);
    std::unique_ptr<kl::PidFile> pid_file;
    kl::Status s = kl::PidFile::acquire(path, &pid_file);
    CHECK(s.code() == kl::Status::Code::kInvalidArgument);
    CHECK(s.message().find(path + " holds ") == 0);
    CHECK(s.message().find("nothing was changed") != std::string::npos);
    CHECK(pid_file == nullptr);
    CHECK(kltest::read_file(path) == content);
  }

  std::unique_ptr<kl::PidFile> pid_file;
  kl::Status s = kl::PidFile::acquire(dir.path(), &pid_file);
  CHECK(s.code() == kl::Status::Code::kInvalidArgument);
  CHECK(s.message() == dir.path() + " is a directory, so it cannot be a PID file; nothing "
                       "was changed: give the path of a new file, or of a PID file (one that "
                       "holds a process id alone)");
  CHECK(std::filesystem::is_directory(dir.path()));

  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  s = kl::PidFile::acquire(fifo, &pid_file);
  CHECK(s.code() == kl::Status::Code::kInvalidArgument);
  CHECK(s.message().find(fifo + " is not a regular file") == 0);
  CHECK(std::filesystem::is_fifo(fifo));
}

TEST_CASE("an empty file, a pid, and a pid without its newline are PID files, taken over") {
  kltest::TempDir dir;
  const std::string path = dir.file("server.pid");
  for (const std::string& content : {std::string(), std::string("4242\n"), std::string("4242")}) {
    CAPTURE(content);
    kltest::write_file(path, content);
    std::unique_ptr<kl::PidFile> pid_file;
    std::string stale = "unset";
    REQUIRE(kl::PidFile::acquire(path, &pid_file, &stale).ok());
    CHECK(stale == (content.empty() ? "" : "4242"));
    CHECK(kltest::read_file(path) == std::to_string(::getpid()) + "\n");
    pid_file.reset();
    CHECK_FALSE(std::filesystem::exists(path));
  }
}

TEST_CASE("SignalWaiter::interrupt ends a thread waiting for signals") {
  const int status = in_child([] {
    kl::SignalWaiter signals;
    std::atomic<int> seen{0};
    std::thread waiter([&] { seen = signals.wait(); });
    ::usleep(10000);
    kl::SignalWaiter::interrupt(waiter);
    waiter.join();
    return seen == SIGTERM ? 0 : 1;
  });
  CHECK(status == 0);
}

TEST_CASE("with a SignalWaiter, writing to a closed pipe fails with EPIPE instead of killing") {
  const int status = in_child([] {
    kl::SignalWaiter signals;
    int fds[2];
    if (::pipe(fds) != 0) return 2;
    ::close(fds[0]);
    const ssize_t n = ::write(fds[1], "x", 1);
    return n < 0 && errno == EPIPE ? 0 : 1;
  });
  CHECK(status == 0);  // 128 + SIGPIPE if the signal had killed the child
}

}  // TEST_SUITE
