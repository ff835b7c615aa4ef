// What the fuzz targets share: a real directory for the LOCK file, and a check that stops
// the run with a message (libFuzzer then saves the input and says how to replay it).
#ifndef KEYSTONELIGHT_TESTS_FUZZ_SUPPORT_HPP
#define KEYSTONELIGHT_TESTS_FUZZ_SUPPORT_HPP

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace klfuzz {

// The directory lock_dir() made, empty until then.
inline std::string& made_lock_dir() {
  static std::string dir;
  return dir;
}

// Removes lock_dir() and its LOCK, if it was made: at exit, and before a broken property
// aborts (a sanitizer's report still leaves it behind, in $TMPDIR).
inline void remove_lock_dir() {
  if (made_lock_dir().empty()) return;
  ::unlink((made_lock_dir() + "/LOCK").c_str());
  ::rmdir(made_lock_dir().c_str());
}

// Store::open takes DIR/LOCK with flock(2) on the real file system (it does not go
// through FileSystem), so every target opens its stores in one real, empty directory,
// made once per process. Everything else lives in a MemoryFileSystem.
inline const std::string& lock_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/keystonelight-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    made_lock_dir() = pattern;
    std::atexit(remove_lock_dir);
    return pattern;
  }();
  return dir;
}

// Like assert, but never compiled out, and it says which property broke.
#define KLFUZZ_CHECK(condition, ...)                                       \
  do {                                                                     \
    if (!(condition)) {                                                    \
      std::fprintf(stderr, "\nproperty broken at %s:%d: %s\n", __FILE__,   \
                   __LINE__, #condition);                                  \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      klfuzz::remove_lock_dir();                                           \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

}  // namespace klfuzz

#endif  // KEYSTONELIGHT_TESTS_FUZZ_SUPPORT_HPP
