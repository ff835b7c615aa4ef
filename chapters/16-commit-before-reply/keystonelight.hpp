// GENERATED from keystonelight.hpp at the top of the repository by tools/split-chapters.
// Do not edit: change keystonelight.hpp, then run `make chapters`.
/* keystonelight.hpp: a concurrent, crash-safe key-value store in one C++17 header.
   Version 0.1.0. MIT License; the full text is at the end of this file.

   QUICK START (embedded)

       #include "keystonelight.hpp"
       keystonelight::Store store;                       // in memory
       if (!store.set("greeting", "hello").ok()) return 1;
       std::cout << store.get("greeting").value_or("(nil)") << "\n";

   CONTENTS: the file is ordered by layer, each built on the ones before it, so a request
   can be followed from the top of a layer down to the file. Each layer names the chapters
   of the tutorial that add to it (chapters/NN-name/ holds each stage as a snapshot).

       Status                  errors as values: a code and a message (1)
       Platform                FileSystem and POSIX files (2), the directory lock (3), the
                               reader-writer lock (5), sockets (8), PidFile, SignalWaiter (9)
       The log                 CRC-32C, the record format, LogWriter, LogReader (2)
                               the expire record, format version 2 (10)
                               the batch record, format version 3 (11)
                               CRC-32C by the processor's instruction, picked at run
                               time in the platform section (15)
       The persistent log      FsyncPolicy, Options, Disk: the log, its lock and fsyncs (3),
                               compaction (4), group commit (5); diagnose: what a bad record
                               means (3)
       Store                   get, set, del, exists, size, entries (1)
                               open and recovery, close, sync (3)
                               compact, automatic compaction, Stats (4)
                               the locks, reads that wait for durability, increment,
                               append, conditional set, the background compactor (5)
                               set_all, del_all, get_all, keys, clear (6)
                               keys that expire: set with a ttl, expire_at, persist,
                               expire_time, lazy and active expiry (10)
                               transaction, WriteBatch, Watch (11)
                               its own hash table (detail::Table), scan, random_key,
                               rename, copy (12)
                               a replay that sizes the table from the log, prefetches
                               and copies nothing it does not keep (15)
       The protocol            RequestParser, resp:: replies (6)
                               Dispatcher, its command table and its commands, AUTH (7)
                               EXPIRE and its kin, TTL and its kin, PERSIST, SET's EX, PX,
                               EXAT, PXAT and KEEPTTL, SETEX, PSETEX, GETEX (10)
                               MULTI, EXEC, DISCARD, WATCH, UNWATCH (11)
                               SCAN, RANDOMKEY, TYPE, TOUCH, UNLINK, RENAME, RENAMENX,
                               COPY (12)
                               the string and bitmap commands: INCRBYFLOAT, GETRANGE,
                               SETRANGE, LCS, SETBIT, BITCOUNT, BITPOS, BITOP ... (13)
       The TCP server          Server: listener, a thread per connection, pipelining,
                               limits, graceful stop; Client and Reply (8)
       Process management      the PID file and signal thread are platform code; the server
                               program is examples/keystonelight-server.cpp (9)
       The event loop          Poller (epoll, or poll(2)) in the platform code; Server's
                               second I/O model: a few loops serving every connection (14)

   COMPILE-TIME OPTIONS: define before including to change a default.

       KEYSTONELIGHT_MAX_KEY_BYTES        1048576    longest key a record may hold
       KEYSTONELIGHT_MAX_VALUE_BYTES      536870912  longest value a record may hold
       KEYSTONELIGHT_FSYNC_INTERVAL_MS    1000       period of the kEverySecond flusher
       KEYSTONELIGHT_COMPACT_MIN_BYTES    67108864   no automatic compaction below this
       KEYSTONELIGHT_COMPACT_RATIO        2.0        log size / live size that compacts
       KEYSTONELIGHT_MAX_INLINE_BYTES     65536      longest inline request line
       KEYSTONELIGHT_MAX_BULK_BYTES       536870912  longest argument of a request
       KEYSTONELIGHT_MAX_ARGS             1048576    most arguments in one request
       KEYSTONELIGHT_MAX_OUTPUT_BYTES     67108864   unread replies before a client must read;
                                                     also the largest reply of many keys
       KEYSTONELIGHT_MAX_CLIENTS_OUTPUT_BYTES  1073741824  all clients' unread replies together
       KEYSTONELIGHT_SEND_TIMEOUT_SECONDS 60         close a client that reads nothing this long
       KEYSTONELIGHT_STOP_GRACE_MS        1000       time stop() gives unsent replies
       KEYSTONELIGHT_EXPIRY_CYCLE_MS      100        period of the active expiry cycle
       KEYSTONELIGHT_EXPIRY_SAMPLE_KEYS   20         keys with a TTL each round looks at

   CHAPTER MARKERS: a comment line made of two slashes, an angle bracket and a chapter
   ("chapter 3") opens or closes the code that chapter adds; after "#if 0", a range
   ("chapters 1-2") fences code that a later chapter replaces, so the compiler skips it.
   tools/split-chapters reads them to write each chapter's snapshot (chapters/NN-name/).

   THREAD SAFETY: each class says what it allows in its comment.
*/
#ifndef KEYSTONELIGHT_HPP
#define KEYSTONELIGHT_HPP

// ---------------------------------------------------------------------------------------
// Version
// ---------------------------------------------------------------------------------------

#define KEYSTONELIGHT_VERSION_MAJOR 0
#define KEYSTONELIGHT_VERSION_MINOR 1
#define KEYSTONELIGHT_VERSION_PATCH 0
#define KEYSTONELIGHT_VERSION_STR "0.1.0"

// Chapter 14's event loop is in this header (ServerConfig::io). The server program, which
// is also chapter 9's example, offers --io only where it is.
#define KEYSTONELIGHT_HAS_EVENT_LOOP 1

// ---------------------------------------------------------------------------------------
// Configuration: every compile-time default lives in this block, with its unit in its
// name. Runtime settings go in Options (from chapter 3), whose defaults come from here.
// ---------------------------------------------------------------------------------------

// The largest key and value a log record may hold. A reader treats a larger length as
// damage, so raise them freely but lower them only for new data directories.
#ifndef KEYSTONELIGHT_MAX_KEY_BYTES
#define KEYSTONELIGHT_MAX_KEY_BYTES (1024 * 1024)
#endif
#ifndef KEYSTONELIGHT_MAX_VALUE_BYTES
#define KEYSTONELIGHT_MAX_VALUE_BYTES (512 * 1024 * 1024)
#endif

// How often the background flusher of FsyncPolicy::kEverySecond syncs the log.
#ifndef KEYSTONELIGHT_FSYNC_INTERVAL_MS
#define KEYSTONELIGHT_FSYNC_INTERVAL_MS 1000
#endif

// Automatic compaction: when the log is at least KEYSTONELIGHT_COMPACT_MIN_BYTES long and
// more than KEYSTONELIGHT_COMPACT_RATIO times what a compaction would write (Redis's
// default of 100% growth is a ratio of 2).
#ifndef KEYSTONELIGHT_COMPACT_MIN_BYTES
#define KEYSTONELIGHT_COMPACT_MIN_BYTES (64 * 1024 * 1024)
#endif
#ifndef KEYSTONELIGHT_COMPACT_RATIO
#define KEYSTONELIGHT_COMPACT_RATIO 2.0
#endif

// Protocol limits (chapter 6), as in Redis: an inline request line, one bulk argument,
// the arguments of one request. Each is also a field of ProtocolLimits.
#ifndef KEYSTONELIGHT_MAX_INLINE_BYTES
#define KEYSTONELIGHT_MAX_INLINE_BYTES (64 * 1024)
#endif
#ifndef KEYSTONELIGHT_MAX_BULK_BYTES
#define KEYSTONELIGHT_MAX_BULK_BYTES (512 * 1024 * 1024)
#endif
#ifndef KEYSTONELIGHT_MAX_ARGS
#define KEYSTONELIGHT_MAX_ARGS (1024 * 1024)
#endif

// The server (chapter 8). Replies a client has not read yet: past this much, its
// connection runs no more requests until it reads. A client that reads none of its
// replies for the send timeout is closed. When the server stops, replies still unsent
// get the grace period, then their connections close anyway.
#ifndef KEYSTONELIGHT_MAX_OUTPUT_BYTES
#define KEYSTONELIGHT_MAX_OUTPUT_BYTES (64 * 1024 * 1024)
#endif
// All clients' unsent replies together (Redis 7's maxmemory-clients): past this, the
// client holding the most is closed. Above the largest value, so one GET always fits.
#ifndef KEYSTONELIGHT_MAX_CLIENTS_OUTPUT_BYTES
#define KEYSTONELIGHT_MAX_CLIENTS_OUTPUT_BYTES (1024 * 1024 * 1024)
#endif
#ifndef KEYSTONELIGHT_SEND_TIMEOUT_SECONDS
#define KEYSTONELIGHT_SEND_TIMEOUT_SECONDS 60
#endif
#ifndef KEYSTONELIGHT_STOP_GRACE_MS
#define KEYSTONELIGHT_STOP_GRACE_MS 1000
#endif

// Active expiry (chapter 10), as Redis samples: every cycle, rounds of this many keys with
// a TTL, picked at random, are checked and the expired ones removed; another round
// follows while more than a quarter were expired, within a quarter of the cycle's time.
#ifndef KEYSTONELIGHT_EXPIRY_CYCLE_MS
#define KEYSTONELIGHT_EXPIRY_CYCLE_MS 100
#endif
#ifndef KEYSTONELIGHT_EXPIRY_SAMPLE_KEYS
#define KEYSTONELIGHT_EXPIRY_SAMPLE_KEYS 20
#endif

// ---------------------------------------------------------------------------------------
// Platform check: the engine speaks POSIX (open, write, fsync, flock, sockets) and says so
// at compile time rather than failing in a corner at run time.
// ---------------------------------------------------------------------------------------

#if !defined(__unix__) && !defined(__APPLE__)
#error "keystonelight.hpp needs a POSIX system (Linux, macOS, the BSDs)."
#endif

#include <cassert>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <thread>

#include <sys/file.h>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <shared_mutex>

#include <pthread.h>
#include <system_error>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <csignal>

#include <signal.h>
#include <cmath>
#if defined(__linux__)
#include <sys/epoll.h>
#endif

// The processor's CRC-32C instruction (chapter 15), where there is one: SSE 4.2 on
// x86-64, the CRC extension of ARMv8 on 64-bit ARM. Only the platform section uses them.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define KEYSTONELIGHT_CRC32C_SSE42 1
#elif defined(__aarch64__) && defined(__linux__) && defined(__GNUC__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <arm_acle.h>
#include <sys/auxv.h>
#define KEYSTONELIGHT_CRC32C_ARMV8 1
#endif

namespace keystonelight {

// =======================================================================================
// Status: the outcome of an operation that can fail for expected reasons (bad input, I/O,
// corruption, a lock held by someone else). Nothing in this API throws for those; it
// returns a Status, and lookups that may find nothing return std::optional instead.
// A Status is [[nodiscard]]: dropping one on the floor is a compiler warning.
// =======================================================================================

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk,               // it worked
    kInvalidArgument,  // the caller asked for something impossible (a key too long)
    kIOError,          // the operating system refused: disk full, I/O error, permissions
    kCorruption,       // stored data is damaged; the message names the file and offset
    kBusy,             // someone else holds what we need: the data directory's lock
    kNotSupported,     // valid, but not something this build can do (a newer log version)
    kCancelled,        // stopped when the caller asked: Options::keep_loading said no
  };

  // The default Status is success; `return Status();` says "it worked".
  Status() = default;

  static Status invalid_argument(std::string message) {
    return Status(Code::kInvalidArgument, std::move(message));
  }
  static Status io_error(std::string message) {
    return Status(Code::kIOError, std::move(message));
  }
  static Status corruption(std::string message) {
    return Status(Code::kCorruption, std::move(message));
  }
  static Status busy(std::string message) { return Status(Code::kBusy, std::move(message)); }
  static Status not_supported(std::string message) {
    return Status(Code::kNotSupported, std::move(message));
  }
  static Status cancelled(std::string message) {
    return Status(Code::kCancelled, std::move(message));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK", or the code's name and the message: "IO error: write data/log: No space left".
  std::string to_string() const {
    if (ok()) return "OK";
    return std::string(code_name(code_)) + ": " + message_;
  }

  static const char* code_name(Code code) {
    switch (code) {
      case Code::kOk: return "OK";
      case Code::kInvalidArgument: return "Invalid argument";
      case Code::kIOError: return "IO error";
      case Code::kCorruption: return "Corruption";
      case Code::kBusy: return "Busy";
      case Code::kNotSupported: return "Not supported";
      case Code::kCancelled: return "Cancelled";
    }
    return "Unknown";
  }

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

// =======================================================================================
// The file system, as the engine sees it (chapter 2). Every file operation of the engine
// goes through these two interfaces, so a test can put a FileSystem of its own underneath
// that fails on cue (disk full, I/O error, a failing fsync), crashes at a named step, or
// forgets what was never synced, all without root or special file systems. The default is
// the POSIX one below; production pays one indirect call per operation.
//
// Every operation returns a Status whose message names the operation, the path and the
// operating system's reason: "write data/keystonelight.log: No space left on device".
// =======================================================================================

// An open file: positioned reads, appends at the end, sync, truncate. Not thread-safe,
// except that sync() may run while another thread appends (the log's flusher does that).
class File {
 public:
  virtual ~File() = default;  // closes the file

  virtual const std::string& path() const = 0;

  // Reads up to `n` bytes at `offset` into `buf`; `*got` is less than `n` only at the end
  // of the file.
  virtual Status read_at(std::uint64_t offset, char* buf, std::size_t n, std::size_t* got) = 0;

  // Appends all of `data` at the end of the file. A failure may leave a prefix written.
  virtual Status append(std::string_view data) = 0;

  // Returns once everything appended so far, and the file's size, is on stable storage.
  virtual Status sync() = 0;

  virtual Status truncate(std::uint64_t size) = 0;
  virtual Status size(std::uint64_t* size) = 0;
};

// Paths are plain strings, relative to the working directory or absolute. Thread-safe.
class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Opens `path` for reading and appending. With `create`, a missing file is created
  // empty; without it, a missing file is an IO error.
  virtual Status open(const std::string& path, bool create, std::unique_ptr<File>* file) = 0;

  // Opens `path`, which must exist, for reading only: what a tool that checks a read-only
  // copy or backup needs. append() and truncate() on the file fail. The default calls
  // open(path, false, file), read and write, so that a file system written before this
  // member existed still works; the POSIX one asks the system for read access alone.
  virtual Status open_read_only(const std::string& path, std::unique_ptr<File>* file) {
    return open(path, false, file);
  }

  // Whether `path` names an existing file or directory.
  virtual bool exists(const std::string& path) = 0;

  // Replaces `to` with `from` in one step: a reader sees the old file or the new one.
  virtual Status rename(const std::string& from, const std::string& to) = 0;

  virtual Status remove(const std::string& path) = 0;

  // Makes the directory's entries (files created, renamed or removed in it) durable.
  virtual Status sync_dir(const std::string& dir) = 0;

  // Creates `dir`; an existing directory is not an error.
  virtual Status create_dir(const std::string& dir) = 0;

  // The names in `dir`, without "." and "..".
  virtual Status list_dir(const std::string& dir, std::vector<std::string>* names) = 0;
};

// The operating system's file system (POSIX). Lives for the whole program.
FileSystem* default_file_system();

// =======================================================================================
// Platform: every call into the operating system (files, fsync, locks, sockets, signals)
// lives in this one section, wrapped to retry on EINTR and to finish short writes, so
// that no #ifdef or raw errno handling leaks into the engine.
// =======================================================================================

namespace detail {

inline Status os_error(const char* operation, const std::string& path, int err) {
  return Status::io_error(std::string(operation) + " " + path + ": " + std::strerror(err));
}

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  const std::string& path() const override { return path_; }

  Status read_at(std::uint64_t offset, char* buf, std::size_t n, std::size_t* got) override {
    std::size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, buf + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return os_error("read", path_, errno);
      if (r == 0) break;  // end of file
      done += static_cast<std::size_t>(r);
    }
    *got = done;
    return Status();
  }

  Status append(std::string_view data) override {
    // write(2) may write less than asked (a signal, a nearly full disk): loop on the rest.
    while (!data.empty()) {
      ssize_t w = ::write(fd_, data.data(), data.size());
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return os_error("write", path_, errno);
      data.remove_prefix(static_cast<std::size_t>(w));
    }
    return Status();
  }

  Status sync() override {
#if defined(__APPLE__)
    // macOS's fsync stops at the drive's cache; F_FULLFSYNC reaches the platter.
    int r = ::fcntl(fd_, F_FULLFSYNC);
#else
    // fdatasync skips timestamps but, like fsync, persists the size an append changed.
    int r = ::fdatasync(fd_);
#endif
    return r == 0 ? Status() : os_error("fsync", path_, errno);
  }

  Status truncate(std::uint64_t size) override {
    int r;
    do r = ::ftruncate(fd_, static_cast<off_t>(size));
    while (r < 0 && errno == EINTR);
    return r == 0 ? Status() : os_error("truncate", path_, errno);
  }

  Status size(std::uint64_t* size) override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return os_error("stat", path_, errno);
    *size = static_cast<std::uint64_t>(st.st_size);
    return Status();
  }

 private:
  int fd_;
  std::string path_;
};

class PosixFileSystem final : public FileSystem {
 public:
  Status open(const std::string& path, bool create, std::unique_ptr<File>* file) override {
    // O_APPEND makes every write land at the end, whatever the file offset says.
    int flags = O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0);
    int fd;
    do fd = ::open(path.c_str(), flags, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return os_error("open", path, errno);
    file->reset(new PosixFile(fd, path));
    return Status();
  }

  Status open_read_only(const std::string& path, std::unique_ptr<File>* file) override {
    int fd;
    do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return os_error("open", path, errno);
    file->reset(new PosixFile(fd, path));
    return Status();
  }

  bool exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  Status rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return os_error("rename", from + " to " + to, errno);
    return Status();
  }

  Status remove(const std::string& path) override {
    return ::unlink(path.c_str()) == 0 ? Status() : os_error("remove", path, errno);
  }

  Status sync_dir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return os_error("open directory", dir, errno);
    int r = ::fsync(fd);
    int err = errno;
    ::close(fd);
    return r == 0 ? Status() : os_error("fsync directory", dir, err);
  }

  Status create_dir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0755) == 0) return Status();
    int err = errno;
    struct stat st;
    if (err == EEXIST && ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status();
    return os_error("create directory", dir, err);
  }

  Status list_dir(const std::string& dir, std::vector<std::string>* names) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return os_error("list directory", dir, errno);
    names->clear();
    while (struct dirent* entry = ::readdir(d)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..") names->push_back(std::move(name));
    }
    ::closedir(d);
    return Status();
  }
};

// A lock held through a file: a flock(2) on it, which the kernel drops when the holder
// exits, even by kill -9, so a stale lock cannot outlive its process. The file holds the
// holder's pid for the message a second comer sees. (flock locks an open file, not a
// process: a child made by fork without exec shares its parent's lock until it closes
// its copy.)
//
// lock_file opens (creating it) the file `path` and takes an exclusive flock on it without
// waiting. On success *fd holds the lock and *pid the pid the file held (left by an
// earlier holder, or empty). When another open file holds the lock: Busy, with its
// holder's pid in *pid (empty if it has not written one yet); the caller words the message.
inline Status lock_file(const std::string& path, int* fd, std::string* pid) {
  int f;
  do f = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  while (f < 0 && errno == EINTR);
  if (f < 0) return os_error("open", path, errno);
  int r;
  do r = ::flock(f, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  const int err = r == 0 ? 0 : errno;
  char buf[32];
  const ssize_t n = ::pread(f, buf, sizeof(buf) - 1, 0);
  pid->clear();
  for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) *pid += buf[i];
  if (err != 0) {
    ::close(f);
    return err == EWOULDBLOCK ? Status::busy(path) : os_error("lock", path, err);
  }
  *fd = f;
  return Status();
}

// Replaces what a locked file holds with our pid.
inline Status write_pid(int fd, const std::string& path) {
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    return os_error("write pid to", path, errno);
  }
  return Status();
}

}  // namespace detail

// An exclusive lock on a data directory, DIR/LOCK, held from acquire() until destruction.
// Store::open takes it; a program that changes a store's files with no Store open
// (keystonelight-check --fix) takes it too, so that no store appends meanwhile. Busy,
// naming the holder's pid, while another process holds it.
class DirLock {
 public:
  static Status acquire(const std::string& path, std::unique_ptr<DirLock>* lock) {
    int fd = -1;
    std::string holder;
    if (Status s = detail::lock_file(path, &fd, &holder); !s.ok()) {
      if (s.code() != Status::Code::kBusy) return s;
      return Status::busy(path + " is locked by " +
                          (holder.empty() ? std::string("another process") : "pid " + holder) +
                          ": one Store per data directory; stop that process or use another "
                          "directory");
    }
    if (Status s = detail::write_pid(fd, path); !s.ok()) {
      ::close(fd);
      return s;
    }
    lock->reset(new DirLock(fd));
    return Status();
  }

  ~DirLock() { ::close(fd_); }  // closing the last descriptor releases the flock
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  explicit DirLock(int fd) : fd_(fd) {}

  int fd_;
};

namespace detail {

// The lock order, checked. A lock with a rank may be taken only while every lock the
// thread holds has a lower rank, so two threads can never each hold what the other waits
// for. Debug builds check it on every lock (an assert names the mistake at once, not a
// deadlock some day); release builds (NDEBUG) compile the checks away.
class LockOrder {
 public:
  static void acquire(int rank) {
#ifndef NDEBUG
    assert((held() >> rank) == 0 && "a lock taken out of the order written beside it");
    held() |= 1u << rank;
#else
    (void)rank;
#endif
  }
  static void release(int rank) {
#ifndef NDEBUG
    held() &= ~(1u << rank);
#else
    (void)rank;
#endif
  }

 private:
  static unsigned& held() {  // bit r: this thread holds a lock of rank r
    thread_local unsigned bits = 0;
    return bits;
  }
};

// A std::mutex with a rank in the lock order (use std::condition_variable_any with it).
template <int Rank>
class OrderedMutex {
 public:
  void lock() {
    LockOrder::acquire(Rank);
    mu_.lock();
  }
  void unlock() {
    mu_.unlock();
    LockOrder::release(Rank);
  }

 private:
  std::mutex mu_;
};

// A reader-writer lock that lets a waiting writer in before new readers. It has the
// interface of std::shared_mutex and works with std::shared_lock and std::unique_lock,
// but std::shared_mutex on glibc prefers readers: under a steady stream of reads a writer
// can wait almost for ever (chapter 5's example measured 54 writes a second beside five
// million reads). glibc's pthread_rwlock can be asked to prefer writers; elsewhere the
// system's own policy applies (macOS prefers writers, musl readers). The price of writer
// preference is the mirror image: a steady stream of writes makes readers, and
// compactions, wait. Not recursive: a thread must not take it twice. (glibc 2.25 to 2.29
// could hang with this kind of lock, glibc bug 23844: use a newer glibc.)
class SharedMutex {
 public:
  // `rank`: its place in the lock order (see LockOrder); -1 for none.
  explicit SharedMutex(int rank = -1) : rank_(rank) {
    pthread_rwlockattr_t attributes;
    pthread_rwlockattr_init(&attributes);
#if defined(__GLIBC__)
    pthread_rwlockattr_setkind_np(&attributes, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&lock_, &attributes);
    pthread_rwlockattr_destroy(&attributes);
  }
  ~SharedMutex() { pthread_rwlock_destroy(&lock_); }
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void lock() {
    if (rank_ >= 0) LockOrder::acquire(rank_);
    check(pthread_rwlock_wrlock(&lock_), "lock");
  }
  void unlock() {
    check(pthread_rwlock_unlock(&lock_), "unlock");
    if (rank_ >= 0) LockOrder::release(rank_);
  }
  void lock_shared() {
    if (rank_ >= 0) LockOrder::acquire(rank_);
    check(pthread_rwlock_rdlock(&lock_), "lock_shared");
  }
  void unlock_shared() {
    check(pthread_rwlock_unlock(&lock_), "unlock_shared");
    if (rank_ >= 0) LockOrder::release(rank_);
  }

 private:
  // These fail only when the lock is misused (taken twice by one thread: EDEADLK), a bug
  // that carrying on unlocked would turn into corruption. Stop at once, saying where.
  static void check(int error, const char* operation) {
    if (error == 0) return;
    std::fprintf(stderr, "keystonelight: SharedMutex::%s failed: %s\n", operation,
                 std::strerror(error));
    std::abort();
  }

  pthread_rwlock_t lock_;
  const int rank_;
};

// Sockets (chapter 8). A Socket owns one descriptor and closes it once. Every socket made
// here is non-blocking and close-on-exec: callers wait for readiness with wait_ready(), so
// that one poll(2) can also watch a Wakeup and a deadline, and no wait lasts for ever.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { reset(); }
  Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Socket& operator=(Socket&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A new socket, and a connection taken from a listener, close-on-exec and non-blocking from
// the call that makes them: a program that embeds the server and forks and execs from another
// thread would otherwise hand the child the descriptor between socket(2) and fcntl(2). Where
// the system cannot do it in one call (macOS), prepare_socket sets the flags just after.
inline int new_socket(const addrinfo* a) {
#if defined(SOCK_CLOEXEC)
  return ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
#else
  return ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
#endif
}
inline int accept_socket(int listener) {
#if defined(SOCK_CLOEXEC)
  return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
#else
  return ::accept(listener, nullptr, nullptr);
#endif
}

// "127.0.0.1:6380", or "[::1]:6380" for IPv6, as people write addresses in messages.
inline std::string endpoint(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// Makes `fd` non-blocking and close-on-exec (where new_socket and accept_socket could not),
// and (where the system has no MSG_NOSIGNAL) asks it not to raise SIGPIPE when the peer has
// gone.
inline Status prepare_socket(int fd, const std::string& where) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return os_error("configure socket", where, errno);
  }
#if defined(SO_NOSIGPIPE)
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
  return Status();
}

// Small requests and replies must leave at once: Nagle's algorithm would hold a reply back
// until the previous one is acknowledged, adding up to 40 ms to every round trip.
inline void set_no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// The addresses `host` (a name, or a numeric IPv4 or IPv6 address) and `port` stand for.
using AddressList = std::unique_ptr<addrinfo, void (*)(addrinfo*)>;
inline Status resolve(const std::string& host, int port, bool for_listening, AddressList* list) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (for_listening ? AI_PASSIVE : 0);
  addrinfo* found = nullptr;
  const int r = ::getaddrinfo(host.empty() ? nullptr : host.c_str(),
                              std::to_string(port).c_str(), &hints, &found);
  if (r != 0) {
    return Status::invalid_argument("cannot resolve " + endpoint(host, port) + ": " +
                                    ::gai_strerror(r) + ": give a host name or an address");
  }
  *list = AddressList(found, ::freeaddrinfo);
  return Status();
}

// Listens on host:port (port 0: any free port) and reports the port it got. SO_REUSEADDR
// lets a restarted server bind at once, while connections of the previous one linger in
// TIME_WAIT; it does not let two servers share a port.
inline Status listen_tcp(const std::string& host, int port, Socket* listener, int* bound_port) {
  AddressList addresses(nullptr, ::freeaddrinfo);
  if (Status s = resolve(host, port, true, &addresses); !s.ok()) return s;
  const std::string where = endpoint(host, port);
  Status last = Status::io_error("no address to listen on for " + where);
  for (addrinfo* a = addresses.get(); a != nullptr; a = a->ai_next) {
    Socket socket(new_socket(a));
    if (!socket.valid()) {
      last = os_error("create socket for", where, errno);
      continue;
    }
    if (Status s = prepare_socket(socket.fd(), where); !s.ok()) return s;
    int one = 1;
    ::setsockopt(socket.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(socket.fd(), a->ai_addr, a->ai_addrlen) != 0) {
      const int err = errno;
      last = os_error("bind", where, err);
      if (err == EADDRINUSE) {
        last = Status::busy("bind " + where + ": " + std::strerror(err) +
                            ": another server is using this port; stop it or choose another "
                            "port");
      }
      continue;
    }
    if (::listen(socket.fd(), 511) != 0) {  // Redis's backlog; the kernel may cap it
      last = os_error("listen on", where, errno);
      continue;
    }
    sockaddr_storage local{};
    socklen_t length = sizeof(local);
    if (::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&local), &length) != 0) {
      return os_error("read the address of", where, errno);
    }
    *bound_port = ntohs(local.ss_family == AF_INET6
                            ? reinterpret_cast<sockaddr_in6*>(&local)->sin6_port
                            : reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    *listener = std::move(socket);
    return Status();
  }
  return last;
}

// Accepts one waiting connection. OK with an invalid *socket when none is waiting or the
// one that was has gone already; IOError when the process is out of descriptors or memory.
inline Status accept_connection(int listener, Socket* socket) {
  while (true) {
    Socket accepted(accept_socket(listener));
    if (accepted.valid()) {
      if (Status s = prepare_socket(accepted.fd(), "accepted connection"); !s.ok()) continue;
      *socket = std::move(accepted);
      return Status();
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED || err == EPROTO) {
      return Status();
    }
    return os_error("accept", "a connection", err);
  }
}

// "127.0.0.1:52110": who is at the other end of a connection, for messages.
inline std::string peer_address(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  char host[NI_MAXHOST];
  char service[NI_MAXSERV];
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0 ||
      ::getnameinfo(reinterpret_cast<sockaddr*>(&peer), length, host, sizeof(host), service,
                    sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "unknown peer";
  }
  return endpoint(host, std::atoi(service));
}

// Waits until `fd` is ready for `events` (POLLIN, POLLOUT; fd -1 waits for nothing),
// `wake` is readable (-1: not watched), or `timeout_ms` passes (-1: no limit). Returns what
// `fd` is ready for (POLLHUP and POLLERR count as ready: the next call says what happened)
// and sets *woken when `wake` fired. A signal ends the wait early; callers loop anyway.
inline short wait_ready(int fd, short events, int wake, int timeout_ms, bool* woken) {
  pollfd fds[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
  const int r = ::poll(fds, 2, timeout_ms);
  *woken = r > 0 && (fds[1].revents & POLLIN) != 0;
  return r > 0 ? fds[0].revents : 0;
}

// Sends what the socket takes now; *sent is 0 when its buffer is full. IOError when the
// peer has gone (MSG_NOSIGNAL: a closed peer is an error here, never a SIGPIPE).
inline Status send_some(int fd, std::string_view data, std::size_t* sent) {
#if defined(MSG_NOSIGNAL)
  const int flags = MSG_NOSIGNAL;
#else
  const int flags = 0;  // SO_NOSIGPIPE, set by prepare_socket, does the same
#endif
  *sent = 0;
  while (true) {
    const ssize_t n = ::send(fd, data.data(), data.size(), flags);
    if (n >= 0) {
      *sent = static_cast<std::size_t>(n);
      return Status();
    }
    const int err = errno;  // before peer_address, whose own calls may change errno
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return Status();
    return os_error("send to", peer_address(fd), err);
  }
}

// Reads what has arrived, at most `n` bytes; *got is 0 when nothing has. *closed says the
// peer has closed its side (no more bytes will ever come).
inline Status receive_some(int fd, char* buffer, std::size_t n, std::size_t* got, bool* closed) {
  *got = 0;
  *closed = false;
  while (true) {
    const ssize_t r = ::recv(fd, buffer, n, 0);
    if (r > 0) {
      *got = static_cast<std::size_t>(r);
      return Status();
    }
    if (r == 0) {
      *closed = true;
      return Status();
    }
    const int err = errno;  // before peer_address, whose own calls may change errno
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return Status();
    return os_error("receive from", peer_address(fd), err);
  }
}

// Connects to host:port, giving up after timeout_ms. The socket is non-blocking, with
// TCP_NODELAY.
inline Status connect_tcp(const std::string& host, int port, int timeout_ms, Socket* socket) {
  AddressList addresses(nullptr, ::freeaddrinfo);
  if (Status s = resolve(host, port, false, &addresses); !s.ok()) return s;
  const std::string where = endpoint(host, port);
  Status last = Status::io_error("no address to connect to for " + where);
  for (addrinfo* a = addresses.get(); a != nullptr; a = a->ai_next) {
    Socket candidate(new_socket(a));
    if (!candidate.valid()) {
      last = os_error("create socket for", where, errno);
      continue;
    }
    if (Status s = prepare_socket(candidate.fd(), where); !s.ok()) return s;
    int err = ::connect(candidate.fd(), a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS || err == EINTR) {  // the handshake goes on without us: wait
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
      bool woken = false;
      short ready = 0;
      while (ready == 0 && std::chrono::steady_clock::now() < deadline) {  // a signal ends a poll
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        ready = wait_ready(candidate.fd(), POLLOUT, -1, static_cast<int>(left.count()) + 1, &woken);
      }
      if ((ready & (POLLOUT | POLLERR | POLLHUP)) == 0) {
        err = ETIMEDOUT;
      } else {
        socklen_t length = sizeof(err);
        if (::getsockopt(candidate.fd(), SOL_SOCKET, SO_ERROR, &err, &length) != 0) err = errno;
      }
    }
    if (err != 0) {
      last = os_error("connect to", where, err);
      continue;
    }
    set_no_delay(candidate.fd());
    *socket = std::move(candidate);
    return Status();
  }
  return last;
}

// A pipe that, once notify() is called, stays readable for good: every thread polling it
// wakes, now and later. The server's stop() uses one to reach threads blocked in poll(2)
// on their own sockets. notify() only calls write(2), so it is async-signal-safe.
class Wakeup {
 public:
  Wakeup() = default;
  ~Wakeup() {
    if (read_ >= 0) ::close(read_);
    if (write_ >= 0) ::close(write_);
  }
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  Status open() {
    int fds[2];
#if defined(SOCK_CLOEXEC)
    // Close-on-exec from the start, as for sockets (new_socket); the systems that have
    // SOCK_CLOEXEC have pipe2 too, and the others (macOS) neither.
    if (::pipe2(fds, O_CLOEXEC) != 0) return os_error("create", "a pipe", errno);
#else
    if (::pipe(fds) != 0) return os_error("create", "a pipe", errno);
    for (int fd : fds) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    read_ = fds[0];
    write_ = fds[1];
    ::fcntl(write_, F_SETFL, O_NONBLOCK);  // a full pipe is readable already: never wait
    ::fcntl(read_, F_SETFL, O_NONBLOCK);  // drain() reads until it is empty, never waits
    return Status();
  }
  void notify() {
    const char byte = 1;
    ssize_t ignored = ::write(write_, &byte, 1);
    (void)ignored;  // EAGAIN means it is readable already, which is all we want
  }
  // Empties the pipe, so that it is readable again only after the next notify() (chapter
  // 13: an event loop's doorbell, rung for each connection handed to it). Call drain()
  // before looking at what the notifiers left: a notify() after that look rings again.
  void drain() {
    char bytes[64];
    while (::read(read_, bytes, sizeof(bytes)) > 0) {
    }
  }
  int fd() const { return read_; }

 private:
  int read_ = -1;
  int write_ = -1;
};

// Raises the soft limit on open descriptors toward `wanted`, never past the hard limit
// (only root may raise that), and returns the soft limit now in force.
inline std::uint64_t raise_open_files_limit(std::uint64_t wanted) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  auto as_count = [](rlim_t value) {
    return value == RLIM_INFINITY ? std::numeric_limits<std::uint64_t>::max()
                                  : static_cast<std::uint64_t>(value);
  };
  if (as_count(limit.rlim_cur) >= wanted) return as_count(limit.rlim_cur);
  const rlim_t target = static_cast<rlim_t>(std::min(wanted, as_count(limit.rlim_max)));
  limit.rlim_cur = target;
  if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) return as_count(target);
  ::getrlimit(RLIMIT_NOFILE, &limit);
  return as_count(limit.rlim_cur);
}

// Readiness (chapter 14): which of many descriptors can be read or written now, asked of
// the kernel in one call. A Poller watches a set of descriptors, each for POLLIN, POLLOUT
// or both, and wait() reports those ready (POLLHUP and POLLERR count as ready, as in
// wait_ready). Level-triggered: a descriptor stays ready until what made it ready is
// consumed, so a loop that reads only part of what arrived is told again. Not
// thread-safe: one Poller belongs to one event loop's thread.
struct PollerEvent {
  int fd;
  short events;  // POLLIN, POLLOUT, POLLHUP, POLLERR
};

// poll(2), on every POSIX system: the set lives in user space and goes to the kernel whole
// on every wait, so a wait costs time in proportion to the descriptors watched.
class PollPoller {
 public:
  Status open() { return Status(); }
  Status add(int fd, short events) {
    where_[fd] = fds_.size();
    fds_.push_back({fd, events, 0});
    return Status();
  }
  Status modify(int fd, short events) {
    fds_[where_.at(fd)].events = events;
    return Status();
  }
  void remove(int fd) {  // the last entry takes the removed one's place
    const std::size_t i = where_.at(fd);
    fds_[i] = fds_.back();
    where_[fds_[i].fd] = i;
    fds_.pop_back();
    where_.erase(fd);
  }
  // Waits at most timeout_ms (-1: no limit) and fills *ready; empty after a timeout or a
  // signal.
  void wait(int timeout_ms, std::vector<PollerEvent>* ready) {
    ready->clear();
    if (::poll(fds_.data(), static_cast<nfds_t>(fds_.size()), timeout_ms) <= 0) return;
    for (const pollfd& p : fds_) {
      if (p.revents != 0) ready->push_back({p.fd, p.revents});
    }
  }

 private:
  std::vector<pollfd> fds_;
  std::unordered_map<int, std::size_t> where_;  // fd -> its place in fds_
};

#if defined(__linux__)
// epoll, on Linux: the set lives in the kernel, changed one descriptor at a time, and a
// wait costs time in proportion to the descriptors that are ready, not to those watched.
class EpollPoller {
 public:
  EpollPoller() = default;
  ~EpollPoller() {
    if (epoll_ >= 0) ::close(epoll_);
  }
  EpollPoller(const EpollPoller&) = delete;
  EpollPoller& operator=(const EpollPoller&) = delete;

