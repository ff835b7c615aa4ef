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
       The persistent log      FsyncPolicy, Options, Disk: the log, its lock and fsyncs (3),
                               compaction (4), group commit (5); diagnose: what a bad record
                               means (3)
       Store                   get, set, del, exists, size, entries (1)
                               open and recovery, close, sync (3)
                               compact, automatic compaction, Stats (4)
                               the locks, reads that wait for durability, increment,
                               append, conditional set, the background compactor (5)
                               set_all, del_all, get_all, keys, clear (6)
       The protocol            RequestParser, resp:: replies (6)
                               Dispatcher, its command table and its commands, AUTH (7)

   COMPILE-TIME OPTIONS: define before including to change a default.

       KEYSTONELIGHT_MAX_KEY_BYTES        1048576    longest key a record may hold
       KEYSTONELIGHT_MAX_VALUE_BYTES      536870912  longest value a record may hold
       KEYSTONELIGHT_FSYNC_INTERVAL_MS    1000       period of the kEverySecond flusher
       KEYSTONELIGHT_COMPACT_MIN_BYTES    67108864   no automatic compaction below this
       KEYSTONELIGHT_COMPACT_RATIO        2.0        log size / live size that compacts
       KEYSTONELIGHT_MAX_INLINE_BYTES     65536      longest inline request line
       KEYSTONELIGHT_MAX_BULK_BYTES       536870912  longest argument of a request
       KEYSTONELIGHT_MAX_ARGS             1048576    most arguments in one request

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
};

inline constexpr char kLogMagic[8] = {'K', 'E', 'Y', 'S', 'T', 'O', 'N', 'E'};
// The format version this build writes. It reads every version up to this one: a new
// record type bumps it, so that an older build refuses a log it cannot read by saying so
// rather than by calling a record it does not know damage.
inline constexpr std::uint32_t kLogVersion = 1;
inline constexpr std::size_t kFileHeaderBytes = 8 + 4 + 4;           // magic, version, CRC
// Header CRC, body CRC, type, key length, value length, expiry.
inline constexpr std::size_t kRecordHeaderBytes = 4 + 4 + 1 + 4 + 4 + 8;
inline constexpr std::uint32_t kMaxKeyBytes = KEYSTONELIGHT_MAX_KEY_BYTES;
inline constexpr std::uint32_t kMaxValueBytes = KEYSTONELIGHT_MAX_VALUE_BYTES;

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

