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
       Store                   get, set, del, exists, size, entries (1)

   COMPILE-TIME OPTIONS: define before including to change a default.

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
// Platform: every call into the operating system (files, fsync, locks, sockets, signals)
// lives in this one section, wrapped to retry on EINTR and to finish short writes, so
// that no #ifdef or raw errno handling leaks into the engine.
// =======================================================================================

namespace detail {

}  // namespace detail

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