  Status open() {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    return epoll_ >= 0 ? Status() : os_error("create", "an epoll instance", errno);
  }
  Status add(int fd, short events) { return control(EPOLL_CTL_ADD, fd, events); }
  Status modify(int fd, short events) { return control(EPOLL_CTL_MOD, fd, events); }
  void remove(int fd) { ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr); }
  void wait(int timeout_ms, std::vector<PollerEvent>* ready) {
    ready->clear();
    epoll_event events[256];
    const int n = ::epoll_wait(epoll_, events, 256, timeout_ms);
    for (int i = 0; i < n; ++i) {
      const std::uint32_t e = events[i].events;
      ready->push_back({events[i].data.fd,
                        static_cast<short>(((e & EPOLLIN) ? POLLIN : 0) |
                                           ((e & EPOLLOUT) ? POLLOUT : 0) |
                                           ((e & EPOLLHUP) ? POLLHUP : 0) |
                                           ((e & EPOLLERR) ? POLLERR : 0))});
    }
  }

 private:
  Status control(int op, int fd, short events) {
    epoll_event e{};
    e.events = ((events & POLLIN) ? EPOLLIN : 0u) | ((events & POLLOUT) ? EPOLLOUT : 0u);
    e.data.fd = fd;
    return ::epoll_ctl(epoll_, op, fd, &e) == 0 ? Status()
                                                 : os_error("watch", "a descriptor", errno);
  }
  int epoll_ = -1;
};
using Poller = EpollPoller;
#else
using Poller = PollPoller;
#endif

}  // namespace detail

// Process management (chapter 9): a PID file, and signals as values.
//
// A PID file names the process that serves a data directory and keeps a second one out.
// "Read the pid, check whether that process lives, write ours" races: two starters can
// both find no live process and both write, and a pid can be reused by an unrelated
// process. The flock of lock_file() leaves the question to the kernel, which drops the
// lock when its holder dies, however it dies.
//
// A PID file is ours to write and, at exit, to remove. So a path that holds anything else
// (a directory, a device, a data file: --pidfile aimed at the store's own log) is refused
// and left untouched: only a missing file (created), an empty one (a starter that died
// before writing its pid) or one holding a pid alone ("1234\n") is taken.
class PidFile {
 public:
  // Takes `path`, writing our pid in it. Busy, "already running as pid N (PID file
  // PATH)", while another process holds it. A file whose lock nobody holds is taken over
  // (its process has exited, whatever holds that pid now), and *stale_pid (when not
  // null) gets the pid it held. InvalidArgument, and nothing changed, for a path that is
  // not a PID file (see above).
  static Status acquire(const std::string& path, std::unique_ptr<PidFile>* pid_file,
                        std::string* stale_pid = nullptr) {
    // Checked before lock_file opens it: opening a device or a FIFO may do something.
    struct stat found;
    if (::stat(path.c_str(), &found) == 0 && !S_ISREG(found.st_mode)) {
      return not_a_pid_file(path, S_ISDIR(found.st_mode) ? "is a directory"
                                                         : "is not a regular file");
    }
    // The holder removes the file just before it lets go of the lock. A starter that
    // opened the file before the removal and locked it after holds a lock on a file no
    // longer under that name, while a third process creates and locks a new one: two
    // instances. So after locking, check that the name still leads to the file locked.
    for (int attempt = 0; attempt < 10; ++attempt) {
      int fd = -1;
      std::string pid;
      if (Status s = detail::lock_file(path, &fd, &pid); !s.ok()) {
        if (s.code() != Status::Code::kBusy) return s;
        return Status::busy("already running as pid " + (pid.empty() ? "unknown" : pid) +
                            " (PID file " + path + ")");
      }
      struct stat locked, named;
      if (::fstat(fd, &locked) != 0) {
        const int err = errno;
        ::close(fd);
        return detail::os_error("stat", path, err);
      }
      if (::stat(path.c_str(), &named) != 0) {
        const int err = errno;
        ::close(fd);
        if (err == ENOENT) continue;  // removed under us: try the file made since
        return detail::os_error("stat", path, err);
      }
      if (named.st_ino != locked.st_ino || named.st_dev != locked.st_dev) {
        ::close(fd);  // replaced under us: try the file that has the name now
        continue;
      }
      // Under the lock, so that the file cannot change between this look and the write.
      if (const char* what = not_a_pid(fd, locked)) {
        ::close(fd);
        return not_a_pid_file(path, what);
      }
      if (Status s = detail::write_pid(fd, path); !s.ok()) {
        ::close(fd);
        return s;
      }
      // Our own pid in the file is no stale holder: a container's pid 1 restarted, say.
      if (stale_pid != nullptr) *stale_pid = pid == std::to_string(::getpid()) ? "" : pid;
      pid_file->reset(new PidFile(fd, path));
      return Status();
    }
    return Status::io_error("PID file " + path + " was removed again and again while it was "
                            "taken: is another program deleting it?");
  }

  // Removes the file, then closes it, which lets go of the lock: in that order, nobody
  // can find the file unlocked with our pid in it. A file someone put in its place (ours
  // deleted by hand, another instance started) is not ours to remove.
  ~PidFile() {
    struct stat locked, named;
    if (::fstat(fd_, &locked) == 0 && ::stat(path_.c_str(), &named) == 0 &&
        named.st_ino == locked.st_ino && named.st_dev == locked.st_dev) {
      ::unlink(path_.c_str());
    }
    ::close(fd_);
  }
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  PidFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  // Why the open file `fd`, whose status is `st`, cannot be a PID file, or null when it
  // can: a regular file, empty or holding decimal digits and at most one newline.
  static const char* not_a_pid(int fd, const struct stat& st) {
    if (!S_ISREG(st.st_mode)) return "is not a regular file";
    char buf[24];
    if (st.st_size > static_cast<off_t>(sizeof(buf))) return "holds more than a process id";
    const ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
    if (n < 0) return "cannot be read";
    ssize_t digits = 0;
    while (digits < n && buf[digits] >= '0' && buf[digits] <= '9') ++digits;
    const bool pid = digits == n || (digits > 0 && digits + 1 == n && buf[digits] == '\n');
    return pid ? nullptr : "holds something other than a process id";
  }

  static Status not_a_pid_file(const std::string& path, const char* what) {
    return Status::invalid_argument(path + " " + what + ", so it cannot be a PID file; "
                                    "nothing was changed: give the path of a new file, or "
                                    "of a PID file (one that holds a process id alone)");
  }

  int fd_;
  std::string path_;
};

// Turns SIGHUP, SIGTERM and SIGINT into values one thread waits for, with sigwait(2). A
// signal handler may call only async-signal-safe functions (no malloc, no mutex, no
// printf); a thread that waits for the signal runs ordinary code, compaction included.
class SignalWaiter {
 public:
  // Blocks the three signals in the calling thread. Threads inherit the mask of the
  // thread that starts them, so construct this in main() before any thread starts: a
  // thread that kept them unblocked would receive one and the process would die of it.
  // Also ignores SIGPIPE for the whole process: writing to a closed connection then fails
  // with EPIPE instead of killing the process (MSG_NOSIGNAL already asks for that on
  // each send; this covers every other write). Both pass on to child processes, through
  // fork and exec: a program that starts others should restore the defaults in the child.
  SignalWaiter() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGHUP);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
  }
  SignalWaiter(const SignalWaiter&) = delete;
  SignalWaiter& operator=(const SignalWaiter&) = delete;

  // Waits until one of the signals arrives and returns it: SIGHUP, SIGTERM or SIGINT.
  // When several are pending, a shutdown (SIGTERM, then SIGINT) comes first: sigwait
  // leaves the order to the system, and Linux returns the lowest number first, SIGHUP (1)
  // before SIGINT (2) and SIGTERM (15), so a shutdown would wait behind a compaction.
  int wait() {
    sigset_t pending;
    sigemptyset(&pending);
    if (sigpending(&pending) == 0) {
      for (int wanted : {SIGTERM, SIGINT}) {
        sigset_t only;
        sigemptyset(&only);
        sigaddset(&only, wanted);
        int signal = 0;
        if (sigismember(&pending, wanted) == 1 && sigwait(&only, &signal) == 0) return signal;
      }
    }
    int signal = 0;
    while (sigwait(&set_, &signal) != 0) {
    }
    return signal;
  }

  // Makes wait(), in `thread`, return SIGTERM: how the owner ends the thread that waits.
  static void interrupt(std::thread& thread) { pthread_kill(thread.native_handle(), SIGTERM); }

  static const char* name(int signal) {
    return signal == SIGHUP ? "SIGHUP" : signal == SIGTERM ? "SIGTERM"
                                       : signal == SIGINT  ? "SIGINT" : "a signal";
  }

 private:
  sigset_t set_;
};

namespace detail {

// CRC-32C in hardware (chapter 15). SSE 4.2's crc32 instruction and ARMv8's crc32c
// compute exactly the CRC of the table in the log section (the Castagnoli polynomial,
// reflected), 8 bytes per instruction instead of one table lookup per byte. Not every
// processor has them, and a header must run wherever it is compiled, so the code is
// compiled for the instruction with a target attribute (no -msse4.2 needed) and
// used only once has_hardware_crc32c() has asked the processor, at run time.
#if defined(KEYSTONELIGHT_CRC32C_SSE42)
inline bool has_hardware_crc32c() {
  __builtin_cpu_init();  // needed if a store is opened before main(), by a static's constructor
  return __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2")))
inline std::uint32_t crc32c_extend_hardware(std::uint32_t crc, const char* data, std::size_t n) {
  std::uint64_t c = ~crc;
  for (; n >= 8; data += 8, n -= 8) {
    std::uint64_t word;
    std::memcpy(&word, data, 8);  // any alignment; a cast would be undefined behaviour
    c = _mm_crc32_u64(c, word);
  }
  auto c32 = static_cast<std::uint32_t>(c);
  for (; n > 0; ++data, --n) c32 = _mm_crc32_u8(c32, static_cast<unsigned char>(*data));
  return ~c32;
}
#elif defined(KEYSTONELIGHT_CRC32C_ARMV8)
inline bool has_hardware_crc32c() { return (::getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }

// GCC and clang name the extension, and the instructions, each its own way.
#if defined(__clang__)
#define KEYSTONELIGHT_CRC32CD __builtin_arm_crc32cd
#define KEYSTONELIGHT_CRC32CB __builtin_arm_crc32cb
__attribute__((target("crc")))
#else
#define KEYSTONELIGHT_CRC32CD __crc32cd
#define KEYSTONELIGHT_CRC32CB __crc32cb
__attribute__((target("+crc")))
#endif
inline std::uint32_t crc32c_extend_hardware(std::uint32_t crc, const char* data, std::size_t n) {
  std::uint32_t c = ~crc;
  for (; n >= 8; data += 8, n -= 8) {
    std::uint64_t word;
    std::memcpy(&word, data, 8);  // little-endian, as the instruction reads it
    c = KEYSTONELIGHT_CRC32CD(c, word);
  }
  for (; n > 0; ++data, --n) c = KEYSTONELIGHT_CRC32CB(c, static_cast<unsigned char>(*data));
  return ~c;
}
#else
inline bool has_hardware_crc32c() { return false; }

inline std::uint32_t crc32c_extend_hardware(std::uint32_t, const char*, std::size_t) {
  assert(false && "no CRC-32C instruction on this platform");
  return 0;
}
#endif

// Whether crc32c_extend() uses the instruction: decided once, from what the processor
// says it has. Tests turn it off to run the table on a machine that has the instruction.
inline std::atomic<bool>& crc32c_uses_hardware() {
  static std::atomic<bool> uses{has_hardware_crc32c()};
  return uses;
}

}  // namespace detail

inline FileSystem* default_file_system() {
  static detail::PosixFileSystem posix;
  return &posix;
}

// =======================================================================================
// Chapter 2: the append-only log
//
// Every change becomes a record appended to one file; replaying the file from the start
// rebuilds the map. Appends are sequential writes, the cheapest thing a disk does, and a
// crash can only damage the end of the file. Each record carries CRC-32Cs of itself, so
// the reader can tell a whole record from a torn or damaged one. The byte layout, with a
// diagram, is in docs/log-format.md. All integers are little-endian.
//
//   file header   magic "KEYSTONE" (8) | version (4) | CRC-32C of the 12 bytes before (4)
//   record        header CRC (4) | body CRC (4) | type (1) | key length (4)
//                 | value length (4) | expiry, ms since the Unix epoch, 0 = none (8)
//                 | key | value
//
// The header CRC covers the 21 header bytes after it, the body CRC the key and value. Two
// CRCs, not one: a reader looking for the next valid record after damage tries every byte
// offset, and with a header CRC each wrong offset costs 21 bytes of checking, not a CRC
// over whatever length the bytes there happen to claim (which made that search
// quadratic). Records hold resulting values, never operations, so replaying one twice
// changes nothing.
// =======================================================================================

enum class RecordType : std::uint8_t {
  kPut = 1,     // key now has value (and, from chapter 10, the expiry in the header)
  kDelete = 2,  // key has no value; the value length is 0
  kExpire = 3,  // key keeps its value, and its expiry becomes the header's (0: none); the
                // value length is 0. Version 2 of the format (chapter 10) adds it.
  kBatch = 4,   // several changes that apply together or not at all: no key, and a value
                // made of entries (see detail::encode_batch_entry). Version 3 (chapter 11).
  kAppend = 5,  // the value grows by the record's value at its end (a missing key starts
                // empty); the expiry stays as it was. Version 4 (chapter 13): an APPEND
                // of k bytes logs k bytes, not the whole value.
};

inline constexpr char kLogMagic[8] = {'K', 'E', 'Y', 'S', 'T', 'O', 'N', 'E'};
// The format version this build writes. It reads every version up to this one: a new
// record type bumps it, so that an older build refuses a log it cannot read by saying so
// rather than by calling a record it does not know damage.
inline constexpr std::uint32_t kLogVersion = 4;
inline constexpr std::size_t kFileHeaderBytes = 8 + 4 + 4;           // magic, version, CRC
// Header CRC, body CRC, type, key length, value length, expiry.
inline constexpr std::size_t kRecordHeaderBytes = 4 + 4 + 1 + 4 + 4 + 8;
inline constexpr std::uint32_t kMaxKeyBytes = KEYSTONELIGHT_MAX_KEY_BYTES;
inline constexpr std::uint32_t kMaxValueBytes = KEYSTONELIGHT_MAX_VALUE_BYTES;
// Whether records of this type have a value: a put's, and an append's piece. Every other
// change has a value length of 0 (a batch's value is its entries: read apart).
inline constexpr bool carries_value(unsigned char type) {
  return type == static_cast<unsigned char>(RecordType::kPut) ||
         type == static_cast<unsigned char>(RecordType::kAppend);
}
// A batch entry: type, key length, value length, expiry; then its key and value. The
// batch record's body CRC covers every entry, so an entry carries no CRC of its own.
inline constexpr std::size_t kBatchEntryHeaderBytes = 1 + 4 + 4 + 8;
// The most a batch record's entries may hold: what its 32-bit value length can say.
inline constexpr std::uint64_t kMaxBatchBytes = 0xFFFFFFFFu;

// One record as the reader found it. The views point into the reader's buffer and stay
// valid until its next call.
struct Record {
  RecordType type = RecordType::kPut;
  std::string_view key;
  std::string_view value;
  std::uint64_t expiry_ms = 0;
  std::uint64_t offset = 0;  // where the record starts in the file
  std::uint64_t size = 0;    // its length in bytes, header included
};

namespace detail {

// CRC-32C (Castagnoli): the polynomial of iSCSI, ext4 and LevelDB, better at catching the
// burst errors of storage than the CRC-32 of zip. One table lookup per byte, table built
// at compile time from the reflected polynomial 0x82F63B78.
struct Crc32cTable {
  std::uint32_t entry[256] = {};
  constexpr Crc32cTable() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t crc = i;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78u : 0u);
      entry[i] = crc;
    }
  }
};
inline constexpr Crc32cTable kCrc32cTable{};

// The table's CRC, a byte at a time: what crc32c_extend() falls back on (chapter 15).
inline std::uint32_t crc32c_extend_table(std::uint32_t crc, const char* data, std::size_t n) {
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) {
    crc = kCrc32cTable.entry[(crc ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (crc >> 8);
  }
  return ~crc;
}

// Extends `crc` (the CRC of what came before, 0 at the start) with `n` more bytes: with
// the processor's CRC instruction where it has one (chapter 15), else with the table.
inline std::uint32_t crc32c_extend(std::uint32_t crc, const char* data, std::size_t n) {
  return crc32c_uses_hardware().load(std::memory_order_relaxed)
             ? crc32c_extend_hardware(crc, data, n)
             : crc32c_extend_table(crc, data, n);
}
inline std::uint32_t crc32c(std::string_view data) {
  return crc32c_extend(0, data.data(), data.size());
}

// Fixed-width little-endian integers, byte by byte: the same file reads the same on
// every machine, whatever its own byte order.
inline void put_u32(std::string* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline void put_u64(std::string* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
inline std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// The 16 bytes every log starts with.
inline std::string encode_file_header(std::uint32_t version = kLogVersion) {
  std::string header(kLogMagic, sizeof(kLogMagic));
  put_u32(&header, version);
  put_u32(&header, crc32c(header));
  return header;
}

inline void store_u32(char* at, std::uint32_t v) {
  for (std::size_t i = 0; i < 4; ++i) at[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

// Writes the header CRC of the record header at `header` (kRecordHeaderBytes long) from the
// 21 bytes after it. Tests call it too, to forge headers that are damaged in one field only.
inline void seal_record_header(char* header) {
  store_u32(header, crc32c_extend(0, header + 4, kRecordHeaderBytes - 4));
}

// Appends one encoded record to *out. The caller has checked the lengths.
inline void encode_record(RecordType type, std::string_view key, std::string_view value,
                          std::uint64_t expiry_ms, std::string* out) {
  const std::size_t start = out->size();
  put_u32(out, 0);  // the header CRC, sealed below once the rest of the header is known
  put_u32(out, crc32c_extend(crc32c(key), value.data(), value.size()));
  out->push_back(static_cast<char>(type));
  put_u32(out, static_cast<std::uint32_t>(key.size()));
  put_u32(out, static_cast<std::uint32_t>(value.size()));
  put_u64(out, expiry_ms);
  seal_record_header(out->data() + start);
  out->append(key);
  out->append(value);
}

// Appends one entry of a batch record's value to *out.
inline void encode_batch_entry(RecordType type, std::string_view key, std::string_view value,
                               std::uint64_t expiry_ms, std::string* out) {
  out->push_back(static_cast<char>(type));
  put_u32(out, static_cast<std::uint32_t>(key.size()));
  put_u32(out, static_cast<std::uint32_t>(value.size()));
  put_u64(out, expiry_ms);
  out->append(key);
  out->append(value);
}

// Reads the entries of a batch record's value, one at a time. next() is false at the end
// or at an entry that does not fit or make sense (valid_batch() says which).
class BatchReader {
 public:
  explicit BatchReader(std::string_view body) : body_(body) {}
  bool next(Record* entry) {
    if (body_.size() < kBatchEntryHeaderBytes) return false;
    const char* p = body_.data();
    const auto type = static_cast<unsigned char>(p[0]);
    const std::uint32_t key_bytes = get_u32(p + 1);
    const std::uint32_t value_bytes = get_u32(p + 5);
    const std::uint64_t size = kBatchEntryHeaderBytes + std::uint64_t{key_bytes} + value_bytes;
    // Any change but a batch: batches do not nest.
    if (type < static_cast<unsigned char>(RecordType::kPut) ||
        type > static_cast<unsigned char>(RecordType::kAppend) ||
        type == static_cast<unsigned char>(RecordType::kBatch) || key_bytes > kMaxKeyBytes ||
        value_bytes > kMaxValueBytes || (!carries_value(type) && value_bytes != 0) ||
        size > body_.size()) {
      return false;
    }
    entry->type = static_cast<RecordType>(type);
    entry->key = body_.substr(kBatchEntryHeaderBytes, key_bytes);
    entry->value = body_.substr(kBatchEntryHeaderBytes + key_bytes, value_bytes);
    entry->expiry_ms = get_u64(p + 9);
    body_.remove_prefix(static_cast<std::size_t>(size));
    return true;
  }
  bool at_end() const { return body_.empty(); }

 private:
  std::string_view body_;
};

// Whether a batch record's value is a whole number of entries, at least two, each one a
// put, delete, expire or append that a record of its own could hold.
inline bool valid_batch(std::string_view body) {
  BatchReader reader(body);
  Record entry;
  std::size_t count = 0;
  while (reader.next(&entry)) ++count;
  return reader.at_end() && count >= 2;
}

}  // namespace detail

// Checks a key and value against the limits of the record format.
inline Status check_record_limits(std::string_view key, std::string_view value) {
  if (key.size() > kMaxKeyBytes) {
    return Status::invalid_argument("key of " + std::to_string(key.size()) +
                                    " bytes is longer than the limit of " +
                                    std::to_string(kMaxKeyBytes) +
                                    " (KEYSTONELIGHT_MAX_KEY_BYTES)");
  }
  if (value.size() > kMaxValueBytes) {
    return Status::invalid_argument("value of " + std::to_string(value.size()) +
                                    " bytes is longer than the limit of " +
                                    std::to_string(kMaxValueBytes) +
                                    " (KEYSTONELIGHT_MAX_VALUE_BYTES)");
  }
  return Status();
}

// Checks a whole record against the format before it is written.
inline Status check_record(RecordType type, std::string_view key, std::string_view value) {
  if (type == RecordType::kBatch) {
    if (key.empty() && value.size() <= kMaxBatchBytes) return Status();
    return Status::invalid_argument("a batch of " + std::to_string(value.size()) + " bytes is "
                                    "more than one record can hold (4 GiB): change fewer keys "
                                    "at a time");
  }
  if (Status s = check_record_limits(key, value); !s.ok()) return s;
  if (!carries_value(static_cast<unsigned char>(type)) && !value.empty()) {
    return Status::invalid_argument("only a put or an append record has a value");
  }
  return Status();
}

// Appends records to a log file. Each record is handed to the file in one append, so
// when append() returns OK the whole record has reached the file (the operating system's
// cache, that is; sync() takes it to the disk). Not thread-safe, except that sync() may
// run while another thread appends.
class LogWriter {
 public:
  // Starts writing at the end of `file`, whose first `size` bytes are a valid log (at
  // least the file header). To start a new log, use create().
  LogWriter(std::unique_ptr<File> file, std::uint64_t size)
      : file_(std::move(file)), size_(size) {}

  // Makes `file`, which must be empty, a log by writing the file header.
  static Status create(std::unique_ptr<File> file, std::unique_ptr<LogWriter>* writer) {
    if (Status s = file->append(detail::encode_file_header()); !s.ok()) return s;
    writer->reset(new LogWriter(std::move(file), kFileHeaderBytes));
    return Status();
  }

  // Appends one record. On failure the file is cut back to where the record began (when
  // the file allows), so a failed append never leaves half a record behind.
  Status append(RecordType type, std::string_view key, std::string_view value,
                std::uint64_t expiry_ms = 0) {
    if (Status s = check_record(type, key, value); !s.ok()) return s;
    if (!broken_.ok()) return broken_;
    buffer_.clear();
    detail::encode_record(type, key, value, expiry_ms, &buffer_);
    Status s = append_encoded(buffer_);
    if (buffer_.capacity() > kKeepBufferBytes) std::string().swap(buffer_);
    return s;
  }

  // Appends records encoded already, a batch of them (chapter 16), in one write(2). On
  // failure the file is cut back to where they began, so none of them is left behind.
  Status append_encoded(std::string_view records) {
    if (!broken_.ok()) return broken_;
    if (records.empty()) return Status();
    Status s = file_->append(records);
    if (!s.ok()) {
      // Cut the partial records off. If even that fails, the file holds half a record
      // that a later append would bury in the middle of the log: refuse every append.
      if (!file_->truncate(size_).ok()) broken_ = s;
      return s;
    }
    size_ += records.size();
    return Status();
  }

  Status sync() { return file_->sync(); }

  // Cuts the log back to `size` bytes (no more than size()), dropping the records after.
  Status truncate(std::uint64_t size) {
    if (size > size_) return Status::invalid_argument("cannot cut a log forward");
    Status s = file_->truncate(size);
    if (s.ok()) size_ = size;
    return s;
  }

  std::uint64_t size() const { return size_; }
  File& file() { return *file_; }

 private:
  static constexpr std::size_t kKeepBufferBytes = 1 << 20;  // drop buffers grown past this

  std::unique_ptr<File> file_;
  // Atomic: a group-commit leader appends while a writer asks for the size (chapter 16).
  std::atomic<std::uint64_t> size_;
  std::string buffer_;  // the record being written, reused to spare an allocation each
  Status broken_;       // set when a failed append could not be cut back
};

// Reads a log from the start, one record at a time, and says precisely where and why it
// stopped. It does not decide whether a bad record is a torn tail or damage in the
// middle: that takes a look at what follows (find_valid_record_after), and the choice
// is recovery's (chapter 3). It never allocates more than the file holds.
class LogReader {
 public:
  enum class Result {
    kRecord,       // a whole record whose two CRCs match
    kEnd,          // the clean end of the file
    kIncomplete,   // the file ends inside the record's header or body
    kBadChecksum,  // the header's or the body's CRC does not match its bytes
    kBadType,      // the type byte names no record type of the file's version
    kBadLength,    // a length beyond the limits, or a value where the type has none
    kIOError,      // reading failed; see status()
  };

  // What open() found at the start of the file.
  enum class Header {
    kValid,    // a whole, matching header
    kMissing,  // the file is empty
    kTorn,     // the file is shorter than a header and holds a prefix of one
  };

  // Reads from `file`, which must outlive the reader.
  explicit LogReader(File* file) : file_(file) {}

  // Reads the file's size and checks its header. A wrong magic number or a damaged header
  // is Corruption, a version from the future NotSupported. On success the reader stands
  // at the first record (or, for kMissing and kTorn, at the end).
  Status open(Header* header) {
    if (Status s = file_->size(&file_size_); !s.ok()) return s;
    const std::size_t have =
        static_cast<std::size_t>(std::min<std::uint64_t>(file_size_, kFileHeaderBytes));
    const char* p = nullptr;
    if (Status s = fill(0, have, &p); !s.ok()) return s;
    const std::string_view found(p, have);
    offset_ = have;
    if (have < kFileHeaderBytes) {
      // A crash while a log was created, by this build or an older one (whose header
      // says its own version): a prefix of any header this build reads.
      bool torn = false;
      for (std::uint32_t version = 1; version <= kLogVersion && !torn; ++version) {
        torn = detail::encode_file_header(version).compare(0, have, found) == 0;
      }
      if (!torn) {
        return Status::corruption(file_->path() + " is " + std::to_string(have) +
                                  " bytes long and does not start like a Keystonelight log");
      }
      *header = have == 0 ? Header::kMissing : Header::kTorn;
      return Status();
    }
    if (found.substr(0, 8) != std::string_view(kLogMagic, 8)) {
      return Status::corruption(file_->path() +
                                " is not a Keystonelight log (no \"KEYSTONE\" magic at offset 0)");
    }
    if (detail::get_u32(p + 12) != detail::crc32c(found.substr(0, 12))) {
      return Status::corruption(file_->path() + ": the file header's checksum does not match "
                                "(offset 0); the header is damaged");
    }
    const std::uint32_t version = detail::get_u32(p + 8);
    if (version == 0 || version > kLogVersion) {
      return Status::not_supported(file_->path() + " is a version " + std::to_string(version) +
                                   " log; this build reads version " +
                                   std::to_string(kLogVersion) + ": use a newer Keystonelight");
    }
    version_ = version;
    *header = Header::kValid;
    return Status();
  }

  // The format version in the file's header, once open() has found it valid.
  std::uint32_t version() const { return version_; }

  // Reads the record at offset() into *record and moves past it. Any other result leaves
  // offset() at the start of the record that could not be read.
  Result next(Record* record) {
    Result r = parse_at(offset_, record);
    if (r == Result::kRecord) offset_ += record->size;
    return r;
  }

  // The first offset after `offset` where a whole, valid record starts, if any. A bad
  // record followed by valid ones is damage in the middle of the log; with nothing valid
  // after it, it is a torn write at the tail. A read error ends the search early: check
  // status() before taking "none" for an answer.
  //
  // The search costs time linear in the bytes after `offset`, whatever they hold. Each
  // offset costs a header CRC; only where that matches (once in 2^32 offsets by chance)
  // is the body read and checked, and those bodies are paid from a budget of twice the
  // bytes searched. Bytes made of record images whose bodies do not match can spend it:
  // the search then stops and sets *gave_up, and the caller must not take "none" for an
  // answer either.
  std::optional<std::uint64_t> find_valid_record_after(std::uint64_t offset,
                                                       bool* gave_up = nullptr) {
    std::uint64_t budget = 2 * (file_size_ - std::min(file_size_, offset)) + kSearchSlackBytes;
    if (gave_up != nullptr) *gave_up = false;
    Record record;
    for (std::uint64_t p = offset + 1; p + kRecordHeaderBytes <= file_size_; ++p) {
      Result r = parse_at(p, &record, &budget);
      if (r == Result::kRecord) return p;
      if (r == Result::kIOError) break;
      if (budget == kSpent) {
        if (gave_up != nullptr) *gave_up = true;
        break;
      }
    }
    return std::nullopt;
  }

  // Whether the bad record at `offset` (which ends at or before `end`) lies in a page that
  // reads as zeros from the record on: kPageBytes-aligned, zero from max(page, offset) to
  // the page's end (or `end`). That is what a power cut leaves where the page cache had
  // not yet written a page back: the file's size was already on disk, its bytes were not.
  bool in_zeroed_page(std::uint64_t offset, std::uint64_t end) {
    const char* p = nullptr;
    // The bad record's extent: all of it when its header holds, else just the header.
    std::uint64_t last = std::min(end, offset + kRecordHeaderBytes);
    if (file_size_ - offset < kRecordHeaderBytes) return false;
    if (!(status_ = fill(offset, kRecordHeaderBytes, &p)).ok()) return false;
    if (detail::get_u32(p) == detail::crc32c_extend(0, p + 4, kRecordHeaderBytes - 4)) {
      last = std::min(end, offset + kRecordHeaderBytes + detail::get_u32(p + 9) +
                               std::uint64_t{detail::get_u32(p + 13)});
    }
    for (std::uint64_t page = offset / kPageBytes * kPageBytes; page < last; page += kPageBytes) {
      const std::uint64_t from = std::max(page, offset);
      const std::uint64_t to = std::min(page + kPageBytes, end);
      if (!(status_ = fill(from, static_cast<std::size_t>(to - from), &p)).ok()) return false;
      if (std::all_of(p, p + (to - from), [](char c) { return c == 0; })) return true;
    }
    return false;
  }

  // The number of whole, valid records one after another from `offset`, for reports.
  std::uint64_t count_records_from(std::uint64_t offset) {
    Record record;
    std::uint64_t count = 0;
    while (parse_at(offset, &record) == Result::kRecord) {
      offset += record.size;
      ++count;
    }
    return count;
  }

  // About how many records the log holds from offset() on, to size a table before a
  // replay (chapter 15): the bytes left over the mean size of the first records, those
  // within the read-ahead buffer the replay reads next anyway (a budget of its size
  // keeps a first record of 100 MB from being read twice). Only whole, valid records
  // count, and each is at least kRecordHeaderBytes long, so the answer is never more
  // than the file could hold, whatever a damaged length claims. 0 when no record reads.
  // offset() does not move.
  std::uint64_t estimate_records() {
    Record record;
    std::uint64_t at = offset_;
    std::uint64_t count = 0;
    std::uint64_t budget = kReadAheadBytes;
    while (count < kEstimateRecords && parse_at(at, &record, &budget) == Result::kRecord) {
      at += record.size;
      ++count;
    }
    status_ = Status();  // next() meets any error again, at its own offset
    if (count == 0) return 0;
    return (file_size_ - offset_) / ((at - offset_) / count);
  }

  // The key of the record `ahead` records after offset(), when the read-ahead buffer
  // holds it already; empty when it does not. Unchecked (no CRC has vouched for it): a
  // hint for prefetching, never data.
  std::string_view peek_key(int ahead) const {
    const std::uint64_t end = buffer_start_ + buffer_.size();
    std::uint64_t at = offset_;
    for (int i = 0; at >= buffer_start_ && at + kRecordHeaderBytes <= end; ++i) {
      const char* p = buffer_.data() + (at - buffer_start_);
      const std::uint64_t key_bytes = detail::get_u32(p + 9);
      if (i == ahead) {
        if (at + kRecordHeaderBytes + key_bytes > end) break;
        return std::string_view(p + kRecordHeaderBytes, static_cast<std::size_t>(key_bytes));
      }
      at += kRecordHeaderBytes + key_bytes + detail::get_u32(p + 13);
    }
    return std::string_view();
  }

  // Words for a result, for messages: "checksum mismatch".
  static const char* describe(Result r) {
    switch (r) {
      case Result::kRecord: return "valid record";
      case Result::kEnd: return "end of log";
      case Result::kIncomplete: return "incomplete record";
      case Result::kBadChecksum: return "checksum mismatch";
      case Result::kBadType: return "unknown record type";
      case Result::kBadLength: return "impossible length";
      case Result::kIOError: return "read error";
    }
    return "unknown";
  }

  std::uint64_t offset() const { return offset_; }
  std::uint64_t file_size() const { return file_size_; }
  const Status& status() const { return status_; }  // the error behind kIOError

 private:
  static constexpr std::size_t kReadAheadBytes = 256 * 1024;
  static constexpr std::uint64_t kSearchSlackBytes = 1 << 20;  // a search may always spend
  static constexpr std::uint64_t kSpent = std::numeric_limits<std::uint64_t>::max();
  static constexpr std::uint64_t kPageBytes = 4096;  // the unit a power cut loses
  static constexpr std::uint64_t kEstimateRecords = 1024;  // read by estimate_records()

  // Parses the record at `at`. With `budget`, a body is checked only while the budget
  // covers its size, and is charged to it; one it cannot pay sets it to kSpent.
  Result parse_at(std::uint64_t at, Record* record, std::uint64_t* budget = nullptr) {
    if (at == file_size_) return Result::kEnd;
    if (file_size_ - at < kRecordHeaderBytes) return Result::kIncomplete;
    const char* p = nullptr;
    if (!(status_ = fill(at, kRecordHeaderBytes, &p)).ok()) return Result::kIOError;
    // The header's own CRC first: until it matches, no length here deserves trust.
    if (detail::get_u32(p) != detail::crc32c_extend(0, p + 4, kRecordHeaderBytes - 4)) {
      return Result::kBadChecksum;
    }
    const std::uint32_t body_crc = detail::get_u32(p + 4);
    const auto type = static_cast<unsigned char>(p[8]);
    const std::uint32_t key_bytes = detail::get_u32(p + 9);
    const std::uint32_t value_bytes = detail::get_u32(p + 13);
    const std::uint64_t expiry_ms = detail::get_u64(p + 17);
    if (type < static_cast<unsigned char>(RecordType::kPut) || type > max_type()) {
      return Result::kBadType;
    }
    const bool batch = type == static_cast<unsigned char>(RecordType::kBatch);
    if (key_bytes > (batch ? 0 : kMaxKeyBytes) || (!batch && value_bytes > kMaxValueBytes) ||
        (!batch && !carries_value(type) && value_bytes != 0)) {
      return Result::kBadLength;
    }
    // Checked against the file's size before anything is read or allocated: a damaged
    // length must not make us read (or reserve) half a gigabyte.
    const std::uint64_t size = kRecordHeaderBytes + std::uint64_t{key_bytes} + value_bytes;
    if (file_size_ - at < size) return Result::kIncomplete;
    if (budget != nullptr) {
      if (*budget < size) {
        *budget = kSpent;
        return Result::kBadChecksum;  // not checked; the caller stops here
      }
      *budget -= size;
    }
    if (!(status_ = fill(at, static_cast<std::size_t>(size), &p)).ok()) return Result::kIOError;
    if (body_crc != detail::crc32c_extend(0, p + kRecordHeaderBytes,
                                          static_cast<std::size_t>(size) - kRecordHeaderBytes)) {
      return Result::kBadChecksum;
    }
    // A batch whose CRC holds but whose entries do not add up was written wrong, not
    // damaged on the way: it is refused all the same, never half applied.
    if (batch && !detail::valid_batch(std::string_view(p + kRecordHeaderBytes, value_bytes))) {
      return Result::kBadLength;
    }
    record->type = static_cast<RecordType>(type);
    record->key = std::string_view(p + kRecordHeaderBytes, key_bytes);
    record->value = std::string_view(p + kRecordHeaderBytes + key_bytes, value_bytes);
    record->expiry_ms = expiry_ms;
    record->offset = at;
    record->size = size;
    return Result::kRecord;
  }

  // Makes bytes [at, at + n) of the file available at *data, reading ahead so that a
  // walk through small records costs one read(2) per 256 KiB, not one per record.
  Status fill(std::uint64_t at, std::size_t n, const char** data) {
    if (at < buffer_start_ || at + n > buffer_start_ + buffer_.size()) {
      const std::uint64_t want = std::min<std::uint64_t>(
          std::max<std::uint64_t>(n, kReadAheadBytes), file_size_ - at);
      buffer_.resize(static_cast<std::size_t>(want));
      std::size_t got = 0;
      if (Status s = file_->read_at(at, buffer_.data(), buffer_.size(), &got); !s.ok()) {
        buffer_.clear();
        return s;
      }
      buffer_.resize(got);
      buffer_start_ = at;
      if (got < n) {
        return Status::io_error("read " + file_->path() + ": the file shrank while being read");
      }
    }
    *data = buffer_.data() + (at - buffer_start_);
    return Status();
  }

  // The highest record type the file's version has: a version-1 log holds no kExpire.
  unsigned char max_type() const {
    const RecordType newest = version_ < 2   ? RecordType::kDelete
                              : version_ < 3 ? RecordType::kExpire
                              : version_ < 4 ? RecordType::kBatch
                                             : RecordType::kAppend;
    return static_cast<unsigned char>(newest);
  }

  File* file_;
  std::uint32_t version_ = kLogVersion;
  std::uint64_t file_size_ = 0;
  std::uint64_t offset_ = 0;
  std::string buffer_;              // bytes [buffer_start_, buffer_start_ + size) of the file
  std::uint64_t buffer_start_ = 0;
  Status status_;
};

// =======================================================================================
// Chapter 3: crash recovery
//
// A persistent store is a directory: DIR/keystonelight.log holds the records, DIR/LOCK
// keeps a second process out. Opening replays the log into the map. A crash can tear only
// the last record (appends never touch what is already written), so a bad record with
// nothing valid after it is cut off and reported; a bad record with valid records after
// it cannot come from a crash, and the store refuses to open rather than guess.
//
// Durability: in every fsync policy the record has reached the file, through write(2),
// before a write returns, so a killed process never loses an acknowledged write. Only the
// fsync, which protects against power loss, is a matter of policy.
// =======================================================================================

enum class FsyncPolicy {
  kAlways,       // fsync before every write returns: nothing acknowledged is ever lost
  kEverySecond,  // a background thread fsyncs once a second: a power cut loses about 1 s
  kNever,        // leave it to the operating system (typically within 30 s)
};

// Redis's name for a policy (its appendfsync setting): "always", "everysec" or "no".
inline const char* fsync_name(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::kAlways: return "always";
    case FsyncPolicy::kEverySecond: return "everysec";
    case FsyncPolicy::kNever: return "no";
  }
  return "unknown";
}

inline constexpr const char* kLogFileName = "keystonelight.log";
inline constexpr const char* kLockFileName = "LOCK";
inline constexpr const char* kCompactFileName = "keystonelight.log.compacting";

struct Options {
  // The data directory; empty for a store held in memory only. Created when missing (its
  // parent must exist).
  std::string dir;

  FsyncPolicy fsync = FsyncPolicy::kEverySecond;

  // Where files live. Null means default_file_system(); tests pass one that fails on cue.
  // It must outlive the store.
  FileSystem* file_system = nullptr;

  // Receives notes worth a person's attention, such as a torn tail cut off during
  // recovery. Empty means standard error. Called from the thread that opens the store
  // and (from chapter 5) from the store's compactor thread, never with a lock held; it
  // must be thread-safe and must not close or destroy the store.
  std::function<void(const std::string& message)> info_log;

  // Asked every few thousand records while the log is replayed; when it returns false,
  // open() stops at once with Cancelled and nothing changed on disk. A server uses it so
  // that SIGTERM during a long replay stops it promptly. Empty: the replay runs to the end.
  // Called from the thread that opens the store; it must not touch the store.
  std::function<bool()> keep_loading;

  // Automatic compaction (chapter 4): after a write, when the log is at least
  // compact_min_bytes long and more than compact_ratio times the size of the live data,
  // the store compacts. A ratio of 0 turns it off; compact() still works.
  std::uint64_t compact_min_bytes = KEYSTONELIGHT_COMPACT_MIN_BYTES;
  double compact_ratio = KEYSTONELIGHT_COMPACT_RATIO;

  // Expiry (chapter 10). The clock that says when a key's time has come: milliseconds
  // since the Unix epoch, the wall clock, as Redis keeps it. Empty: the system's clock.
  // Tests move time by hand with it. Called with the store's locks held: it must be fast
  // and must not touch the store.
  std::function<std::int64_t()> clock;

  // Whether a background thread removes expired keys nobody reads (active expiry). Off,
  // they are removed when touched, by compaction, or by remove_expired().
  bool active_expiry = true;
};

// Sizes and compaction counters of a store (chapter 4).
struct Stats {
  std::uint64_t log_bytes = 0;   // the log file's size; 0 for a store in memory
  std::uint64_t live_bytes = 0;  // what a compaction would write now, file header included
  std::uint64_t compactions = 0;         // finished since the store was opened
  std::uint64_t failed_compactions = 0;  // failed since then
  std::chrono::microseconds last_compaction_duration{0};
  Status last_compaction;  // the outcome of the last one; OK when there was none
  bool compaction_pending = false;  // the background compactor is due to run, or running
};

// What opening a persistent store found in its log (chapter 3).
struct RecoveryReport {
  std::uint64_t records = 0;        // records replayed
  std::uint64_t log_bytes = 0;      // size of the log after recovery
  std::uint64_t bytes_dropped = 0;  // torn tail cut off (0 after a clean shutdown)
  // After a power cut that lost unsynced pages: the whole records found after the hole,
  // dropped with it, and the file that keeps every dropped byte (see Damage::kLostPages).
  std::uint64_t records_dropped = 0;
  std::string dropped_file;
  std::uint64_t keys_expired = 0;  // replayed keys whose time had passed, left out (chapter 10)
  std::uint32_t log_version = 0;   // the format version the log was found in (chapter 10)
  std::chrono::microseconds duration{0};
};

namespace detail {

// Hands a message for a person to `info_log` (Options::info_log; from chapter 8 also
// ServerConfig::info_log), or to standard error without one.
inline void note(const std::function<void(const std::string&)>& info_log,
                 const std::string& message) {
  if (info_log) info_log(message);
  else std::fprintf(stderr, "keystonelight: %s\n", message.c_str());
}

// The directory that holds `path`: "a/b" -> "a", "b" -> ".", "/b" -> "/".
inline std::string parent_dir(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Joins a directory and a file name.
inline std::string path_in(const std::string& dir, const char* name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

// The persistent half of a Store: the log, the directory lock, and for kEverySecond the
// thread that syncs in the background. Writes come from one thread at a time (the
// Store's caller); the flusher, and from chapter 5 group-commit leaders, call sync() on
// their own reference to the writer, taken under mu_, so that the writer can be replaced
// (chapter 4) while an fsync is running. mu_ guards log_ (the pointer), closed_,
// unsynced_, failed_, and from chapter 5 the group-commit state.
class Disk {
 public:
  // `options.file_system` must be set.
  Disk(Options options, std::unique_ptr<DirLock> lock, std::unique_ptr<LogWriter> log)
      : options_(std::move(options)), lock_(std::move(lock)), log_(std::move(log)) {
    if (options_.fsync == FsyncPolicy::kEverySecond) {
      flusher_ = std::thread([this] { flush_loop(); });
    }
  }
  ~Disk() { (void)close(); }
  Disk(const Disk&) = delete;
  Disk& operator=(const Disk&) = delete;

  // Adds a record to the batch that the next wait_durable() writes (chapter 16): nothing
  // reaches the file yet, so the caller waits in wait_durable() before it tells anyone,
  // after letting go of the Store's writer lock. Writes come one at a time: the caller
  // holds that lock.
  // The first I/O failure is kept: every later write returns it, because after a failed
  // write or fsync nobody can say what the file holds (Linux may even drop the unwritten
  // pages and report success later).
  Status append(RecordType type, std::string_view key, std::string_view value,
                std::uint64_t expiry_ms = 0) {
    if (Status s = usable(); !s.ok()) return s;
    if (Status s = check_record(type, key, value); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    detail::encode_record(type, key, value, expiry_ms, &pending_);
    appended_.fetch_add(1);
    return Status();
  }

  // Safe to race with close(): the check and the copy of log_ are one step under mu_,
  // so a sync that starts after close() has taken the log says so instead of using it.
  Status sync() {
    if (Status s = wait_durable(appended_.load()); !s.ok()) return s;  // the batch first
    std::shared_ptr<LogWriter> log;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (Status s = usable_locked(); !s.ok()) return s;
      log = log_;
    }
    Status s = log->sync();
    return s.ok() ? s : fail(s);
  }

  // The number of records appended so far: a write's ticket for wait_durable().
  std::uint64_t appended() const { return appended_.load(); }

  // The number of records known to be on disk (kAlways: covered by a finished fsync).
  // From chapter 16: known to be as durable as the policy promises, which is written to
  // the file in every policy, and under kAlways synced too.
  std::uint64_t synced() const {
    std::lock_guard<std::mutex> lock(mu_);
    return synced_;
  }

  // Whether an I/O failure has stopped writes.
  bool failed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !failed_.ok();
  }

  // Group commit, for writes as well as fsyncs (chapter 16). Returns once record number
  // `ticket` is as durable as the policy promises: written to the file, and under kAlways
  // synced. The first waiter to find no leader becomes one: it takes every record
  // appended so far, writes them with one write(2), syncs once under kAlways, and wakes
  // everyone that covers. Records appended meanwhile wait for the next leader. So the
  // writes of many threads, or of a whole pipelined batch, cost one system call.
  Status wait_durable(std::uint64_t ticket) {
    if (synced_.load() >= ticket) return Status();  // no lock: the common case of a read
    std::unique_lock<std::mutex> lock(mu_);
    while (synced_.load() < ticket) {
      if (!failed_.ok()) return failed_;
      if (closed_) {
        // close() writes and syncs everything appended; wait for its answer.
        durable_cv_.wait(lock, [this] { return close_done_; });
        if (synced_.load() >= ticket) break;
        return failed_.ok() ? Status::io_error("the store in " + options_.dir +
                                               " closed before a write was synced")
                            : failed_;
      }
      if (leading_) {
        durable_cv_.wait(lock);
        continue;
      }
      leading_ = true;  // the leader of this round; batches go out one at a time, in order
      const std::uint64_t covered = appended_.load();
      std::string batch;
      batch.swap(pending_);
      std::shared_ptr<LogWriter> log = log_;
      lock.unlock();
      Status s = log->append_encoded(batch);
      if (s.ok() && options_.fsync == FsyncPolicy::kAlways) s = log->sync();
      lock.lock();
      leading_ = false;
      if (s.ok()) {
        synced_ = std::max(synced_.load(), covered);
        if (options_.fsync == FsyncPolicy::kEverySecond) unsynced_ = true;
        batch.clear();  // keep the buffer for the next batch, unless a big one grew it
        if (pending_.empty() && batch.capacity() <= kKeepBatchBytes) pending_.swap(batch);
      } else if (failed_.ok()) {
        failed_ = sticky(s);
      }
      durable_cv_.notify_all();
    }
    return Status();
  }

  // Stops the flusher, syncs, closes the log and releases the lock. Idempotent.
  Status close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return failed_;
      closed_ = true;
    }
    cv_.notify_all();
    if (flusher_.joinable()) flusher_.join();
    Status s = usable_for_close();
    std::string batch;  // what no leader has written yet, after the one writing now
    {
      std::unique_lock<std::mutex> lock(mu_);
      durable_cv_.wait(lock, [this] { return !leading_; });
      batch.swap(pending_);
    }
    if (s.ok()) s = usable_for_close();
    if (s.ok()) s = log_->append_encoded(batch);
    if (s.ok()) s = log_->sync();
    if (!s.ok()) s = fail(s);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (s.ok()) synced_ = appended_.load();  // the sync above covered every write
      close_done_ = true;
      log_.reset();
    }
    durable_cv_.notify_all();
    lock_.reset();
    return s;
  }

  std::uint64_t log_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return log_ ? log_->size() : 0;
  }

  const Options& options() const { return options_; }

  // Chapter 4's compaction; see Store::compact. `contents` hands every live entry of the
  // store to the function it is given, one call each (key, value, expiry; 0: none).
  // *replaced (when not null) says whether the new log took the old one's name: a
  // failure can come before that (the old log stays) or after it (the directory fsync).
  using Entry = std::function<void(std::string_view key, std::string_view value,
                                   std::uint64_t expiry_ms)>;
  using Contents = std::function<void(const Entry& entry)>;
  Status compact(const Contents& contents, bool* replaced = nullptr) {
    if (replaced != nullptr) *replaced = false;
    if (Status s = usable(); !s.ok()) return s;
    const auto started = std::chrono::steady_clock::now();
    Status s = rewrite(contents, replaced);
    std::lock_guard<std::mutex> lock(mu_);
    // After a failure, no automatic compaction until the log has grown by
    // compact_min_bytes more, so that a full disk does not make every write try again.
    if (!s.ok()) retry_at_bytes_ = (log_ ? log_->size() : 0) + options_.compact_min_bytes;
    ++(s.ok() ? compactions_.compactions : compactions_.failed_compactions);
    compactions_.last_compaction = s;
    compactions_.last_compaction_duration = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started);
    return s;
  }

  // Replaces the log with an empty one, as a compaction would, for Store::clear: counted
  // as neither a compaction nor a failed one.
  Status clear(bool* replaced) {
    *replaced = false;
    if (Status s = usable(); !s.ok()) return s;
    return rewrite([](const Entry&) {}, replaced);
  }

  // Whether the log has outgrown the live data enough to be worth compacting (and no
  // failed compaction asks to wait for more growth first).
  bool wants_compaction(std::uint64_t live_bytes) const {
    std::lock_guard<std::mutex> lock(mu_);
    const std::uint64_t size = log_ ? log_->size() : 0;
    return options_.compact_ratio > 0 && size >= options_.compact_min_bytes &&
           size >= retry_at_bytes_ &&
           static_cast<double>(size) >
               options_.compact_ratio * static_cast<double>(kFileHeaderBytes + live_bytes);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    Stats stats = compactions_;
    stats.log_bytes = log_ ? log_->size() : 0;
    return stats;
  }

 private:
  static constexpr std::size_t kCompactionChunkBytes = 1 << 20;  // bytes per write(2)

  // The steps of a compaction, in the order that makes a crash at any point harmless:
  // (1) write every live entry to a temporary file and (2) fsync it, whatever the fsync
  // policy: it must be whole on disk before its name can replace the log; (3) rename it
  // over the log, which swaps the two in one step; (4) fsync the directory, so that the
  // rename itself survives a power cut; (5) append to the new log from now on.
  Status rewrite(const Contents& contents, bool* replaced) {
    // Writers wait (the caller holds their lock): write the batch first, so that the new
    // log is made from changes that all reached the old one, and a failure is a failure.
    if (Status s = wait_durable(appended_.load()); !s.ok()) return s;
    FileSystem* fs = options_.file_system;
    const std::string temp = path_in(options_.dir, kCompactFileName);
    const std::string path = path_in(options_.dir, kLogFileName);
    std::uint64_t size = 0;
    Status s = write_snapshot(temp, contents, &size);
    if (s.ok()) s = fs->rename(temp, path);
    if (!s.ok()) {
      if (fs->exists(temp)) (void)fs->remove(temp);
      return Status::io_error("compaction of " + path + " failed and the log is unchanged: " +
                              s.message() + ". The store stays writable; fix the cause (a full "
                              "disk?) and compact again");
    }
    // The new log has the name now. If the directory cannot be synced, nobody can say
    // which of the two logs a power cut would leave: stop writing, as after any I/O error.
    if (replaced != nullptr) *replaced = true;
    std::unique_ptr<File> file;
    s = fs->sync_dir(options_.dir);
    if (s.ok()) s = fs->open(path, false, &file);
    if (!s.ok()) return fail(s);
    auto log = std::make_shared<LogWriter>(std::move(file), size);
    std::lock_guard<std::mutex> lock(mu_);
    log_ = std::move(log);  // the flusher may still hold the old one for a moment
    unsynced_ = false;
    retry_at_bytes_ = 0;  // any back-off measured the old log
    synced_ = appended_.load();  // the new log was synced whole: every write so far is durable
    assert(pending_.empty());  // written before the snapshot, and writers still wait
    durable_cv_.notify_all();
    return Status();
  }

  // Steps (1) and (2): the live entries, from memory, into `temp`, synced.
  Status write_snapshot(const std::string& temp, const Contents& contents,
                        std::uint64_t* size) {
    std::unique_ptr<File> file;
    Status s = options_.file_system->open(temp, true, &file);
    if (s.ok()) s = file->truncate(0);  // a leftover of an earlier attempt
    std::string chunk = encode_file_header();
    *size = 0;
    auto flush = [&] {
      if (s.ok()) s = file->append(chunk);
      *size += chunk.size();
      chunk.clear();
    };
    contents([&](std::string_view key, std::string_view value, std::uint64_t expiry_ms) {
      if (!s.ok()) return;  // a failed write ends the file; the rest is not worth encoding
      encode_record(RecordType::kPut, key, value, expiry_ms, &chunk);
      if (chunk.size() >= kCompactionChunkBytes) flush();
    });
    flush();
    if (s.ok()) s = file->sync();
    return s;
  }

  // The failure recorded so far, read under the mutex (a group-commit leader may be
  // recording one right now).
  Status usable_for_close() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }

  Status usable() {
    std::lock_guard<std::mutex> lock(mu_);
    return usable_locked();
  }
  Status usable_locked() const {  // mu_ held
    if (!failed_.ok()) return failed_;
    if (closed_) return Status::io_error("the store in " + options_.dir + " is closed; open it again");
    return Status();
  }

  Status fail(const Status& cause) {
    if (cause.code() == Status::Code::kInvalidArgument) return cause;  // the caller's mistake
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_.ok()) failed_ = sticky(cause);
    return failed_;
  }

  static Status sticky(const Status& cause) {
    return Status::io_error(cause.message() +
                            "; the store refuses writes from now on (reads still work): fix "
                            "the cause, then reopen it");
  }

  void flush_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!closed_) {
      cv_.wait_for(lock, std::chrono::milliseconds(KEYSTONELIGHT_FSYNC_INTERVAL_MS),
                   [this] { return closed_; });
      if (closed_ || !unsynced_ || !failed_.ok()) continue;
      unsynced_ = false;
      std::shared_ptr<LogWriter> log = log_;
      lock.unlock();  // fsync can take long; writers must not wait for it
      Status s = log->sync();
      lock.lock();
      if (!s.ok() && failed_.ok()) {
        failed_ = Status::io_error(s.message() + " (background fsync); the store refuses "
                                   "writes from now on: fix the cause, then reopen it");
      }
    }
  }

  const Options options_;
  std::unique_ptr<DirLock> lock_;
  std::shared_ptr<LogWriter> log_;
  std::thread flusher_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  bool unsynced_ = false;  // appended since the flusher's last sync
  Status failed_;          // the first I/O failure; OK while there has been none
  Stats compactions_;                // the compaction counters of Stats
  std::uint64_t retry_at_bytes_ = 0;  // no automatic compaction below this log size
  std::atomic<std::uint64_t> appended_{0};  // records appended; written under the Store's lock
  std::atomic<std::uint64_t> synced_{0};  // records as durable as the policy promises
  std::string pending_;                   // records appended, not yet written, in order
  bool leading_ = false;                  // a group-commit leader is writing (and syncing)
  static constexpr std::size_t kKeepBatchBytes = 1 << 20;  // a batch buffer kept for reuse
  bool close_done_ = false;                 // close() has made its final sync
  std::condition_variable durable_cv_;      // wakes group-commit followers
};

}  // namespace detail