// Extends `crc` (the CRC of what came before, 0 at the start) with `n` more bytes.
inline std::uint32_t crc32c_extend(std::uint32_t crc, const char* data, std::size_t n) {
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) {
    crc = kCrc32cTable.entry[(crc ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (crc >> 8);
  }
  return ~crc;
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
  if (Status s = check_record_limits(key, value); !s.ok()) return s;
  if (type != RecordType::kPut && !value.empty()) {
    return Status::invalid_argument("only a put record has a value");
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
    Status s = file_->append(buffer_);
    if (!s.ok()) {
      // Cut the partial record off. If even that fails, the file holds half a record that
      // a later append would bury in the middle of the log: refuse every append from now.
      if (!file_->truncate(size_).ok()) broken_ = s;
      return s;
    }
    size_ += buffer_.size();
    if (buffer_.capacity() > kKeepBufferBytes) std::string().swap(buffer_);
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
  std::uint64_t size_;
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
    if (key_bytes > kMaxKeyBytes || value_bytes > kMaxValueBytes ||
        (type != static_cast<unsigned char>(RecordType::kPut) && value_bytes != 0)) {
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
    return static_cast<unsigned char>(RecordType::kDelete);
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

  // Appends a record. With kAlways, the caller then waits in wait_durable() (chapter 5's
  // group commit), after letting go of the Store's writer lock. Writes come one at a
  // time: the caller holds that lock.
  // The first I/O failure is kept: every later write returns it, because after a failed
  // write or fsync nobody can say what the file holds (Linux may even drop the unwritten
  // pages and report success later).
  Status append(RecordType type, std::string_view key, std::string_view value,
                std::uint64_t expiry_ms = 0) {
    if (Status s = usable(); !s.ok()) return s;
    Status s = log_->append(type, key, value, expiry_ms);
    if (!s.ok()) return fail(s);
    appended_.fetch_add(1);  // after write(2) returned: a sync that starts now covers it
    if (options_.fsync == FsyncPolicy::kEverySecond) {
      std::lock_guard<std::mutex> lock(mu_);
      unsynced_ = true;
    }
    return Status();
  }

  // Safe to race with close(): the check and the copy of log_ are one step under mu_,
  // so a sync that starts after close() has taken the log says so instead of using it.
  Status sync() {
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

  // Group commit. Returns once record number `ticket` is on disk (at once unless the
  // policy is kAlways). The first waiter to find no fsync running becomes the leader: it
  // notes how many records have been written, fsyncs once, and wakes everyone whom that
  // covers; writers that arrive meanwhile wait for the next round rather than starting
  // fsyncs of their own. So N concurrent writers pay for a few fsyncs, not N, and nobody
  // is answered before the fsync that covers their record.
  Status wait_durable(std::uint64_t ticket) {
    if (options_.fsync != FsyncPolicy::kAlways) return Status();
    std::unique_lock<std::mutex> lock(mu_);
    while (synced_ < ticket) {
      if (!failed_.ok()) return failed_;
      if (closed_) {
        // close() syncs everything written; wait for its answer rather than guess.
        durable_cv_.wait(lock, [this] { return close_done_; });
        if (synced_ >= ticket) break;
        return failed_.ok() ? Status::io_error("the store in " + options_.dir +
                                               " closed before a write was synced")
                            : failed_;
      }
      if (!syncing_) {
        syncing_ = true;  // the leader of this round
        const std::uint64_t covered = appended_.load();
        std::shared_ptr<LogWriter> log = log_;
        lock.unlock();
        Status s = log->sync();
        lock.lock();
        syncing_ = false;
        if (s.ok()) synced_ = std::max(synced_, covered);
        assert(synced_ <= appended_.load());  // nothing is durable before it is written
        if (!s.ok() && failed_.ok()) failed_ = sticky(s);
        durable_cv_.notify_all();
      } else {
        durable_cv_.wait(lock);
      }
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
  std::uint64_t synced_ = 0;                // records known to be on disk
  bool syncing_ = false;                    // a group-commit leader is in fsync
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

  // Whether `key` has a value.
  bool exists(std::string_view key) const;

  // The number of keys.
  std::size_t size() const;

  // A copy of every (key, value) pair, in no particular order. It costs memory in
  // proportion to the data; it is meant for tools, tests and exports, not for hot paths.
  std::vector<std::pair<std::string, std::string>> entries() const;

 private:
  using Map = std::unordered_map<std::string, std::string>;

  // The one place a value is stored: set() calls it, and so (from chapter 5) do the
  // read-modify-write operations, with the writer lock held.
  Status put(std::string_view key, std::string_view value);

  // The entry of `key`, or map_.end(): lookup() for reads, lookup_for_write() with the
  // writer lock held. From chapter 10 a key whose time has passed is not found, and
  // lookup_for_write() removes it, logging the removal.
  Map::const_iterator lookup(std::string_view key) const;
  Map::iterator lookup_for_write(std::string_view key);

  // The one place an entry is removed (with the writer lock held, from chapter 5).
  Status erase(Map::iterator it);

  // Append one change to the log of a persistent store (nothing for one in memory),
  // after checking the limits that the log's format sets. The expiry (0: none) stays 0
  // until chapter 10 gives keys one.
  Status log_put(std::string_view key, std::string_view value, std::int64_t expire_at_ms = 0);
  Status log_delete(std::string_view key);

  // Replays the log in options.dir into map_ (chapter 3's recovery), one record at a time.
  Status recover(const Options& options, FileSystem* fs, std::unique_ptr<LogWriter>* writer);
  void replay(const Record& record);

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

  // std::unordered_map has no lookup by string_view in C++17, so lookups build a
  // std::string key; short keys fit in its inline buffer and allocate nothing.
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
    explicit WriteLock(Store* store) : writers(store->writers_mu_), map(store->mu_) {}
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
  };
  std::deque<Undo> undo_;
  bool undone_ = false;  // a failed fsync's writes were undone: every later write fails
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

inline Status Store::put(std::string_view key, std::string_view value) {
  if (Status s = log_put(key, value); !s.ok()) return s;
  auto [it, added] = map_.try_emplace(std::string(key));  // finds the key, or adds it empty
  if (!added) count_live(-1, key, it->second);
  count_live(+1, key, value);
  if (keeps_undo()) {
    remember(key, added ? std::nullopt : std::optional<std::string>(std::move(it->second)));
  }
  it->second.assign(value.data(), value.size());
  maybe_compact();
  return Status();
}

inline Status Store::erase(Map::iterator it) {
  if (Status s = log_delete(it->first); !s.ok()) return s;
  count_live(-1, it->first, it->second);
  if (keeps_undo()) remember(it->first, std::move(it->second));
  map_.erase(it);
  maybe_compact();
  return Status();
}

inline Store::Map::const_iterator Store::lookup(std::string_view key) const {
  auto it = map_.find(std::string(key));
  return it;
}

inline Store::Map::iterator Store::lookup_for_write(std::string_view key) {
  auto it = map_.find(std::string(key));
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
  return read([&] { return Entries(map_.begin(), map_.end()); });
}

// Store's persistence (chapter 3): open, recover, close, and the two writes to the log.

inline Status Store::open(const Options& options, std::unique_ptr<Store>* store) {
  std::unique_ptr<Store> opened(new Store());
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

  Record record;
  LogReader::Result result;
  while ((result = reader.next(&record)) == LogReader::Result::kRecord) {
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
  for (const auto& [key, value] : map_) count_live(+1, key, value);
  return Status();
}

// Applies one record of the log to the map, as the write that made it did.
inline void Store::replay(const Record& record) {
  std::string key(record.key);
  switch (record.type) {
    case RecordType::kPut:
      map_.insert_or_assign(std::move(key), std::string(record.value));
      break;
    case RecordType::kDelete:
      map_.erase(key);
      break;
  }
}

inline Store::~Store() { (void)close(); }

inline Status Store::close() {
  stop_compactor();
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
  return disk_ ? disk_->append(RecordType::kPut, key, value,
                               static_cast<std::uint64_t>(expire_at_ms))
               : Status();
}

inline Status Store::log_delete(std::string_view key) {
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
  if (!disk_) return Status();
  // Writers wait, so the map the new log is made from is the map when it replaces the
  // old one; readers go on, since nothing changes the map meanwhile.
  std::lock_guard<WritersMutex> no_writers(writers_mu_);
  return disk_->compact([this](const detail::Disk::Entry& entry) { contents(entry); });
}

inline Stats Store::stats() const {
  std::shared_lock<detail::SharedMutex> lock(mu_);
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
  for (const auto& [key, value] : map_) {
    entry(key, value, 0);
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
  if (!disk_) return Status();
  const std::uint64_t ticket = disk_->appended();  // still under the lock: our record's number
  lock.map.unlock();
  lock.writers.unlock();  // the next writer may append while we wait for the fsync
  Status s = disk_->wait_durable(ticket);
  if (!s.ok()) undo_unsynced();  // readers must not go on seeing what failed
  return s;
}

template <typename Peek>
auto Store::read(Peek peek) const -> decltype(peek()) {
  std::shared_lock<detail::SharedMutex> lock(mu_);
  auto found = peek();
  if (!disk_ || undone_) return found;
  // Every write that peek() could see has a record numbered up to this; waiting for it
  // costs nothing unless the policy is kAlways and an fsync is still due.
  const std::uint64_t ticket = disk_->appended();
  lock.unlock();
  if (disk_->wait_durable(ticket).ok()) return found;
  // Only a store made by open() has a disk_, and open() makes it non-const.
  const_cast<Store*>(this)->undo_unsynced();
  return read(peek);  // once more: undone_ is set now, so this returns at once
}

inline bool Store::keeps_undo() const {
  return disk_ && disk_->options().fsync == FsyncPolicy::kAlways;
}

inline void Store::remember(std::string_view key, std::optional<std::string> previous) {
  // Tickets grow in the order of the log; undo_unsynced() relies on it.
  assert(undo_.empty() || undo_.back().ticket < disk_->appended());
  const std::uint64_t synced = disk_->synced();
  while (!undo_.empty() && undo_.front().ticket <= synced) undo_.pop_front();  // durable now
  undo_.push_back({disk_->appended(), std::string(key), std::move(previous)});
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
  if (auto it = map_.find(undo->key); it != map_.end()) {
    count_live(-1, undo->key, it->second);
    map_.erase(it);
  }
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
  if (Status s = put(key, std::to_string(next)); !s.ok()) return s;
  if (result != nullptr) *result = next;
  return finish_write(lock);
}

inline Status Store::append(std::string_view key, std::string_view suffix, std::size_t* length) {
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  std::string value = it != map_.end() ? it->second : std::string();
  if (value.size() + suffix.size() > kMaxValueBytes) {
    return Status::invalid_argument("string exceeds maximum allowed size (proto-max-bulk-len: " +
                                    std::to_string(kMaxValueBytes) + " bytes)");
  }
  value.append(suffix);
  if (Status s = put(key, value); !s.ok()) return s;
  if (length != nullptr) *length = value.size();
  return finish_write(lock);
}

inline Status Store::set(std::string_view key, std::string_view value, SetIf condition,
                         bool* stored, std::optional<std::string>* previous) {
  WriteLock lock(this);
  auto it = lookup_for_write(key);
  const bool present = it != map_.end();
  if (previous != nullptr) *previous = present ? std::optional<std::string>(it->second) : std::nullopt;
  *stored = false;
  if ((condition == SetIf::kIfAbsent && present) || (condition == SetIf::kIfPresent && !present)) {
    return Status();
  }
  if (Status s = put(key, value); !s.ok()) return s;
  *stored = true;
  return finish_write(lock);
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
  WriteLock lock(this);
  for (const auto& [key, value] : pairs) {
    if (Status s = put(key, value); !s.ok()) return s;
  }
  return finish_write(lock);
}

inline Status Store::del_all(const std::vector<std::string_view>& keys, std::size_t* removed) {
  WriteLock lock(this);
  *removed = 0;
  for (std::string_view key : keys) {
    auto it = lookup_for_write(key);
    if (it == map_.end()) continue;
    if (Status s = erase(it); !s.ok()) return s;
    ++*removed;
  }
  return finish_write(lock);
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
        live_bytes_ = 0;
      }
      return s;
    }
  }
  map_.clear();
  live_bytes_ = 0;
  return Status();
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
};

// Figures the server keeps current for INFO (chapter 8 fills the client counts).
struct ServerCounters {
  std::atomic<std::uint64_t> connected_clients{0};
  std::atomic<std::uint64_t> total_connections{0};
  std::atomic<std::uint64_t> total_commands{0};
  std::atomic<std::uint64_t> rejected_connections{0};
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// How the server is set up: CONFIG GET and INFO report it; the server program fills it in.
struct ServerConfig {
  std::string bind = "127.0.0.1";
  int port = 6380;
  std::size_t max_clients = 10000;
  int timeout_seconds = 0;          // close idle clients after this long; 0 = never
  std::string requirepass;          // AUTH needed when not empty
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
      {"quit",           -1, kNoAuth,             0, 0, 0, &Dispatcher::quit},
      {"shutdown",       -1, kAdmin,              0, 0, 0, &Dispatcher::shutdown},
      {"auth",           -2, kNoAuth,             0, 0, 0, &Dispatcher::auth},
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
  if (command != nullptr) run(*command, args, session, out);
}

inline void Dispatcher::run(const Command& command, const Args& args, Session* session,
                            std::string* out) {
  ++counters_.total_commands;  // as Redis counts: commands run, not commands refused
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

inline void Dispatcher::set(const Args& a, Session*, std::string* out) {
  Store::SetIf condition = Store::SetIf::kAlways;
  bool want_previous = false;
  for (std::size_t i = 3; i < a.size(); ++i) {
    const std::string option = detail::lower(a[i]);
    if (option == "nx" && condition != Store::SetIf::kIfPresent) {
      condition = Store::SetIf::kIfAbsent;
    } else if (option == "xx" && condition != Store::SetIf::kIfAbsent) {
      condition = Store::SetIf::kIfPresent;
    } else if (option == "get") {
      want_previous = true;
    } else if (option == "ex" || option == "px" || option == "exat" || option == "pxat" ||
               option == "keepttl") {
      return resp::error(out, "ERR " + a[i].substr(0, 16) + " is not supported: keys do not "
                              "expire in this version of Keystonelight");
    } else {
      return resp::error(out, "ERR syntax error");
    }
  }
  bool stored = false;
  std::optional<std::string> previous;
  Status s = store_->set(a[1], a[2], condition, &stored, want_previous ? &previous : nullptr);
  if (!s.ok()) return reply_status(out, s);
  if (want_previous) {
    if (previous) resp::bulk(out, *previous);
    else resp::null_bulk(out);
  } else if (stored) {
    resp::simple(out, "OK");
  } else {
    resp::null_bulk(out);
  }
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
    text += "\r\n";
  }
  if (wanted("keyspace")) {
    text += "# Keyspace\r\n";
    const std::size_t keys = store_->size();
    if (keys > 0) field("db0", "keys=" + std::to_string(keys) + ",expires=0,avg_ttl=0");
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
