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
       Store                   get, set, del, exists, size, entries (1)

   COMPILE-TIME OPTIONS: define before including to change a default.

       KEYSTONELIGHT_MAX_KEY_BYTES        1048576    longest key a record may hold
       KEYSTONELIGHT_MAX_VALUE_BYTES      536870912  longest value a record may hold

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
// Chapter 1: the in-memory map
//
// A Store maps keys to values. Both are arbitrary byte strings: NUL, CR, LF and any other
// byte are ordinary data, which is why the API takes std::string_view (a pointer and a
// length) and never a C string. A Store made with `Store()` lives in memory only; its
// contents end with it.
//
// A Store is not thread-safe: share one between threads only behind a lock of your own.
// =======================================================================================

class Store {
 public:
  // An empty store held in memory only.
  Store() = default;

  // A store owns its data (and, from chapter 3, files and a lock); copying one would
  // split that ownership, so it is neither copyable nor movable. Hold it in a
  // std::unique_ptr where it must move.
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The value stored under `key`, or std::nullopt when there is none. The value is a copy:
  // it stays valid whatever happens to the store afterwards.
  std::optional<std::string> get(std::string_view key) const;

  // Stores `value` under `key`, replacing any value it had.
  Status set(std::string_view key, std::string_view value);

  // Removes `key`. Removing a missing key is not an error; when `existed` is not null it
  // is set to whether the key was there.
  Status del(std::string_view key, bool* existed = nullptr);

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

  // std::unordered_map has no lookup by string_view in C++17, so lookups build a
  // std::string key; short keys fit in its inline buffer and allocate nothing.
  Map map_;
};

inline std::optional<std::string> Store::get(std::string_view key) const {
  auto it = lookup(key);
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

inline Status Store::set(std::string_view key, std::string_view value) {
  return put(key, value);
}

inline Status Store::put(std::string_view key, std::string_view value) {
  auto [it, added] = map_.try_emplace(std::string(key));  // finds the key, or adds it empty
  it->second.assign(value.data(), value.size());
  return Status();
}

inline Status Store::erase(Map::iterator it) {
  map_.erase(it);
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
  auto it = lookup_for_write(key);
  if (existed != nullptr) *existed = false;
  if (it == map_.end()) return Status();
  if (Status s = erase(it); !s.ok()) return s;
  if (existed != nullptr) *existed = true;
  return Status();
}

inline bool Store::exists(std::string_view key) const {
  return lookup(key) != map_.end();
}

inline std::size_t Store::size() const {
  return map_.size();
}

inline std::vector<std::pair<std::string, std::string>> Store::entries() const {
  return {map_.begin(), map_.end()};
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