// What a bad record that stopped a replay means. Recovery and keystonelight-check decide
// the same way, with this.
enum class Damage {
  kTornTail,       // nothing valid after it: a write cut short; safe to cut off
  kLostPages,      // valid records follow, but it lies in a zeroed page: what a power cut
                   // leaves of writes not yet fsynced; cut off, with what follows, reported
  kCorruption,     // damaged before the end in a way no crash explains: refuse
  kNotUnderstood,  // its header CRC holds, yet its type or length cannot be: refuse
};
struct Diagnosis {
  Damage damage = Damage::kTornTail;
  // For kLostPages and kCorruption: where the next valid record starts. Empty for a
  // kCorruption whose search gave up (see LogReader::find_valid_record_after).
  std::optional<std::uint64_t> next_valid;
};

// Diagnoses the bad record at reader.offset() that made next() return `result`.
// - A crash (kill -9, a full disk) leaves a prefix of the last write: a record whose
//   header is cut, or whose header holds and whose length runs past the end of the file.
//   That is a torn tail whatever its bytes look like: a torn value may well hold record
//   images, and they prove nothing.
// - A power cut can also lose unsynced pages out of order: the file keeps its size, a
//   page reads as zeros, and records written after it may survive. Valid records after
//   a bad one in a zeroed page are kLostPages. Real damage that happens to zero a page
//   looks the same; recovery keeps those bytes in a file of their own, so nothing is
//   destroyed on a guess.
// - Any other bad record followed by a valid one is corruption; so is damage followed by
//   bytes the search could not get through (it gave up).
// - A header whose CRC holds yet whose type or length is wrong was never torn: a build
//   with larger limits or a newer format wrote it, or it is damaged.
inline Status diagnose(LogReader& reader, LogReader::Result result, Diagnosis* diagnosis) {
  diagnosis->damage = Damage::kTornTail;
  diagnosis->next_valid.reset();
  if (result == LogReader::Result::kBadType || result == LogReader::Result::kBadLength) {
    diagnosis->damage = Damage::kNotUnderstood;
    return Status();
  }
  if (result == LogReader::Result::kIncomplete) return Status();
  bool gave_up = false;
  diagnosis->next_valid = reader.find_valid_record_after(reader.offset(), &gave_up);
  if (!reader.status().ok()) return reader.status();
  if (gave_up) {
    diagnosis->damage = Damage::kCorruption;
  } else if (diagnosis->next_valid) {
    diagnosis->damage = reader.in_zeroed_page(reader.offset(), *diagnosis->next_valid)
                            ? Damage::kLostPages
                            : Damage::kCorruption;
    if (!reader.status().ok()) return reader.status();
  }
  return Status();
}

namespace detail {

// "1 record", "2 records": counts in messages.
inline std::string count_of(std::uint64_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

// Copies bytes [from, to) of `file` into a new file at `path`, synced.
inline Status copy_range(FileSystem* fs, File* file, std::uint64_t from, std::uint64_t to,
                         const std::string& path) {
  std::unique_ptr<File> copy;
  Status s = fs->open(path, true, &copy);
  if (s.ok()) s = copy->truncate(0);
  std::string chunk;
  for (std::uint64_t at = from; s.ok() && at < to; at += chunk.size()) {
    chunk.resize(static_cast<std::size_t>(std::min<std::uint64_t>(to - at, 1 << 20)));
    std::size_t got = 0;
    s = file->read_at(at, chunk.data(), chunk.size(), &got);
    if (s.ok() && got == 0) s = Status::io_error("read " + file->path() + ": the file shrank");
    chunk.resize(got);
    if (s.ok()) s = copy->append(chunk);
  }
  if (s.ok()) s = copy->sync();
  if (!s.ok()) {
    return Status::io_error("could not keep the bytes a recovery must drop in " + path + ": " +
                            s.message() + ". Nothing was changed; make room and open again");
  }
  return s;
}

// Why recovery refuses a log it cannot explain by a crash (kCorruption, kNotUnderstood).
inline Status refuse_damaged_log(const std::string& path, const std::string& dir,
                                 std::uint64_t end, LogReader::Result result,
                                 const Diagnosis& diagnosis, std::uint64_t records) {
  const std::string at = path + ": the record at byte offset " + std::to_string(end);
  if (diagnosis.damage == Damage::kNotUnderstood) {
    return Status::corruption(
        at + " has a valid header but " +
        (result == LogReader::Result::kBadType
             ? std::string("a record type this build does not know")
             : "an impossible length: a key or value longer than this build's "
               "KEYSTONELIGHT_MAX_KEY_BYTES (" + std::to_string(kMaxKeyBytes) +
               ") or KEYSTONELIGHT_MAX_VALUE_BYTES (" + std::to_string(kMaxValueBytes) +
               "), or a value in a record of a type that has none") +
        ". Nothing was changed. If a newer build, or one with larger limits, wrote this log, "
        "open it with that build; otherwise the record is damaged: run `keystonelight-check " +
        dir + "`");
  }
  const std::string after =
      diagnosis.next_valid
          ? "yet a valid record follows at offset " + std::to_string(*diagnosis.next_valid)
          : std::string("and the bytes after it are full of record headers whose contents do "
                        "not match, which no crash writes");
  return Status::corruption(
      path + ": " + LogReader::describe(result) + " at byte offset " + std::to_string(end) +
      ", " + after + ": the log is damaged before its end, which neither a crashed process "
      "nor a power cut explains. Nothing was changed. Run `keystonelight-check --fix " + dir +
      "` to keep the " + count_of(records, "record") + " before the damage, or restore a "
      "backup");
}

// What recovery says when it cuts the log at `end` (kTornTail, kLostPages).
inline std::string describe_dropped_tail(const std::string& path, std::uint64_t end,
                                         LogReader::Result result, const Diagnosis& diagnosis,
                                         const RecoveryReport& report) {
  std::string message = path + ": dropped " + std::to_string(report.bytes_dropped) +
                        " bytes at the tail (" + LogReader::describe(result) + " at offset " +
                        std::to_string(end) + ")";
  if (diagnosis.damage == Damage::kLostPages) {
    return message + ", in a page that reads as zeros, with the " +
           count_of(report.records_dropped, "whole record") + " after it from offset " +
           std::to_string(*diagnosis.next_valid) + ": a power cut lost pages not yet fsynced " +
           "(with fsync always, none of these writes had been acknowledged). The dropped " +
           "bytes are kept in " + report.dropped_file + "; if the power did not fail, the " +
           "disk damaged the log: keep that file and check the disk. The log now ends after " +
           count_of(report.records, "whole record");
  }
  return message + ": a write interrupted by a crash; the log now ends after " +
         count_of(report.records, "whole record");
}

}  // namespace detail

namespace detail {

// Parses `text` as Redis parses an integer for INCR: an optional minus sign and decimal
// digits, no spaces, no plus sign, no leading zeros, within a signed 64-bit range.
inline bool parse_int64(std::string_view text, std::int64_t* value) {
  const bool negative = !text.empty() && text[0] == '-';
  std::string_view digits = negative ? text.substr(1) : text;
  if (digits.empty() || digits.size() > 19) return false;
  if (digits[0] == '0' && (digits.size() > 1 || negative)) return false;  // "01", "-0"
  std::uint64_t magnitude = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    magnitude = magnitude * 10 + static_cast<std::uint64_t>(c - '0');
  }
  const std::uint64_t limit =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + (negative ? 1 : 0);
  if (magnitude > limit) return false;
  // Negating through unsigned arithmetic keeps INT64_MIN, whose magnitude has no int64.
  *value = negative ? static_cast<std::int64_t>(~magnitude + 1) : static_cast<std::int64_t>(magnitude);
  return true;
}

}  // namespace detail
namespace detail {

// Redis's glob for KEYS: * any run, ? any byte, [abc] [^abc] [a-z] a set, \x a literal x.
// It costs up to the product of the two lengths (a * retried at every byte), so a long
// match looks at *stop now and then and, once it is set, gives up and says no match.
inline bool glob_match(std::string_view pattern, std::string_view text,
                       const std::atomic<bool>* stop = nullptr) {
  std::size_t p = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;  // the last * and where it resumes
  std::size_t retries = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      if (p + 1 == pattern.size()) return true;  // a final * takes the rest, whatever it is
      star = p++;
      resume = t;
      continue;
    }
    if (p < pattern.size()) {
      bool match = false;
      std::size_t next = p + 1;
      if (pattern[p] == '?') {
        match = true;
      } else if (pattern[p] == '[') {
        std::size_t i = p + 1;
        const bool negate = i < pattern.size() && pattern[i] == '^';
        if (negate) ++i;
        bool in_set = false;
        for (; i < pattern.size() && pattern[i] != ']'; ++i) {
          if (pattern[i] == '\\' && i + 1 < pattern.size()) {
            in_set |= pattern[++i] == text[t];
          } else if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
            char lo = pattern[i], hi = pattern[i + 2];
            if (lo > hi) std::swap(lo, hi);
            in_set |= text[t] >= lo && text[t] <= hi;
            i += 2;
          } else {
            in_set |= pattern[i] == text[t];
          }
        }
        match = in_set != negate;
        next = i < pattern.size() ? i + 1 : i;
      } else if (pattern[p] == '\\' && p + 1 < pattern.size()) {
        match = pattern[p + 1] == text[t];
        next = p + 2;
      } else {
        match = pattern[p] == text[t];
      }
      if (match) {
        p = next;
        ++t;
        continue;
      }
    }
    if (star == std::string_view::npos) return false;  // no * to stretch
    if (++retries % 4096 == 0 && stop != nullptr && stop->load(std::memory_order_relaxed)) {
      return false;
    }
    p = star + 1;
    t = ++resume;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace detail

namespace detail {

// The store's hash table (chapter 12), in place of std::unordered_map, for two things
// the standard one cannot give: a lookup by std::string_view, with no std::string made
// to ask; and a cursor for SCAN that stays valid while the table grows. Chained, with a
// power-of-two number of buckets, so a key's bucket is the low bits of its hash; that is
// what makes Redis's reverse-binary cursor work (see scan()). It offers the part of
// std::unordered_map's interface the store uses, with the same iterator rules: an insert
// may invalidate every iterator, an erase only the erased one. It never shrinks.
class Table {
 public:
  using value_type = std::pair<const std::string, std::string>;

 private:
  struct Node {
    Node* next;
    std::size_t hash;
    value_type entry;
  };

 public:
  template <bool kConst>
  class Iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Table::value_type;
    using difference_type = std::ptrdiff_t;
    using pointer = std::conditional_t<kConst, const value_type*, value_type*>;
    using reference = std::conditional_t<kConst, const value_type&, value_type&>;
    Iterator() = default;
    template <bool kOther, typename = std::enable_if_t<kConst && !kOther>>
    Iterator(const Iterator<kOther>& other)  // NOLINT: iterator to const_iterator, as std's
        : table_(other.table_), bucket_(other.bucket_), node_(other.node_) {}
    reference operator*() const { return node_->entry; }
    pointer operator->() const { return &node_->entry; }
    Iterator& operator++() {
      node_ = node_->next;
      if (node_ == nullptr) settle(bucket_ + 1);
      return *this;
    }
    Iterator operator++(int) {
      Iterator before = *this;
      ++*this;
      return before;
    }
    friend bool operator==(const Iterator& a, const Iterator& b) { return a.node_ == b.node_; }
    friend bool operator!=(const Iterator& a, const Iterator& b) { return a.node_ != b.node_; }

   private:
    friend class Table;
    Iterator(const Table* table, std::size_t bucket, Node* node)
        : table_(table), bucket_(bucket), node_(node) {}
    void settle(std::size_t bucket) {  // the first node in `bucket` or after; end() if none
      for (bucket_ = bucket; bucket_ < table_->buckets_.size(); ++bucket_) {
        if ((node_ = table_->buckets_[bucket_]) != nullptr) return;
      }
      node_ = nullptr;
    }
    const Table* table_ = nullptr;
    std::size_t bucket_ = 0;
    Node* node_ = nullptr;
  };
  using iterator = Iterator<false>;
  using const_iterator = Iterator<true>;

  Table() = default;
  ~Table() { clear(); }
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::size_t bucket_count() const { return buckets_.size(); }

  iterator begin() { return first(); }
  iterator end() { return iterator(this, buckets_.size(), nullptr); }
  const_iterator begin() const { return const_cast<Table*>(this)->first(); }
  const_iterator end() const { return const_iterator(this, buckets_.size(), nullptr); }

  iterator find(std::string_view key) { return locate(key, hash_of(key)); }
  const_iterator find(std::string_view key) const {
    return const_cast<Table*>(this)->locate(key, hash_of(key));
  }
  std::size_t count(std::string_view key) const { return find(key) != end() ? 1 : 0; }

  // Finds `key`, or adds it with `value`; says which.
  std::pair<iterator, bool> emplace(std::string key, std::string value = std::string()) {
    const std::size_t hash = hash_of(key);
    if (iterator it = locate(key, hash); it != end()) return {it, false};
    if (size_ >= buckets_.size()) resize(buckets_.empty() ? kMinBuckets : 2 * buckets_.size());
    const std::size_t bucket = hash & (buckets_.size() - 1);
    buckets_[bucket] = new Node{buckets_[bucket], hash, {std::move(key), std::move(value)}};
    ++size_;
    return {iterator(this, bucket, buckets_[bucket]), true};
  }
  std::pair<iterator, bool> try_emplace(std::string key) { return emplace(std::move(key)); }
  std::pair<iterator, bool> insert_or_assign(std::string key, std::string value) {
    auto [it, added] = emplace(std::move(key));
    it->second = std::move(value);
    return {it, added};
  }

  // Finds `key`, or adds it with an empty value; says which. The key is copied only when
  // it is added, so that a replay makes no std::string it does not keep (chapter 15).
  std::pair<iterator, bool> find_or_add(std::string_view key) {
    if (iterator it = find(key); it != end()) return {it, false};
    return emplace(std::string(key));
  }

  // A hint that `key` is about to be looked up: starts loading its bucket, and with
  // `chain` the first entry the bucket holds (whose bucket must be loaded by then to
  // help). A lookup of a million random keys waits on memory, not on the processor, and
  // a replay knows its next keys before it needs them.
  void prefetch(std::string_view key, bool chain) const {
    if (buckets_.empty()) return;
    Node* const* bucket = &buckets_[hash_of(key) & (buckets_.size() - 1)];
    if (!chain) __builtin_prefetch(bucket);
    else if (*bucket != nullptr) __builtin_prefetch(*bucket);
  }

  // Makes room for `count` entries, so that adding that many grows nothing: each growth
  // moves every entry to a new bucket, a million moves in all as a million keys arrive.
  void reserve(std::size_t count) {
    std::size_t want = kMinBuckets;
    while (want < count && want <= std::numeric_limits<std::size_t>::max() / 4) want *= 2;
    if (want > buckets_.size()) resize(want);
  }

  // Removes the entry at `it`; returns the one after it.
  iterator erase(const_iterator it) {
    iterator next(this, it.bucket_, it.node_);
    ++next;
    Node** link = &buckets_[it.bucket_];
    while (*link != it.node_) link = &(*link)->next;
    *link = it.node_->next;
    delete it.node_;
    --size_;
    return next;
  }
  std::size_t erase(std::string_view key) {
    const_iterator it = find(key);
    if (it == end()) return 0;
    erase(it);
    return 1;
  }

  void clear() {
    for (Node*& head : buckets_) {
      while (head != nullptr) {
        Node* next = head->next;
        delete head;
        head = next;
      }
    }
    buckets_.clear();
    buckets_.shrink_to_fit();
    size_ = 0;
  }

  // SCAN: calls `visit` for every entry of the bucket `cursor` names and the buckets
  // after it in cursor order, until at least `want` entries or `want` x 10 buckets were
  // visited, and returns the cursor to continue from (0: the walk is over). When `visit`
  // returns false the step ends at once, with the cursor of the bucket it was in (which
  // the next step visits again). Redis's
  // reverse-binary cursor (dictScan): the cursor counts with its bits reversed, so the
  // walk visits a bucket's "children" in a table twice as large right after one another
  // and, as the table grows between calls, never skips a bucket it has not visited
  // (some entries may come twice). An entry present for the whole walk is visited.
  template <typename Visit>
  std::uint64_t scan(std::uint64_t cursor, std::size_t want, Visit visit) const {
    if (buckets_.empty()) return 0;
    const std::uint64_t mask = buckets_.size() - 1;
    std::size_t seen = 0;
    for (std::size_t visited = 0; visited < 10 * std::max<std::size_t>(want, 1); ++visited) {
      for (const Node* n = buckets_[cursor & mask]; n != nullptr; n = n->next, ++seen) {
        if (!visit(n->entry)) return cursor;
      }
      cursor |= ~mask;  // then add one to the reversed bits that count
      cursor = reverse_bits(reverse_bits(cursor) + 1);
      if (cursor == 0 || seen >= want) break;
    }
    return cursor;
  }

  // An entry picked at random (end() when empty): a random bucket, then a random entry
  // of its chain, as Redis's dictGetRandomKey; entries in long chains are a little less
  // likely, which RANDOMKEY may live with.
  const_iterator random(std::uint64_t* seed) const {
    if (size_ == 0) return end();
    while (true) {
      const std::size_t bucket = static_cast<std::size_t>(next_random(seed)) & (buckets_.size() - 1);
      std::size_t length = 0;
      for (const Node* n = buckets_[bucket]; n != nullptr; n = n->next) ++length;
      if (length == 0) continue;  // with at least one entry per bucket on average, rare
      Node* n = buckets_[bucket];
      for (std::size_t pick = static_cast<std::size_t>(next_random(seed) % length); pick > 0; --pick) {
        n = n->next;
      }
      return const_iterator(this, bucket, n);
    }
  }

  static std::uint64_t next_random(std::uint64_t* seed) {  // splitmix64
    std::uint64_t z = (*seed += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
  }

 private:
  static constexpr std::size_t kMinBuckets = 16;

  static std::size_t hash_of(std::string_view key) { return std::hash<std::string_view>()(key); }
  static std::uint64_t reverse_bits(std::uint64_t v) {
    std::uint64_t r = 0;
    for (int i = 0; i < 64; ++i, v >>= 1) r = (r << 1) | (v & 1);
    return r;
  }

  iterator first() {
    iterator it(this, 0, nullptr);
    it.settle(0);
    return it;
  }
  iterator locate(std::string_view key, std::size_t hash) {
    if (buckets_.empty()) return end();
    const std::size_t bucket = hash & (buckets_.size() - 1);
    for (Node* n = buckets_[bucket]; n != nullptr; n = n->next) {
      if (n->hash == hash && n->entry.first == key) return iterator(this, bucket, n);
    }
    return end();
  }
  void resize(std::size_t count) {
    std::vector<Node*> grown(count, nullptr);
    for (Node* head : buckets_) {
      while (head != nullptr) {
        Node* next = head->next;
        Node*& slot = grown[head->hash & (count - 1)];
        head->next = slot;
        slot = head;
        head = next;
      }
    }
    buckets_.swap(grown);
  }

  std::vector<Node*> buckets_;  // a power of two of them, or none
  std::size_t size_ = 0;
};

}  // namespace detail

// =======================================================================================
// Chapter 1: the in-memory map
//
// A Store maps keys to values. Both are arbitrary byte strings: NUL, CR, LF and any other
// byte are ordinary data, which is why the API takes std::string_view (a pointer and a
// length) and never a C string. A Store made with `Store()` lives in memory only; its
// contents end with it.
//
// A Store is thread-safe (chapter 5): any number of threads may call any member function
// at once. close() may race with writes: each gets a truthful answer, and writes after it
// fail. Only the destructor must not race with other calls.
// =======================================================================================

// Changes to apply to a store together (chapter 11): Store::write applies all of them,
// in order, in one transaction, or none. A plain value: build it, hand it over, reuse it.
class WriteBatch {
 public:
  // Stores `value` under `key`, to expire at `expire_at_ms` (ms since the epoch; 0: never).
  void set(std::string_view key, std::string_view value, std::int64_t expire_at_ms = 0) {
    ops_.push_back({false, std::string(key), std::string(value), expire_at_ms});
  }
  void del(std::string_view key) { ops_.push_back({true, std::string(key), std::string(), 0}); }
  std::size_t size() const { return ops_.size(); }
  void clear() { ops_.clear(); }

 private:
  friend class Store;
  struct Op {
    bool del;
    std::string key;
    std::string value;
    std::int64_t expire_at_ms;
  };
  std::vector<Op> ops_;
};

class Store {
 public:
  // An empty store held in memory only.
  Store() = default;

  // Opens the store described by `options`. With an empty options.dir the store lives in
  // memory, like Store(). Otherwise options.dir is created when missing, locked against
  // every other opener, and its log replayed: a torn record at the tail (a crash in the
  // middle of a write) is cut off and reported; a damaged record followed by good ones is
  // Corruption, and nothing is changed. On success *store owns the open store.
  static Status open(const Options& options, std::unique_ptr<Store>* store);

  // Closes the store (see close()), ignoring errors: call close() to see them.
  ~Store();

  // Makes every write durable, stops the background flusher and releases the directory
  // lock. Returns the first error the log has met, if any. Afterwards the store still
  // answers reads, but writes fail. Calling it twice is harmless.
  Status close();

  // Forces everything written so far to stable storage, whatever the fsync policy.
  Status sync();

  // What the last open found in the log: records replayed, bytes dropped, time taken.
  // All zero for a store in memory.
  const RecoveryReport& recovery() const;

  // The options the store was opened with (file_system filled in); default Options, with
  // an empty dir, for a store in memory. Fixed for the store's lifetime.
  const Options& options() const;

  // Rewrites the log to hold one record per live key, from memory: a temporary file is
  // written and fsynced, renamed over the log, and the directory fsynced. A crash at any
  // step leaves the old log or the new one, never a mix. On failure before the rename the
  // old log is untouched and the store stays writable; a failure after it (the directory
  // fsync) stops writes like any other I/O error. Nothing to do for a store in memory.
  Status compact();

  // Sizes and compaction counters, for INFO and for deciding when to compact.
  Stats stats() const;

  // A store owns its data (and, from chapter 3, files and a lock); copying one would
  // split that ownership, so it is neither copyable nor movable. Hold it in a
  // std::unique_ptr where it must move.
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The value stored under `key`, or std::nullopt when there is none. The value is a copy:
  // it stays valid whatever happens to the store afterwards.
  std::optional<std::string> get(std::string_view key) const;

  // Stores `value` under `key`, replacing any value it had.
  // A persistent store appends the change to its log first: when set() returns OK the
  // record is in the file (and, with FsyncPolicy::kAlways, on the disk). A key longer
  // than KEYSTONELIGHT_MAX_KEY_BYTES or a value longer than KEYSTONELIGHT_MAX_VALUE_BYTES
  // is InvalidArgument; a failed write is IOError, and from then on every write fails
  // with it (reads go on working) until the store is reopened.
  Status set(std::string_view key, std::string_view value);

  // Removes `key`. Removing a missing key is not an error; when `existed` is not null it
  // is set to whether the key was there.
  // Logged like set(); removing a missing key writes nothing.
  Status del(std::string_view key, bool* existed = nullptr);

  // Read-modify-write operations (chapter 5). Each reads, decides and writes under the
  // writer lock, so no other write can come between, and logs one record holding the
  // resulting value, never the operation.

  // Adds `delta` to the 64-bit integer stored as decimal text under `key` (a missing key
  // counts as 0), stores the result the same way, and puts it in *result (when not null),
  // like Redis's INCRBY. InvalidArgument, and nothing changes, when the value is not an
  // integer in plain decimal form ("value is not an integer or out of range") or when the
  // result would overflow ("increment or decrement would overflow").
  Status increment(std::string_view key, std::int64_t delta, std::int64_t* result = nullptr);

  // Appends `suffix` to the value under `key` (a missing key counts as empty) and puts the
  // new length in *length (when not null), like Redis's APPEND.
  Status append(std::string_view key, std::string_view suffix, std::size_t* length = nullptr);

  // set() with a condition, like Redis's SET with NX or XX and GET: stores `value` only
  // when the key is absent (kIfAbsent) or present (kIfPresent), says in *stored whether
  // it did, and puts the value it had before in *previous (when not null).
  enum class SetIf { kAlways, kIfAbsent, kIfPresent };
  Status set(std::string_view key, std::string_view value, SetIf condition, bool* stored,
             std::optional<std::string>* previous = nullptr);

  // For MSET, DEL, KEYS and FLUSHDB, which chapter 7 serves. set_all stores every
  // pair, and del_all removes every key (counting in *removed those that existed), under
  // one writer lock, so no reader sees half of them (a crash can still stop them halfway:
  // each key is its own record). keys() copies every key. clear() removes everything by
  // swapping in an empty log, the way a compaction swaps logs.
  Status set_all(const std::vector<std::pair<std::string_view, std::string_view>>& pairs);
  Status del_all(const std::vector<std::string_view>& keys, std::size_t* removed);
  // The values of `keys`, read under one reader lock: MGET never sees half an MSET.
  std::vector<std::optional<std::string>> get_all(const std::vector<std::string_view>& keys) const;
  std::vector<std::string> keys() const;
  Status clear();

  // Bounded forms, for a reply built from many keys or values: the walk stops before a
  // copy that would take the bytes copied past `max_bytes`, and between two keys once
  // *stop (when not null) is true. What was read by then comes back, with *complete
  // (when not null) false; the caller tells the two causes apart by looking at *stop.
  struct ReadBound {
    std::size_t max_bytes = std::numeric_limits<std::size_t>::max();
    const std::atomic<bool>* stop = nullptr;
  };
  std::vector<std::optional<std::string>> get_all(const std::vector<std::string_view>& keys,
                                                  const ReadBound& bound, bool* complete) const;
  // The keys that match the glob `pattern` (as KEYS reads it), matched under the reader
  // lock so that only those are copied; writers wait for the walk, as they wait for
  // Redis's KEYS, until it ends or *stop is set.
  std::vector<std::string> keys(std::string_view pattern, const ReadBound& bound,
                                bool* complete) const;

  // Keys that expire (chapter 10). A key may carry an expiry time: milliseconds since the
  // Unix epoch by the store's clock (Options::clock). Once the clock has passed it, the
  // key is gone for every reader at once, and its removal is logged when a writer or the
  // background expiry cycle meets it. The time is in the key's log record, so it survives
  // a restart and a compaction, and neither brings back a key whose time has passed.
  // set(key, value) and the other whole-value writes clear a key's expiry (as Redis's SET
  // does); increment() and append() keep it.

  // The store's clock, now.
  std::int64_t now_ms() const;

  // The number of keys with an expiry, those whose time has passed but that are not yet
  // removed included (INFO's "expires", as Redis counts it).
  std::size_t expiring() const;

  // Stores `value` under `key`, to expire `ttl` from now; a ttl of zero or less is
  // InvalidArgument ("invalid expire time").
  Status set(std::string_view key, std::string_view value, std::chrono::milliseconds ttl);

  // set() with every option of Redis's SET: the condition, and the expiry the key gets:
  // an absolute time (expire_at_ms > 0; one already passed stores nothing and removes the
  // key), none (0), or the one it had (keep_ttl).
  struct SetOptions {
    SetIf condition = SetIf::kAlways;
    std::int64_t expire_at_ms = 0;
    bool keep_ttl = false;
  };
  Status set(std::string_view key, std::string_view value, const SetOptions& options,
             bool* stored, std::optional<std::string>* previous = nullptr);

  // Gives `key` the expiry time `when_ms`, as Redis's PEXPIREAT with its conditions, an
  // OR of ExpireIf bits that must all hold: NX (kIfNone: only a key without one), XX
  // (kIfSome: only one with one), GT (kIfLater: only later than the current one, where
  // none counts as never) and LT (kIfSooner). A time already passed removes the key.
  // *changed says whether anything happened; a missing key is not an error.
  enum ExpireIf : unsigned { kIfNone = 1, kIfSome = 2, kIfLater = 4, kIfSooner = 8 };
  Status expire_at(std::string_view key, std::int64_t when_ms, unsigned conditions = 0,
                   bool* changed = nullptr);

  // Removes `key`'s expiry, so it lives until deleted; *changed says whether it had one.
  Status persist(std::string_view key, bool* changed = nullptr);

  // The key's expiry time, as Redis's PEXPIRETIME: -2 when the key does not exist, -1
  // when it has no expiry, else the time in milliseconds since the epoch.
  std::int64_t expire_time(std::string_view key) const;

  // The value under `key` (std::nullopt when none), changing its expiry in the same step,
  // as Redis's GETEX: to `when_ms` when not 0 (a time passed removes the key after the
  // read), or, with `persist`, to none.
  Status get_and_expire(std::string_view key, std::int64_t when_ms, bool persist,
                        std::optional<std::string>* value);

  // Removes expired keys that no one has touched: looks at up to `sample` keys with an
  // expiry, picked at random, and removes those whose time has passed, counting them in
  // *removed. The background cycle calls it (Options::active_expiry); it is public for
  // stores that turn that off and for tests.
  Status remove_expired(std::size_t sample, std::size_t* removed);

  // Batches and transactions (chapter 11).

  // Runs `fn` as one transaction. The writer lock is held for the whole of it, so no
  // reader sees part of it and no other write comes between; and every change it makes
  // goes to the log as one batch record, so a crash keeps all of them or none. When `fn`
  // returns an error, or the record cannot be written, every change it made is undone
  // and that error comes back. Inside `fn` the store's members may be called from the
  // same thread (they see the transaction's own changes, and a transaction() inside
  // joins this one); compact() is refused there. Other threads wait for the store until
  // `fn` returns, so `fn` must not wait for them.
  Status transaction(const std::function<Status()>& fn);

  // Applies every change of `batch`, in order, in one transaction: all of them or none.
  Status write(const WriteBatch& batch);

  // The keyspace (chapter 12).

  // One step of a walk over every key, as Redis's SCAN: the live keys matching the glob
  // `pattern` (empty: every key) among the next `count` or so, into *keys, and the cursor
  // to pass next; 0 starts a walk and, returned, ends it. A key present for the whole
  // walk is returned at least once, however the table grows meanwhile (a key may come
  // twice), and the cursor is a plain number a client can keep. `bound` stops the step,
  // with *complete false, before the keys copied pass bound.max_bytes or once *bound.stop.
  std::uint64_t scan(std::uint64_t cursor, std::size_t count, std::string_view pattern,
                     const ReadBound& bound, std::vector<std::string>* keys,
                     bool* complete = nullptr) const;

  // A live key picked at random; std::nullopt when there is none.
  std::optional<std::string> random_key() const;

  // Moves the value and expiry of `from` to `to`, replacing what `to` held, as Redis's
  // RENAME; with `if_absent`, only when `to` holds nothing (RENAMENX). *found says
  // whether `from` exists, *moved whether anything moved. One transaction.
  Status rename(std::string_view from, std::string_view to, bool if_absent, bool* found,
                bool* moved);

  // Copies the value and expiry of `from` to `to`, as Redis's COPY: only when `to` holds
  // nothing, unless `replace`. *copied says whether it did.
  Status copy(std::string_view from, std::string_view to, bool replace, bool* copied);

  // Keys watched for optimistic locking, as Redis's WATCH: a Watch remembers each key's
  // version when add() saw it; changed() says whether any has been written since (set,
  // deleted, its expiry changed, or removed by FLUSHDB) or has expired. Read, decide, then
  // in transaction() write only if !changed(). A Watch costs nothing to writers of keys
  // nobody watches. It must not outlive its store; one thread uses it at a time.
  class Watch {
   public:
    explicit Watch(Store* store) : store_(store) {}
    ~Watch() { clear(); }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    void add(std::string_view key);
    bool changed() const;
    void clear();  // stops watching every key
    bool empty() const { return keys_.empty(); }

   private:
    struct Key {
      std::string key;
      std::uint64_t version;  // Watched::version when added
      bool live;              // the key had a value then
    };
    Store* store_;
    std::vector<Key> keys_;
  };

  // Commit before reply (chapter 16). While a thread holds a Deferred for a store, its
  // calls on that store return without waiting for their records to reach the file: a
  // write returns once it is applied, a read once it has read, and the Deferred notes the
  // record number each answer depends on (the write's own record; for a read, every
  // record appended before it, which it may have seen). commit() then makes all of them
  // as durable as the fsync policy promises, with one write(2) and at most one fsync,
  // shared with every thread committing at the same moment. The holder must show no
  // answer to anyone before commit() covers it: that is what the other calls promise on
  // their own. When commit() fails, the store has undone every write that did not reach
  // the file, and an answer whose number is past durable() must not be shown. One
  // Deferred per thread and store at a time, on the stack of the thread that uses it.
  class Deferred {
   public:
    explicit Deferred(Store* store);
    ~Deferred();  // commits what is left: call commit() first to see how that went
    Deferred(const Deferred&) = delete;
    Deferred& operator=(const Deferred&) = delete;

    // The record number that the answers since the last take() depend on (0: none), and
    // starts again from nothing.
    std::uint64_t take() { return std::exchange(since_take_, 0); }

    // Makes every record noted since the last commit() durable; on failure, the store
    // undoes what did not reach the file and stops taking writes (see Store::set).
    Status commit();

    // The records known to be durable: an answer numbered up to this may be shown.
    std::uint64_t durable() const;

    // The failure the last commit() met, if any, to tell the holders of withheld answers.
    const Status& failure() const { return failure_; }

    // With `on`, the next write takes the writer lock and keeps it for the writes after
    // it, so that a pipelined run of writes takes it once; hold(false) gives it back.
    // commit() and compact() give it back first. While it is held, other threads wait
    // for the store: hold it only across writes, never while waiting on anything.
    void hold(bool on) {
      if (store_->in_transaction()) return;  // the transaction's locks stay where they are
      hold_ = on;
      if (!on && writers_.owns_lock()) {
        map_.unlock();
        writers_.unlock();
      }
    }

   private:
    friend class Store;
    void lock() {  // for WriteLock, while hold_ is set
      if (writers_.owns_lock()) return;
      writers_.lock();
      map_.lock();
    }
    void note(std::uint64_t ticket) {
      since_take_ = std::max(since_take_, ticket);
      ticket_ = std::max(ticket_, ticket);
    }
    static Deferred*& current() {  // this thread's innermost Deferred
      thread_local Deferred* deferred = nullptr;
      return deferred;
    }
    Store* const store_;
    Deferred* const outer_;
    std::uint64_t ticket_ = 0;      // noted since the last commit()
    std::uint64_t since_take_ = 0;  // noted since the last take()
    Status failure_;
    bool hold_ = false;
    std::unique_lock<detail::OrderedMutex<1>> writers_;  // the store's writers_mu_ and mu_,
    std::unique_lock<detail::SharedMutex> map_;          // while held (see hold())
  };

  // Whether `key` has a value.
  bool exists(std::string_view key) const;

  // The number of keys.
  std::size_t size() const;

  // A copy of every (key, value) pair, in no particular order. It costs memory in
  // proportion to the data; it is meant for tools, tests and exports, not for hot paths.
  std::vector<std::pair<std::string, std::string>> entries() const;

 private:
  using Map = detail::Table;

  // The one place a value is stored: set() calls it, and so (from chapter 5) do the
  // read-modify-write operations, with the writer lock held.
  // The key's expiry becomes `expire_at_ms` (0: none).
  Status put(std::string_view key, std::string_view value, std::int64_t expire_at_ms = 0);

  // The entry of `key`, or map_.end(): lookup() for reads, lookup_for_write() with the
  // writer lock held. From chapter 10 a key whose time has passed is not found, and
  // lookup_for_write() removes it, logging the removal.
  Map::const_iterator lookup(std::string_view key) const;
  Map::iterator lookup_for_write(std::string_view key);

  // The one place an entry is removed (with the writer lock held, from chapter 5).
  Status erase(Map::iterator it);
  // The one place a value grows at its end (APPEND, chapter 13): logged as a kAppend
  // record of the suffix alone, and undone, when it must be, by cutting the suffix off.
  // `it` is the key's entry, or map_.end() to create it. The writer lock held.
  Status extend(Map::iterator it, std::string_view key, std::string_view suffix);

  // Append one change to the log of a persistent store (nothing for one in memory),
  // after checking the limits that the log's format sets. The expiry (0: none) stays 0
  // until chapter 10 gives keys one.
  Status log_put(std::string_view key, std::string_view value, std::int64_t expire_at_ms = 0);
  Status log_delete(std::string_view key);

  // Replays the log in options.dir into map_ (chapter 3's recovery), one record at a time.
  Status recover(const Options& options, FileSystem* fs, std::unique_ptr<LogWriter>* writer);
  void replay(const Record& record);
  // Whether the appends in `record` (itself, or its entries) keep each value within
  // KEYSTONELIGHT_MAX_VALUE_BYTES. A writer never lets them pass it, but a build with a
  // smaller limit than the writer's must refuse such a log, as it refuses a put over its
  // limit: it could not write the value back in a compaction.
  Status check_appends(const Record& record, const std::string& path) const;

  // Compacts when the log has grown past the thresholds in Options (chapter 4).
  void maybe_compact();

  // Adds (sign +1) or removes (-1) an entry's record from live_bytes_.
  void count_live(int sign, std::string_view key, std::string_view value);

  // What a compaction writes: every live entry, handed to Disk::compact.
  void contents(const detail::Disk::Entry& entry) const;

  // Ends a write: releases the writer lock, then waits until the write is durable as the
  // fsync policy promises (with kAlways, the fsync that covers it; group commit).
  struct WriteLock;
  Status finish_write(WriteLock& lock);

  // Every read goes through here: `peek` reads map_ under the shared lock, and what it
  // found is returned once it is as durable as the fsync policy promises. With kAlways a
  // read that saw writes still waiting for their fsync waits for it too; if that fsync
  // fails, those writes are undone and the read runs again. So nobody, the writer or a
  // reader, is ever shown a write that the log may not keep.
  template <typename Peek>
  auto read(Peek peek) const -> decltype(peek());

  // With kAlways, what each write not yet covered by an fsync replaced (the writer lock
  // held): undo_unsynced() puts it back when that fsync fails.
  bool keeps_undo() const;
  void remember(std::string_view key, std::optional<std::string> previous);
  void undo_unsynced();
  struct Undo;
  void restore(Undo* undo);

  // The background compaction thread: started by open() when automatic compaction is on,
  // woken by maybe_compact(), stopped and joined by close().
  void compactor_loop();
  Status compact_if_due();
  void stop_compactor();

  // Chapter 12's own table: lookups by string_view, and a cursor for SCAN.
  Map map_;
  std::unique_ptr<detail::Disk> disk_;  // null for a store in memory
  RecoveryReport recovery_;
  // What a compaction would write for the entries, header excluded: the sum over live
  // keys of kRecordHeaderBytes + key + value. Kept up to date by every change.
  std::uint64_t live_bytes_ = 0;

  // Chapter 5's locks. The order, outermost first, which every path follows so that no
  // two threads can each hold what the other waits for (debug builds check it for the
  // first three: detail::LockOrder, with the ranks 1, 2 and 3):
  //   writers_mu_     one writer at a time: every write, and a compaction, which only
  //                   reads the map but must keep writers out while it writes it down
  //   mu_             the map (and live_bytes_): shared for reads, exclusive for the
  //                   moment a writer changes it; a compaction never takes it, so a
  //                   writer queued behind a compaction never holds readers up
  //   compactor_mu_   the compactor thread's wake-up state
  //   Disk's mutex    the log's bookkeeping; held briefly, never across I/O
  // No lock is held while user code runs (Options::info_log is called without one), and
  // waiting for an fsync (group commit) holds only the Disk's mutex, between checks.
  using WritersMutex = detail::OrderedMutex<1>;
  using CompactorMutex = detail::OrderedMutex<3>;
  struct WriteLock {  // a writer's two locks, in order
    // Inside a transaction its thread holds both already (chapter 11): it takes neither.
    explicit WriteLock(Store* store)
        : writers(store->writers_mu_, std::defer_lock), map(store->mu_, std::defer_lock) {
      if (store->in_transaction()) return;
      store_ = store;
      if (Deferred* deferred = store->deferring(); deferred != nullptr && deferred->hold_) {
        deferred->lock();  // a run of writes takes the locks once (chapter 16)
        return;
      }
      writers.lock();
      map.lock();
    }
    // A write that returns without finish_write(), having nothing to change (SET NX of a
    // key that is there, INCR of a value that is no number), answered from what it saw:
    // like a read's, its answer waits for every record appended before it (chapter 16).
    ~WriteLock() {
      if (store_ == nullptr || finished) return;
      if (map.owns_lock()) map.unlock();
      if (writers.owns_lock()) writers.unlock();
      (void)store_->read([] { return true; });
    }
    Store* store_ = nullptr;  // null inside a transaction: its commit settles everything
    bool finished = false;    // finish_write() has settled it
    std::unique_lock<WritersMutex> writers;
    std::unique_lock<detail::SharedMutex> map;
  };
  WritersMutex writers_mu_;
  mutable detail::SharedMutex mu_{2};
  mutable CompactorMutex compactor_mu_;
  std::condition_variable_any compactor_cv_;
  bool compaction_wanted_ = false;   // guarded by compactor_mu_
  bool compaction_running_ = false;  // guarded by compactor_mu_
  bool compactor_stopping_ = false;  // guarded by compactor_mu_
  std::thread compactor_;

  // kAlways's undo log, oldest first; guarded by the writer lock (read: mu_ shared).
  struct Undo {
    std::uint64_t ticket;  // the record's number in the log (Disk::appended() after it)
    std::string key;
    std::optional<std::string> previous;  // the value it replaced; nullopt: none
    std::int64_t previous_expiry = 0;     // and its expiry
    std::size_t appended = 0;  // not 0: an append added this many bytes to a value kept
  };
  std::deque<Undo> undo_;
  bool undone_ = false;  // a failed fsync's writes were undone: every later write fails

  // Expiry (chapter 10). Only keys with an expiry have an entry in expires_ (Redis keeps
  // its "expires" table the same way), so a key without one pays nothing, and a store
  // where no key has one checks nothing. Guarded like map_.
  std::unordered_map<std::string, std::int64_t> expires_;  // key -> expiry, ms since epoch
  std::function<std::int64_t()> clock_;  // Options::clock; empty: the system clock
  bool active_expiry_ = true;            // Options::active_expiry

  // The expiry of `key` (0: none), and whether it has passed; a lock held. Neither reads
  // the clock, nor anything but an empty table, for a store where no key has an expiry.
  std::int64_t expiry_of(const std::string& key) const;
  bool expired(const std::string& key) const;
  // Gives the entry at `it` the expiry `when_ms` (0: none; a time passed removes it),
  // logged as a kExpire record; the writer lock held.
  Status change_expiry(Map::iterator it, std::int64_t when_ms);
  Status log_expire(std::string_view key, std::int64_t when_ms);
  // Sets or (with 0) clears the expiry of a key that is in map_; starts the expiry cycle
  // with the first expiry set. The writer lock held.
  void set_expiry(const std::string& key, std::int64_t expire_at_ms);

  // The background expiry cycle: a thread started with the first expiry, stopped and
  // joined by close().
  void expiry_loop();
  void stop_expiry();
  CompactorMutex expiry_mu_;  // the thread's wake-up state; rank 3, never held with compactor_mu_
  std::condition_variable_any expiry_cv_;
  bool expiry_stopping_ = false;  // guarded by expiry_mu_
  std::thread expiry_thread_;     // started under the writer lock, joined by stop_expiry()
  std::uint64_t expiry_seed_ = 0x9E3779B97F4A7C15u;  // remove_expired's random walk

  // Transactions (chapter 11). The running transaction's batch: the log entries of its
  // changes, and what each replaced, to put back if it fails. Set, read and cleared by
  // the transaction's own thread, under the writer lock.
  struct Batch {
    std::string entries;    // encoded batch entries (a persistent store's only)
    std::size_t count = 0;  // entries in it
    std::deque<Undo> undo;  // what each change replaced, oldest first
  };
  Batch* batch_ = nullptr;
  std::atomic<std::thread::id> owner_{};  // the thread running a transaction, if any
  bool in_transaction() const { return owner_.load() == std::this_thread::get_id(); }
  Status add_to_batch(RecordType type, std::string_view key, std::string_view value,
                      std::int64_t expiry_ms);
  Status commit(Batch* batch);     // one record for the whole batch; undoes it on failure
  void roll_back(Batch* batch);    // puts back what the batch's changes replaced

  // WATCH's bookkeeping: for each key some Watch watches, how many do, and a version that
  // every change to the key moves on (touch(), from put, erase and change_expiry).
  // Guarded by the writer lock.
  struct Watched {
    std::size_t watchers = 0;
    std::uint64_t version = 0;
  };
  std::unordered_map<std::string, Watched> watched_;
  std::uint64_t watch_clock_ = 0;
  void touch(const std::string& key) {
    if (watched_.empty()) return;
    if (auto it = watched_.find(key); it != watched_.end()) it->second.version = ++watch_clock_;
  }

  mutable std::atomic<std::uint64_t> random_seed_{0x2545F4914F6CDD1Du};  // random_key()'s

  // This thread's Deferred for this store, if it holds one (chapter 16).
  Deferred* deferring() const {
    Deferred* deferred = Deferred::current();
    while (deferred != nullptr && deferred->store_ != this) deferred = deferred->outer_;
    return deferred;
  }
};

inline std::optional<std::string> Store::get(std::string_view key) const {
  return read([&]() -> std::optional<std::string> {
    auto it = lookup(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  });
}

inline Status Store::set(std::string_view key, std::string_view value) {
  WriteLock lock(this);
  Status s = put(key, value);
  return s.ok() ? finish_write(lock) : s;
}

inline Status Store::put(std::string_view key, std::string_view value, std::int64_t expire_at_ms) {
  if (Status s = log_put(key, value, expire_at_ms); !s.ok()) return s;
  auto [it, added] = map_.try_emplace(std::string(key));  // finds the key, or adds it empty
  if (!added) count_live(-1, key, it->second);
  count_live(+1, key, value);
  if (keeps_undo()) {
    remember(key, added ? std::nullopt : std::optional<std::string>(std::move(it->second)));
  }
  it->second.assign(value.data(), value.size());
  set_expiry(it->first, expire_at_ms);
  touch(it->first);
  maybe_compact();
  return Status();
}

inline Status Store::erase(Map::iterator it) {
  if (Status s = log_delete(it->first); !s.ok()) return s;
  count_live(-1, it->first, it->second);
  if (keeps_undo()) remember(it->first, std::move(it->second));
  if (!expires_.empty()) expires_.erase(it->first);
  touch(it->first);
  map_.erase(it);
  maybe_compact();
  return Status();
}

inline Status Store::extend(Map::iterator it, std::string_view key, std::string_view suffix) {
  const bool added = it == map_.end();
  if (!added && suffix.empty()) {  // nothing changes, so nothing to log or to undo
    touch(it->first);
    return Status();
  }
  if (Status s = check_record_limits(key, suffix); !s.ok()) return s;
  if (batch_ != nullptr) {
    if (Status s = add_to_batch(RecordType::kAppend, key, suffix, 0); !s.ok()) return s;
  } else if (disk_) {
    if (Status s = disk_->append(RecordType::kAppend, key, suffix); !s.ok()) return s;
  }
  if (added) {
    it = map_.try_emplace(std::string(key)).first;
  } else {
    count_live(-1, key, it->second);
  }
  if (keeps_undo()) {  // a key the append made goes away again; one it grew gets cut back
    remember(key, std::nullopt);
    if (!added) (batch_ != nullptr ? batch_->undo : undo_).back().appended = suffix.size();
  }
  it->second.append(suffix.data(), suffix.size());
  count_live(+1, key, it->second);
  touch(it->first);
  maybe_compact();
  return Status();
}

inline Store::Map::const_iterator Store::lookup(std::string_view key) const {
  auto it = map_.find(key);  // no std::string to make: the table takes a string_view
  if (it != map_.end() && expired(it->first)) return map_.end();
  return it;
}

inline Store::Map::iterator Store::lookup_for_write(std::string_view key) {
  auto it = map_.find(key);
  if (it != map_.end() && expired(it->first)) {
    // Its time has passed: remove it for good, and say so in the log, so that a restart
    // agrees with what clients saw even if the clock has moved back meanwhile. If that
    // record cannot be written, the store refuses writes from now on anyway.
    (void)erase(it);
    return map_.end();
  }
  return it;
}

inline Status Store::del(std::string_view key, bool* existed) {
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  if (existed != nullptr) *existed = false;
  if (it == map_.end()) return Status();
  if (Status s = erase(it); !s.ok()) return s;
  Status s = finish_write(lock);  // the fsync (from chapter 16, the write) may fail here
  if (existed != nullptr) *existed = s.ok();
  return s;
}

inline bool Store::exists(std::string_view key) const {
  return read([&] { return lookup(key) != map_.end(); });
}

inline std::size_t Store::size() const {
  return read([&] { return map_.size(); });
}

inline std::vector<std::pair<std::string, std::string>> Store::entries() const {
  using Entries = std::vector<std::pair<std::string, std::string>>;
  return read([&] {
    Entries entries;
    entries.reserve(map_.size());
    for (const auto& entry : map_) {
      if (!expired(entry.first)) entries.push_back(entry);
    }
    return entries;
  });
}

// Store's persistence (chapter 3): open, recover, close, and the two writes to the log.

inline Status Store::open(const Options& options, std::unique_ptr<Store>* store) {
  std::unique_ptr<Store> opened(new Store());
  opened->clock_ = options.clock;
  opened->active_expiry_ = options.active_expiry;
  if (options.dir.empty()) {
    *store = std::move(opened);
    return Status();
  }
  FileSystem* fs = options.file_system ? options.file_system : default_file_system();
  if (options.compact_ratio != 0 && !(options.compact_ratio > 1)) {
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%g", options.compact_ratio);
    return Status::invalid_argument(
        std::string("compact_ratio ") + ratio + " is not a ratio compaction can use: a log " +
        "cannot be smaller than its live data, so a ratio of 1 or less would compact after " +
        "nearly every write. Use 0 to turn automatic compaction off, or more than 1 (the " +
        "default is 2)");
  }
  if (Status s = fs->create_dir(options.dir); !s.ok()) return s;
  if (options.fsync != FsyncPolicy::kNever) {
    // The directory may be new: make its entry in the parent durable too, or a power cut
    // could take the whole directory, acknowledged writes and all.
    if (Status s = fs->sync_dir(detail::parent_dir(options.dir)); !s.ok()) return s;
  }
  std::unique_ptr<DirLock> lock;
  Status s = DirLock::acquire(detail::path_in(options.dir, kLockFileName), &lock);
  if (!s.ok()) return s;
  std::unique_ptr<LogWriter> log;
  if (s = opened->recover(options, fs, &log); !s.ok()) return s;
  Options resolved = options;
  resolved.file_system = fs;
  opened->disk_.reset(new detail::Disk(std::move(resolved), std::move(lock), std::move(log)));
  if (options.compact_ratio > 0) {
    Store* self = opened.get();
    opened->compactor_ = std::thread([self] { self->compactor_loop(); });
  }
  if (opened->recovery_.log_version < kLogVersion && opened->recovery_.log_version != 0) {
    // An older format cannot hold this build's records: rewrite it in this one, in one
    // crash-safe step (a compaction), before anything is appended.
    if (s = opened->compact(); !s.ok()) return s;
    detail::note(options.info_log, detail::path_in(options.dir, kLogFileName) + " was a version " +
                 std::to_string(opened->recovery_.log_version) + " log; it was rewritten as " +
                 "version " + std::to_string(kLogVersion) + ", which older builds cannot read");
  }
  if (!opened->expires_.empty() && opened->active_expiry_) {
    Store* self = opened.get();
    opened->expiry_thread_ = std::thread([self] { self->expiry_loop(); });
  }
  *store = std::move(opened);
  return Status();
}

// Replays DIR's log into the map and hands back a writer positioned after the last whole
// record. Only a torn tail or a torn header is changed on disk, and each is reported.
inline Status Store::recover(const Options& options, FileSystem* fs,
                             std::unique_ptr<LogWriter>* writer) {
  const auto started = std::chrono::steady_clock::now();
  const std::string path = detail::path_in(options.dir, kLogFileName);
  const bool syncs = options.fsync != FsyncPolicy::kNever;
  auto note = [&](const std::string& message) { detail::note(options.info_log, message); };

  // A compaction that died before its rename leaves its temporary file; the log it was
  // going to replace is whole, so the file is only in the way.
  const std::string temp = detail::path_in(options.dir, kCompactFileName);
  if (fs->exists(temp)) {
    if (Status s = fs->remove(temp); !s.ok()) return s;
    note("removed " + temp + ", left by a compaction that did not finish; the log is intact");
  }

  std::unique_ptr<File> file;
  if (Status s = fs->open(path, true, &file); !s.ok()) return s;
  LogReader reader(file.get());
  LogReader::Header header;
  if (Status s = reader.open(&header); !s.ok()) return s;
  if (header != LogReader::Header::kValid) {
    // A new log, or a crash while one was being created: start it afresh. The directory
    // is synced too, or a power cut could forget the file ever existed.
    if (header == LogReader::Header::kTorn) {
      note(path + ": the file header was incomplete (" + std::to_string(reader.file_size()) +
           " bytes); a crash interrupted its creation, so it was written again");
    }
    Status s = file->truncate(0);
    if (s.ok()) s = LogWriter::create(std::move(file), writer);
    if (s.ok() && syncs) s = (*writer)->sync();
    if (s.ok() && syncs) s = fs->sync_dir(options.dir);
    recovery_.log_bytes = kFileHeaderBytes;
    recovery_.duration = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started);
    return s;
  }

  // Sized once, from the log, rather than doubled sixteen times as a million keys arrive.
  map_.reserve(static_cast<std::size_t>(
      std::min<std::uint64_t>(reader.estimate_records(), std::numeric_limits<std::size_t>::max())));
  Record record;
  LogReader::Result result;
  while ((result = reader.next(&record)) == LogReader::Result::kRecord) {
    if (Status s = check_appends(record, path); !s.ok()) return s;
    // Memory, not the processor, is what a replay waits for: start loading the bucket of
    // the key four records on, and the first entry of the bucket loaded two records ago.
    map_.prefetch(reader.peek_key(4), false);
    map_.prefetch(reader.peek_key(2), true);
    replay(record);
    ++recovery_.records;
    if (recovery_.records % 4096 == 0 && options.keep_loading && !options.keep_loading()) {
      return Status::cancelled("loading " + path + " was stopped after " +
                               std::to_string(recovery_.records) + " records, as asked " +
                               "(Options::keep_loading); the log was not changed: open it again");
    }
  }
  if (result == LogReader::Result::kIOError) return reader.status();

  const std::uint64_t end = reader.offset();
  if (result != LogReader::Result::kEnd) {
    Diagnosis diagnosis;
    if (Status s = diagnose(reader, result, &diagnosis); !s.ok()) return s;
    if (diagnosis.damage == Damage::kNotUnderstood || diagnosis.damage == Damage::kCorruption) {
      map_.clear();
      return detail::refuse_damaged_log(path, options.dir, end, result, diagnosis,
                                        recovery_.records);
    }
    recovery_.bytes_dropped = reader.file_size() - end;
    if (diagnosis.damage == Damage::kLostPages) {
      // Keep what is cut off, byte for byte, before cutting: if this was not a power cut
      // but damage that zeroed a page, the records after it can still be salvaged.
      recovery_.records_dropped = reader.count_records_from(*diagnosis.next_valid);
      // A name of its own: an earlier cut at the same offset keeps its copy.
      recovery_.dropped_file = path + ".dropped-at-" + std::to_string(end);
      for (int n = 1; fs->exists(recovery_.dropped_file); ++n) {
        recovery_.dropped_file = path + ".dropped-at-" + std::to_string(end) + "." + std::to_string(n);
      }
      if (Status s = detail::copy_range(fs, file.get(), end, reader.file_size(),
                                        recovery_.dropped_file);
          !s.ok()) {
        return s;
      }
    }
    if (Status s = file->truncate(end); !s.ok()) return s;
    if (syncs) {
      if (Status s = file->sync(); !s.ok()) return s;
    }
    note(detail::describe_dropped_tail(path, end, result, diagnosis, recovery_));
  }
  recovery_.log_bytes = end;
  recovery_.duration = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  writer->reset(new LogWriter(std::move(file), end));
  // Keys whose time passed while the store was closed stay out. Their records remain in
  // the log until a compaction; a replay leaves them out the same way.
  recovery_.log_version = reader.version();
  const std::int64_t now = now_ms();
  for (auto it = expires_.begin(); it != expires_.end();) {
    if (now > it->second) {
      const auto entry = map_.find(it->first);
      assert(entry != map_.end());  // replay keeps an expiry only for a key it holds
      count_live(-1, entry->first, entry->second);  // replay counted it in
      map_.erase(entry);
      it = expires_.erase(it);
      ++recovery_.keys_expired;
    } else {
      ++it;
    }
  }
  return Status();
}

// Applies one record of the log to the map, as the write that made it did. The record's
// key is a view into the reader's buffer: it is copied once, into the table, and only
// when it is new; expires_, keyed by std::string, is asked only when it holds a key.
// live_bytes_ is kept as it goes, so that no walk over every entry follows the replay.
inline void Store::replay(const Record& record) {
  switch (record.type) {
    case RecordType::kPut: {
      const auto [it, added] = map_.find_or_add(record.key);
      if (!added) count_live(-1, it->first, it->second);
      it->second.assign(record.value.data(), record.value.size());
      count_live(+1, it->first, it->second);
      if (record.expiry_ms != 0) expires_[it->first] = static_cast<std::int64_t>(record.expiry_ms);
      else if (!expires_.empty()) expires_.erase(it->first);
      break;
    }
    case RecordType::kDelete: {
      const auto it = map_.find(record.key);
      if (it == map_.end()) break;
      if (!expires_.empty()) expires_.erase(it->first);
      count_live(-1, it->first, it->second);
      map_.erase(it);
      break;
    }
    case RecordType::kExpire: {
      const auto it = map_.find(record.key);
      if (it == map_.end()) break;  // written only for a live key; kept safe anyway
      if (record.expiry_ms != 0) expires_[it->first] = static_cast<std::int64_t>(record.expiry_ms);
      else if (!expires_.empty()) expires_.erase(it->first);
      break;
    }
    case RecordType::kBatch: {  // the reader checked every entry before handing it over
      detail::BatchReader entries(record.value);
      Record entry;
      while (entries.next(&entry)) replay(entry);
      break;
    }
    case RecordType::kAppend: {
      const auto [it, added] = map_.find_or_add(record.key);
      if (!added) count_live(-1, it->first, it->second);
      it->second.append(record.value);
      count_live(+1, it->first, it->second);
      break;
    }
  }
}

inline Status Store::check_appends(const Record& record, const std::string& path) const {
  if (record.type != RecordType::kAppend && record.type != RecordType::kBatch) return Status();
  // The size each value has as the record applies: for a batch, after its earlier entries
  // (only batches holding an append are walked this way).
  std::unordered_map<std::string_view, std::uint64_t> sizes;
  auto size_of = [&](std::string_view key) -> std::uint64_t {
    if (auto changed = sizes.find(key); changed != sizes.end()) return changed->second;
    auto it = map_.find(key);
    return it == map_.end() ? 0 : it->second.size();
  };
  auto fits = [&](const Record& change) {
    if (change.type == RecordType::kPut) sizes[change.key] = change.value.size();
    if (change.type == RecordType::kDelete) sizes[change.key] = 0;
    if (change.type != RecordType::kAppend) return true;
    const std::uint64_t size = size_of(change.key) + change.value.size();
    sizes[change.key] = size;
    return size <= kMaxValueBytes;
  };
  bool ok = true;
  if (record.type == RecordType::kAppend) {
    ok = fits(record);
  } else if (record.type == RecordType::kBatch) {
    detail::BatchReader scout(record.value);
    Record entry;
    bool appends = false;
    while (!appends && scout.next(&entry)) appends = entry.type == RecordType::kAppend;
    detail::BatchReader entries(record.value);
    while (appends && ok && entries.next(&entry)) ok = fits(entry);
  }
  if (ok) return Status();
  return Status::not_supported(
      path + ": the " + (record.type == RecordType::kBatch ? "batch" : "append") +
      " record at byte offset " + std::to_string(record.offset) + " appends to make a " +
      "value longer than this build's KEYSTONELIGHT_MAX_VALUE_BYTES (" +
      std::to_string(kMaxValueBytes) + "). Nothing was changed. A build with a larger " +
      "limit wrote this log: open it with that build");
}

inline Store::~Store() { (void)close(); }

inline Status Store::close() {
  stop_compactor();
  stop_expiry();
  WriteLock lock(this);  // a write holding the locks finishes first; later ones fail
  return disk_ ? disk_->close() : Status();
}

inline Status Store::sync() { return disk_ ? disk_->sync() : Status(); }

inline const RecoveryReport& Store::recovery() const { return recovery_; }

inline const Options& Store::options() const {
  static const Options in_memory;
  return disk_ ? disk_->options() : in_memory;
}

inline Status Store::log_put(std::string_view key, std::string_view value,
                             std::int64_t expire_at_ms) {
  if (Status s = check_record_limits(key, value); !s.ok()) return s;
  if (batch_ != nullptr) return add_to_batch(RecordType::kPut, key, value, expire_at_ms);
  return disk_ ? disk_->append(RecordType::kPut, key, value,
                               static_cast<std::uint64_t>(expire_at_ms))
               : Status();
}

inline Status Store::log_delete(std::string_view key) {
  if (batch_ != nullptr) return add_to_batch(RecordType::kDelete, key, {}, 0);
  return disk_ ? disk_->append(RecordType::kDelete, key, {}) : Status();
}

// =======================================================================================
// Chapter 4: compaction
//
// The log keeps every version of every key, so a store that overwrites and deletes grows
// without bound while its contents stay the same size. Compaction writes what is live,
// from memory (the map is the truth; there is nothing to read back), as a fresh log and
// swaps it in with rename(2), which replaces a name in one step: a crash at any moment
// leaves the old log or the new one under that name, never a mix. The data directory's
// lock is held throughout. Stop-the-world for writers (in this chapter the caller's
// thread does it; chapter 5 lets readers go on meanwhile).
// =======================================================================================

inline Status Store::compact() {
  if (in_transaction()) {  // refused in memory too, so that both kinds of store agree
    return Status::invalid_argument("a compaction cannot run inside a transaction, which "
                                    "holds the writer lock it needs: compact after it");
  }
  if (Deferred* deferred = deferring()) deferred->hold(false);  // it needs writers_mu_ itself
  if (!disk_) return Status();
  // Writers wait, so the map the new log is made from is the map when it replaces the
  // old one; readers go on, since nothing changes the map meanwhile.
  std::lock_guard<WritersMutex> no_writers(writers_mu_);
  return disk_->compact([this](const detail::Disk::Entry& entry) { contents(entry); });
}

inline Stats Store::stats() const {
  std::shared_lock<detail::SharedMutex> lock(mu_, std::defer_lock);
  const Deferred* deferred = deferring();
  if (!in_transaction() && !(deferred != nullptr && deferred->writers_.owns_lock())) lock.lock();
  Stats stats = disk_ ? disk_->stats() : Stats();
  stats.live_bytes = (disk_ ? kFileHeaderBytes : 0) + live_bytes_;
  std::lock_guard<CompactorMutex> compactor(compactor_mu_);
  stats.compaction_pending = compaction_wanted_ || compaction_running_;
  return stats;
}

inline void Store::maybe_compact() {
  if (!disk_ || !disk_->wants_compaction(live_bytes_)) return;
  // The caller holds the writer lock, which compact() would wait for: hand the work to
  // the compactor thread instead.
  {
    std::lock_guard<CompactorMutex> lock(compactor_mu_);
    compaction_wanted_ = true;
  }
  compactor_cv_.notify_one();
}

inline void Store::contents(const detail::Disk::Entry& entry) const {
  const std::int64_t now = now_ms();
  for (const auto& [key, value] : map_) {
    const std::int64_t expiry = expiry_of(key);
    if (expiry == 0 || now <= expiry) entry(key, value, static_cast<std::uint64_t>(expiry));
  }
}

inline void Store::count_live(int sign, std::string_view key, std::string_view value) {
  const std::uint64_t bytes = kRecordHeaderBytes + key.size() + value.size();
  live_bytes_ = sign > 0 ? live_bytes_ + bytes : live_bytes_ - bytes;
}

// =======================================================================================
// Chapter 5: concurrency
//
// One reader-writer lock guards the map: any number of readers at once, or one writer
// (detail::SharedMutex, which lets waiting writers in first; see its comment for why
// not std::shared_mutex). A write holds it exclusively while it appends its record and
// applies it, so the log's order is the map's order; then it lets go and, with kAlways,
// waits for the fsync that covers it, sharing that fsync with every writer that arrived
// meanwhile (group commit). A compaction holds the lock shared: readers go on, writers
// wait. Automatic compactions run on a thread of the store's own. The lock order is
// written next to the locks, in the Store class.
// =======================================================================================

inline Status Store::finish_write(WriteLock& lock) {
  lock.finished = true;
  if (!lock.writers.owns_lock()) {  // in a transaction (its commit waits), or held by a Deferred
    Deferred* deferred = deferring();
    if (deferred != nullptr && !in_transaction() && disk_) deferred->note(disk_->appended());
    return Status();
  }
  if (!disk_) return Status();
  const std::uint64_t ticket = disk_->appended();  // still under the lock: our record's number
  lock.map.unlock();
  lock.writers.unlock();  // the next writer may append while we wait for the fsync
  if (Deferred* deferred = deferring()) {  // its holder commits before it tells anyone
    deferred->note(ticket);
    return Status();
  }
  Status s = disk_->wait_durable(ticket);
  if (!s.ok()) undo_unsynced();  // readers must not go on seeing what failed
  return s;
}

template <typename Peek>
auto Store::read(Peek peek) const -> decltype(peek()) {
  if (in_transaction()) return peek();  // its thread holds the lock, and its writes wait
  if (Deferred* deferred = deferring(); deferred != nullptr && deferred->writers_.owns_lock()) {
    if (disk_ && !undone_) deferred->note(disk_->appended());  // it holds the lock
    return peek();
  }
  std::shared_lock<detail::SharedMutex> lock(mu_);
  auto found = peek();
  if (!disk_ || undone_) return found;
  // Every write that peek() could see has a record numbered up to this; waiting for it
  // costs nothing unless the policy is kAlways and an fsync is still due.
  const std::uint64_t ticket = disk_->appended();
  lock.unlock();
  if (Deferred* deferred = deferring()) {
    deferred->note(ticket);
    return found;
  }
  if (disk_->wait_durable(ticket).ok()) return found;
  // Only a store made by open() has a disk_, and open() makes it non-const.
  const_cast<Store*>(this)->undo_unsynced();
  return read(peek);  // once more: undone_ is set now, so this returns at once
}

inline bool Store::keeps_undo() const {
  // A transaction keeps what it replaced too, to undo it when it fails; and from chapter
  // 15 every write of a persistent store does, since in every policy it is applied before
  // its record reaches the file.
  return batch_ != nullptr || disk_ != nullptr;
}

inline void Store::remember(std::string_view key, std::optional<std::string> previous) {
  if (batch_ != nullptr) {  // kept by the transaction, and handed to undo_ when it commits
    batch_->undo.push_back({0, std::string(key), std::move(previous)});
    if (batch_->undo.back().previous) batch_->undo.back().previous_expiry = expiry_of(batch_->undo.back().key);
    return;
  }
  // Tickets grow in the order of the log; undo_unsynced() relies on it.
  assert(undo_.empty() || undo_.back().ticket < disk_->appended());
  const std::uint64_t synced = disk_->synced();
  while (!undo_.empty() && undo_.front().ticket <= synced) undo_.pop_front();  // durable now
  undo_.push_back({disk_->appended(), std::string(key), std::move(previous)});
  if (undo_.back().previous) undo_.back().previous_expiry = expiry_of(undo_.back().key);
}

// Puts back, newest first, what every write after the last good fsync replaced. The log
// has stopped taking writes (the failure is sticky), so nothing is appended meanwhile.
inline void Store::undo_unsynced() {
  WriteLock lock(this);
  assert(disk_->failed());  // only a failed fsync undoes writes; the log refuses new ones
  if (undone_) return;
  undone_ = true;
  const std::uint64_t synced = disk_->synced();
  for (; !undo_.empty() && undo_.back().ticket > synced; undo_.pop_back()) restore(&undo_.back());
  undo_.clear();
}

// Puts back what one write replaced (the writer lock held).
inline void Store::restore(Undo* undo) {
  if (undo->appended != 0) {  // the value is as the append left it: cut its piece off
    auto it = map_.find(undo->key);
    assert(it != map_.end() && it->second.size() >= undo->appended);
    count_live(-1, undo->key, it->second);
    it->second.resize(it->second.size() - undo->appended);
    count_live(+1, undo->key, it->second);
    return;
  }
  if (auto it = map_.find(undo->key); it != map_.end()) {
    count_live(-1, undo->key, it->second);
    map_.erase(it);
  }
  expires_.erase(undo->key);
  if (undo->previous && undo->previous_expiry != 0) expires_[undo->key] = undo->previous_expiry;
  if (undo->previous) {
    count_live(+1, undo->key, *undo->previous);
    map_.emplace(std::move(undo->key), std::move(*undo->previous));
  }
}

inline Status Store::increment(std::string_view key, std::int64_t delta, std::int64_t* result) {
  WriteLock lock(this);
  std::int64_t current = 0;
  auto it = lookup_for_write(key);
  if (it != map_.end() && !detail::parse_int64(it->second, &current)) {
    return Status::invalid_argument("value is not an integer or out of range");
  }
  if ((delta > 0 && current > std::numeric_limits<std::int64_t>::max() - delta) ||
      (delta < 0 && current < std::numeric_limits<std::int64_t>::min() - delta)) {
    return Status::invalid_argument("increment or decrement would overflow");
  }
  const std::int64_t next = current + delta;
  const std::int64_t expiry = it != map_.end() ? expiry_of(it->first) : 0;  // INCR keeps it
  if (Status s = put(key, std::to_string(next), expiry); !s.ok()) return s;
  if (result != nullptr) *result = next;
  return finish_write(lock);
}

inline Status Store::append(std::string_view key, std::string_view suffix, std::size_t* length) {
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  const std::size_t size = it != map_.end() ? it->second.size() : 0;
  if (size + suffix.size() > kMaxValueBytes) {
    return Status::invalid_argument("string exceeds maximum allowed size (proto-max-bulk-len: " +
                                    std::to_string(kMaxValueBytes) + " bytes)");
  }
  if (Status s = extend(it, key, suffix); !s.ok()) return s;
  if (length != nullptr) *length = size + suffix.size();
  return finish_write(lock);
}

inline Status Store::set(std::string_view key, std::string_view value, SetIf condition,
                         bool* stored, std::optional<std::string>* previous) {
  SetOptions options;  // chapter 10's set() has every option; this is one of its forms
  options.condition = condition;
  return set(key, value, options, stored, previous);
}

inline void Store::compactor_loop() {
  std::unique_lock<CompactorMutex> lock(compactor_mu_);
  while (true) {
    compactor_cv_.wait(lock, [this] { return compaction_wanted_ || compactor_stopping_; });
    if (compactor_stopping_) return;
    compaction_wanted_ = false;
    compaction_running_ = true;
    lock.unlock();  // compaction takes writers_mu_, which comes before this one
    Status s = compact_if_due();
    if (!s.ok()) detail::note(disk_->options().info_log, "automatic compaction failed: " + s.to_string());
    lock.lock();
    compaction_running_ = false;
  }
}

inline Status Store::compact_if_due() {
  std::lock_guard<WritersMutex> no_writers(writers_mu_);
  // Writes made while this thread waited for the locks may have asked again, or a
  // compaction by hand may have done the work: check again now that the map is still.
  if (!disk_->wants_compaction(live_bytes_)) return Status();
  return disk_->compact([this](const detail::Disk::Entry& entry) { contents(entry); });
}

inline void Store::stop_compactor() {
  {
    std::lock_guard<CompactorMutex> lock(compactor_mu_);
    compactor_stopping_ = true;
  }
  compactor_cv_.notify_one();
  if (compactor_.joinable()) compactor_.join();
}

// What chapter 7's commands need from the store beyond chapter 5's (chapter 6).

inline Status Store::set_all(const std::vector<std::pair<std::string_view, std::string_view>>& pairs) {
  for (const auto& [key, value] : pairs) {  // refuse before writing any, not halfway
    if (Status s = check_record_limits(key, value); !s.ok()) return s;
  }
  return transaction([&] {  // one batch record: a crash keeps every pair or none
  WriteLock lock(this);
  for (const auto& [key, value] : pairs) {
    if (Status s = put(key, value); !s.ok()) return s;
  }
  return finish_write(lock);
  });
}

inline Status Store::del_all(const std::vector<std::string_view>& keys, std::size_t* removed) {
  return transaction([&] {  // one batch record: a crash keeps every removal or none
  WriteLock lock(this);
  *removed = 0;
  for (std::string_view key : keys) {
    auto it = lookup_for_write(key);
    if (it == map_.end()) continue;
    if (Status s = erase(it); !s.ok()) return s;
    ++*removed;
  }
  return finish_write(lock);
  });
}

inline std::vector<std::optional<std::string>> Store::get_all(
    const std::vector<std::string_view>& keys) const {
  return get_all(keys, ReadBound(), nullptr);
}

inline std::vector<std::string> Store::keys() const {
  return read([&] {
    std::vector<std::string> keys;
    keys.reserve(map_.size());
    for (const auto& entry : map_) {
      if (expired(entry.first)) continue;
      keys.push_back(entry.first);
    }
    return keys;
  });
}

inline std::vector<std::optional<std::string>> Store::get_all(
    const std::vector<std::string_view>& keys, const ReadBound& bound, bool* complete) const {
  bool whole = true;
  std::vector<std::optional<std::string>> values = read([&] {
    std::vector<std::optional<std::string>> found;
    found.reserve(keys.size());
    std::size_t copied = 0;
    whole = true;
    for (std::string_view key : keys) {
      if (bound.stop != nullptr && bound.stop->load(std::memory_order_relaxed)) {
        whole = false;
        break;
      }
      auto it = lookup(key);
      if (it != map_.end() && it->second.size() > bound.max_bytes - copied) {
        whole = false;  // the copy itself is what must not happen
        break;
      }
      if (it != map_.end()) copied += it->second.size();
      found.push_back(it == map_.end() ? std::nullopt : std::optional<std::string>(it->second));
    }
    return found;
  });
  if (complete != nullptr) *complete = whole;
  return values;
}

inline std::vector<std::string> Store::keys(std::string_view pattern, const ReadBound& bound,
                                            bool* complete) const {
  bool whole = true;
  std::vector<std::string> keys = read([&] {
    std::vector<std::string> found;
    std::size_t copied = 0;
    whole = true;
    for (const auto& entry : map_) {
      if (bound.stop != nullptr && bound.stop->load(std::memory_order_relaxed)) {
        whole = false;
        break;
      }
      if (!detail::glob_match(pattern, entry.first, bound.stop)) continue;
      if (expired(entry.first)) continue;
      if (entry.first.size() > bound.max_bytes - copied) {
        whole = false;
        break;
      }
      copied += entry.first.size();
      found.push_back(entry.first);
    }
    // A match that a stop cut short said no: the walk is not whole, even at its last key.
    if (bound.stop != nullptr && bound.stop->load(std::memory_order_relaxed)) whole = false;
    return found;
  });
  if (complete != nullptr) *complete = whole;
  return keys;
}

inline Status Store::clear() {
  WriteLock lock(this);
  if (in_transaction()) {
    // The log cannot be swapped under a transaction's batch: each key gets a delete in
    // it instead, so that the whole transaction still lands as one record.
    for (auto it = map_.begin(); it != map_.end();) {
      auto next = std::next(it);
      if (Status s = erase(it); !s.ok()) return s;
      it = next;
    }
    return Status();
  }
  for (auto& [key, watched] : watched_) {  // every key that exists changes (Redis's rule)
    if (lookup(key) != map_.end()) watched.version = ++watch_clock_;
  }
  if (disk_) {
    // A compaction of nothing: an empty log replaces the old one in one rename, so a
    // crash leaves all the data or none of it, never some.
    bool replaced = false;
    if (Status s = disk_->clear(&replaced); !s.ok()) {
      // Failing after the rename (the Disk has stopped) leaves the empty log in place:
      // the map must say what the log says. Failing before it, as a store that already
      // refuses writes does at once, leaves both untouched.
      if (replaced) {
        map_.clear();
        expires_.clear();
        live_bytes_ = 0;
      }
      return s;
    }
  }
  map_.clear();
  expires_.clear();
  live_bytes_ = 0;
  return Status();
}

// =======================================================================================
// Chapter 10: keys that expire
//
// A cache forgets: a session ends, a page goes stale. A key can carry an expiry time, in
// milliseconds since the Unix epoch (wall-clock time, as Redis keeps it, so that it
// means the same after a restart). Keys with one have an entry in a second table,
// expires_; a key without one costs nothing, and a store where none has one pays one
// check of an empty table per lookup.
//
// A key whose time has passed is gone at once for everyone: every lookup checks (lazy
// expiry). Removing it is a write, with a record in the log, done when a writer meets it
// or by a background cycle that samples keys with an expiry at random (active expiry),
// as Redis does, so that keys nobody reads do not stay in memory for ever. The time goes
// into the key's record (the expiry field kept since chapter 2, and a new kExpire
// record for a change of expiry alone), so a replay knows it: recovery leaves out keys
// whose time has passed, and compaction does not write them.
//
// The clock is the wall clock. If it jumps forward, keys expire early; if it goes back,
// keys live longer, and one already read as expired but not yet removed (its delete not
// yet logged) comes back until the clock catches up.
// =======================================================================================

inline std::int64_t Store::now_ms() const {
  if (clock_) return clock_();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::size_t Store::expiring() const {
  return read([&] { return expires_.size(); });
}

inline std::int64_t Store::expiry_of(const std::string& key) const {
  if (expires_.empty()) return 0;
  auto it = expires_.find(key);
  return it == expires_.end() ? 0 : it->second;
}

// As in Redis, a key is still there during the very millisecond it expires at.
inline bool Store::expired(const std::string& key) const {
  const std::int64_t expiry = expiry_of(key);
  return expiry != 0 && now_ms() > expiry;
}

inline void Store::set_expiry(const std::string& key, std::int64_t expire_at_ms) {
  if (expire_at_ms == 0) {
    if (!expires_.empty()) expires_.erase(key);
    return;
  }
  expires_[key] = expire_at_ms;
  if (!active_expiry_) return;
  std::lock_guard<CompactorMutex> lock(expiry_mu_);
  // Once stop_expiry() has begun, the thread is its to join: no reading it here.
  if (!expiry_stopping_ && !expiry_thread_.joinable()) {
    expiry_thread_ = std::thread([this] { expiry_loop(); });
  }
}

inline Status Store::log_expire(std::string_view key, std::int64_t when_ms) {
  if (batch_ != nullptr) return add_to_batch(RecordType::kExpire, key, {}, when_ms);
  return disk_ ? disk_->append(RecordType::kExpire, key, {}, static_cast<std::uint64_t>(when_ms))
               : Status();
}

inline Status Store::change_expiry(Map::iterator it, std::int64_t when_ms) {
  if (when_ms != 0 && now_ms() >= when_ms) return erase(it);  // Redis deletes it at once
  if (Status s = log_expire(it->first, when_ms); !s.ok()) return s;
  if (keeps_undo()) remember(it->first, it->second);
  set_expiry(it->first, when_ms);
  touch(it->first);
  return Status();
}

inline Status Store::set(std::string_view key, std::string_view value,
                         std::chrono::milliseconds ttl) {
  const std::int64_t now = now_ms();
  if (ttl.count() <= 0 || ttl.count() > std::numeric_limits<std::int64_t>::max() - now) {
    return Status::invalid_argument("invalid expire time: a ttl of " +
                                    std::to_string(ttl.count()) + " ms; it must be more than 0");
  }
  SetOptions options;
  options.expire_at_ms = now + ttl.count();
  bool stored = false;
  return set(key, value, options, &stored);
}

inline Status Store::set(std::string_view key, std::string_view value, const SetOptions& options,
                         bool* stored, std::optional<std::string>* previous) {
  *stored = false;
  if (Status s = check_record_limits(key, value); !s.ok()) return s;
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  const bool present = it != map_.end();
  if (previous != nullptr) *previous = present ? std::optional<std::string>(it->second) : std::nullopt;
  if ((options.condition == SetIf::kIfAbsent && present) ||
      (options.condition == SetIf::kIfPresent && !present)) {
    return Status();
  }
  std::int64_t expiry = options.expire_at_ms;
  if (options.keep_ttl) expiry = present ? expiry_of(it->first) : 0;
  if (expiry != 0 && now_ms() > expiry) {
    // Stored and expired in the same instant, as in Redis: what remains is its absence.
    if (present) {
      if (Status s = erase(it); !s.ok()) return s;
    }
  } else if (Status s = put(key, value, expiry); !s.ok()) {
    return s;
  }
  *stored = true;
  return finish_write(lock);
}

inline Status Store::expire_at(std::string_view key, std::int64_t when_ms, unsigned conditions,
                               bool* changed) {
  if (changed != nullptr) *changed = false;
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  if (it == map_.end()) return Status();
  const std::int64_t current = expiry_of(it->first);  // 0: none, which counts as never
  if (((conditions & kIfNone) && current != 0) || ((conditions & kIfSome) && current == 0) ||
      ((conditions & kIfLater) && (current == 0 || when_ms <= current)) ||
      ((conditions & kIfSooner) && current != 0 && when_ms >= current)) {
    return Status();
  }
  // A time not after the epoch would read as "none" in a record; it has passed anyway.
  if (Status s = change_expiry(it, std::max<std::int64_t>(when_ms, 1)); !s.ok()) return s;
  if (changed != nullptr) *changed = true;
  return finish_write(lock);
}

inline Status Store::persist(std::string_view key, bool* changed) {
  if (changed != nullptr) *changed = false;
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  if (it == map_.end() || expiry_of(it->first) == 0) return Status();
  if (Status s = change_expiry(it, 0); !s.ok()) return s;
  if (changed != nullptr) *changed = true;
  return finish_write(lock);
}

inline std::int64_t Store::expire_time(std::string_view key) const {
  return read([&]() -> std::int64_t {
    auto it = lookup(key);
    if (it == map_.end()) return -2;
    const std::int64_t expiry = expiry_of(it->first);
    return expiry == 0 ? -1 : expiry;
  });
}

inline Status Store::get_and_expire(std::string_view key, std::int64_t when_ms, bool persist,
                                    std::optional<std::string>* value) {
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  *value = std::nullopt;
  if (it == map_.end()) return Status();
  *value = it->second;
  Status s;
  if (when_ms != 0) s = change_expiry(it, std::max<std::int64_t>(when_ms, 1));
  else if (persist && expiry_of(it->first) != 0) s = change_expiry(it, 0);
  if (!s.ok()) {
    *value = std::nullopt;
    return s;
  }
  return finish_write(lock);
}

inline Status Store::remove_expired(std::size_t sample, std::size_t* removed) {
  *removed = 0;
  WriteLock lock(this);
  if (expires_.empty()) return Status();
  // Look at `sample` keys from a random bucket on, as Redis samples its expires table,
  // past at most 20 empty buckets per key wanted: a table left sparse by many removals
  // must not make one round walk all of it.
  expiry_seed_ = expiry_seed_ * 6364136223846793005u + 1442695040888963407u;  // an LCG
  const std::size_t buckets = expires_.bucket_count();
  std::size_t bucket = static_cast<std::size_t>(expiry_seed_ >> 33) % buckets;
  std::vector<std::string> due;
  const std::int64_t now = now_ms();
  std::size_t seen = 0;
  for (std::size_t visited = 0; visited < buckets && visited < 20 * sample && seen < sample;
       ++visited, bucket = (bucket + 1) % buckets) {
    for (auto it = expires_.begin(bucket); it != expires_.end(bucket) && seen < sample; ++it) {
      ++seen;
      if (now > it->second) due.push_back(it->first);
    }
  }
  for (const std::string& key : due) {
    auto it = map_.find(key);
    assert(it != map_.end());  // expires_ holds only keys of map_
    if (Status s = erase(it); !s.ok()) return s;
    ++*removed;
  }
  return finish_write(lock);
}

inline void Store::expiry_loop() {
  const auto cycle = std::chrono::milliseconds(KEYSTONELIGHT_EXPIRY_CYCLE_MS);
  std::unique_lock<CompactorMutex> lock(expiry_mu_);
  while (!expiry_stopping_) {
    expiry_cv_.wait_for(lock, cycle, [this] { return expiry_stopping_; });
    if (expiry_stopping_) return;
    lock.unlock();  // remove_expired takes the writer lock, which comes before this one
    // Rounds while more than a quarter of a sample had expired, for a quarter of a cycle
    // at most: the cycle keeps up with keys that expire, and never starves the writers.
    const auto deadline = std::chrono::steady_clock::now() + cycle / 4;
    std::size_t removed = 0;
    while (remove_expired(KEYSTONELIGHT_EXPIRY_SAMPLE_KEYS, &removed).ok() &&
           4 * removed > KEYSTONELIGHT_EXPIRY_SAMPLE_KEYS &&
           std::chrono::steady_clock::now() < deadline) {
    }
    lock.lock();
  }
}

inline void Store::stop_expiry() {
  {
    std::lock_guard<CompactorMutex> lock(expiry_mu_);
    expiry_stopping_ = true;
  }
  expiry_cv_.notify_one();
  if (expiry_thread_.joinable()) expiry_thread_.join();
}

// =======================================================================================
// Chapter 11: batches and transactions
//
// MSET of ten keys was ten records: a crash between the fourth and the fifth kept four,
// and no client was ever told. A transaction fixes that for MSET, DEL of many keys,
// MULTI/EXEC and the embedded WriteBatch alike: its thread takes the writer lock for the
// whole of it (readers see all of it or none of it), its changes apply to the map as
// they come (later commands see earlier ones), and their log entries gather in a batch
// that is written as one record when it ends: one write(2), one CRC over all of it, so a
// crash keeps all of it or none. If that record cannot be written, or the transaction
// fails, what its changes replaced is put back before anyone can see it.
//
//   batch record   header (25 bytes, type 4, key length 0) | entry | entry | ...
//   entry          type (1) | key length (4) | value length (4) | expiry (8) | key | value
//
// A transaction of one change writes an ordinary record; of none, nothing.
//
// WATCH is optimistic locking: each watched key has a version that every change to it
// moves on; EXEC, inside its transaction, compares. Keys nobody watches pay one check
// of an empty table per change.
// =======================================================================================

inline Status Store::transaction(const std::function<Status()>& fn) {
  if (in_transaction()) return fn();  // joins the transaction already running
  WriteLock lock(this);
  Batch batch;
  batch_ = &batch;
  owner_ = std::this_thread::get_id();
  Status s;
  try {
    s = fn();
  } catch (...) {
    owner_ = std::thread::id();
    batch_ = nullptr;
    roll_back(&batch);
    throw;
  }
  owner_ = std::thread::id();
  batch_ = nullptr;
  if (!s.ok()) {
    roll_back(&batch);
    return s;
  }
  if (Status c = commit(&batch); !c.ok()) return c;
  return finish_write(lock);
}

inline Status Store::write(const WriteBatch& batch) {
  for (const WriteBatch::Op& op : batch.ops_) {  // refuse before changing anything
    if (Status s = check_record_limits(op.key, op.value); !s.ok()) return s;
  }
  return transaction([&] {
    for (const WriteBatch::Op& op : batch.ops_) {
      Status s;
      if (op.del) {
        auto it = lookup_for_write(op.key);
        if (it != map_.end()) s = erase(it);
      } else if (op.expire_at_ms != 0 && now_ms() > op.expire_at_ms) {
        auto it = lookup_for_write(op.key);  // its time has passed: what remains is absence
        if (it != map_.end()) s = erase(it);
      } else {
        s = put(op.key, op.value, op.expire_at_ms);
      }
      if (!s.ok()) return s;
    }
    return Status();
  });
}

inline Status Store::add_to_batch(RecordType type, std::string_view key, std::string_view value,
                                  std::int64_t expiry_ms) {
  if (!disk_) return Status();  // a store in memory logs nothing
  detail::encode_batch_entry(type, key, value, static_cast<std::uint64_t>(expiry_ms),
                             &batch_->entries);
  ++batch_->count;
  return Status();
}

inline Status Store::commit(Batch* batch) {
  Status s;
  if (batch->count == 1) {  // one change: an ordinary record says it
    detail::BatchReader entries(batch->entries);
    Record entry;
    entries.next(&entry);
    s = disk_->append(entry.type, entry.key, entry.value, entry.expiry_ms);
  } else if (batch->count > 1) {
    s = check_record(RecordType::kBatch, {}, batch->entries);
    if (s.ok()) s = disk_->append(RecordType::kBatch, {}, batch->entries);
  }
  if (!s.ok()) {
    roll_back(batch);
    return s;
  }
  if (keeps_undo() && !batch->undo.empty()) {  // batch_ is null again: as for any write
    // Until the fsync that covers the record, a failure must still be able to undo it.
    const std::uint64_t synced = disk_->synced();
    while (!undo_.empty() && undo_.front().ticket <= synced) undo_.pop_front();
    for (Undo& undo : batch->undo) {
      undo.ticket = disk_->appended();
      undo_.push_back(std::move(undo));
    }
  }
  return Status();
}

inline void Store::roll_back(Batch* batch) {
  for (; !batch->undo.empty(); batch->undo.pop_back()) {
    touch(batch->undo.back().key);  // a watcher saw it change, and change back
    restore(&batch->undo.back());
  }
}

inline void Store::Watch::add(std::string_view key) {
  WriteLock lock(store_);
  Watched& watched = store_->watched_[std::string(key)];
  ++watched.watchers;
  keys_.push_back({std::string(key), watched.version, store_->lookup(key) != store_->map_.end()});
}

inline bool Store::Watch::changed() const {
  WriteLock lock(store_);
  for (const Key& k : keys_) {
    auto it = store_->watched_.find(k.key);
    assert(it != store_->watched_.end());  // we watch it, so it has an entry
    if (it->second.version != k.version) return true;
    // Expired since add(), though nobody has removed it yet: a change all the same.
    if (k.live && store_->lookup(k.key) == store_->map_.end()) return true;
  }
  return false;
}

inline void Store::Watch::clear() {
  if (keys_.empty()) return;
  WriteLock lock(store_);
  for (const Key& k : keys_) {
    auto it = store_->watched_.find(k.key);
    if (it != store_->watched_.end() && --it->second.watchers == 0) store_->watched_.erase(it);
  }
  keys_.clear();
}

// =======================================================================================
// Chapter 12: the keyspace
//
// SCAN walks every key a few at a time, with a cursor that is a plain number: no state
// on the server, so a client may stop, keep the cursor and go on tomorrow. The promise:
// a key present from the first call to the last is returned at least once, whatever
// happens meanwhile. An std::unordered_map cannot keep it: its bucket count is prime and
// a rehash moves every key, so a position means nothing after one. Our own table keeps
// a power of two of buckets, and the cursor walks them in reverse-binary order (see
// detail::Table::scan), which stays right across a growth. The table also looks keys up
// by std::string_view, with no std::string made per lookup.
// =======================================================================================

inline std::uint64_t Store::scan(std::uint64_t cursor, std::size_t count,
                                 std::string_view pattern, const ReadBound& bound,
                                 std::vector<std::string>* keys, bool* complete) const {
  bool whole = true;
  auto [next, found] = read([&] {
    std::vector<std::string> matching;
    std::size_t copied = 0;
    whole = true;
    const std::uint64_t after = map_.scan(cursor, count, [&](const Map::value_type& entry) {
      if (bound.stop != nullptr && bound.stop->load(std::memory_order_relaxed)) {
        whole = false;
        return false;
      }
      if ((pattern.empty() || detail::glob_match(pattern, entry.first, bound.stop)) &&
          !expired(entry.first)) {
        if (entry.first.size() > bound.max_bytes - copied) {  // the copy must not happen
          whole = false;
          return false;
        }
        copied += entry.first.size();
        matching.push_back(entry.first);
      }
      return true;
    });
    if (bound.stop != nullptr && bound.stop->load(std::memory_order_relaxed)) whole = false;
    return std::make_pair(after, std::move(matching));
  });
  *keys = std::move(found);
  if (complete != nullptr) *complete = whole;
  return next;
}

inline std::optional<std::string> Store::random_key() const {
  return read([&]() -> std::optional<std::string> {
    std::uint64_t seed = random_seed_.fetch_add(0x9E3779B97F4A7C15u, std::memory_order_relaxed);
    // Picks that land on expired keys try again; a store full of them falls back on a walk.
    for (int attempt = 0; attempt < 100; ++attempt) {
      auto it = map_.random(&seed);
      if (it == map_.end()) return std::nullopt;
      if (!expired(it->first)) return it->first;
    }
    for (const auto& entry : map_) {
      if (!expired(entry.first)) return entry.first;
    }
    return std::nullopt;
  });
}

inline Status Store::rename(std::string_view from, std::string_view to, bool if_absent,
                            bool* found, bool* moved) {
  *found = *moved = false;
  return transaction([&] {
    auto it = lookup_for_write(from);
    if (it == map_.end()) return Status();
    *found = true;
    if (from == to) {  // Redis: RENAME k k is OK, RENAMENX k k moves nothing
      *moved = !if_absent;
      return Status();
    }
    if (if_absent && lookup_for_write(to) != map_.end()) return Status();
    const std::string value = it->second;
    const std::int64_t expiry = expiry_of(it->first);
    if (Status s = put(to, value, expiry); !s.ok()) return s;
    if (Status s = erase(lookup_for_write(from)); !s.ok()) return s;  // put may move entries
    *moved = true;
    return Status();
  });
}

inline Status Store::copy(std::string_view from, std::string_view to, bool replace, bool* copied) {
  *copied = false;
  return transaction([&] {
    auto it = lookup_for_write(from);
    if (it == map_.end() || (!replace && lookup_for_write(to) != map_.end())) return Status();
    const std::string value = it->second;
    if (Status s = put(to, value, expiry_of(it->first)); !s.ok()) return s;
    *copied = true;
    return Status();
  });
}

// =======================================================================================
// Chapter 16: commit before reply
//
// Until now each write made its own write(2), under the writer lock: sixteen pipelined
// SETs were sixteen system calls, and while one writer was in the kernel every other
// writer, on every connection, waited for the lock. Now a write adds its record to a
// batch in memory and is applied at once; whoever then needs it durable (the writer,
// before it answers, or a reader that may have seen it) commits the batch: one write(2)
// of everything appended so far, and under kAlways one fsync (Disk::wait_durable, the
// group commit of chapter 5 grown to cover the write itself). A Deferred lets a server
// run a whole pass of requests, from many connections, before committing once for all
// of them. The rule that makes this safe is Redis's: nothing is shown to anyone, writer
// or reader, before the records it depends on are in the file; and if they cannot be
// written, what they changed is undone before anyone can see it.
//
//     pass:  run requests ---------> commit: one write(2), one fsync ----> send replies
//            (apply, add records        (kAlways)                          (or errors, for
//             to the batch; note         on failure: undo what did not      answers that
//             each reply's ticket)       reach the file                     depended on it)
// =======================================================================================

inline Store::Deferred::Deferred(Store* store)
    : store_(store), outer_(current()), writers_(store->writers_mu_, std::defer_lock),
      map_(store->mu_, std::defer_lock) {
  assert(store->deferring() == nullptr && "one Deferred per store and thread");
  current() = this;
}

inline Store::Deferred::~Deferred() {
  (void)commit();
  current() = outer_;
}

inline Status Store::Deferred::commit() {
  if (store_->in_transaction()) {
    return Status::invalid_argument("a Deferred cannot commit inside a transaction, whose "
                                    "record is written when it ends: commit after it");
  }
  hold(false);
  const std::uint64_t ticket = std::exchange(ticket_, 0);
  if (ticket == 0 || !store_->disk_) return Status();
  Status s = store_->disk_->wait_durable(ticket);
  if (!s.ok()) {
    store_->undo_unsynced();  // before anyone is shown anything the failure took back
    failure_ = s;
  }
  return s;
}

inline std::uint64_t Store::Deferred::durable() const {
  return store_->disk_ ? store_->disk_->synced() : std::numeric_limits<std::uint64_t>::max();
}

// =======================================================================================
// Chapter 6: the protocol
//
// Clients talk to the store in Redis's protocol, so redis-cli, redis-benchmark and every
// Redis client library work unchanged. A request is either an inline command, a line of
// words as a person types it into nc ("SET greeting hello\r\n"), or a RESP array of bulk
// strings, each prefixed by its length, as client libraries send it:
//
//     *3\r\n$3\r\nSET\r\n$8\r\ngreeting\r\n$5\r\nhello\r\n
//
// A length prefix beats a delimiter for binary values: the value may hold any byte,
// CR and LF included, and the reader knows how much to wait for. The grammar, the limits
// and every command are in docs/protocol.md. Nothing here touches a socket: the parser
// reads bytes from a buffer and resp:: writes reply bytes to a string, so both are
// tested (and fuzzed) byte by byte; chapter 7 runs the requests, chapter 8 moves bytes.
// =======================================================================================

// Limits on what a client may send. A request over a limit is a protocol error: the
// reply says which limit, and the connection is closed.
struct ProtocolLimits {
  std::size_t max_inline_bytes = KEYSTONELIGHT_MAX_INLINE_BYTES;  // an inline line, or a header
  std::size_t max_bulk_bytes = KEYSTONELIGHT_MAX_BULK_BYTES;      // one argument of an array
  std::size_t max_args = KEYSTONELIGHT_MAX_ARGS;                  // arguments in one array
};

// Splits a byte stream into requests. Incremental: give it what has arrived; it returns
// one request, or says it needs more bytes, or reports a protocol error. After every call
// the caller drops the first `*consumed` bytes of its buffer and, next time, passes what
// is left followed by whatever arrived since. The parser remembers how far it got into a
// long array, so each byte is looked at about once. It never reserves memory for a length
// a client claims: a bulk string is copied only once all of it is in the buffer.
// One parser per connection; not thread-safe.
class RequestParser {
 public:
  enum class Result {
    kCommand,   // *args holds a request of at least one argument
    kNeedMore,  // no whole request yet
    kError,     // a protocol error, described by error(); the stream cannot be trusted
  };

  explicit RequestParser(ProtocolLimits limits = ProtocolLimits()) : limits_(limits) {}

  Result parse(std::string_view input, std::size_t* consumed, std::vector<std::string>* args) {
    *consumed = 0;
    while (true) {
      std::string_view rest = input.substr(*consumed);
      Result r = expected_args_ < 0 ? parse_start(rest, args) : parse_array(rest, args);
      if (r == Result::kCommand && args->empty()) {  // an empty line or "*0": skip it
        *consumed += pos_;
        pos_ = 0;
        continue;
      }
      if (r == Result::kCommand) {
        *consumed += pos_;
        pos_ = 0;
      }
      return r;
    }
  }

  // What went wrong, as Redis words it: "Protocol error: invalid bulk length".
  const std::string& error() const { return error_; }

  // New limits from the next request on (chapter 8: the server loosens them after AUTH).
  void set_limits(ProtocolLimits limits) { limits_ = limits; }

 private:
  // At the start of a request: an array header, or an inline line.
  Result parse_start(std::string_view in, std::vector<std::string>* args) {
    if (in.empty()) return Result::kNeedMore;
    args->clear();
    if (in[0] != '*') return parse_inline(in, args);
    std::int64_t count = 0;
    Result r = parse_header(in, '*', "too big mbulk count string", &count);
    if (r != Result::kCommand) return r;
    if (count > static_cast<std::int64_t>(limits_.max_args)) {
      return fail("invalid multibulk length");
    }
    if (count <= 0) return Result::kCommand;  // "*0" and "*-1" carry no command
    expected_args_ = count;
    args_.clear();
    return parse_array(in, args);
  }

  // Reads "<prefix><integer>\r\n" at pos_ and moves past it. The length check looks only
  // at the header's own bytes, so that a stream gives the same answer however it is cut.
  Result parse_header(std::string_view in, char prefix, const char* too_big, std::int64_t* value) {
    const std::size_t cr = in.find('\r', pos_);
    const std::size_t end = cr == std::string_view::npos ? in.size() : cr;
    if (end - pos_ > limits_.max_inline_bytes) return fail(too_big);
    if (cr == std::string_view::npos || cr + 1 >= in.size()) return Result::kNeedMore;
    if (in[cr + 1] != '\n' || !detail::parse_int64(in.substr(pos_ + 1, cr - pos_ - 1), value)) {
      return fail(prefix == '*' ? "invalid multibulk length" : "invalid bulk length");
    }
    pos_ = cr + 2;
    return Result::kCommand;
  }

  Result parse_array(std::string_view in, std::vector<std::string>* args) {
    while (static_cast<std::int64_t>(args_.size()) < expected_args_) {
      if (pos_ >= in.size()) return Result::kNeedMore;
      if (in[pos_] != '$') {
        return fail(std::string("expected '$', got '") + in[pos_] + "'");
      }
      const std::size_t header = pos_;
      std::int64_t length = 0;
      Result r = parse_header(in, '$', "too big bulk count string", &length);
      if (r != Result::kCommand) return r;
      if (length < 0 || static_cast<std::uint64_t>(length) > limits_.max_bulk_bytes) {
        return fail("invalid bulk length");
      }
      const auto bytes = static_cast<std::size_t>(length);
      if (in.size() - pos_ < bytes + 2) {  // the data and its CRLF are not all here yet
        pos_ = header;
        return Result::kNeedMore;
      }
      if (in[pos_ + bytes] != '\r' || in[pos_ + bytes + 1] != '\n') {
        return fail("bulk data longer than its length");
      }
      args_.emplace_back(in.substr(pos_, bytes));
      pos_ += bytes + 2;
    }
    *args = std::move(args_);
    args_.clear();
    expected_args_ = -1;
    return Result::kCommand;
  }

  // A line of words split as Redis splits them: spaces separate; "double quotes" allow
  // \n \r \t \b \a \\ \" and \xHH escapes; 'single quotes' allow \' only; a closing quote
  // must be followed by a space or the end of the line.
  Result parse_inline(std::string_view in, std::vector<std::string>* args) {
    const std::size_t newline = in.find('\n');
    if (newline == std::string_view::npos) {
      if (in.size() > limits_.max_inline_bytes) return fail("too big inline request");
      return Result::kNeedMore;
    }
    if (newline > limits_.max_inline_bytes) return fail("too big inline request");
    std::string_view line = in.substr(0, newline);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!split_words(line, args)) return fail("unbalanced quotes in request");
    if (args->size() > limits_.max_args) return fail("too many arguments in inline request");
    pos_ = newline + 1;
    return Result::kCommand;
  }

  static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  static bool split_words(std::string_view line, std::vector<std::string>* words) {
    std::size_t i = 0;
    while (true) {
      while (i < line.size() && is_space(line[i])) ++i;
      if (i == line.size()) return true;
      std::string word;
      char quote = 0;  // the quote we are inside, if any
      while (true) {
        if (i == line.size()) {
          if (quote != 0) return false;  // the line ended inside quotes
          break;
        }
        const char c = line[i];
        if (quote == 0) {
          if (is_space(c)) break;
          if (c == '"' || c == '\'') quote = c;
          else word += c;
        } else if (c == quote) {
          if (i + 1 < line.size() && !is_space(line[i + 1])) return false;  // "a"b
          quote = 0;
          ++i;
          break;
        } else if (c == '\\' && quote == '"' && i + 3 < line.size() && line[i + 1] == 'x' &&
                   hex_digit(line[i + 2]) >= 0 && hex_digit(line[i + 3]) >= 0) {
          word += static_cast<char>(hex_digit(line[i + 2]) * 16 + hex_digit(line[i + 3]));
          i += 3;
        } else if (c == '\\' && i + 1 < line.size() && (quote == '"' || line[i + 1] == '\'')) {
          const char e = line[++i];
          word += quote == '\'' ? e
                  : e == 'n'    ? '\n'
                  : e == 'r'    ? '\r'
                  : e == 't'    ? '\t'
                  : e == 'b'    ? '\b'
                  : e == 'a'    ? '\a'
                                : e;
        } else {
          word += c;
        }
        ++i;
      }
      words->push_back(std::move(word));
    }
  }

  Result fail(const std::string& what) {
    error_ = "Protocol error: " + what;
    return Result::kError;
  }

  ProtocolLimits limits_;
  std::size_t pos_ = 0;             // how far into the current request parsing has got
  std::int64_t expected_args_ = -1;  // inside an array: its length; otherwise -1
  std::vector<std::string> args_;   // the arguments of the array read so far
  std::string error_;
};

// RESP2 replies, appended to a string that the connection sends as it is. A simple string
// or an error must not contain CR or LF; these turn any into spaces.
namespace resp {

inline void line(std::string* out, char type, std::string_view text) {
  out->push_back(type);
  for (char c : text) out->push_back(c == '\r' || c == '\n' ? ' ' : c);
  out->append("\r\n");
}
inline void simple(std::string* out, std::string_view text) { line(out, '+', text); }
// `message` starts with its code: "ERR wrong number of arguments for 'get' command".
inline void error(std::string* out, std::string_view message) { line(out, '-', message); }
inline void integer(std::string* out, std::int64_t value) { line(out, ':', std::to_string(value)); }
inline void bulk(std::string* out, std::string_view data) {
  line(out, '$', std::to_string(data.size()));
  out->append(data);
  out->append("\r\n");
}
inline void null_bulk(std::string* out) { out->append("$-1\r\n"); }
inline void array(std::string* out, std::size_t count) { line(out, '*', std::to_string(count)); }
// What array(count) and bulk() of `n` bytes append: for a reply that must know its size
// before it is built.
inline std::size_t array_bytes(std::size_t count) { return 1 + std::to_string(count).size() + 2; }
inline std::size_t bulk_bytes(std::size_t n) { return array_bytes(n) + n + 2; }
inline void null_array(std::string* out) { out->append("*-1\r\n"); }

}  // namespace resp

// =======================================================================================
// Chapter 7: the dispatcher
//
// The parser gives a request as a list of words; the dispatcher runs it against the
// store and writes its reply with resp::. Every fact about a command (its name, arity,
// flags, where its keys are) is a row of one table, as in Redis's command table: the
// dispatcher checks arity and AUTH from the row before it calls the command's function,
// and COMMAND reports the rows. A Session holds what outlives one request (AUTH, the
// client's name, QUIT). Still no socket: chapter 8 moves these bytes over TCP.
// =======================================================================================

namespace detail {

inline long process_id() { return static_cast<long>(::getpid()); }

// Whether a secret a client sent equals the configured one, in time that depends only
// on their lengths, never on where they first differ: a comparison that stops at the
// first wrong byte would tell a patient attacker, by its timing, how much of a guess was
// right.
inline bool same_secret(std::string_view given, std::string_view secret) {
  if (secret.empty()) return false;
  unsigned char difference = given.size() == secret.size() ? 0 : 1;
  for (std::size_t i = 0; i < given.size(); ++i) {
    difference |= static_cast<unsigned char>(given[i] ^ secret[i % secret.size()]);
  }
  return difference == 0;
}

inline std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace detail

// The state of one client's conversation that outlives a single command.
struct Session {
  bool authenticated = false;  // AUTH succeeded (or no password is set)
  std::string name;            // CLIENT SETNAME
  bool close = false;          // close the connection once the replies are sent (QUIT)
  bool shutdown = false;       // SHUTDOWN was asked for: the server decides what follows
  // MULTI ... EXEC (chapter 11): the commands queued, and whether one was refused while
  // queuing (EXEC then aborts); the keys WATCHed (null until the first WATCH).
  bool multi = false;
  bool multi_failed = false;
  std::vector<std::vector<std::string>> queued;
  std::unique_ptr<Store::Watch> watch;
  // The connection thread's Deferred (chapter 16): a run of write commands holds the
  // writer lock once. Null outside a server.
  Store::Deferred* deferred = nullptr;
};

// Figures the server keeps current for INFO (chapter 8 fills the client counts).
struct ServerCounters {
  std::atomic<std::uint64_t> connected_clients{0};
  std::atomic<std::uint64_t> total_connections{0};
  std::atomic<std::uint64_t> total_commands{0};
  std::atomic<std::uint64_t> rejected_connections{0};
  std::atomic<std::uint64_t> total_net_input_bytes{0};
  std::atomic<std::uint64_t> total_net_output_bytes{0};
  std::atomic<std::uint64_t> clients_output_bytes{0};     // every client's unsent replies, now
  std::atomic<std::uint64_t> client_max_output_bytes{0};  // the most one client has held
  std::atomic<std::uint64_t> evicted_clients{0};          // closed for max_clients_output_bytes
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// How the server is set up: CONFIG GET and INFO report it; the server program fills it in.
struct ServerConfig {
  std::string bind = "127.0.0.1";
  int port = 6380;
  std::size_t max_clients = 10000;
  int timeout_seconds = 0;          // close idle clients after this long; 0 = never
  std::string requirepass;          // AUTH needed when not empty

  // For the server only (chapter 8); see the macros of the same names.
  ProtocolLimits limits;
  std::size_t max_output_bytes = KEYSTONELIGHT_MAX_OUTPUT_BYTES;
  std::size_t max_clients_output_bytes = KEYSTONELIGHT_MAX_CLIENTS_OUTPUT_BYTES;
  int send_timeout_seconds = KEYSTONELIGHT_SEND_TIMEOUT_SECONDS;  // 0 = wait for ever
  // Receives the server's notes (a client closed for not reading, max clients lowered).
  // Empty means standard error. Called from the server's threads: it must be thread-safe.
  std::function<void(const std::string& message)> info_log;

  // How the server serves its connections (chapter 14): a few event loops, each serving
  // many connections (the default), or chapter 8's thread per connection.
  enum class Io { kEvents, kThreads };
  Io io = Io::kEvents;
  std::size_t loops = 0;  // event loops; 0: one per core (std::thread::hardware_concurrency)
};

// Executes parsed requests against a Store and writes RESP replies. It knows nothing of
// sockets. Thread-safe: one Dispatcher serves every connection, each with its Session.
// The store must outlive the dispatcher.
class Dispatcher {
 public:
  explicit Dispatcher(Store* store, ServerConfig config = ServerConfig())
      : store_(store), config_(std::move(config)) {}

  // Runs one request (args[0] is the command, in any case) and appends its reply to *out.
  // Unknown commands and wrong arguments get an error reply; nothing here closes the
  // connection except QUIT, through session->close.
  void execute(const std::vector<std::string>& args, Session* session, std::string* out);

  ServerCounters& counters() { return counters_; }
  const ServerConfig& config() const { return config_; }

  // Tells commands that walk many keys (KEYS, MGET, EXISTS) to give up between two keys
  // with an error reply, now and from now on: the server calls it when it stops, so that
  // no long command holds up its exit. Safe from any thread.
  void interrupt() { stopping_ = true; }

 private:
  using Args = std::vector<std::string>;
  using Handler = void (Dispatcher::*)(const Args&, Session*, std::string*);
  // Every fact about a command lives in its row of the table (as in Redis's command
  // table); execute(), AUTH gating and COMMAND read them from there.
  enum Flag : unsigned {
    kWrite = 1,     // changes the store
    kReadOnly = 2,  // reads keys, changes nothing
    kAdmin = 4,     // about the server, not the data
    kNoAuth = 8,    // allowed before AUTH
    kNotQueued = 16,  // runs at once inside MULTI (EXEC, DISCARD, WATCH, MULTI, QUIT)
    kNoMulti = 32,    // refused inside MULTI
  };
  struct Command {
    const char* name;
    int arity;       // as in Redis: N means exactly N words, -N at least N (the name included)
    unsigned flags;  // Flag bits
    int first_key;   // the first argument that is a key (0: none), as COMMAND reports it
    int last_key;    // the last one; -1: the last argument
    int key_step;    // from one key to the next: 2 for MSET's key value pairs
    Handler handler;
  };
  static const std::vector<Command>& commands();
  static const Command* find(const std::string& lowercase_name);
  // The command `args` names, once it is known to exist, to have the words it needs and
  // to be allowed for this session; otherwise null, with the error reply written.
  const Command* check(const Args& args, const Session* session, std::string* out) const;
  void run(const Command& command, const Args& args, Session* session, std::string* out);

  static void reply_status(std::string* out, const Status& s) {
    if (s.ok()) resp::simple(out, "OK");
    else resp::error(out, "ERR " + s.message());
  }
  static bool integer_arg(const std::string& text, std::int64_t* value, std::string* out) {
    if (detail::parse_int64(text, value)) return true;
    resp::error(out, "ERR value is not an integer or out of range");
    return false;
  }

  // Every reply built from many keys or values (MGET, KEYS, and those to come) is bounded
  // while it is built, so that no request makes the server hold more than the client may
  // be sent (chapter 8's max_output_bytes), nor a copy of it first: the store's walk takes
  // bound(), which also carries the stop flag, and reply_all() writes the array, or an
  // error when the walk was cut short or the reply with its framing would pass the bound.
  Store::ReadBound bound() const {
    Store::ReadBound b;
    b.stop = &stopping_;
    b.max_bytes = config_.max_output_bytes;
    return b;
  }
  template <typename Values>
  void reply_all(const char* command, const Values& values, bool complete,
                 const Store::ReadBound& bound, std::string* out) const;
  static const std::string* value_of(const std::string& v) { return &v; }
  static const std::string* value_of(const std::optional<std::string>& v) { return v ? &*v : nullptr; }
  // After interrupt(): true, with the error reply written.
  bool stopped(const char* command, std::string* out) const {
    if (!stopping_.load(std::memory_order_relaxed)) return false;
    resp::error(out, std::string("ERR '") + command + "' was stopped: the server is shutting "
                     "down; send it again once the server is back");
    return true;
  }

  void ping(const Args& a, Session*, std::string* out) {
    if (a.size() > 2) return resp::error(out, "ERR wrong number of arguments for 'ping' command");
    if (a.size() == 1) resp::simple(out, "PONG");
    else resp::bulk(out, a[1]);
  }
  void echo(const Args& a, Session*, std::string* out) { resp::bulk(out, a[1]); }
  void get(const Args& a, Session*, std::string* out) {
    std::optional<std::string> value = store_->get(a[1]);
    if (value) resp::bulk(out, *value);
    else resp::null_bulk(out);
  }
  void set(const Args& a, Session*, std::string* out);
  void del(const Args& a, Session*, std::string* out) {
    std::size_t removed = 0;
    Status s = store_->del_all(std::vector<std::string_view>(a.begin() + 1, a.end()), &removed);
    if (!s.ok()) return reply_status(out, s);
    resp::integer(out, static_cast<std::int64_t>(removed));
  }
  void exists(const Args& a, Session*, std::string* out) {
    std::int64_t found = 0;
    for (std::size_t i = 1; i < a.size(); ++i) {
      if (stopped("exists", out)) return;
      found += store_->exists(a[i]) ? 1 : 0;
    }
    resp::integer(out, found);
  }
  void mget(const Args& a, Session*, std::string* out) {
    Store::ReadBound b = bound();
    // A reply of one value is GET's: the value limit bounds it, not the client's.
    if (a.size() == 2) b.max_bytes = std::numeric_limits<std::size_t>::max();
    bool complete = false;
    const std::vector<std::optional<std::string>> values =
        store_->get_all(std::vector<std::string_view>(a.begin() + 1, a.end()), b, &complete);
    reply_all("mget", values, complete, b, out);
  }
  void mset(const Args& a, Session*, std::string* out) {
    if (a.size() % 2 == 0) {
      return resp::error(out, "ERR wrong number of arguments for 'mset' command");
    }
    std::vector<std::pair<std::string_view, std::string_view>> pairs;
    for (std::size_t i = 1; i + 1 < a.size(); i += 2) pairs.emplace_back(a[i], a[i + 1]);
    reply_status(out, store_->set_all(pairs));
  }
  void add(const std::string& key, std::int64_t delta, std::string* out) {
    std::int64_t result = 0;
    Status s = store_->increment(key, delta, &result);
    if (s.ok()) resp::integer(out, result);
    else reply_status(out, s);
  }
  void incr(const Args& a, Session*, std::string* out) { add(a[1], 1, out); }
  void decr(const Args& a, Session*, std::string* out) { add(a[1], -1, out); }
  void incrby(const Args& a, Session*, std::string* out) {
    std::int64_t delta = 0;
    if (integer_arg(a[2], &delta, out)) add(a[1], delta, out);
  }
  void decrby(const Args& a, Session*, std::string* out) {
    std::int64_t delta = 0;
    if (!integer_arg(a[2], &delta, out)) return;
    if (delta == std::numeric_limits<std::int64_t>::min()) {
      return resp::error(out, "ERR decrement would overflow");
    }
    add(a[1], -delta, out);
  }
  void append(const Args& a, Session*, std::string* out) {
    std::size_t length = 0;
    Status s = store_->append(a[1], a[2], &length);
    if (s.ok()) resp::integer(out, static_cast<std::int64_t>(length));
    else reply_status(out, s);
  }
  void strlen(const Args& a, Session*, std::string* out) {
    std::optional<std::string> value = store_->get(a[1]);
    resp::integer(out, value ? static_cast<std::int64_t>(value->size()) : 0);
  }
  void dbsize(const Args&, Session*, std::string* out) {
    resp::integer(out, static_cast<std::int64_t>(store_->size()));
  }
  void keys(const Args& a, Session*, std::string* out) {
    const Store::ReadBound b = bound();
    bool complete = false;
    const std::vector<std::string> matching = store_->keys(a[1], b, &complete);
    reply_all("keys", matching, complete, b, out);
  }
  void flushdb(const Args& a, Session*, std::string* out) {
    if (a.size() > 2 || (a.size() == 2 && detail::lower(a[1]) != "sync" &&
                         detail::lower(a[1]) != "async")) {
      return resp::error(out, "ERR syntax error");
    }
    reply_status(out, store_->clear());
  }
  void compact(const Args& a, Session*, std::string* out) {
    Status s = store_->compact();
    if (!s.ok()) return reply_status(out, s);
    // BGREWRITEAOF's clients expect Redis's words; the rewrite is done by now, though.
    resp::simple(out, detail::lower(a[0]) == "bgrewriteaof"
                          ? "Background append only file rewriting started"
                          : "OK");
  }
  void info(const Args& a, Session*, std::string* out);
  void config(const Args& a, Session*, std::string* out);
  void command(const Args& a, Session*, std::string* out);
  void client(const Args& a, Session* session, std::string* out);
  void select(const Args& a, Session*, std::string* out) {
    std::int64_t index = 0;
    if (!integer_arg(a[1], &index, out)) return;
    if (index == 0) resp::simple(out, "OK");
    else resp::error(out, "ERR DB index is out of range");
  }
  void quit(const Args&, Session* session, std::string* out) {
    session->close = true;
    resp::simple(out, "OK");
  }
  // SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]. NOSAVE, SAVE, NOW and FORCE change
  // nothing here: every write is in the log already, and there is no snapshot to save or
  // replica to wait for. ABORT cancels a shutdown in progress, and no command runs once
  // one has begun, so it always has nothing to cancel.
  void shutdown(const Args& a, Session* session, std::string* out) {
    bool save = false, nosave = false, abort = false;
    for (std::size_t i = 1; i < a.size(); ++i) {
      const std::string option = detail::lower(a[i]);
      if (option == "save") save = true;
      else if (option == "nosave") nosave = true;
      else if (option == "abort") abort = true;
      else if (option != "now" && option != "force") return resp::error(out, "ERR syntax error");
    }
    if ((save && nosave) || (abort && a.size() > 2)) return resp::error(out, "ERR syntax error");
    if (abort) return resp::error(out, "ERR No shutdown in progress.");
    session->shutdown = true;  // as Redis: no reply; the server stops and the link closes
    session->close = true;
  }
  void auth(const Args& a, Session* session, std::string* out);

  // Expiry (chapter 10). The options SET and GETEX share, as Redis parses them: any order,
  // repeats allowed (the last value counts), and no two that contradict each other.
  struct StringOptions {
    Store::SetIf condition = Store::SetIf::kAlways;  // NX, XX
    bool get = false;                                // SET's GET
    std::string expiry_option;  // "ex", "px", "exat", "pxat", "keepttl" or "persist"; or none
    bool keep_ttl = false;      // SET's KEEPTTL
    bool persist = false;       // GETEX's PERSIST
    std::int64_t unit_ms = 0;   // 1000 (EX, EXAT) or 1 (PX, PXAT); 0: no expiry given
    bool absolute = false;      // EXAT, PXAT: a time, not a time to live
    const std::string* expire = nullptr;  // the argument after EX, PX, EXAT or PXAT
  };
  static bool string_options(const Args& a, std::size_t first, bool for_set, StringOptions* o,
                             std::string* out);
  // The expiry time `o` asks for, in ms since the epoch, checked as Redis checks it.
  bool expiry_time(const Args& a, const StringOptions& o, std::int64_t* when_ms,
                   std::string* out) const;
  void set_with(const Args& a, const std::string& value, const StringOptions& o, std::string* out);
  void expire_generic(const Args& a, std::int64_t unit_ms, bool absolute, std::string* out);
  void ttl_generic(const Args& a, bool in_ms, bool absolute, std::string* out);

  void expire(const Args& a, Session*, std::string* out) { expire_generic(a, 1000, false, out); }
  void pexpire(const Args& a, Session*, std::string* out) { expire_generic(a, 1, false, out); }
  void expireat(const Args& a, Session*, std::string* out) { expire_generic(a, 1000, true, out); }
  void pexpireat(const Args& a, Session*, std::string* out) { expire_generic(a, 1, true, out); }
  void ttl(const Args& a, Session*, std::string* out) { ttl_generic(a, false, false, out); }
  void pttl(const Args& a, Session*, std::string* out) { ttl_generic(a, true, false, out); }
  void expiretime(const Args& a, Session*, std::string* out) { ttl_generic(a, false, true, out); }
  void pexpiretime(const Args& a, Session*, std::string* out) { ttl_generic(a, true, true, out); }
  void persist(const Args& a, Session*, std::string* out) {
    bool changed = false;
    Status s = store_->persist(a[1], &changed);
    if (s.ok()) resp::integer(out, changed ? 1 : 0);
    else reply_status(out, s);
  }
  // SETEX key seconds value, PSETEX key milliseconds value: SET key value EX|PX ttl.
  void setex(const Args& a, Session*, std::string* out) {
    StringOptions o;
    o.unit_ms = detail::lower(a[0]) == "psetex" ? 1 : 1000;
    o.expire = &a[2];
    set_with(a, a[3], o, out);
  }
  void getex(const Args& a, Session*, std::string* out);

  // Transactions (chapter 11): MULTI queues what follows, EXEC runs it in one
  // Store::transaction, unless a WATCHed key changed since WATCH.
  void multi(const Args&, Session* session, std::string* out) {
    if (session->multi) return resp::error(out, "ERR MULTI calls can not be nested");
    session->multi = true;
    resp::simple(out, "OK");
  }
  void exec(const Args&, Session* session, std::string* out);
  void discard(const Args&, Session* session, std::string* out) {
    if (!session->multi) return resp::error(out, "ERR DISCARD without MULTI");
    end_multi(session);
    resp::simple(out, "OK");
  }
  void watch(const Args& a, Session* session, std::string* out) {
    if (session->multi) return resp::error(out, "ERR WATCH inside MULTI is not allowed");
    if (!session->watch) session->watch.reset(new Store::Watch(store_));
    for (std::size_t i = 1; i < a.size(); ++i) session->watch->add(a[i]);
    resp::simple(out, "OK");
  }
  void unwatch(const Args&, Session* session, std::string* out) {
    if (session->watch) session->watch->clear();
    resp::simple(out, "OK");
  }
  // Leaves MULTI (EXEC and DISCARD both): the queue and every WATCH are dropped.
  static void end_multi(Session* session) {
    session->multi = false;
    session->multi_failed = false;
    session->queued.clear();
    if (session->watch) session->watch->clear();
  }

  // The keyspace (chapter 12).
  void scan(const Args& a, Session*, std::string* out);
  void randomkey(const Args&, Session*, std::string* out) {
    std::optional<std::string> key = store_->random_key();
    if (key) resp::bulk(out, *key);
    else resp::null_bulk(out);
  }
  void type(const Args& a, Session*, std::string* out) {
    resp::simple(out, store_->exists(a[1]) ? "string" : "none");  // every value is a string
  }
  void rename(const Args& a, Session*, std::string* out) {
    const bool nx = detail::lower(a[0]) == "renamenx";
    bool found = false, moved = false;
    Status s = store_->rename(a[1], a[2], nx, &found, &moved);
    if (!s.ok()) return reply_status(out, s);
    if (!found) return resp::error(out, "ERR no such key");
    if (nx) resp::integer(out, moved ? 1 : 0);
    else resp::simple(out, "OK");
  }
  void copy(const Args& a, Session*, std::string* out);

  // Strings as Redis sees them (chapter 13): the rest of Redis's string group, and the
  // bitmap commands. A write that changes a value in place runs through modify(): read,
  // change and write in one Store::transaction, keeping the key's expiry; `change` gets
  // the value (nullopt: no key), may rewrite it, writes its reply to *reply, and returns
  // whether there is anything to store. The reply goes out once the write is logged.
  template <typename Change>
  void modify(const std::string& key, std::string* out, const Change& change);
  void incrbyfloat(const Args& a, Session*, std::string* out);
  void getrange(const Args& a, Session*, std::string* out);  // and SUBSTR
  void setrange(const Args& a, Session*, std::string* out);
  void getset(const Args& a, Session*, std::string* out) {  // SET key value GET
    StringOptions o;
    o.get = true;
    set_with(a, a[2], o, out);
  }
  void getdel(const Args& a, Session*, std::string* out);
  void msetnx(const Args& a, Session*, std::string* out);  // and SETNX, its one-key form
  void lcs(const Args& a, Session*, std::string* out);
  void setbit(const Args& a, Session*, std::string* out);
  void getbit(const Args& a, Session*, std::string* out);
  void bitcount(const Args& a, Session*, std::string* out);
  void bitpos(const Args& a, Session*, std::string* out);
  void bitop(const Args& a, Session*, std::string* out);
  // SETBIT's and GETBIT's offset, within kMaxValueBytes; false with the error written.
  static bool bit_offset(const std::string& text, std::uint64_t* offset, std::string* out);
  // BITCOUNT's and BITPOS's range: `a` from word `i` on holds start, end (if `i + 1` is
  // there) and BYTE or BIT (if `i + 2` is); as bits [*first, *last], empty if first > last.
  static bool bit_range(const Args& a, std::size_t i, std::size_t size, std::int64_t* first,
                        std::int64_t* last, std::string* out);

  Store* store_;
  const ServerConfig config_;
  ServerCounters counters_;
  std::atomic<bool> stopping_{false};  // interrupt() was called
};

template <typename Values>
inline void Dispatcher::reply_all(const char* command, const Values& values, bool complete,
                                  const Store::ReadBound& bound, std::string* out) const {
  if (!complete && stopped(command, out)) return;
  std::size_t bytes = resp::array_bytes(values.size());
  for (const auto& v : values) {
    const std::string* value = value_of(v);
    bytes += value ? resp::bulk_bytes(value->size()) : 5;  // "$-1\r\n"
  }
  if (!complete || bytes > bound.max_bytes) {
    return resp::error(out, std::string("ERR the reply to '") + command + "' would exceed the "
                            "client output limit of " + std::to_string(bound.max_bytes) +
                            " bytes (max_output_bytes): ask for fewer keys at a time");
  }
  out->reserve(out->size() + bytes);
  resp::array(out, values.size());
  for (const auto& v : values) {
    if (const std::string* value = value_of(v)) resp::bulk(out, *value);
    else resp::null_bulk(out);
  }
}

inline const std::vector<Dispatcher::Command>& Dispatcher::commands() {
  // name           arity  flags                first last step
  static const std::vector<Command> table = {
      {"ping",           -1, 0,                   0, 0, 0, &Dispatcher::ping},
      {"echo",            2, 0,                   0, 0, 0, &Dispatcher::echo},
      {"get",             2, kReadOnly,           1, 1, 1, &Dispatcher::get},
      {"set",            -3, kWrite,              1, 1, 1, &Dispatcher::set},
      {"del",            -2, kWrite,              1, -1, 1, &Dispatcher::del},
      {"exists",         -2, kReadOnly,           1, -1, 1, &Dispatcher::exists},
      {"mget",           -2, kReadOnly,           1, -1, 1, &Dispatcher::mget},
      {"mset",           -3, kWrite,              1, -1, 2, &Dispatcher::mset},
      {"incr",            2, kWrite,              1, 1, 1, &Dispatcher::incr},
      {"decr",            2, kWrite,              1, 1, 1, &Dispatcher::decr},
      {"incrby",          3, kWrite,              1, 1, 1, &Dispatcher::incrby},
      {"decrby",          3, kWrite,              1, 1, 1, &Dispatcher::decrby},
      {"append",          3, kWrite,              1, 1, 1, &Dispatcher::append},
      {"strlen",          2, kReadOnly,           1, 1, 1, &Dispatcher::strlen},
      {"dbsize",          1, kReadOnly,           0, 0, 0, &Dispatcher::dbsize},
      {"keys",            2, kReadOnly,           0, 0, 0, &Dispatcher::keys},
      {"flushdb",        -1, kWrite,              0, 0, 0, &Dispatcher::flushdb},
      {"flushall",       -1, kWrite,              0, 0, 0, &Dispatcher::flushdb},
      {"compact",         1, kAdmin,              0, 0, 0, &Dispatcher::compact},
      {"bgrewriteaof",    1, kAdmin,              0, 0, 0, &Dispatcher::compact},
      {"info",           -1, 0,                   0, 0, 0, &Dispatcher::info},
      {"config",         -2, kAdmin,              0, 0, 0, &Dispatcher::config},
      {"command",        -1, 0,                   0, 0, 0, &Dispatcher::command},
      {"client",         -2, 0,                   0, 0, 0, &Dispatcher::client},
      {"select",          2, 0,                   0, 0, 0, &Dispatcher::select},
      {"quit",           -1, kNoAuth | kNotQueued, 0, 0, 0, &Dispatcher::quit},
      {"shutdown",       -1, kAdmin | kNoMulti,   0, 0, 0, &Dispatcher::shutdown},
      {"auth",           -2, kNoAuth,             0, 0, 0, &Dispatcher::auth},
      {"expire",         -3, kWrite,              1, 1, 1, &Dispatcher::expire},
      {"pexpire",        -3, kWrite,              1, 1, 1, &Dispatcher::pexpire},
      {"expireat",       -3, kWrite,              1, 1, 1, &Dispatcher::expireat},
      {"pexpireat",      -3, kWrite,              1, 1, 1, &Dispatcher::pexpireat},
      {"ttl",             2, kReadOnly,           1, 1, 1, &Dispatcher::ttl},
      {"pttl",            2, kReadOnly,           1, 1, 1, &Dispatcher::pttl},
      {"expiretime",      2, kReadOnly,           1, 1, 1, &Dispatcher::expiretime},
      {"pexpiretime",     2, kReadOnly,           1, 1, 1, &Dispatcher::pexpiretime},
      {"persist",         2, kWrite,              1, 1, 1, &Dispatcher::persist},
      {"setex",           4, kWrite,              1, 1, 1, &Dispatcher::setex},
      {"psetex",          4, kWrite,              1, 1, 1, &Dispatcher::setex},
      {"getex",          -2, kWrite,              1, 1, 1, &Dispatcher::getex},
      {"multi",           1, kNotQueued,          0, 0, 0, &Dispatcher::multi},
      {"exec",            1, kNotQueued,          0, 0, 0, &Dispatcher::exec},
      {"discard",         1, kNotQueued,          0, 0, 0, &Dispatcher::discard},
      {"watch",          -2, kNotQueued,          1, -1, 1, &Dispatcher::watch},
      {"unwatch",         1, 0,                   0, 0, 0, &Dispatcher::unwatch},
      {"scan",           -2, kReadOnly,           0, 0, 0, &Dispatcher::scan},
      {"randomkey",       1, kReadOnly,           0, 0, 0, &Dispatcher::randomkey},
      {"type",            2, kReadOnly,           1, 1, 1, &Dispatcher::type},
      {"touch",          -2, kReadOnly,           1, -1, 1, &Dispatcher::exists},
      {"unlink",         -2, kWrite,              1, -1, 1, &Dispatcher::del},
      {"rename",          3, kWrite,              1, 2, 1, &Dispatcher::rename},
      {"renamenx",        3, kWrite,              1, 2, 1, &Dispatcher::rename},
      {"copy",           -3, kWrite,              1, 2, 1, &Dispatcher::copy},
      {"incrbyfloat",     3, kWrite,              1, 1, 1, &Dispatcher::incrbyfloat},
      {"getrange",        4, kReadOnly,           1, 1, 1, &Dispatcher::getrange},
      {"substr",          4, kReadOnly,           1, 1, 1, &Dispatcher::getrange},
      {"setrange",        4, kWrite,              1, 1, 1, &Dispatcher::setrange},
      {"getset",          3, kWrite,              1, 1, 1, &Dispatcher::getset},
      {"getdel",          2, kWrite,              1, 1, 1, &Dispatcher::getdel},
      {"setnx",           3, kWrite,              1, 1, 1, &Dispatcher::msetnx},
      {"msetnx",         -3, kWrite,              1, -1, 2, &Dispatcher::msetnx},
      {"lcs",            -3, kReadOnly,           1, 2, 1, &Dispatcher::lcs},
      {"setbit",          4, kWrite,              1, 1, 1, &Dispatcher::setbit},
      {"getbit",          3, kReadOnly,           1, 1, 1, &Dispatcher::getbit},
      {"bitcount",       -2, kReadOnly,           1, 1, 1, &Dispatcher::bitcount},
      {"bitpos",         -3, kReadOnly,           1, 1, 1, &Dispatcher::bitpos},
      {"bitop",          -4, kWrite,              2, -1, 1, &Dispatcher::bitop},
  };
  return table;
}

inline const Dispatcher::Command* Dispatcher::find(const std::string& lowercase_name) {
  static const std::unordered_map<std::string, const Command*> by_name = [] {
    std::unordered_map<std::string, const Command*> map;
    for (const Command& c : commands()) map.emplace(c.name, &c);
    return map;
  }();
  auto it = by_name.find(lowercase_name);
  return it == by_name.end() ? nullptr : it->second;
}

inline void Dispatcher::execute(const Args& args, Session* session, std::string* out) {
  const Command* command = check(args, session, out);
  if (command == nullptr && session->multi) session->multi_failed = true;  // EXEC aborts
  if (command != nullptr && session->multi && !(command->flags & kNotQueued)) {
    if (command->flags & kNoMulti) {
      session->multi_failed = true;
      return resp::error(out, "ERR Command not allowed inside a transaction");
    }
    session->queued.push_back(args);
    return resp::simple(out, "QUEUED");
  }
  if (command != nullptr) run(*command, args, session, out);
}

inline void Dispatcher::run(const Command& command, const Args& args, Session* session,
                            std::string* out) {
  ++counters_.total_commands;  // as Redis counts: commands run, not commands refused
  if (session->deferred != nullptr) session->deferred->hold((command.flags & kWrite) != 0);
  (this->*(command.handler))(args, session, out);
}

inline const Dispatcher::Command* Dispatcher::check(const Args& args, const Session* session,
                                                    std::string* out) const {
  if (args.empty()) {  // the parser never makes one
    resp::error(out, "ERR empty command");
    return nullptr;
  }
  const std::string name = detail::lower(args[0]);
  const Command* command = find(name);
  if (command == nullptr) {
    // Names and arguments are cut, as Redis cuts them: a reply must not echo megabytes.
    std::string message = "ERR unknown command '" + args[0].substr(0, 128) +
                          "', with args beginning with: ";
    for (std::size_t i = 1; i < args.size() && message.size() < 256; ++i) {
      message += "'" + args[i].substr(0, 64) + "' ";
    }
    resp::error(out, message);
    return nullptr;
  }
  const auto words = static_cast<int>(std::min<std::size_t>(args.size(), 1 << 30));
  if ((command->arity > 0 && words != command->arity) ||
      (command->arity < 0 && words < -command->arity)) {
    resp::error(out, std::string("ERR wrong number of arguments for '") + command->name +
                         "' command");
    return nullptr;
  }
  if (!config_.requirepass.empty() && !session->authenticated && !(command->flags & kNoAuth)) {
    resp::error(out, "NOAUTH Authentication required.");
    return nullptr;
  }
  return command;
}

inline void Dispatcher::exec(const Args&, Session* session, std::string* out) {
  if (!session->multi) return resp::error(out, "ERR EXEC without MULTI");
  if (session->multi_failed) {
    end_multi(session);
    return resp::error(out, "EXECABORT Transaction discarded because of previous errors.");
  }
  const std::vector<Args> queued = std::move(session->queued);
  session->multi = false;
  bool aborted = false;
  std::string replies;
  Status s = store_->transaction([&] {
    // Inside the transaction, so nothing can change a watched key between the check and
    // the commands.
    if (session->watch && session->watch->changed()) {
      aborted = true;
      return Status();
    }
    for (const Args& args : queued) run(*find(detail::lower(args[0])), args, session, &replies);
    return Status();
  });
  end_multi(session);
  if (!s.ok()) return reply_status(out, s);  // the batch was not written: nothing happened
  if (aborted) return resp::null_array(out);
  resp::array(out, queued.size());
  out->append(replies);
}

// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. Every value is a string, so
// TYPE string filters nothing and any other type leaves nothing.
inline void Dispatcher::scan(const Args& a, Session*, std::string* out) {
  std::uint64_t cursor = 0;
  if (a[1].empty() || a[1].size() > 20 ||
      a[1].find_first_not_of("0123456789") != std::string::npos ||
      (a[1].size() == 20 && a[1] > "18446744073709551615")) {
    return resp::error(out, "ERR invalid cursor");
  }
  for (char c : a[1]) cursor = cursor * 10 + static_cast<std::uint64_t>(c - '0');
  std::string pattern;
  std::int64_t count = 10;
  bool any_type = true, strings = true;
  for (std::size_t i = 2; i < a.size(); i += 2) {
    const std::string option = detail::lower(a[i]);
    if (i + 1 >= a.size()) return resp::error(out, "ERR syntax error");
    if (option == "match") {
      pattern = a[i + 1] == "*" ? std::string() : a[i + 1];
    } else if (option == "count") {
      if (!integer_arg(a[i + 1], &count, out)) return;
      if (count < 1) return resp::error(out, "ERR syntax error");
    } else if (option == "type") {
      any_type = false;
      strings = detail::lower(a[i + 1]) == "string";
    } else {
      return resp::error(out, "ERR syntax error");
    }
  }
  const Store::ReadBound b = bound();
  bool complete = false;
  std::vector<std::string> keys;
  const std::uint64_t next = store_->scan(cursor, static_cast<std::size_t>(count), pattern, b,
                                          &keys, &complete);
  if (!any_type && !strings) keys.clear();
  if (!complete && stopped("scan", out)) return;
  if (!complete) {
    return resp::error(out, "ERR the reply to 'scan' would exceed the client output limit of " +
                                std::to_string(b.max_bytes) + " bytes (max_output_bytes): ask "
                                "for a smaller COUNT");
  }
  std::string array;
  reply_all("scan", keys, true, b, &array);
  if (array[0] == '-') {  // an error instead: the keys are too many
    out->append(array);
    return;
  }
  resp::array(out, 2);
  resp::bulk(out, std::to_string(next));
  out->append(array);
}

// COPY source destination [DB 0] [REPLACE]: one database here, so DB can only be 0.
inline void Dispatcher::copy(const Args& a, Session*, std::string* out) {
  bool replace = false;
  for (std::size_t i = 3; i < a.size(); ++i) {
    const std::string option = detail::lower(a[i]);
    if (option == "replace") {
      replace = true;
    } else if (option == "db" && i + 1 < a.size()) {
      std::int64_t db = 0;
      if (!integer_arg(a[++i], &db, out)) return;
      if (db != 0) return resp::error(out, "ERR DB index is out of range");
    } else {
      return resp::error(out, "ERR syntax error");
    }
  }
  if (a[1] == a[2]) return resp::error(out, "ERR source and destination objects are the same");
  bool copied = false;
  Status s = store_->copy(a[1], a[2], replace, &copied);
  if (s.ok()) resp::integer(out, copied ? 1 : 0);
  else reply_status(out, s);
}

// ---------------------------------------------------------------------------------------
// Chapter 13: strings as Redis sees them. A Redis string is bytes; some commands read the
// bytes as a number (INCRBYFLOAT), some as a bitmap (SETBIT, BITCOUNT, BITPOS, BITOP),
// some as a string to cut or patch (GETRANGE, SETRANGE, LCS). Every one that reads and
// then writes does both in one Store::transaction. No length or offset a client sends is
// allocated before it is checked against kMaxValueBytes, Redis's proto-max-bulk-len.
// ---------------------------------------------------------------------------------------

namespace detail {

// The longest text Redis reads as a long double (MAX_LONG_DOUBLE_CHARS); it also holds
// every long double printed with %.17Lf (the largest has 4933 digits before the point).
inline constexpr std::size_t kMaxLongDoubleChars = 5 * 1024;

// A number as Redis's string2ld reads one: all of the text, no space before it, not NaN,
// not out of range; "inf" and hexadecimal floats are numbers, as strtold says.
inline bool parse_long_double(std::string_view text, long double* value) {
  if (text.empty() || text.size() >= kMaxLongDoubleChars || text[0] == ' ' ||
      (text[0] >= '\t' && text[0] <= '\r')) {
    return false;
  }
  const std::string copy(text);  // strtold needs a NUL; a NUL inside the text stops it short
  char* end = nullptr;
  errno = 0;
  const long double v = std::strtold(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || std::isnan(v) ||
      (errno == ERANGE && (std::isinf(v) || v == 0))) {
    return false;
  }
  *value = v;
  return true;
}

// Redis's human-friendly form of a long double (ld2string's LD_STR_HUMAN): 17 digits after
// the point, then trailing zeros, and a point left bare, dropped; "-0" is "0". So
// 10.5 + 0.1 is "10.6" (not 10.59999...: the sum is a long double), and 5.0e3 + 200 is
// "5200". The value must be finite.
inline std::string format_long_double(long double v) {
  std::string text(kMaxLongDoubleChars, '\0');
  text.resize(static_cast<std::size_t>(std::snprintf(&text[0], text.size(), "%.17Lf", v)));
  if (text.find('.') != std::string::npos) {
    while (text.back() == '0') text.pop_back();
    if (text.back() == '.') text.pop_back();
  }
  return text == "-0" ? "0" : text;
}

// The bits of byte `byte` that lie in the bit range [first, last] (bit 0 is the most
// significant bit of byte 0, as Redis numbers them).
inline unsigned edge_mask(std::int64_t byte, std::int64_t first, std::int64_t last) {
  unsigned mask = 0xFF;
  if (byte == first >> 3) mask &= 0xFFu >> (first & 7);
  if (byte == last >> 3) mask &= (0xFFu << (7 - (last & 7))) & 0xFF;
  return mask;
}

inline std::int64_t count_bits(std::string_view v, std::int64_t first, std::int64_t last) {
  std::int64_t count = 0;
  for (std::int64_t byte = first >> 3; first <= last && byte <= last >> 3; ++byte) {
    const unsigned bits = static_cast<unsigned char>(v[static_cast<std::size_t>(byte)]);
    count += __builtin_popcount(bits & edge_mask(byte, first, last));
  }
  return count;
}

// The first bit in [first, last] that is `one`; -1 when there is none.
inline std::int64_t find_bit(std::string_view v, bool one, std::int64_t first, std::int64_t last) {
  for (std::int64_t byte = first >> 3; first <= last && byte <= last >> 3; ++byte) {
    unsigned bits = static_cast<unsigned char>(v[static_cast<std::size_t>(byte)]);
    bits = (one ? bits : ~bits) & edge_mask(byte, first, last);
    if (bits != 0) return byte * 8 + (__builtin_clz(bits) - 24);  // clz of a 32-bit unsigned
  }
  return -1;
}

}  // namespace detail

template <typename Change>
inline void Dispatcher::modify(const std::string& key, std::string* out, const Change& change) {
  std::string reply;
  Status s = store_->transaction([&] {
    std::optional<std::string> value = store_->get(key);
    if (!change(&value, &reply)) return Status();
    Store::SetOptions keep;
    keep.keep_ttl = true;  // a change in place keeps the key's expiry, as in Redis
    bool stored = false;
    return store_->set(key, *value, keep, &stored);
  });
  if (s.ok()) out->append(reply);
  else reply_status(out, s);
}

// INCRBYFLOAT key increment: the sum, in long double, as Redis formats it.
inline void Dispatcher::incrbyfloat(const Args& a, Session*, std::string* out) {
  modify(a[1], out, [&](std::optional<std::string>* value, std::string* reply) {
    long double number = 0, increment = 0;
    if ((*value && !detail::parse_long_double(**value, &number)) ||
        !detail::parse_long_double(a[2], &increment)) {
      resp::error(reply, "ERR value is not a valid float");
      return false;
    }
    number += increment;
    if (std::isnan(number) || std::isinf(number)) {
      resp::error(reply, "ERR increment would produce NaN or Infinity");
      return false;
    }
    *value = detail::format_long_double(number);
    resp::bulk(reply, **value);
    return true;
  });
}

// GETRANGE key start end (and SUBSTR): both ends included, negative ones from the end.
inline void Dispatcher::getrange(const Args& a, Session*, std::string* out) {
  std::int64_t start = 0, end = 0;
  if (!integer_arg(a[2], &start, out) || !integer_arg(a[3], &end, out)) return;
  const std::string value = store_->get(a[1]).value_or("");
  const auto size = static_cast<std::int64_t>(value.size());
  if (start < 0 && end < 0 && start > end) return resp::bulk(out, "");
  if (start < 0) start = std::max<std::int64_t>(0, size + start);
  if (end < 0) end = std::max<std::int64_t>(0, size + end);
  end = std::min(end, size - 1);
  if (start > end) return resp::bulk(out, "");
  resp::bulk(out, std::string_view(value).substr(static_cast<std::size_t>(start),
                                                 static_cast<std::size_t>(end - start + 1)));
}

// SETRANGE key offset value: writes value at offset, padding with zero bytes; the length.
inline void Dispatcher::setrange(const Args& a, Session*, std::string* out) {
  std::int64_t offset = 0;
  if (!integer_arg(a[2], &offset, out)) return;
  if (offset < 0) return resp::error(out, "ERR offset is out of range");
  const std::string& patch = a[3];
  const auto at = static_cast<std::size_t>(offset);
  modify(a[1], out, [&](std::optional<std::string>* value, std::string* reply) {
    if (patch.empty()) {  // nothing to write: the length as it is, and no key is made
      resp::integer(reply, *value ? static_cast<std::int64_t>((*value)->size()) : 0);
      return false;
    }
    // Checked before anything grows: 64 bits hold any offset plus any argument.
    if (static_cast<std::uint64_t>(offset) + patch.size() > kMaxValueBytes) {
      resp::error(reply, "ERR string exceeds maximum allowed size (proto-max-bulk-len)");
      return false;
    }
    std::string& v = *value ? **value : value->emplace();
    if (v.size() < at + patch.size()) v.resize(at + patch.size(), '\0');
    v.replace(at, patch.size(), patch);
    resp::integer(reply, static_cast<std::int64_t>(v.size()));
    return true;
  });
}

// GETDEL key: the value, and the key removed in the same transaction.
inline void Dispatcher::getdel(const Args& a, Session*, std::string* out) {
  std::optional<std::string> value;
  Status s = store_->transaction([&] {
    value = store_->get(a[1]);
    return value ? store_->del(a[1]) : Status();
  });
  if (!s.ok()) return reply_status(out, s);
  if (value) resp::bulk(out, *value);
  else resp::null_bulk(out);
}

// MSETNX key value [key value ...], and SETNX key value: all the keys are set, or, if any
// of them exists, none; 1 or 0. One transaction, so one batch record in the log.
inline void Dispatcher::msetnx(const Args& a, Session*, std::string* out) {
  if (a.size() % 2 == 0) return resp::error(out, "ERR wrong number of arguments for 'msetnx' command");
  std::vector<std::pair<std::string_view, std::string_view>> pairs;
  for (std::size_t i = 1; i + 1 < a.size(); i += 2) pairs.emplace_back(a[i], a[i + 1]);
  bool stored = false;
  Status s = store_->transaction([&] {
    for (const auto& pair : pairs) {
      if (store_->exists(pair.first)) return Status();
    }
    stored = true;
    return store_->set_all(pairs);
  });
  if (s.ok()) resp::integer(out, stored ? 1 : 0);
  else reply_status(out, s);
}

// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest common
// subsequence, by Redis's dynamic programming over a table of (|x|+1) x (|y|+1) lengths,
// which Redis refuses to allocate past proto-max-bulk-len bytes; so does this.
inline void Dispatcher::lcs(const Args& a, Session*, std::string* out) {
  bool len = false, idx = false, with_len = false;
  std::int64_t min_len = 0;
  for (std::size_t i = 3; i < a.size(); ++i) {
    const std::string option = detail::lower(a[i]);
    if (option == "len") {
      len = true;
    } else if (option == "idx") {
      idx = true;
    } else if (option == "withmatchlen") {
      with_len = true;
    } else if (option == "minmatchlen" && i + 1 < a.size()) {
      if (!integer_arg(a[++i], &min_len, out)) return;
    } else {
      return resp::error(out, "ERR syntax error");
    }
  }
  if (len && idx) {
    return resp::error(out, "ERR If you want both the length and indexes, please just use IDX.");
  }
  const std::vector<std::optional<std::string>> values = store_->get_all({a[1], a[2]});
  const std::string none;
  const std::string& x = values[0] ? *values[0] : none;
  const std::string& y = values[1] ? *values[1] : none;
  // table[i * w + j]: the length of the LCS of x's first i bytes and y's first j.
  const std::size_t w = y.size() + 1;
  if (x.size() + 1 > kMaxValueBytes / sizeof(std::uint32_t) / w) {
    return resp::error(out, "ERR Insufficient memory, transient memory for LCS exceeds "
                            "proto-max-bulk-len");
  }
  std::vector<std::uint32_t> table;
  try {
    table.resize((x.size() + 1) * w);
  } catch (const std::bad_alloc&) {
    return resp::error(out, "ERR Insufficient memory, failed allocating transient memory for LCS");
  }
  for (std::size_t i = 1; i <= x.size(); ++i) {
    for (std::size_t j = 1; j <= y.size(); ++j) {
      table[i * w + j] = x[i - 1] == y[j - 1]
                             ? table[(i - 1) * w + j - 1] + 1
                             : std::max(table[(i - 1) * w + j], table[i * w + j - 1]);
    }
  }
  const std::uint32_t length = table.back();
  if (len) return resp::integer(out, length);
  // Back from the end, as Redis walks: the common bytes, and the ranges that match (the
  // last first), [a_start, a_end] in x beside [b_start, b_end] in y.
  auto n = [](std::size_t v) { return static_cast<std::int64_t>(v); };
  std::string common(length, '\0'), matches;
  std::size_t count = 0, i = x.size(), j = y.size(), k = length;
  std::size_t a_start = 0, a_end = 0, b_start = 0, b_end = 0;
  bool in_range = false;
  while (i > 0 && j > 0) {
    bool emit = in_range;  // a step that does not match ends the range
    if (x[i - 1] == y[j - 1]) {
      common[--k] = x[i - 1];
      if (!in_range) {
        a_end = i - 1;
        b_end = j - 1;
        in_range = true;
      }
      a_start = --i;
      b_start = --j;
      emit = i == 0 || j == 0;
    } else if (table[(i - 1) * w + j] > table[i * w + j - 1]) {
      --i;
    } else {
      --j;
    }
    if (!emit) continue;
    in_range = false;
    if (n(a_end - a_start + 1) < min_len) continue;
    ++count;
    resp::array(&matches, with_len ? 3 : 2);
    resp::array(&matches, 2);
    resp::integer(&matches, n(a_start));
    resp::integer(&matches, n(a_end));
    resp::array(&matches, 2);
    resp::integer(&matches, n(b_start));
    resp::integer(&matches, n(b_end));
    if (with_len) resp::integer(&matches, n(a_end - a_start + 1));
  }
  if (!idx) return resp::bulk(out, common);
  resp::array(out, 4);  // a map in RESP3: matches, then len
  resp::bulk(out, "matches");
  resp::array(out, count);
  out->append(matches);
  resp::bulk(out, "len");
  resp::integer(out, length);
}

inline bool Dispatcher::bit_offset(const std::string& text, std::uint64_t* offset,
                                   std::string* out) {
  std::int64_t n = 0;
  if (!detail::parse_int64(text, &n) || n < 0 || static_cast<std::uint64_t>(n >> 3) >= kMaxValueBytes) {
    resp::error(out, "ERR bit offset is not an integer or out of range");
    return false;
  }
  *offset = static_cast<std::uint64_t>(n);
  return true;
}

// SETBIT key offset 0|1: the bit's old value; the value grows, zero-padded, to reach it.
inline void Dispatcher::setbit(const Args& a, Session*, std::string* out) {
  std::uint64_t offset = 0;
  std::int64_t on = 0;
  if (!bit_offset(a[2], &offset, out)) return;
  if (!detail::parse_int64(a[3], &on) || (on != 0 && on != 1)) {
    return resp::error(out, "ERR bit is not an integer or out of range");
  }
  const auto byte = static_cast<std::size_t>(offset >> 3);
  const auto mask = static_cast<char>(0x80 >> (offset & 7));
  modify(a[1], out, [&](std::optional<std::string>* value, std::string* reply) {
    std::string& v = *value ? **value : value->emplace();
    const bool grows = v.size() <= byte;
    if (grows) v.resize(byte + 1, '\0');
    const bool was = (v[byte] & mask) != 0;
    v[byte] = static_cast<char>(on ? v[byte] | mask : v[byte] & ~mask);
    resp::integer(reply, was ? 1 : 0);
    return grows || was != (on == 1);  // an unchanged value is not written again
  });
}

inline void Dispatcher::getbit(const Args& a, Session*, std::string* out) {
  std::uint64_t offset = 0;
  if (!bit_offset(a[2], &offset, out)) return;
  const std::optional<std::string> value = store_->get(a[1]);
  const auto byte = static_cast<std::size_t>(offset >> 3);
  const bool set = value && byte < value->size() && ((*value)[byte] & (0x80 >> (offset & 7)));
  resp::integer(out, set ? 1 : 0);
}

inline bool Dispatcher::bit_range(const Args& a, std::size_t i, std::size_t size,
                                  std::int64_t* first, std::int64_t* last, std::string* out) {
  std::int64_t start = 0, end = -1;  // no end: the value's end
  if (!integer_arg(a[i], &start, out)) return false;
  bool bits = false;
  if (a.size() > i + 2) {
    bits = detail::lower(a[i + 2]) == "bit";
    if (!bits && detail::lower(a[i + 2]) != "byte") {
      resp::error(out, "ERR syntax error");
      return false;
    }
  }
  if (a.size() > i + 1 && !integer_arg(a[i + 1], &end, out)) return false;
  const std::int64_t total = static_cast<std::int64_t>(size) * (bits ? 8 : 1);
  if (start < 0) start = std::max<std::int64_t>(0, total + start);
  if (end < 0) end = std::max<std::int64_t>(0, total + end);
  end = std::min(end, total - 1);
  *first = 1;  // empty, unless start <= end
  *last = 0;
  if (start <= end) {
    *first = bits ? start : start * 8;
    *last = bits ? end : end * 8 + 7;
  }
  return true;
}

// BITCOUNT key [start end [BYTE|BIT]]: the bits set in the range.
inline void Dispatcher::bitcount(const Args& a, Session*, std::string* out) {
  const std::optional<std::string> value = store_->get(a[1]);
  if (!value) return resp::integer(out, 0);
  if (a.size() == 3 || a.size() > 5) return resp::error(out, "ERR syntax error");
  std::int64_t first = 0, last = static_cast<std::int64_t>(value->size()) * 8 - 1;
  std::int64_t start = 0, end = 0;  // both from the end, and the wrong way round: nothing
  if (a.size() > 2 && detail::parse_int64(a[2], &start) && detail::parse_int64(a[3], &end) &&
      start < 0 && end < 0 && start > end) {
    return resp::integer(out, 0);
  }
  if (a.size() > 2 && !bit_range(a, 2, value->size(), &first, &last, out)) return;
  resp::integer(out, detail::count_bits(*value, first, last));
}

// BITPOS key 0|1 [start [end [BYTE|BIT]]]: the first such bit. Past the end of a value
// all bits are 0, so looking for a 0 without an end may find the bit after the value.
inline void Dispatcher::bitpos(const Args& a, Session*, std::string* out) {
  std::int64_t bit = 0;
  if (!integer_arg(a[2], &bit, out)) return;
  if (bit != 0 && bit != 1) return resp::error(out, "ERR The bit argument must be 1 or 0.");
  const std::optional<std::string> value = store_->get(a[1]);
  if (!value) return resp::integer(out, bit ? -1 : 0);
  if (a.size() > 6) return resp::error(out, "ERR syntax error");
  std::int64_t first = 0, last = static_cast<std::int64_t>(value->size()) * 8 - 1;
  if (a.size() > 3 && !bit_range(a, 3, value->size(), &first, &last, out)) return;
  const std::int64_t found = detail::find_bit(*value, bit == 1, first, last);
  const bool end_given = a.size() > 4;
  resp::integer(out, found >= 0 || bit == 1 || end_given || first > last ? found : last + 1);
}

// BITOP AND|OR|XOR|NOT destkey key [key ...]: the result, as long as the longest source
// (the shorter ones read as zero-padded), stored under destkey with no expiry; an empty
// result deletes destkey. Reads and write are one transaction. Replies the length.
inline void Dispatcher::bitop(const Args& a, Session*, std::string* out) {
  const std::string op = detail::lower(a[1]);
  if (op != "and" && op != "or" && op != "xor" && op != "not") {
    return resp::error(out, "ERR syntax error");
  }
  if (op == "not" && a.size() != 4) {
    return resp::error(out, "ERR BITOP NOT must be called with a single source key.");
  }
  const char kind = op[0];  // a, o, x or n
  const std::string none;
  std::size_t length = 0;
  Status s = store_->transaction([&] {
    const std::vector<std::optional<std::string>> sources =
        store_->get_all(std::vector<std::string_view>(a.begin() + 3, a.end()));
    for (const auto& v : sources) length = std::max(length, v ? v->size() : 0);
    if (length == 0) return store_->del(a[2]);
    std::string result = sources[0].value_or("");
    result.resize(length, '\0');
    for (std::size_t k = 1; k < sources.size(); ++k) {
      const std::string& v = sources[k] ? *sources[k] : none;
      for (std::size_t i = 0; i < length; ++i) {
        const char b = i < v.size() ? v[i] : '\0';
        result[i] = static_cast<char>(kind == 'a'   ? result[i] & b
                                      : kind == 'o' ? result[i] | b
                                                    : result[i] ^ b);
      }
    }
    if (kind == 'n') {
      for (char& c : result) c = static_cast<char>(~c);
    }
    bool stored = false;
    return store_->set(a[2], result, Store::SetOptions(), &stored);
  });
  if (s.ok()) resp::integer(out, static_cast<std::int64_t>(length));
  else reply_status(out, s);
}

inline void Dispatcher::set(const Args& a, Session*, std::string* out) {
  StringOptions o;
  if (string_options(a, 3, true, &o, out)) set_with(a, a[2], o, out);
}

// SET, SETEX and PSETEX (chapter 10): the options are parsed; the expiry is checked, then
// the store does the rest in one step.
inline void Dispatcher::set_with(const Args& a, const std::string& value, const StringOptions& o,
                                 std::string* out) {
  Store::SetOptions options;
  options.condition = o.condition;
  options.keep_ttl = o.keep_ttl;
  if (o.expire != nullptr && !expiry_time(a, o, &options.expire_at_ms, out)) return;
  bool stored = false;
  std::optional<std::string> previous;
  Status s = store_->set(a[1], value, options, &stored, o.get ? &previous : nullptr);
  if (!s.ok()) return reply_status(out, s);
  if (o.get) {
    if (previous) resp::bulk(out, *previous);
    else resp::null_bulk(out);
  } else if (stored) {
    resp::simple(out, "OK");
  } else {
    resp::null_bulk(out);
  }
}

inline bool Dispatcher::string_options(const Args& a, std::size_t first, bool for_set,
                                       StringOptions* o, std::string* out) {
  for (std::size_t i = first; i < a.size(); ++i) {
    const std::string option = detail::lower(a[i]);
    const bool has_next = i + 1 < a.size();
    // One way of giving the expiry, which may be repeated (the last value counts), as in
    // Redis; two different ways contradict each other.
    const bool has_expiry = !o->expiry_option.empty() && o->expiry_option != option;
    if (for_set && option == "nx" && o->condition != Store::SetIf::kIfPresent) {
      o->condition = Store::SetIf::kIfAbsent;
    } else if (for_set && option == "xx" && o->condition != Store::SetIf::kIfAbsent) {
      o->condition = Store::SetIf::kIfPresent;
    } else if (for_set && option == "get") {
      o->get = true;
    } else if (for_set && option == "keepttl" && !has_expiry) {
      o->keep_ttl = true;
      o->expiry_option = option;
    } else if (!for_set && option == "persist" && !has_expiry) {
      o->persist = true;
      o->expiry_option = option;
    } else if ((option == "ex" || option == "px" || option == "exat" || option == "pxat") &&
               !has_expiry && has_next) {
      o->expiry_option = option;
      o->unit_ms = option[0] == 'e' ? 1000 : 1;
      o->absolute = option.size() == 4;
      o->expire = &a[++i];
    } else {
      resp::error(out, "ERR syntax error");
      return false;
    }
  }
  return true;
}

inline bool Dispatcher::expiry_time(const Args& a, const StringOptions& o, std::int64_t* when_ms,
                                    std::string* out) const {
  std::int64_t n = 0;
  if (!integer_arg(*o.expire, &n, out)) return false;
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  const std::int64_t now = o.absolute ? 0 : store_->now_ms();
  if (n <= 0 || n > max / o.unit_ms || n * o.unit_ms > max - now) {
    resp::error(out, "ERR invalid expire time in '" + detail::lower(a[0]) + "' command");
    return false;
  }
  *when_ms = n * o.unit_ms + now;
  return true;
}

// EXPIRE key n [NX|XX|GT|LT] and its kin: n is seconds or milliseconds, from now or
// since the epoch. Any n is accepted, a negative one too (the key is removed), unless it
// overflows a 64-bit count of milliseconds.
inline void Dispatcher::expire_generic(const Args& a, std::int64_t unit_ms, bool absolute,
                                       std::string* out) {
  unsigned conditions = 0;  // XX may go with GT or LT: then both must hold
  for (std::size_t i = 3; i < a.size(); ++i) {
    const std::string option = detail::lower(a[i]);
    if (option == "nx") conditions |= Store::kIfNone;
    else if (option == "xx") conditions |= Store::kIfSome;
    else if (option == "gt") conditions |= Store::kIfLater;
    else if (option == "lt") conditions |= Store::kIfSooner;
    else return resp::error(out, "ERR Unsupported option " + a[i].substr(0, 64));
  }
  if ((conditions & Store::kIfNone) && conditions != Store::kIfNone) {
    return resp::error(out, "ERR NX and XX, GT or LT options at the same time are not compatible");
  }
  if ((conditions & Store::kIfLater) && (conditions & Store::kIfSooner)) {
    return resp::error(out, "ERR GT and LT options at the same time are not compatible");
  }
  std::int64_t n = 0;
  if (!integer_arg(a[2], &n, out)) return;
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  const std::int64_t min = std::numeric_limits<std::int64_t>::min();
  const std::int64_t base = absolute ? 0 : store_->now_ms();
  if (n > max / unit_ms || n < min / unit_ms || n * unit_ms > max - base) {
    return resp::error(out, "ERR invalid expire time in '" + detail::lower(a[0]) + "' command");
  }
  bool changed = false;
  Status s = store_->expire_at(a[1], n * unit_ms + base, conditions, &changed);
  if (s.ok()) resp::integer(out, changed ? 1 : 0);
  else reply_status(out, s);
}

// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for no key, -1 for no expiry; seconds are
// rounded to the nearest, as Redis rounds them.
inline void Dispatcher::ttl_generic(const Args& a, bool in_ms, bool absolute, std::string* out) {
  const std::int64_t when = store_->expire_time(a[1]);
  if (when < 0) return resp::integer(out, when);
  const std::int64_t ms = absolute ? when : std::max<std::int64_t>(0, when - store_->now_ms());
  resp::integer(out, in_ms ? ms : (ms + 500) / 1000);
}

// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]: GET that changes the expiry too.
inline void Dispatcher::getex(const Args& a, Session*, std::string* out) {
  StringOptions o;
  if (!string_options(a, 2, false, &o, out)) return;
  std::int64_t when = 0;
  if (o.expire != nullptr && !expiry_time(a, o, &when, out)) return;
  std::optional<std::string> value;
  Status s = store_->get_and_expire(a[1], when, o.persist, &value);
  if (!s.ok()) return reply_status(out, s);
  if (value) resp::bulk(out, *value);
  else resp::null_bulk(out);
}

inline void Dispatcher::info(const Args& a, Session*, std::string* out) {
  auto wanted = [&](const char* section) {
    if (a.size() == 1) return true;
    for (std::size_t i = 1; i < a.size(); ++i) {
      const std::string s = detail::lower(a[i]);
      if (s == section || s == "all" || s == "everything" || s == "default") return true;
    }
    return false;
  };
  const Stats stats = store_->stats();
  const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::steady_clock::now() - counters_.started);
  std::string text;
  auto field = [&](const char* name, const std::string& value) {
    text += name;
    text += ':';
    text += value;
    text += "\r\n";
  };
  if (wanted("server")) {
    text += "# Server\r\n";
    field("keystonelight_version", KEYSTONELIGHT_VERSION_STR);
    field("redis_version", "7.0.0");  // what clients that check a version should assume
    field("process_id", std::to_string(detail::process_id()));
    field("tcp_port", std::to_string(config_.port));
    field("uptime_in_seconds", std::to_string(uptime.count()));
    text += "\r\n";
  }
  if (wanted("clients")) {
    text += "# Clients\r\n";
    field("connected_clients", std::to_string(counters_.connected_clients.load()));
    field("maxclients", std::to_string(config_.max_clients));
    field("clients_output_bytes", std::to_string(counters_.clients_output_bytes.load()));
    field("client_max_output_bytes", std::to_string(counters_.client_max_output_bytes.load()));
    text += "\r\n";
  }
  if (wanted("persistence")) {
    text += "# Persistence\r\n";
    const Options& options = store_->options();
    field("aof_enabled", options.dir.empty() ? "0" : "1");
    field("dir", options.dir);
    field("appendfsync", fsync_name(options.fsync));
    field("log_bytes", std::to_string(stats.log_bytes));
    field("live_bytes", std::to_string(stats.live_bytes));
    field("compactions", std::to_string(stats.compactions));
    field("failed_compactions", std::to_string(stats.failed_compactions));
    field("compaction_in_progress", stats.compaction_pending ? "1" : "0");
    field("last_compaction_status", stats.last_compaction.ok() ? "ok" : "err");
    field("last_compaction_duration_us", std::to_string(stats.last_compaction_duration.count()));
    text += "\r\n";
  }
  if (wanted("stats")) {
    text += "# Stats\r\n";
    field("total_connections_received", std::to_string(counters_.total_connections.load()));
    field("total_commands_processed", std::to_string(counters_.total_commands.load()));
    field("rejected_connections", std::to_string(counters_.rejected_connections.load()));
    field("total_net_input_bytes", std::to_string(counters_.total_net_input_bytes.load()));
    field("total_net_output_bytes", std::to_string(counters_.total_net_output_bytes.load()));
    field("evicted_clients", std::to_string(counters_.evicted_clients.load()));
    text += "\r\n";
  }
  if (wanted("keyspace")) {
    text += "# Keyspace\r\n";
    const std::size_t keys = store_->size();
    if (keys > 0) {
      field("db0", "keys=" + std::to_string(keys) + ",expires=" +
                       std::to_string(store_->expiring()) + ",avg_ttl=0");
    }
  }
  resp::bulk(out, text);
}

inline void Dispatcher::config(const Args& a, Session*, std::string* out) {
  if (detail::lower(a[1]) != "get") {
    return resp::error(out, "ERR CONFIG " + a[1].substr(0, 32) + " is not supported: only CONFIG GET is");
  }
  if (a.size() < 3) return resp::error(out, "ERR wrong number of arguments for 'config|get' command");
  const std::pair<const char*, std::string> settings[] = {
      {"bind", config_.bind},
      {"port", std::to_string(config_.port)},
      {"dir", store_->options().dir},
      {"appendonly", store_->options().dir.empty() ? "no" : "yes"},
      {"appendfsync", fsync_name(store_->options().fsync)},
      {"maxclients", std::to_string(config_.max_clients)},
      {"timeout", std::to_string(config_.timeout_seconds)},
      {"save", ""},  // no snapshots: the log is the only persistence
      {"databases", "1"},
  };
  std::vector<std::pair<std::string, std::string>> found;
  for (const auto& [name, value] : settings) {
    for (std::size_t i = 2; i < a.size(); ++i) {
      if (detail::glob_match(detail::lower(a[i]), name)) {
        found.emplace_back(name, value);
        break;
      }
    }
  }
  resp::array(out, found.size() * 2);
  for (const auto& [name, value] : found) {
    resp::bulk(out, name);
    resp::bulk(out, value);
  }
}

inline void Dispatcher::command(const Args& a, Session*, std::string* out) {
  const std::string sub = a.size() > 1 ? detail::lower(a[1]) : "";
  if (sub == "count") return resp::integer(out, static_cast<std::int64_t>(commands().size()));
  if (sub == "docs") return resp::array(out, 0);  // redis-cli asks; it needs no docs to work
  if (!sub.empty()) return resp::error(out, "ERR unknown subcommand '" + a[1] + "'");
  resp::array(out, commands().size());
  static constexpr std::pair<Flag, const char*> kFlagNames[] = {
      {kWrite, "write"}, {kReadOnly, "readonly"}, {kAdmin, "admin"}, {kNoAuth, "no_auth"}};
  for (const Command& c : commands()) {
    resp::array(out, 6);
    resp::bulk(out, c.name);
    resp::integer(out, c.arity);
    std::size_t flags = 0;
    for (const auto& [flag, name] : kFlagNames) flags += (c.flags & flag) ? 1 : 0;
    resp::array(out, flags);
    for (const auto& [flag, name] : kFlagNames) {
      if (c.flags & flag) resp::simple(out, name);
    }
    resp::integer(out, c.first_key);
    resp::integer(out, c.last_key);
    resp::integer(out, c.key_step);
  }
}

inline void Dispatcher::client(const Args& a, Session* session, std::string* out) {
  const std::string sub = detail::lower(a[1]);
  if (sub == "setname" && a.size() == 3) {
    if (a[2].find_first_of(" \r\n") != std::string::npos) {
      return resp::error(out, "ERR Client names cannot contain spaces, newlines or special characters.");
    }
    session->name = a[2];
    return resp::simple(out, "OK");
  }
  if (sub == "getname" && a.size() == 2) {
    if (session->name.empty()) return resp::null_bulk(out);
    return resp::bulk(out, session->name);
  }
  if (sub == "setinfo" && a.size() == 4) return resp::simple(out, "OK");  // accepted, unused
  resp::error(out, "ERR unknown subcommand or wrong number of arguments for '" + a[1] + "'");
}

inline void Dispatcher::auth(const Args& a, Session* session, std::string* out) {
  if (a.size() > 3) return resp::error(out, "ERR syntax error");
  if (config_.requirepass.empty()) {
    // As Redis: with no password, the default user accepts any; the one-word form is
    // the one that says so.
    if (a.size() == 3) {
      if (a[1] == "default") return resp::simple(out, "OK");
      return resp::error(out, "WRONGPASS invalid username-password pair or user is disabled.");
    }
    return resp::error(out, "ERR AUTH <password> called without any password configured for "
                            "the default user. Are you sure your configuration is correct?");
  }
  const bool user_ok = a.size() == 2 || a[1] == "default";
  if (!detail::same_secret(a.back(), config_.requirepass) || !user_ok) {
    return resp::error(out, "WRONGPASS invalid username-password pair or user is disabled.");
  }
  session->authenticated = true;
  resp::simple(out, "OK");
}

// =======================================================================================
// Chapter 8: the TCP server
//
// A listener thread accepts connections and gives each one a thread of its own. That
// thread's loop reads like the protocol: wait for bytes, run every complete request in
// order, send all their replies in one write (pipelining: a client may send many requests
// before it reads a reply), wait again. Its costs are a stack and a kernel thread per
// client; the chapter's README measures them.
//
//     listener thread     poll(listening socket, stop) -> accept -> start a connection
//     connection thread   poll(socket, stop, deadline) -> recv -> parse -> execute -> send
//     stop()              notify stop -> join the listener -> every connection sends what
//                         it owes and closes -> join them -> sync the log
//
// Every wait is a poll(2) that also watches one pipe, the Wakeup that stop() notifies, and
// has a deadline where one applies: no thread can sleep through a stop.
// =======================================================================================

// Serves a Store over TCP in the protocol of chapters 6 and 7. Thread-safe. The store must
// outlive the server; the server never closes it.
class Server {
 public:
  Server(Store* store, ServerConfig config) : store_(store), config_(std::move(config)) {}

  // Stops the server (see stop()), ignoring what stop() reports.
  ~Server() { (void)stop(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Raises the process's open-files limit to fit config.max_clients (when the hard limit
  // is too low, lowers max_clients instead and says so in the log), listens on
  // config.bind:config.port (port 0: a free port, see port()) and starts accepting.
  // Busy when another program has the port; IOError or InvalidArgument for other reasons.
  // Call it once.
  Status start();

  // The port the server listens on (the one the system picked, for port 0); 0 before start().
  int port() const { return port_.load(); }

  // Blocks until a client sends SHUTDOWN or request_shutdown() is called (at once if that
  // has happened already). The server goes on serving: the caller decides to stop().
  void wait_for_shutdown();

  // Wakes wait_for_shutdown(). Safe from any thread, including a connection's.
  void request_shutdown();

  // Stops gracefully: stops accepting, lets every command already running finish and its
  // reply go out (a client that does not read it gets KEYSTONELIGHT_STOP_GRACE_MS), closes
  // every connection, joins every thread, then syncs the log and returns what sync()
  // says. Calling it again does nothing. Must not be called from a connection's thread
  // (it would wait for itself): use request_shutdown() there.
  Status stop();

  // The figures INFO reports; null before start().
  const ServerCounters* counters() const { return dispatcher_ ? &dispatcher_->counters() : nullptr; }

 private:
  struct Connection {
    std::uint64_t id;
    detail::Socket socket;
    std::string peer;  // "127.0.0.1:52110", for the log
    std::thread thread;
    // Its unsent replies, as it last said (account_output), and whether the server-wide
    // budget chose it to close: its own thread sees that within kEvictionCheckMs.
    std::atomic<std::size_t> output_bytes{0};
    std::atomic<bool> evicted{false};
  };
  using Clock = std::chrono::steady_clock;

  // What serve() knows of one connection between its steps.
  struct Link {
    Link(Connection* connection, bool authenticated, const ProtocolLimits& limits)
        : c(connection), parser(limits) {
      session.authenticated = authenticated;
    }
    std::size_t unsent() const { return out.size() - sent; }

    Connection* const c;
    Session session;
    RequestParser parser;
    std::string in;   // bytes received and not parsed yet
    std::string out;  // replies; the first `sent` bytes have gone out
    std::size_t sent = 0;
    std::vector<std::string> args;
    bool peer_done = false;  // the client closed its side: answer what came, then close
    bool closing = false;    // QUIT, SHUTDOWN or a protocol error: send the replies, close
    bool stopping = false;   // stop(): send the replies (within the grace period), close
    bool held_back = false;  // requests wait in `in` until the client reads
    Clock::time_point last_received = Clock::now();
    Clock::time_point last_sent = last_received;
    Clock::time_point stop_deadline;
    std::string ending;  // why the server ends the connection, when a person should know
    short watching = 0;  // what its event loop's Poller watches it for (POLLIN, POLLOUT)
    // Commit before reply: the replies in `out` that wait for its thread's Deferred
    // (session.deferred) to commit: bytes [begin, end) may go once record `ticket` is.
    struct Withheld {
      std::size_t begin, end;
      std::uint64_t ticket;
    };
    std::vector<Withheld> withheld;
  };
  // Before AUTH a client may send only small requests, as Redis allows it, and leave only
  // a few KiB of replies unread (Redis has no such cap): the replies it can earn are short
  // errors, but longer than the requests that earn them, so someone without the password
  // could otherwise make the server buffer megabytes of them.
  static constexpr std::size_t kGuestBulkBytes = 16 * 1024;
  static constexpr std::size_t kGuestArgs = 10;
  static constexpr std::size_t kGuestOutputBytes = 4 * 1024;
  static constexpr std::size_t kReceiveBytes = 16 * 1024;  // one recv(2) at most
  std::size_t output_limit(const Link& link) const {
    return link.session.authenticated ? config_.max_output_bytes
                                      : std::min(config_.max_output_bytes, kGuestOutputBytes);
  }

  void accept_loop();
  void admit(detail::Socket socket);
  // serve() is the connection's loop; each step below is one part of it, over the
  // connection's state (Link). A step that ends the connection says so by returning false
  // and, when a person should know why, leaves the reason in link.ending.
  void serve(Connection* connection);
  void run_requests(Link& link);
  bool send_pending(Link& link);
  std::optional<Clock::time_point> next_deadline(const Link& link) const;
  enum class Event { kReady, kStop, kEvicted, kExpired };
  Event wait_for(Link& link, std::optional<Clock::time_point> deadline, bool reading,
                 short* ready);
  bool receive(Link& link);
  void begin_stop(Link& link) const;
  void expire(Link& link) const;
  void evicted(Link& link) const;
  void join_finished();
  void account_output(Connection* connection, std::size_t bytes);
  void evict_biggest();
  void note(const std::string& message) const { detail::note(config_.info_log, message); }

  // How often a connection with replies waiting looks for an eviction while it waits.
  static constexpr int kEvictionCheckMs = 100;

  // The steps both I/O models share (chapter 14 took them out of chapter 8's serve()):
  // open_link makes a connection's state, advance() runs what it sent and sends what it
  // can without waiting (false: the connection ends), close_link lets it go.
  std::unique_ptr<Link> open_link(Connection* c) const;
  bool advance(Link& link);
  bool wants_input(const Link& link) const {
    return !link.closing && !link.stopping && !link.peer_done && link.unsent() <= output_limit(link);
  }
  void close_link(Link& link);
  bool run_ready(Link& link, short ready);
  void release(Link& link);

  // One event loop: a thread, a Poller, and the connections handed to it. Only its own
  // thread touches `links`; the accept thread leaves new connections in `arrivals` and
  // rings the doorbell.
  struct Loop {
    detail::Poller poller;
    detail::Wakeup doorbell;
    std::mutex mu;  // guards arrivals
    std::vector<Connection*> arrivals;
    std::unordered_map<int, std::unique_ptr<Link>> links;  // by descriptor
    Store::Deferred* deferred = nullptr;  // its thread's, on that thread's stack
    bool stop_seen = false;
    std::thread thread;
  };
  Status open_loops();
  void hand_off(Connection* c);
  void run_loop(Loop* loop);
  void take_arrivals(Loop& loop);
  bool serve_ready(Loop& loop, Link& link, short ready);
  void tick(Loop& loop);
  void end(Loop& loop, int fd);

  std::vector<std::unique_ptr<Loop>> loops_;  // empty under Io::kThreads
  std::size_t next_loop_ = 0;                 // the accept thread's turn: round robin
  std::atomic<bool> accepting_over_{false};   // stop() has joined the accept thread

  Store* const store_;
  ServerConfig config_;  // max_clients and port as start() settled them
  std::unique_ptr<Dispatcher> dispatcher_;  // made by start(), with the final config_
  detail::Socket listener_;
  detail::Wakeup stop_;  // notified once, by stop(); every poll in the server watches it
  std::thread accept_thread_;
  std::atomic<int> port_{0};
  std::atomic<bool> stopping_{false};  // stop() has begun

  std::mutex stop_mu_;  // makes stop() run once; taken before mu_
  bool started_ = false;
  bool stopped_ = false;

  std::mutex mu_;  // guards what follows
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections_;
  std::vector<std::uint64_t> finished_;  // connections whose thread has ended: to join
  std::uint64_t next_id_ = 0;
  bool shutdown_requested_ = false;
  std::condition_variable shutdown_cv_;
};

inline Status Server::start() {
  std::lock_guard<std::mutex> guard(stop_mu_);
  if (started_) return Status::invalid_argument("Server::start() was called twice");
  if (config_.max_clients == 0) {
    return Status::invalid_argument("max clients is 0: the server could serve nobody; give 1 or more");
  }
  // Each client costs a descriptor; keep some for the log, the listener and the rest, as
  // Redis does.
  constexpr std::uint64_t kReservedDescriptors = 32;
  const std::uint64_t wanted = config_.max_clients + kReservedDescriptors;
  const std::uint64_t limit = detail::raise_open_files_limit(wanted);
  if (limit < wanted) {
    if (limit <= kReservedDescriptors) {
      return Status::io_error("the open-files limit is " + std::to_string(limit) +
                              ", too low to serve any client: raise it (ulimit -n)");
    }
    const std::uint64_t lowered = limit - kReservedDescriptors;
    note("max clients lowered from " + std::to_string(config_.max_clients) + " to " +
         std::to_string(lowered) + ": the open-files limit is " + std::to_string(limit) +
         "; raise the hard limit (ulimit -Hn, or LimitNOFILE= under systemd) to serve more");
    config_.max_clients = static_cast<std::size_t>(lowered);
  }
  if (stop_.fd() < 0) {  // a start() that failed may be tried again
    if (Status s = stop_.open(); !s.ok()) return s;
  }
  int port = 0;
  if (Status s = detail::listen_tcp(config_.bind, config_.port, &listener_, &port); !s.ok()) {
    return s;
  }
  config_.port = port;
  port_ = port;
  if (config_.io == ServerConfig::Io::kEvents) {
    if (Status s = open_loops(); !s.ok()) {
      listener_.reset();
      return s;
    }
  }
  dispatcher_ = std::make_unique<Dispatcher>(store_, config_);
  for (auto& loop : loops_) loop->thread = std::thread(&Server::run_loop, this, loop.get());
  accept_thread_ = std::thread(&Server::accept_loop, this);
  started_ = true;
  return Status();
}

inline void Server::wait_for_shutdown() {
  std::unique_lock<std::mutex> lock(mu_);
  shutdown_cv_.wait(lock, [this] { return shutdown_requested_; });
}

inline void Server::request_shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutdown_requested_ = true;
  shutdown_cv_.notify_all();
}

inline Status Server::stop() {
  std::lock_guard<std::mutex> guard(stop_mu_);
  if (!started_ || stopped_) return Status();
  stopped_ = true;
  stopping_ = true;  // seen between two requests of a batch
  dispatcher_->interrupt();  // seen between two keys of a long command
  stop_.notify();    // seen by every poll
  accept_thread_.join();  // no new connection after this
  accepting_over_ = true;  // each loop ends once it has no connection left
  for (auto& loop : loops_) loop->doorbell.notify();
  for (auto& loop : loops_) loop->thread.join();
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.swap(connections_);
    finished_.clear();
  }
  for (auto& entry : all) entry.second->thread.join();
  request_shutdown();  // nobody stays in wait_for_shutdown() for a stopped server
  // Every write a client saw acknowledged is in the file already; make it durable too.
  return store_->sync();
}

inline void Server::accept_loop() {
  Clock::time_point last_note;  // of running out of descriptors: once a minute is enough
  while (true) {
    bool woken = false;
    // Wake once a second even when idle, to join the threads of closed connections.
    const short ready = detail::wait_ready(listener_.fd(), POLLIN, stop_.fd(), 1000, &woken);
    if (woken) break;
    join_finished();
    if (ready == 0) continue;
    for (int i = 0; i < 64; ++i) {  // take what queued up, but look at stop_ now and then
      detail::Socket socket;
      if (Status s = detail::accept_connection(listener_.fd(), &socket); !s.ok()) {
        // Out of descriptors: the connection stays queued and poll would report it again
        // at once. Pause rather than spin, and say why clients wait.
        if (last_note == Clock::time_point() || Clock::now() - last_note > std::chrono::minutes(1)) {
          note(s.message() + ": new connections wait; raise the open-files limit or lower "
                             "max clients");
          last_note = Clock::now();
        }
        detail::wait_ready(-1, 0, stop_.fd(), 100, &woken);
        break;
      }
      if (!socket.valid()) break;
      admit(std::move(socket));
    }
  }
  listener_.reset();  // from now on the system refuses new connections
}

inline void Server::admit(detail::Socket socket) {
  ServerCounters& counters = dispatcher_->counters();
  if (counters.connected_clients.load() >= config_.max_clients) {
    // Told and closed at once, as Redis does; a full send buffer just loses the words.
    std::size_t sent = 0;
    (void)detail::send_some(socket.fd(), "-ERR max number of clients reached\r\n", &sent);
    ++counters.rejected_connections;
    return;
  }
  detail::set_no_delay(socket.fd());
  auto connection = std::make_unique<Connection>();
  connection->peer = detail::peer_address(socket.fd());
  connection->socket = std::move(socket);
  Connection* c = connection.get();
  ++counters.connected_clients;
  ++counters.total_connections;
  std::lock_guard<std::mutex> lock(mu_);
  c->id = next_id_++;
  connections_.emplace(c->id, std::move(connection));
  if (!loops_.empty()) {  // an event loop serves it, not a thread of its own
    hand_off(c);
    return;
  }
  try {
    c->thread = std::thread(&Server::serve, this, c);
  } catch (const std::system_error& e) {
    // The system has no thread to spare: refuse this client, keep serving the others.
    std::size_t sent = 0;
    (void)detail::send_some(c->socket.fd(), "-ERR the server cannot start a thread for "
                                            "this connection; try again later\r\n", &sent);
    note("cannot start a thread for " + c->peer + ": " + e.what() +
         "; lower max clients or raise the process's thread limit");
    connections_.erase(c->id);
    --counters.connected_clients;
    ++counters.rejected_connections;
  }
}

inline void Server::join_finished() {
  std::vector<std::unique_ptr<Connection>> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::uint64_t id : finished_) {
      auto it = connections_.find(id);
      done.push_back(std::move(it->second));
      connections_.erase(it);
    }
    finished_.clear();
  }
  for (auto& c : done) c->thread.join();  // each has ended, or is about to: quick
}

// Called by a connection's own thread whenever its unsent replies change. The sum over
// connections is kept by exchanging each one's figure, so an eviction that zeroes a
// figure from another thread cannot make it count twice. An evicted connection counts
// as nothing: its bytes are as good as freed, and must not cost another client its place.
inline void Server::account_output(Connection* c, std::size_t bytes) {
  ServerCounters& counters = dispatcher_->counters();
  if (c->evicted.load()) bytes = 0;
  const std::size_t before = c->output_bytes.exchange(bytes);
  if (bytes == before) return;
  counters.clients_output_bytes += bytes;  // add first: the sum never dips below zero
  counters.clients_output_bytes -= before;
  std::uint64_t peak = counters.client_max_output_bytes.load();
  while (bytes > peak && !counters.client_max_output_bytes.compare_exchange_weak(peak, bytes)) {
  }
  if (bytes > before && counters.clients_output_bytes.load() > config_.max_clients_output_bytes) {
    evict_biggest();
  }
}

// Past the server-wide budget, the connection holding the most replies is closed (Redis
// 7's maxmemory-clients): one client reading slowly costs itself, not the others. Its
// bytes leave the sum at once, so that the others are not evicted too while its thread
// wakes up to close it.
inline void Server::evict_biggest() {
  std::lock_guard<std::mutex> lock(mu_);  // one eviction at a time
  ServerCounters& counters = dispatcher_->counters();
  if (counters.clients_output_bytes.load() <= config_.max_clients_output_bytes) return;
  Connection* biggest = nullptr;
  for (auto& entry : connections_) {
    Connection* c = entry.second.get();
    if (!c->evicted.load() && (!biggest || c->output_bytes.load() > biggest->output_bytes.load())) {
      biggest = c;
    }
  }
  if (biggest == nullptr || biggest->output_bytes.load() == 0) return;
  biggest->evicted = true;  // first: from now on its own thread counts it as 0 too
  counters.clients_output_bytes -= biggest->output_bytes.exchange(0);
  ++counters.evicted_clients;
}

// A connection's thread (Io::kThreads): advance as far as it can without waiting, then
// wait for the socket, a stop, an eviction or a deadline, and again.
inline void Server::serve(Connection* c) {
  std::unique_ptr<Link> owned = open_link(c);
  Link& link = *owned;
  Store::Deferred deferred(store_);  // each batch of its requests commits once (chapter 16)
  link.session.deferred = &deferred;
  while (advance(link)) {
    const std::optional<Clock::time_point> deadline = next_deadline(link);
    const bool reading = wants_input(link);
    short ready = 0;
    const Event event = wait_for(link, deadline, reading, &ready);
    if (event == Event::kEvicted) {
      evicted(link);
      break;
    }
    if (event == Event::kStop) {
      begin_stop(link);
      continue;
    }
    if (event == Event::kExpired) {
      expire(link);
      break;
    }
    if (reading && (ready & (POLLIN | POLLHUP | POLLERR)) != 0 && !receive(link)) break;
  }
  close_link(link);
  std::lock_guard<std::mutex> lock(mu_);
  finished_.push_back(c->id);
}

// A new connection's state: before AUTH (when a password is set) with the guest limits.
inline std::unique_ptr<Server::Link> Server::open_link(Connection* c) const {
  ProtocolLimits guest = config_.limits;
  guest.max_bulk_bytes = std::min(guest.max_bulk_bytes, kGuestBulkBytes);
  guest.max_args = std::min(guest.max_args, kGuestArgs);
  const bool open = config_.requirepass.empty();
  return std::make_unique<Link>(c, open, open ? config_.limits : guest);
}

// Runs the requests that have arrived and sends their replies as far as the socket takes
// them now, never waiting. False when the connection ends (link.ending may say why).
inline bool Server::advance(Link& link) {
  while (true) {
    run_requests(link);
    release(link);  // nothing goes out before what it depends on is durable
    account_output(link.c, link.unsent());
    if (link.c->evicted.load()) {  // chosen while it ran requests: what it holds is never sent
      evicted(link);
      return false;
    }
    if (link.unsent() > 0 && !send_pending(link)) return false;  // the client has gone
    if (!link.session.authenticated && link.unsent() > kGuestOutputBytes) {
      link.ending = "closed: it left " + std::to_string(link.unsent()) + " bytes of replies "
                    "unread before AUTH, past the " + std::to_string(kGuestOutputBytes) +
                    " allowed; a client must AUTH first, or read its replies";
      return false;
    }
    if ((link.closing || link.stopping) && link.unsent() == 0) return false;
    if (link.held_back && link.unsent() <= output_limit(link)) continue;  // it kept up
    const std::optional<Clock::time_point> deadline = next_deadline(link);
    if (deadline && Clock::now() >= *deadline) {
      expire(link);
      return false;
    }
    return true;
  }
}

inline void Server::close_link(Link& link) {
  link.c->socket.reset();  // the client sees the close now
  account_output(link.c, 0);  // its replies are freed when `link` goes, a moment from now
  if (!link.ending.empty()) note("client " + link.c->peer + " " + link.ending);
  --dispatcher_->counters().connected_clients;
}

// Runs every complete request in `link.in`, in order, until the replies waiting for the
// client pass its output limit: then it must read before more run (backpressure).
inline void Server::run_requests(Link& link) {
  std::size_t parsed = 0;
  link.held_back = false;
  while (!link.closing && !link.stopping) {
    if (link.unsent() > output_limit(link)) {
      link.held_back = true;
      break;
    }
    std::size_t consumed = 0;
    const RequestParser::Result r =
        link.parser.parse(std::string_view(link.in).substr(parsed), &consumed, &link.args);
    parsed += consumed;
    if (r == RequestParser::Result::kNeedMore) break;
    if (r == RequestParser::Result::kError) {
      resp::error(&link.out, "ERR " + link.parser.error());
      link.closing = true;
      break;
    }
    if (stopping_.load()) {  // stop() came while requests ran: start no more
      begin_stop(link);
      break;
    }
    const bool was_authenticated = link.session.authenticated;
    const std::size_t replied = link.out.size();
    try {
      dispatcher_->execute(link.args, &link.session, &link.out);
    } catch (const std::bad_alloc&) {
      // No memory for this reply: its client loses the connection, not all the others
      // their server. What was written of the reply is dropped, not sent half.
      link.out.resize(replied);
      (void)link.session.deferred->take();  // no reply of its own to hold back: the error is sent
      resp::error(&link.out, "ERR the server is out of memory: the connection is closed");
      link.ending = "closed: no memory for the reply to its '" + link.args[0].substr(0, 32) + "'";
      link.closing = true;
      break;
    }
    if (const std::uint64_t ticket = link.session.deferred->take(); ticket != 0) {
      link.withheld.push_back({replied, link.out.size(), ticket});
    }
    if (link.session.authenticated && !was_authenticated) link.parser.set_limits(config_.limits);
    if (link.session.shutdown) request_shutdown();
    if (link.session.close) link.closing = true;
    account_output(link.c, link.unsent());  // after each request: a batch may be megabytes
    if (link.c->evicted.load()) break;
  }
  link.session.deferred->hold(false);  // a run of writes held the writer lock: give it back
  link.in.erase(0, parsed);
  if (link.peer_done && !link.stopping && link.unsent() <= output_limit(link)) {
    link.closing = true;
  }
}

// Sends what the socket takes now: all of it, usually, in one system call. False when
// the client has gone (nothing to tell it).
inline bool Server::send_pending(Link& link) {
  std::size_t n = 0;
  if (Status s = detail::send_some(link.c->socket.fd(), std::string_view(link.out).substr(link.sent), &n);
      !s.ok()) {
    return false;
  }
  if (n > 0) {
    link.sent += n;
    link.last_sent = Clock::now();
    dispatcher_->counters().total_net_output_bytes += n;
  }
  if (link.sent == link.out.size()) {
    link.out.clear();
    link.sent = 0;
    // A buffer that grew for a big reply gives the memory back once it has gone.
    if (link.out.capacity() > kReceiveBytes) std::string().swap(link.out);
  } else if (link.sent > link.out.size() / 2) {
    link.out.erase(0, link.sent);  // keep the buffer from growing with what has gone
    link.sent = 0;
  }
  account_output(link.c, link.unsent());
  return true;
}

// The deadline that applies now: the send timeout while replies wait, the idle timeout
// while none do, and the stop's grace period.
inline std::optional<Server::Clock::time_point> Server::next_deadline(const Link& link) const {
  std::optional<Clock::time_point> deadline;
  auto limit_to = [&](Clock::time_point t) { deadline = deadline ? std::min(*deadline, t) : t; };
  if (link.unsent() > 0 && config_.send_timeout_seconds > 0) {
    limit_to(link.last_sent + std::chrono::seconds(config_.send_timeout_seconds));
  }
  if (link.unsent() == 0 && config_.timeout_seconds > 0) {
    limit_to(link.last_received + std::chrono::seconds(config_.timeout_seconds));
  }
  if (link.stopping) limit_to(link.stop_deadline);
  return deadline;
}

// Waits until the socket is ready for what `link` wants, a stop, an eviction or the
// deadline. While replies wait it polls in slices of kEvictionCheckMs, since nothing else
// would wake it for an eviction.
inline Server::Event Server::wait_for(Link& link, std::optional<Clock::time_point> deadline,
                                      bool reading, short* ready) {
  const short events =
      static_cast<short>((reading ? POLLIN : 0) | (link.unsent() > 0 ? POLLOUT : 0));
  bool woken = false;
  while (true) {
    int timeout_ms = -1;
    if (deadline) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      timeout_ms = static_cast<int>(std::clamp<std::int64_t>(left.count() + 1, 0, 60 * 60 * 1000));
    }
    if (link.unsent() > 0 && (timeout_ms < 0 || timeout_ms > kEvictionCheckMs)) {
      timeout_ms = kEvictionCheckMs;
    }
    *ready = detail::wait_ready(link.c->socket.fd(), events, link.stopping ? -1 : stop_.fd(),
                                timeout_ms, &woken);
    if (*ready != 0 || woken || link.c->evicted.load() || (deadline && Clock::now() >= *deadline)) {
      break;
    }
  }
  if (link.c->evicted.load()) return Event::kEvicted;
  if (woken) return Event::kStop;
  // A wait that ran out ends here, before another send: poll reports room only once a
  // third of the socket's buffer is free, but send takes any room, and the kernel grows
  // the buffers of a connection that does not read; a last send would slip a few bytes
  // in and put the deadline off again.
  if (*ready == 0 && deadline && Clock::now() >= *deadline) return Event::kExpired;
  return Event::kReady;
}

// Takes what the client sent. False when it reset the connection.
inline bool Server::receive(Link& link) {
  char buffer[kReceiveBytes];
  std::size_t got = 0;
  if (Status s = detail::receive_some(link.c->socket.fd(), buffer, sizeof(buffer), &got,
                                      &link.peer_done);
      !s.ok()) {
    return false;
  }
  if (got > 0) {
    link.in.append(buffer, got);
    link.last_received = Clock::now();
    dispatcher_->counters().total_net_input_bytes += got;
  }
  return true;
}

// stop() has begun: no more requests; the replies owed get the grace period.
inline void Server::begin_stop(Link& link) const {
  link.stopping = true;
  link.stop_deadline = Clock::now() + std::chrono::milliseconds(KEYSTONELIGHT_STOP_GRACE_MS);
}

inline void Server::expire(Link& link) const {
  if (link.stopping) {
    link.ending = "closed at stop with " + std::to_string(link.unsent()) + " bytes of replies unsent";
  } else if (link.unsent() > 0) {
    link.ending = "closed: it took none of its " + std::to_string(link.unsent()) +
                  " bytes of replies for " + std::to_string(config_.send_timeout_seconds) + " s";
  }  // an idle client is closed without a word, as its timeout promised
}

inline void Server::evicted(Link& link) const {
  link.ending = "closed: its " + std::to_string(link.unsent()) + " bytes of unread replies "
                "were the most when all clients' together passed max_clients_output_bytes (" +
                std::to_string(config_.max_clients_output_bytes) + "); raise that limit, or "
                "make the clients read their replies";
}

// =======================================================================================
// Chapter 14: the event loop
//
// Io::kEvents serves every connection from a few threads, one per core by default. Each
// loop's thread asks its Poller which of its sockets are ready, and for each one takes
// what arrived, runs it and sends the replies (advance(), the same steps a connection's
// thread takes under Io::kThreads), never waiting on one client while others are ready.
//
//     accept thread   poll(listener, stop) -> accept -> admit -> hand_off to loop i++ % n
//     loop thread     Poller::wait(sockets, doorbell, stop; <= 100 ms)
//                       -> for each ready socket: recv -> run requests -> send
//                       -> doorbell: adopt the connections handed over
//                       -> every 100 ms: deadlines and evictions
//     stop()          notify stop -> join the accept thread -> every loop sends what its
//                     connections owe, closes them and ends -> join them -> sync the log
//
// The loops share the store (its locks), the Dispatcher and the counters, as the
// connection threads do; a connection stays with one loop for its life.
// =======================================================================================

inline Status Server::open_loops() {
  std::size_t n = config_.loops;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < n; ++i) {
    auto loop = std::make_unique<Loop>();
    Status s = loop->poller.open();
    if (s.ok()) s = loop->doorbell.open();
    if (s.ok()) s = loop->poller.add(loop->doorbell.fd(), POLLIN);
    if (s.ok()) s = loop->poller.add(stop_.fd(), POLLIN);
    if (!s.ok()) {
      loops_.clear();
      return s;
    }
    loops_.push_back(std::move(loop));
  }
  return Status();
}

// Called by the accept thread, mu_ held: the loops take turns, so each gets an equal share.
inline void Server::hand_off(Connection* c) {
  Loop& loop = *loops_[next_loop_++ % loops_.size()];
  {
    std::lock_guard<std::mutex> lock(loop.mu);
    loop.arrivals.push_back(c);
  }
  loop.doorbell.notify();
}

// One loop's thread: a pass is one wait and the work it found.
inline void Server::run_loop(Loop* loop) {
  std::vector<detail::PollerEvent> ready;
  std::vector<int> ended;
  Store::Deferred deferred(store_);  // one commit per pass (chapter 16)
  loop->deferred = &deferred;
  std::vector<std::pair<int, Link*>> served;  // run this pass; replies still to send
  Clock::time_point next_tick = Clock::now() + std::chrono::milliseconds(kEvictionCheckMs);
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now());
    loop->poller.wait(static_cast<int>(std::clamp<std::int64_t>(left.count() + 1, 0, kEvictionCheckMs)),
                      &ready);
    bool rung = false;
    bool stop = false;
    ended.clear();
    for (const detail::PollerEvent& e : ready) {
      if (e.fd == loop->doorbell.fd()) {
        rung = true;
      } else if (e.fd == stop_.fd()) {
        stop = true;
      } else if (auto it = loop->links.find(e.fd); it != loop->links.end()) {
        if (!run_ready(*it->second, e.events)) ended.push_back(e.fd);
        else served.emplace_back(e.fd, it->second.get());
      }
    }
    // Every request of the pass has run: their records reach the file together, then
    // their replies go out.
    (void)deferred.commit();
    for (auto [fd, link] : served) {
      if (!serve_ready(*loop, *link, 0)) ended.push_back(fd);
    }
    served.clear();
    for (int fd : ended) end(*loop, fd);
    if (stop && !loop->stop_seen) {  // the stop pipe stays readable: watch it no more
      loop->stop_seen = true;
      loop->poller.remove(stop_.fd());
      ended.clear();
      for (auto& entry : loop->links) {
        begin_stop(*entry.second);
        if (!serve_ready(*loop, *entry.second, 0)) ended.push_back(entry.first);
      }
      for (int fd : ended) end(*loop, fd);
    }
    if (rung) take_arrivals(*loop);
    if (Clock::now() >= next_tick) {
      tick(*loop);
      next_tick = Clock::now() + std::chrono::milliseconds(kEvictionCheckMs);
    }
    if (loop->stop_seen && accepting_over_.load()) {
      take_arrivals(*loop);  // the last ones the accept thread handed over
      if (loop->links.empty()) break;
    }
  }
}

// Adopts the connections handed over since the last look.
inline void Server::take_arrivals(Loop& loop) {
  loop.doorbell.drain();  // first: a connection handed over after this rings again
  std::vector<Connection*> arrivals;
  {
    std::lock_guard<std::mutex> lock(loop.mu);
    arrivals.swap(loop.arrivals);
  }
  for (Connection* c : arrivals) {
    std::unique_ptr<Link> link = open_link(c);
    const int fd = c->socket.fd();
    link->session.deferred = loop.deferred;
    if (loop.stop_seen) begin_stop(*link);
    if (Status s = loop.poller.add(fd, POLLIN); !s.ok()) {
      link->ending = "closed: " + s.message();
      close_link(*link);
      std::lock_guard<std::mutex> lock(mu_);
      connections_.erase(c->id);
      continue;
    }
    link->watching = POLLIN;
    Link& adopted = *loop.links.emplace(fd, std::move(link)).first->second;
    if (loop.stop_seen && !serve_ready(loop, adopted, 0)) end(loop, fd);
  }
}

// Serves one connection the Poller reported `ready` (0: nothing new, just advance), and
// watches it for what it wants next. False when it ends.
inline bool Server::serve_ready(Loop& loop, Link& link, short ready) {
  if ((ready & (POLLIN | POLLHUP | POLLERR)) != 0 && wants_input(link) && !receive(link)) {
    return false;
  }
  if (!advance(link)) return false;
  const short wanted =
      static_cast<short>((wants_input(link) ? POLLIN : 0) | (link.unsent() > 0 ? POLLOUT : 0));
  if (wanted != link.watching) {
    if (Status s = loop.poller.modify(link.c->socket.fd(), wanted); !s.ok()) {
      link.ending = "closed: " + s.message();
      return false;
    }
    link.watching = wanted;
  }
  return true;
}

// Every kEvictionCheckMs: what no socket reports, the deadlines that passed and the
// evictions other loops decided.
inline void Server::tick(Loop& loop) {
  std::vector<int> ended;
  const Clock::time_point now = Clock::now();
  for (auto& entry : loop.links) {
    Link& link = *entry.second;
    if (link.c->evicted.load()) {
      evicted(link);
      ended.push_back(entry.first);
    } else if (const auto deadline = next_deadline(link); deadline && now >= *deadline) {
      expire(link);
      ended.push_back(entry.first);
    }
  }
  for (int fd : ended) end(loop, fd);
}

// Lets a connection go: out of the Poller before its descriptor is closed (the number may
// be handed out again at once), out of the server's table last.
inline void Server::end(Loop& loop, int fd) {
  auto it = loop.links.find(fd);
  std::unique_ptr<Link> link = std::move(it->second);
  loop.links.erase(it);
  loop.poller.remove(fd);
  close_link(*link);
  const std::uint64_t id = link->c->id;
  link.reset();
  std::lock_guard<std::mutex> lock(mu_);
  connections_.erase(id);
}

// The first half of serving a connection the Poller reported `ready` (chapter 16): take
// what arrived and run it. The pass commits before serve_ready() sends the replies.
// False when the connection ends.
inline bool Server::run_ready(Link& link, short ready) {
  if ((ready & (POLLIN | POLLHUP | POLLERR)) != 0 && wants_input(link) && !receive(link)) {
    return false;
  }
  run_requests(link);
  return true;
}

// Commit before reply: the replies of the requests just run stay in `out` until what
// they depend on is durable (at once when the pass has committed it already). When that
// failed, each reply that depended on what did not reach the file becomes an error: its
// write was undone, and what its read saw may never have existed.
inline void Server::release(Link& link) {
  if (link.withheld.empty()) return;
  (void)link.session.deferred->commit();
  const std::uint64_t durable = link.session.deferred->durable();
  if (link.withheld.back().ticket <= durable) {  // tickets only grow: all of them may go
    link.withheld.clear();
    return;
  }
  std::string out = link.out.substr(0, link.withheld.front().begin);
  for (std::size_t i = 0; i < link.withheld.size(); ++i) {
    const Link::Withheld& w = link.withheld[i];
    if (w.ticket <= durable) {
      out.append(link.out, w.begin, w.end - w.begin);
    } else {
      resp::error(&out, "ERR the reply is withheld: what it wrote or read did not reach the log (" +
                            link.session.deferred->failure().message() + ")");
    }
    const std::size_t next = i + 1 < link.withheld.size() ? link.withheld[i + 1].begin : link.out.size();
    out.append(link.out, w.end, next - w.end);  // the replies in between depended on nothing
  }
  link.out.swap(out);
  link.withheld.clear();
}

// A reply, as RESP2 types it.
struct Reply {
  enum class Type {
    kStatus,   // +OK: text
    kError,    // -ERR ...: text (without the dash)
    kInteger,  // :3: integer
    kBulk,     // $5 hello: text, any bytes
    kNil,      // $-1 or *-1: no value
    kArray,    // *2 ...: elements
  };
  Type type = Type::kNil;
  std::string text;
  std::int64_t integer = 0;
  std::vector<Reply> elements;
};

// A small blocking client for the server (or any server that speaks RESP2). Not
// thread-safe: one per thread. Every call waits at most the timeout given to connect().
// An error reply (-ERR ...) is a Reply of type kError and an OK Status: the Status speaks
// of the connection. After a failed call the connection is in an unknown state: drop it.
class Client {
 public:
  static Status connect(const std::string& host, int port, std::unique_ptr<Client>* client,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    detail::Socket socket;
    if (Status s = detail::connect_tcp(host, port, static_cast<int>(timeout.count()), &socket);
        !s.ok()) {
      return s;
    }
    client->reset(new Client(std::move(socket), detail::endpoint(host, port), timeout));
    return Status();
  }

  // Sends one command and reads its reply.
  Status command(const std::vector<std::string>& args, Reply* reply) {
    send(args);
    return read(reply);
  }

  // Pipelining: send() queues a command as a RESP array, send_raw() queues bytes as they
  // are (an inline command, or anything a test wants to try). Both go out at the next
  // flush() or read(); read the replies in the order the commands were sent.
  void send(const std::vector<std::string>& args) {
    resp::array(&out_, args.size());
    for (const std::string& arg : args) resp::bulk(&out_, arg);
  }
  void send_raw(std::string_view bytes) { out_.append(bytes.data(), bytes.size()); }

  // Sends everything queued. While the server's replies arrive meanwhile they are kept for
  // read(), so a long pipeline cannot deadlock with both sides' buffers full.
  Status flush() {
    deadline_ = std::chrono::steady_clock::now() + timeout_;
    return send_queued();
  }

  // Reads the next reply (after sending what is queued). When the sending fails but a
  // whole reply has come, that reply is returned: a server may answer a request it will
  // not read to the end (one over its limits, a stranger's before AUTH) and close, and
  // its error says why, where the failed send's "Connection reset" would not.
  Status read(Reply* reply) {
    deadline_ = std::chrono::steady_clock::now() + timeout_;
    const Status sent = send_queued();
    if (!sent.ok()) {
      // The reply, if any, came before the reset: it is in the kernel's buffer now. Parse
      // only what is there; the connection is broken, so nothing more is worth a wait.
      receive_rest();
      deadline_ = std::chrono::steady_clock::now();
    }
    Status s = read_reply(reply, 0);
    if (!sent.ok() && !s.ok()) s = sent;
    if (pos_ == in_.size() || pos_ > 64 * 1024) {  // not after every reply of a pipeline
      in_.erase(0, pos_);
      pos_ = 0;
    }
    return s;
  }

 private:
  Client(detail::Socket socket, std::string server, std::chrono::milliseconds timeout)
      : socket_(std::move(socket)), server_(std::move(server)), timeout_(timeout) {}

  Status send_queued() {
    std::size_t sent = 0;
    while (sent < out_.size()) {
      std::size_t n = 0;
      if (Status s = detail::send_some(socket_.fd(), std::string_view(out_).substr(sent), &n);
          !s.ok()) {
        return s;
      }
      sent += n;
      if (n == 0) {
        if (Status s = wait(POLLOUT | POLLIN); !s.ok()) return s;
        if (Status s = receive(); !s.ok()) return s;
      }
    }
    out_.clear();
    return Status();
  }

  // Waits until the socket is ready for `events`, or says the server took too long: the
  // deadline is the call's, so a server that sends a byte now and then cannot stretch it.
  Status wait(short events) {
    bool woken = false;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline_ - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return Status::io_error("no answer from " + server_ + " in " +
                                std::to_string(timeout_.count()) + " ms");
      }
      if (detail::wait_ready(socket_.fd(), events, -1, static_cast<int>(left.count()), &woken) != 0) {
        return Status();
      }
    }
  }

  // Appends to in_ what has arrived (perhaps nothing).
  Status receive() {
    char buffer[16 * 1024];
    std::size_t got = 0;
    bool closed = false;
    if (Status s = detail::receive_some(socket_.fd(), buffer, sizeof(buffer), &got, &closed);
        !s.ok()) {
      return s;
    }
    if (closed) return Status::io_error("connection closed by " + server_);
    in_.append(buffer, got);
    return Status();
  }

  // Appends to in_ everything received so far, until none is left or the stream ends.
  void receive_rest() {
    std::size_t before = 0;
    do before = in_.size();
    while (receive().ok() && in_.size() > before);
  }

  // Makes sure in_ holds n bytes after pos_, waiting for the server as needed.
  Status need(std::size_t n) {
    while (in_.size() - pos_ < n) {
      if (Status s = wait(POLLIN); !s.ok()) return s;
      if (Status s = receive(); !s.ok()) return s;
    }
    return Status();
  }

  // One line without its CRLF.
  Status read_line(std::string* line) {
    std::size_t searched = pos_;
    while (true) {
      const std::size_t end = in_.find("\r\n", searched);
      if (end != std::string::npos) {
        line->assign(in_, pos_, end - pos_);
        pos_ = end + 2;
        return Status();
      }
      searched = std::max(pos_, in_.size() > 0 ? in_.size() - 1 : 0);
      if (Status s = need(in_.size() - pos_ + 1); !s.ok()) return s;
    }
  }

  Status read_reply(Reply* reply, int depth) {
    if (depth > 32) return Status::corruption("reply from " + server_ + " is nested too deep");
    std::string line;
    if (Status s = read_line(&line); !s.ok()) return s;
    if (line.empty()) return Status::corruption("empty reply line from " + server_);
    const std::string_view body = std::string_view(line).substr(1);
    *reply = Reply();
    std::int64_t n = 0;
    const bool numeric = detail::parse_int64(body, &n);
    switch (line[0]) {
      case '+': reply->type = Reply::Type::kStatus; reply->text = std::string(body); return Status();
      case '-': reply->type = Reply::Type::kError; reply->text = std::string(body); return Status();
      case ':':
        if (!numeric) break;
        reply->type = Reply::Type::kInteger;
        reply->integer = n;
        return Status();
      case '$': {
        if (!numeric || n < -1) break;
        if (n == -1) return Status();  // kNil
        const auto length = static_cast<std::size_t>(n);
        if (Status s = need(length + 2); !s.ok()) return s;
        reply->type = Reply::Type::kBulk;
        reply->text.assign(in_, pos_, length);
        pos_ += length + 2;
        return Status();
      }
      case '*': {
        if (!numeric || n < -1) break;
        if (n == -1) return Status();  // kNil
        reply->type = Reply::Type::kArray;
        for (std::int64_t i = 0; i < n; ++i) {
          reply->elements.emplace_back();
          if (Status s = read_reply(&reply->elements.back(), depth + 1); !s.ok()) return s;
        }
        return Status();
      }
    }
    return Status::corruption("malformed reply from " + server_ + ": " + line.substr(0, 64));
  }

  detail::Socket socket_;
  std::string server_;  // "127.0.0.1:6380", for messages
  std::chrono::milliseconds timeout_;
  std::chrono::steady_clock::time_point deadline_;  // of the call under way
  std::string out_;       // commands not sent yet
  std::string in_;        // bytes received; the first pos_ are read
  std::size_t pos_ = 0;
};

// =======================================================================================
// Chapter 9: process management
//
// What a server program needs beyond the Server: a PID file that keeps a second instance
// out, and signals handled in a thread of their own (SIGHUP compacts; SIGTERM and SIGINT
// stop gracefully). Both are platform code, defined with the rest of it near the top of
// this file; the program that puts everything together is
// examples/keystonelight-server.cpp, which is also chapter 9's example.
// =======================================================================================

}  // namespace keystonelight

#endif  // KEYSTONELIGHT_HPP

/*
   MIT License

   Copyright (c) 2026 The Keystonelight developers

   Permission is hereby granted, free of charge, to any person obtaining a copy of this
   software and associated documentation files (the "Software"), to deal in the Software
   without restriction, including without limitation the rights to use, copy, modify,
   merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
   permit persons to whom the Software is furnished to do so, subject to the following
   conditions:

   The above copyright notice and this permission notice shall be included in all copies
   or substantial portions of the Software.

   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
   INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
   PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
   HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
   CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE
   OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
